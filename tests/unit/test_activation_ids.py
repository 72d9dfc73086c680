from __future__ import annotations

import pickle
import uuid

from calls.activations import new_activation_id


def test_activation_ids_are_unique_uuid7_and_time_ordered() -> None:
    ids = [new_activation_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.version == 7 for i in ids)
    stamps = [i.int >> 80 for i in ids]
    assert stamps == sorted(stamps)


def test_activation_ids_are_whole_uuids() -> None:
    """Made without `UUID(int=)`'s checks, each is what parsing its text gives."""
    for made in (new_activation_id() for _ in range(100)):
        parsed = uuid.UUID(str(made))
        assert made == parsed
        assert hash(made) == hash(parsed)
        assert (made.int, made.bytes, made.is_safe) == (parsed.int, parsed.bytes, parsed.is_safe)
        assert made.variant == uuid.RFC_4122
        assert pickle.loads(pickle.dumps(made)) == made
