"""Settings read from the environment (`FN_*`, `EMBER_*`, `DATABASE_URL`), written once for
the gateway and the scheduler process: each `Env` method reads one variable, converts it where
it enters, and falls back to the settings dataclass's own default (see `default_of`), so no
default is written twice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from config.units import MAX_MEMORY_BYTES, MAX_TIMEOUT_S, ConfigError
from config.units import parse_duration_s as _parse_duration_s
from config.units import parse_size_bytes as _parse_size_bytes

_NO = ("0", "false", "no")


class SettingsError(ValueError):
    """A variable is missing or invalid; the message names it and says what to set."""


def default_of(cls: type[Any], name: str) -> Any:
    """The default of field `name` of dataclass `cls`, for settings that have required fields
    (and so no `cls()` to read defaults from)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise LookupError(f"{cls.__name__} has no default for {name}")


class Env:
    """The process environment (or a given mapping), read as typed settings."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._env = env

    def __contains__(self, name: str) -> bool:
        return bool(self._env.get(name))

    def text(self, name: str, default: str = "") -> str:
        return self._env.get(name, default)

    def optional(self, name: str) -> str | None:
        """The value, or None when unset or empty."""
        return self._env.get(name) or None

    def secret(self, name: str) -> str | None:
        """A token or URL, stripped: secrets written with `echo` or `openssl rand > file` end
        with a newline. None when unset or empty."""
        return self._env.get(name, "").strip() or None

    def flag(self, name: str, default: bool) -> bool:
        """On unless 0, false or no."""
        raw = self._env.get(name)
        return default if raw is None else raw not in _NO

    def integer(self, name: str, default: int) -> int:
        """A whole number (ValueError from `int` when it is not one)."""
        return int(self._env.get(name, str(default)))

    def number(self, name: str, default: float) -> float:
        return float(self._env.get(name, str(default)))

    def whole(self, name: str, default: int, low: int, high: int) -> int:
        """A whole number from `low` to `high`, else ConfigError."""
        raw = self._env.get(name, str(default)).strip()
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ConfigError(name, raw, f"a whole number from {low} to {high}")
        return int(raw)

    def at_least(self, name: str, default: int, minimum: int = 0) -> int:
        """A whole number of at least `minimum`, else SettingsError."""
        raw = self._env.get(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
        if value < minimum:
            raise SettingsError(f"{name}={raw!r}: expected at least {minimum}")
        return value

    def duration_s(self, name: str, default: float, *, maximum_s: float = MAX_TIMEOUT_S) -> float:
        """`30s`, `10m`, `1h` or seconds (see `config.units.parse_duration_s`)."""
        return _parse_duration_s(self._env.get(name, default), name, maximum_s=maximum_s)

    def size_bytes(
        self, name: str, default: int, *, minimum: int, maximum: int = MAX_MEMORY_BYTES
    ) -> int:
        """`128Mi`, `1Gi` or bytes (see `config.units.parse_size_bytes`)."""
        return _parse_size_bytes(
            self._env.get(name, default), name, minimum=minimum, maximum=maximum
        )

    def choice(self, name: str, default: str, choices: tuple[str, ...], expected: str) -> str:
        """One of `choices`, else ConfigError saying `expected`."""
        value = self._env.get(name, default)
        if value not in choices:
            raise ConfigError(name, value, expected)
        return value
