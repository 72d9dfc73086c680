"""Durations and sizes given by people ("30s", "256Mi"), converted once, where they enter.

Every error says which setting, quotes the value, and shows what is expected.
"""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|K|M|G|k)?\s*$")
_SIZE_UNITS = {
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "K": 1000,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    None: 1,
}

MAX_TIMEOUT_S = 3600.0
MIN_TIMEOUT_S = 0.1
"""The shortest time limit a function may have: below it a call cannot even go to a warm
instance and back under load, let alone start one, so every call would time out."""
MIN_MEMORY_BYTES = 32 << 20
MAX_MEMORY_BYTES = 64 << 30


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the setting and the value."""

    def __init__(self, setting: str, value: Any, expected: str) -> None:
        super().__init__(f"invalid {setting} {_quote(value)}: expected {expected}")
        self.setting = setting


def _quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def duration_text_s(text: str) -> float | None:
    """`"30s"`, `"500ms"`, `"10m"`, `"1h"`, `"2d"`, `"90"` -> seconds (>= 0); None if it is
    not a duration. No bounds: see `parse_duration_s` for a checked setting."""
    m = _DURATION.match(text)
    return None if m is None else float(m[1]) * _DURATION_UNITS[m[2]]


def parse_duration_s(
    value: Any,
    setting: str = "duration",
    *,
    minimum_s: float = 0.0,
    maximum_s: float = MAX_TIMEOUT_S,
) -> float:
    """`30`, `"30s"`, `"500ms"`, `"10m"`, `"1h"` -> seconds; must be above 0 (at least
    `minimum_s` when given) and at most `maximum_s`."""
    low = "above 0" if minimum_s <= 0 else f"at least {_duration_text(minimum_s)}"
    expected = f"a duration like 500ms, 30s, 10m or 1h, {low} and at most {maximum_s:g}s"
    if isinstance(value, bool):
        raise ConfigError(setting, value, expected)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (parsed := duration_text_s(value)) is not None:
        seconds = parsed
    else:
        raise ConfigError(setting, value, expected)
    if not 0 < seconds <= maximum_s or seconds < minimum_s:
        raise ConfigError(setting, value, expected)
    return seconds


def _duration_text(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def parse_size_bytes(
    value: Any,
    setting: str = "size",
    *,
    minimum: int = MIN_MEMORY_BYTES,
    maximum: int = MAX_MEMORY_BYTES,
) -> int:
    """`"256Mi"`, `"1Gi"`, `"512M"` or a number of bytes -> bytes, within [minimum, maximum]."""
    expected = f"a size like 128Mi, 1Gi or 512M, between {minimum >> 20}Mi and {maximum >> 30}Gi"
    if isinstance(value, bool):
        raise ConfigError(setting, value, expected)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m[1]) * _SIZE_UNITS[m[2]])
    else:
        raise ConfigError(setting, value, expected)
    if not minimum <= size <= maximum:
        raise ConfigError(setting, value, expected)
    return size
