"""The event publisher's partitioner: same key, same partition; keys spread over all partitions."""

from __future__ import annotations

import uuid

from llmgw.kit.kafka import by_key


def test_a_key_always_lands_on_the_same_partition_and_keys_spread() -> None:
    parts = [0, 1, 2]
    keys = [uuid.uuid4().hex.encode() for _ in range(300)]
    placed = [by_key(k, parts, parts) for k in keys]
    assert placed == [by_key(k, parts, parts) for k in keys]
    # Placement depends on the key only, not on which partitions are available right now.
    assert placed == [by_key(k, parts, [0]) for k in keys]
    assert {placed.count(p) for p in parts} <= set(range(60, 141))  # roughly a third each


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert {by_key(None, [0, 1, 2], [1]) for _ in range(20)} == {1}
