from __future__ import annotations

import pytest

from config.units import ConfigError, parse_duration_s, parse_size_bytes
from gateway.units import parse_function_config


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("2.5", 2.5),
        (7, 7.0),
        (" 3 s ", 3.0),
    ],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration_s(raw, "--timeout") == seconds


@pytest.mark.parametrize("raw", ["-1", "0", "0s", "3x", "", "1d", "2h", True, None, [1]])
def test_bad_durations_name_the_setting_and_value(raw: object) -> None:
    with pytest.raises(ConfigError, match=r"invalid --timeout .*expected a duration"):
        parse_duration_s(raw, "--timeout")


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("256Mi", 256 << 20),
        ("1Gi", 1 << 30),
        ("512M", 512_000_000),
        ("64Mi", 64 << 20),
        (128 << 20, 128 << 20),
        ("1.5Gi", 3 << 29),
    ],
)
def test_sizes(raw: object, size: int) -> None:
    assert parse_size_bytes(raw, "--memory") == size


@pytest.mark.parametrize("raw", ["3x", "1Mi", "100Gi", "-5Mi", "", "Mi", 1.5])
def test_bad_sizes(raw: object) -> None:
    with pytest.raises(ConfigError, match=r"invalid --memory .*expected a size like"):
        parse_size_bytes(raw, "--memory")


def test_function_config_defaults_and_values() -> None:
    assert parse_function_config({}).timeout_s == 30.0
    config = parse_function_config(
        {"timeout": "2m", "memory": "1Gi", "concurrency": "4", "env": {"A": "1"}, "entry": "main"}
    )
    assert (config.timeout_s, config.memory_bytes, config.concurrency) == (120, 1 << 30, 4)
    assert (dict(config.env), config.entry) == ({"A": "1"}, "main")


@pytest.mark.parametrize(
    ("body", "setting"),
    [
        ({"concurrency": 0}, "--concurrency"),
        ({"concurrency": "many"}, "--concurrency"),
        ({"env": {"A-B": "1"}}, "--env name"),
        ({"env": {"A": 1}}, "--env A"),
        ({"entry": "not valid"}, "handler"),
        ({"env": []}, "env"),
    ],
)
def test_function_config_errors(body: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_function_config(body)
    assert info.value.setting == setting


@pytest.mark.parametrize("timeout", ["5ms", "99ms", 0.05])
def test_a_function_timeout_below_100ms_is_refused(timeout: object) -> None:
    with pytest.raises(ConfigError, match="at least 100ms and at most 3600s"):
        parse_function_config({"timeout": timeout})
    assert parse_function_config({"timeout": "100ms"}).timeout_s == 0.1
