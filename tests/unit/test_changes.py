"""Change notifications: JSON payloads with a kind, and the text payloads of earlier releases."""

from __future__ import annotations

import pytest

from store.changes import (
    ChangeFeed,
    FunctionChanged,
    PolicyChanged,
    TriggersChanged,
    TrustChanged,
    parse_change,
)


@pytest.mark.parametrize(
    ("payload", "change"),
    [
        ('{"kind": "function", "function": "a:b", "version": 3}', FunctionChanged("a:b", 3)),
        ('{"kind": "function", "function": "gone", "version": 0}', FunctionChanged("gone", 0)),
        ('{"kind": "policy", "function": "resize"}', PolicyChanged("resize")),
        ('{"kind": "triggers", "trigger_kind": "schedule"}', TriggersChanged("schedule")),
        ('{"kind": "trust"}', TrustChanged()),
        # Gateways of earlier releases, during an upgrade:
        ("resize:3", FunctionChanged("resize", 3)),
        ("policy:resize", PolicyChanged("resize")),
        ("triggers:table", TriggersChanged("table")),
    ],
)
def test_payloads_parse_to_typed_changes(payload: str, change: object) -> None:
    assert parse_change(payload) == change


@pytest.mark.parametrize(
    "payload",
    [
        '{"kind": "restart"}',
        '{"kind": "function", "function": "f"}',
        '{"kind": "function", "function": "f", "version": "three"}',
        "{not json",
        "resize:three",
    ],
)
def test_anything_else_is_refused_with_the_payload_named(payload: str) -> None:
    with pytest.raises(ValueError, match="change"):
        parse_change(payload)


def test_the_feed_passes_a_change_on_once_when_its_text_twin_follows() -> None:
    feed = ChangeFeed()
    json_payload = '{"kind": "function", "function": "f", "version": 2}'
    assert feed.feed(100, json_payload) == FunctionChanged("f", 2)
    assert feed.feed(100, "f:2") is None  # the same sender's twin, for older gateways
    assert feed.feed(200, "f:2") == FunctionChanged("f", 2)  # an older gateway's own change
    assert feed.feed(200, "f:2") is None  # the same state again: no news (changes are states)
    assert feed.feed(100, '{"kind": "policy", "function": "f"}') == PolicyChanged("f")
    assert feed.feed(100, "f:2") == FunctionChanged("f", 2)  # not the twin of the policy


def test_a_trust_change_twice_in_a_row_is_news() -> None:
    """Trusting, then untrusting: two changes of the same kind from one sender, both acted on
    (each reloads the list)."""
    feed = ChangeFeed()
    assert feed.feed(1, '{"kind": "trust"}') == TrustChanged()
    assert feed.feed(1, '{"kind": "trust"}') == TrustChanged()
