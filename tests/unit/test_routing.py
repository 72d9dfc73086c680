"""Rendezvous hashing of functions to home gateways (gateway/routing.py): every gateway agrees,
the load spreads, and a joining or leaving gateway moves only the functions it gains or loses."""

from __future__ import annotations

import uuid

import pytest

from config.units import ConfigError
from gateway.routing import Home, home_among
from gateway.settings import RoutingSettings, Settings

NAMES = [f"fn-{i}" for i in range(3000)]


def homes(n: int) -> list[Home]:
    return [Home(id=uuid.UUID(int=i + 1), name=f"gw-{i}", address="") for i in range(n)]


def test_every_gateway_computes_the_same_home_whatever_the_order() -> None:
    three = homes(3)
    for name in NAMES[:200]:
        assert home_among(three, name) == home_among(three[::-1], name)
    assert home_among([], "fn") is None


def test_functions_spread_over_the_homes() -> None:
    three = homes(3)
    counts = {h.name: 0 for h in three}
    for name in NAMES:
        home = home_among(three, name)
        assert home is not None
        counts[home.name] += 1
    assert all(800 <= c <= 1200 for c in counts.values()), counts  # 1000 each, give or take


def test_a_joining_gateway_takes_functions_only_from_others_to_itself() -> None:
    three, four = homes(3), homes(4)
    moved = [n for n in NAMES if home_among(three, n) != home_among(four, n)]
    assert all(home_among(four, n) == four[3] for n in moved)
    assert 550 <= len(moved) <= 950  # about a quarter


def test_a_leaving_gateway_gives_away_only_its_own_functions() -> None:
    three = homes(3)
    two = [three[0], three[2]]
    for name in NAMES:
        before = home_among(three, name)
        if before != three[1]:
            assert home_among(two, name) == before


def test_routing_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "FN_ROUTE_CALLS": "0",
            "EMBER_GATEWAY_URL": "http://10.0.0.7:8080/",
            "FN_ROUTE_REFRESH": "250ms",
            "FN_ROUTE_CONNECT_TIMEOUT": "2s",
        }
    ).routing
    assert settings == RoutingSettings(
        enabled=False,
        advertise_url="http://10.0.0.7:8080",
        refresh_s=0.25,
        connect_timeout_s=2.0,
    )
    assert Settings.from_env({}).routing == RoutingSettings()
    with pytest.raises(ConfigError, match="FN_ROUTE_REFRESH"):
        Settings.from_env({"FN_ROUTE_REFRESH": "0"})
