"""``llmgw events tail|replay``: the analyst's view of the event topics."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from google.protobuf.json_format import MessageToDict

from llmgw.events.v1 import events_pb2
from llmgw.kit.kafka import REQUESTS_TOPIC, RESPONSES_TOPIC, by_key, ensure_topics

__all__ = ["add_parser", "decode", "offset_ranges", "records", "when_ms", "window"]

_PROTO: dict[str, Any] = {REQUESTS_TOPIC: events_pb2.RequestEvent, RESPONSES_TOPIC: events_pb2.ResponseEvent}


def decode(topic: str, value: bytes) -> dict[str, Any]:
    """A record as JSON: protobuf topics through their message type, JSON topics as they are."""
    msg = _PROTO.get(topic)
    if msg is not None:
        return MessageToDict(msg.FromString(value), preserving_proto_field_name=True)
    return dict(json.loads(value))


def _matches(event: dict[str, Any], args: argparse.Namespace) -> bool:
    return all(
        want is None or str(event.get(field, "")) == want
        for field, want in (("tenant", args.tenant), ("prompt", args.prompt), ("status", args.status))
    )


def when_ms(text: str) -> int:
    """Unix seconds or ISO 8601 -> milliseconds."""
    try:
        return int(float(text) * 1000)
    except ValueError:
        return int(datetime.fromisoformat(text).timestamp() * 1000)


async def records(bootstrap: str, topic: str, *, from_beginning: bool, timeout_s: float = 0,
                  ) -> AsyncIterator[dict[str, Any]]:
    """Decoded records of ``topic`` as they arrive (until ``timeout_s`` if set)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                group_id=f"llmgw-tail-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s if timeout_s else None
        while deadline is None or loop.time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for r in batch:
                    yield decode(topic, r.value)
    finally:
        await consumer.stop()


async def _tail(args: argparse.Namespace) -> int:
    shown = 0
    async for event in records(args.bootstrap, args.topic, from_beginning=args.from_beginning,
                               timeout_s=args.timeout):
        if _matches(event, args):
            print(json.dumps(event, sort_keys=True), flush=True)
            shown += 1
            if args.max and shown >= args.max:
                break
    return 0


async def window(bootstrap: str, topic: str, start_ms: int, end_ms: int) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """The records of ``topic`` stamped from ``start_ms`` to ``end_ms``, partition by partition, up to
    the end of the topic when the read began (a bounded read, never a tail). No consumer group."""
    async for r in _bounded(bootstrap, topic, lambda c, parts: _starts_at(c, parts, start_ms),
                            lambda r: r.timestamp > end_ms):
        yield r


async def offset_ranges(bootstrap: str, topic: str,
                        ranges: Mapping[int, tuple[int, int]]) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """The records of ``topic`` at partition -> [first, last] offsets (e.g. a drift window's)."""
    async def starts(consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: ranges[tp.partition][0] for tp in parts if tp.partition in ranges}

    async for r in _bounded(bootstrap, topic, starts, lambda r: r.offset > ranges[r.partition][1]):
        yield r


async def _starts_at(consumer: AIOKafkaConsumer, parts: list[TopicPartition], ms: int) -> dict[TopicPartition, int]:
    found = await consumer.offsets_for_times({tp: ms for tp in parts})
    return {tp: f.offset for tp, f in found.items() if f is not None}


async def _bounded(
    bootstrap: str, topic: str,
    starts: Callable[[AIOKafkaConsumer, list[TopicPartition]], Awaitable[dict[TopicPartition, int]]],
    past: Callable[[ConsumerRecord[Any, Any]], bool],
) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Each partition from its start until ``past`` a record or the end the topic had when the
    read began. No consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # a metadata fetch (public), so the topic's partitions are known
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        begin = await starts(consumer, parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            if tp not in begin:
                continue
            consumer.seek(tp, begin[tp])
            done = False
            while not done and (await consumer.position(tp)) < ends[tp]:
                for batch in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    for r in batch:
                        if past(r):
                            done = True
                            break
                        yield r
    finally:
        await consumer.stop()


async def _replay(args: argparse.Namespace) -> int:
    start_ms, end_ms = when_ms(args.start), when_ms(args.end)
    await ensure_topics(args.bootstrap, {args.to_topic: 3})
    # Placed as the ingress's publisher places them (same key, same partition number).
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", partitioner=by_key)
    await producer.start()
    sent = 0
    try:
        async for r in window(args.bootstrap, args.topic, start_ms, end_ms):
            await producer.send(args.to_topic, value=r.value, key=r.key)
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    print(f"replayed {sent} events from {args.topic} [{args.start} .. {args.end}] to {args.to_topic}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    events = sub.add_parser("events", help="the event topics").add_subparsers(dest="sub", required=True)
    tail = events.add_parser("tail", help="print events as JSON lines, filtered")
    tail.add_argument("--bootstrap", required=True)
    tail.add_argument("--topic", default=RESPONSES_TOPIC)
    tail.add_argument("--tenant")
    tail.add_argument("--prompt")
    tail.add_argument("--status", help="e.g. OK, RESOURCE_EXHAUSTED (llm.responses)")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=0, help="stop after this many events")
    tail.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    tail.set_defaults(func=lambda a: asyncio.run(_tail(a)))
    replay = events.add_parser("replay", help="re-feed a time window of a topic to another topic")
    replay.add_argument("--bootstrap", required=True)
    replay.add_argument("--topic", default=REQUESTS_TOPIC)
    replay.add_argument("--from", dest="start", required=True, help="unix seconds or ISO 8601")
    replay.add_argument("--to", dest="end", required=True, help="unix seconds or ISO 8601")
    replay.add_argument("--to-topic", required=True, help="e.g. llm.requests.replay for a drift or eval run")
    replay.set_defaults(func=lambda a: asyncio.run(_replay(a)))
