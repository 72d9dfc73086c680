from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config.env import Env, SettingsError
from config.units import ConfigError
from gateway.settings import Settings
from scheduler.policy import DEFAULT_KEEP_ALIVE_S, FixedKeepAlive, FunctionPolicy, parse_policy
from scheduler.service import ServiceSettings


def test_an_empty_environment_gives_the_dataclass_defaults() -> None:
    read = Settings.from_env({"FN_STATE_DIR": "/state", "EMBER_GATEWAY_ID": "gw"})
    assert read == dataclasses.replace(Settings(), state_dir=Path("/state"), gateway_id="gw")


def test_the_keep_alive_default_is_written_once() -> None:
    assert Settings.from_env({}).pool.keep_alive_s == DEFAULT_KEEP_ALIVE_S
    assert FunctionPolicy().keep_alive_s == DEFAULT_KEEP_ALIVE_S
    policy = parse_policy("fixed")
    assert isinstance(policy, FixedKeepAlive)
    assert policy.keep_alive_s == DEFAULT_KEEP_ALIVE_S


def test_the_scheduler_process_reads_its_defaults_from_its_dataclass() -> None:
    settings = ServiceSettings.from_env(
        {"DATABASE_URL": "postgresql://x\n", "FN_SCHEDULER_TOKEN": "t"}
    )
    assert (settings.host, settings.port, settings.orphan_grace_s) == ("127.0.0.1", 8081, 60.0)
    assert (settings.database_url, settings.advertise) == (
        "postgresql://x",
        "http://127.0.0.1:8081",
    )


@pytest.mark.parametrize(
    ("env", "error", "message"),
    [
        (
            {"FN_KEEP_ALIVE": "soon"},
            ConfigError,
            'invalid FN_KEEP_ALIVE "soon": expected a duration',
        ),
        ({"FN_INSTANCE_PIDS": "2"}, ConfigError, "a whole number from 8 to 1000000"),
        ({"EMBER_BACKEND": "nomad"}, ConfigError, 'invalid EMBER_BACKEND "nomad"'),
        ({"FN_RETENTION": "a week"}, ConfigError, 'invalid FN_RETENTION "a week"'),
        ({"FN_RETENTION_ROWS": "0"}, SettingsError, "FN_RETENTION_ROWS='0': expected at least 1"),
        ({"FN_RETENTION_BATCH": "0"}, ConfigError, "a whole number from 1 to 1000000"),
    ],
)
def test_bad_gateway_settings_name_the_variable(
    env: dict[str, str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Settings.from_env(env)


def test_bad_scheduler_settings_name_the_variable() -> None:
    env = {"DATABASE_URL": "postgresql://x", "FN_SCHEDULER_TOKEN": "t"}
    with pytest.raises(SettingsError, match="EMBER_SCHEDULER_PORT='x': expected a whole number"):
        ServiceSettings.from_env({**env, "EMBER_SCHEDULER_PORT": "x"})
    with pytest.raises(SettingsError, match="EMBER_ORPHAN_GRACE='0': expected at least 1"):
        ServiceSettings.from_env({**env, "EMBER_ORPHAN_GRACE": "0"})
    assert Env({"A": "no"}).flag("A", True) is False


def test_retention_settings_are_read_with_their_units() -> None:
    retention = Settings.from_env(
        {
            "FN_RETENTION": "3d",
            "FN_RETENTION_ROWS": "50000",
            "FN_RETENTION_BATCH": "1000",
            "FN_RETENTION_PAUSE": "20ms",
            "FN_RETENTION_EVERY": "1m",
        }
    ).retention
    assert (retention.age_s, retention.max_rows, retention.batch_rows) == (3 * 86400, 50000, 1000)
    assert (retention.pause_s, retention.every_s) == (0.02, 60)


def test_the_http_limits_are_read_from_their_variables() -> None:
    http = Settings.from_env(
        {
            "FN_HEADER_TIMEOUT": "2s",
            "FN_BODY_TIMEOUT": "1m",
            "FN_IDLE_TIMEOUT": "500ms",
            "FN_MAX_CONNECTIONS": "300",
        }
    ).http
    assert (http.header_timeout_s, http.body_timeout_s, http.idle_timeout_s) == (2.0, 60.0, 0.5)
    assert http.max_connections == 300
    with pytest.raises(ConfigError, match="FN_MAX_CONNECTIONS"):
        Settings.from_env({"FN_MAX_CONNECTIONS": "0"})


def test_reuse_port_is_off_unless_asked() -> None:
    assert Settings.from_env({}).reuse_port is False
    assert Settings.from_env({"FN_REUSE_PORT": "1"}).reuse_port is True
    assert Settings.from_env({"FN_REUSE_PORT": "0"}).reuse_port is False


def test_templates_are_on_by_default_with_a_bound_and_a_slow_import_rule() -> None:
    default = Settings.from_env({})
    assert default.templates
    assert (default.max_templates, default.pool.template_slow_import_s) == (32, 0.03)
    read = Settings.from_env(
        {"FN_TEMPLATES": "0", "FN_TEMPLATE_MAX": "4", "FN_TEMPLATE_SLOW_IMPORT": "100ms"}
    )
    assert not read.templates
    assert (read.max_templates, read.pool.template_slow_import_s) == (4, 0.1)
    with pytest.raises(ConfigError):
        Settings.from_env({"FN_TEMPLATE_MAX": "-1"})


def test_the_dashboard_has_a_port_of_its_own_and_fewer_connections() -> None:
    settings = Settings.from_env({})
    assert (settings.port, settings.dashboard_bind_port()) == (8080, 8081)
    assert Settings.from_env({"FN_PORT": "0"}).dashboard_bind_port() == 0  # any free one
    chosen = Settings.from_env({"FN_PORT": "9000", "FN_DASHBOARD_PORT": "9443"})
    assert chosen.dashboard_bind_port() == 9443
    with pytest.raises(ConfigError, match="FN_DASHBOARD_PORT"):
        Settings.from_env({"FN_DASHBOARD_PORT": "http"})
    assert settings.dashboard_http().max_connections == 256
    assert settings.dashboard_http().header_timeout_s == settings.http.header_timeout_s
