"""Errors raised by the store.

StoreError
├── DatabaseUnavailable   the server cannot be reached or went away mid-query
├── FunctionNotFound
├── VersionNotFound
├── MigrationError
├── TopicNotFound
├── TriggerError          a trigger cannot be installed (no such table, no rights, ...)
└── NotFound              any other record (a trigger, a delivery)
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises."""


class DatabaseUnavailable(StoreError):
    pass


class FunctionNotFound(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f'function "{name}" not found')
        self.name = name


class VersionNotFound(StoreError):
    def __init__(self, name: str, version: int) -> None:
        super().__init__(f'function "{name}" has no version {version}')
        self.name = name
        self.version = version


class MigrationError(StoreError):
    pass


class TopicNotFound(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f'topic "{name}" not found; create it with: fn topic create {name}')
        self.name = name


class TriggerError(StoreError):
    pass


class NotFound(StoreError):
    pass
