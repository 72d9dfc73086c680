from __future__ import annotations

from calls.activations import new_activation_id


def test_activation_ids_are_unique_uuid7_and_time_ordered() -> None:
    ids = [new_activation_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.version == 7 for i in ids)
    stamps = [i.int >> 80 for i in ids]
    assert stamps == sorted(stamps)
