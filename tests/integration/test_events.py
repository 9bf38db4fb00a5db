"""Events: redaction, and nothing lost while the broker is away (spool to disk, replay)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from llmgw.events.v1 import events_pb2
from llmgw.gateway.v1 import gateway_pb2
from llmgw.kit.embedded import free_port, start_tansu
from llmgw.kit.kafka import ensure_topics
from llmgw.stack import Stack, start_stack
from tests.helpers import HIGH_LIMITS, Client, read_topic

pytestmark = pytest.mark.integration

OUTAGE_S = float(os.environ.get("LLMGW_BROKER_OUTAGE_S", "30"))


def _req(text: str) -> gateway_pb2.CompleteRequest:
    return gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": text},
                                       cache_mode=gateway_pb2.CompleteRequest.BYPASS)


async def _stack(redis_url: str, bootstrap: str, tmp_path: Path, **ingress: object) -> Stack:
    limits = tmp_path / "limits.yaml"
    limits.write_text(HIGH_LIMITS)
    return await start_stack(redis_url=redis_url, kafka_bootstrap=bootstrap, limits_file=limits,
                             ingress_overrides=ingress)


def _publisher(stack: Stack):  # type: ignore[no-untyped-def]
    return stack.ingress.service.servicers[0][0]._core._events


async def test_events_are_redacted_and_raw_input_can_stay_out(
    redis_url: str, topics_ready: str, tmp_path: Path
) -> None:
    policy = tmp_path / "redaction.yaml"
    policy.write_text("tenants:\n  globex: {raw_input: false}\n")
    stack = await _stack(redis_url, topics_ready, tmp_path, redaction_file=policy)
    client = Client(stack.ingress.address)
    try:
        secret = "my key is sk-proj-abcdefghijklmnopqrstu, mail me at jane@example.com"
        a = await client.complete(_req(secret))
        b = await client.complete(_req(secret), key="other-key")  # tenant globex
        events = await read_topic(topics_ready, "llm.requests", {a.request_id, b.request_id})
        responses = await read_topic(topics_ready, "llm.responses", {a.request_id})
    finally:
        await client.close()
        await stack.stop()
    ev_a = events_pb2.RequestEvent.FromString(events[a.request_id])
    assert "abcdefghijklmnopqrstu" not in ev_a.variables["text"] and "jane@example.com" not in ev_a.variables["text"]
    assert "[SECRET]" in ev_a.variables["text"] and "[EMAIL]" in ev_a.variables["text"]
    out = events_pb2.ResponseEvent.FromString(responses[a.request_id])
    assert "abcdefghijklmnopqrstu" not in out.text
    ev_b = events_pb2.RequestEvent.FromString(events[b.request_id])
    assert not ev_b.variables and len(ev_b.input_sha256) == 64
    assert ev_b.input_text.startswith("text: my key is [SECRET]")


async def test_broker_never_started_serves_spools_then_delivers(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    stack = await _stack(redis_url, f"127.0.0.1:{port}", tmp_path, event_queue_size=5,
                         spool_dir=tmp_path / "spool")
    client = Client(stack.ingress.address)
    broker = None
    try:
        ids = [(await client.complete(_req(f"no broker {i}"))).request_id for i in range(20)]
        await asyncio.sleep(0.3)
        publisher = _publisher(stack)
        assert publisher.spooling and any((tmp_path / "spool").iterdir())
        broker = start_tansu(port)
        await ensure_topics(broker.address)
        assert await publisher.flush(timeout_s=30)
        requests = await read_topic(broker.address, "llm.requests", set(ids))
        responses = await read_topic(broker.address, "llm.responses", set(ids))
        assert set(requests) == set(ids) and set(responses) == set(ids)
    finally:
        await client.close()
        await stack.stop()
        if broker is not None:
            broker.stop()


@pytest.mark.slow
async def test_broker_unreachable_under_steady_load_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    """The broker process is frozen (SIGSTOP: connections hang, the nastiest kind of outage) for
    OUTAGE_S seconds under steady load, then resumes with its data: every request succeeds and
    every event arrives (at least once; exactly once per request id after de-duplication)."""
    broker = start_tansu()
    await ensure_topics(broker.address)
    stack = await _stack(redis_url, broker.address, tmp_path, event_queue_size=20, spool_dir=tmp_path / "spool")
    client = Client(stack.ingress.address)
    ids: list[str] = []
    errors: list[Exception] = []
    stop = asyncio.Event()

    async def load(w: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                ids.append((await client.complete(_req(f"w{w} n{i}"))).request_id)
            except Exception as exc:  # any failure is a test failure, collected
                errors.append(exc)
            await asyncio.sleep(0.05)

    try:
        workers = [asyncio.create_task(load(w)) for w in range(3)]
        await asyncio.sleep(1.0)
        os.kill(broker.popen.pid, signal.SIGSTOP)
        await asyncio.sleep(OUTAGE_S)
        publisher = _publisher(stack)
        spooled_during_outage = publisher.spooling
        os.kill(broker.popen.pid, signal.SIGCONT)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*workers)
        assert await publisher.flush(timeout_s=60), "the spool drains once the broker is back"
        requests = await read_topic(broker.address, "llm.requests", set(ids), timeout_s=60)
        responses = await read_topic(broker.address, "llm.responses", set(ids), timeout_s=60)
    finally:
        stop.set()
        await client.close()
        await stack.stop()
        os.kill(broker.popen.pid, signal.SIGCONT)
        broker.stop()
    assert errors == []
    assert spooled_during_outage
    assert len(ids) > 50
    assert set(requests) == set(ids) and set(responses) == set(ids)
    assert not any((tmp_path / "spool").iterdir()) or all(p.stat().st_size == 0 for p in (tmp_path / "spool").iterdir())


async def test_events_left_at_stop_are_spooled_oldest_first_and_sent_by_the_next_start(tmp_path: Path) -> None:
    from llmgw.kit.kafka import KafkaPublisher
    from llmgw.kit.spool import Spool

    port = free_port()
    spool_dir = tmp_path / "spool"
    first = KafkaPublisher(f"127.0.0.1:{port}", queue_size=3, spool_dir=spool_dir)  # no broker yet
    await first.start()
    keys = [f"e{i}" for i in range(10)]
    for k in keys:  # 3 wait in the queue, the 7 newer ones go to the spool
        first.publish("llm.requests", k, k.encode())
    await asyncio.sleep(0.3)
    await first.stop(timeout_s=0.5)
    assert [r[1].decode() for r in Spool(spool_dir, max_bytes=1 << 20).take()] == keys  # nothing lost, in order
    broker = start_tansu(port)
    try:
        await ensure_topics(broker.address)
        second = KafkaPublisher(broker.address, spool_dir=spool_dir)
        await second.start()
        assert await second.flush(timeout_s=30)
        await second.stop()
        assert set(await read_topic(broker.address, "llm.requests", set(keys))) == set(keys)
    finally:
        broker.stop()


async def test_a_stop_right_after_publishing_delivers_what_the_sender_had_taken(tmp_path: Path) -> None:
    """The queue empties the moment the sender takes a batch, before the broker has it: a stop then
    must wait for that batch too, not spool it (the ingress publishes its last events at stop)."""
    from llmgw.kit.kafka import KafkaPublisher
    from llmgw.kit.spool import Spool

    broker = start_tansu()
    try:
        await ensure_topics(broker.address)
        publisher = KafkaPublisher(broker.address, spool_dir=tmp_path / "spool")
        await publisher.start()
        await asyncio.wait_for(publisher.connected.wait(), 30)
        keys = [f"last{i}" for i in range(5)]
        for k in keys:
            publisher.publish("llm.requests", k, k.encode())
        await asyncio.sleep(0)  # the sender takes them: the queue is empty, the broker has nothing yet
        await publisher.stop()
        assert Spool(tmp_path / "spool", max_bytes=1 << 20).empty()
        assert set(await read_topic(broker.address, "llm.requests", set(keys))) == set(keys)
    finally:
        broker.stop()


async def test_a_broker_hang_puts_every_event_on_disk_within_the_write_ahead_bound(tmp_path: Path) -> None:
    """While the broker hangs, the producer's batches fill: handing it one more record then waits
    for a batch the broker never takes (aiokafka blocks ``send`` up to its request timeout). The
    write-ahead bound must hold through that wait too, or a crash in it loses every event held in
    memory (a CI run lost 100 of 100 answered requests this way: SIGKILL 1 s into a hang)."""
    import shutil

    from llmgw.kit.kafka import KafkaPublisher
    from llmgw.kit.spool import Spool

    broker = start_tansu()
    spool_dir = tmp_path / "spool"
    publisher = None
    try:
        await ensure_topics(broker.address, {"llm.requests": 1})
        publisher = KafkaPublisher(broker.address, spool_dir=spool_dir, request_timeout_ms=30_000, ack_timeout_s=0.15)
        await publisher.start()
        publisher.publish("llm.requests", "warm", b"warm")
        assert await publisher.flush(timeout_s=30)
        os.kill(broker.popen.pid, signal.SIGSTOP)
        keys = [f"hang{i}" for i in range(40)]
        for k in keys:  # one burst, 6 KB each: two fill a 16 KB producer batch
            publisher.publish("llm.requests", k, k.encode() * (6000 // len(k)))
        await asyncio.sleep(1.0)
        crash_image = tmp_path / "crash"  # what a SIGKILL now would leave on disk
        shutil.copytree(spool_dir, crash_image, ignore=shutil.ignore_patterns(".lock"))
        on_disk = [r[1].decode() for r in Spool(crash_image, max_bytes=1 << 30).take()]
        assert set(keys) <= set(on_disk), f"{len(set(keys) - set(on_disk))} of {len(keys)} events only in memory"
    finally:
        os.kill(broker.popen.pid, signal.SIGCONT)
        if publisher is not None:
            await publisher.stop(timeout_s=1.0)
        broker.stop()


async def test_an_event_spooled_as_a_replay_ends_is_replayed_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event handed to the disk writer while the sender finishes a replay must keep the
    publisher spooling until it too is replayed; a CI run lost two events when the sender saw
    nothing left (the writer had taken the event, not yet written it) and stopped spooling. The
    replay's last step is slowed here so the event reliably arrives inside that window."""
    import threading
    import time

    from llmgw.kit.kafka import KafkaPublisher
    from llmgw.kit.spool import Spool

    spool_dir = tmp_path / "spool"
    Spool(spool_dir, max_bytes=1 << 20).append([("llm.requests", b"old", b"old")])
    finishing = threading.Event()
    real_done = Spool.done

    def slow_done(self: Spool) -> None:
        if not finishing.is_set():
            finishing.set()
            time.sleep(0.4)
        real_done(self)

    monkeypatch.setattr(Spool, "done", slow_done)
    broker = start_tansu()
    publisher = None
    try:
        await ensure_topics(broker.address)
        publisher = KafkaPublisher(broker.address, spool_dir=spool_dir)
        assert publisher.spooling  # a spool left from before: replayed first
        await publisher.start()
        while not finishing.is_set():
            await asyncio.sleep(0.01)
        publisher.publish("llm.requests", "late", b"late")
        assert await publisher.flush(timeout_s=30)
        assert Spool(spool_dir, max_bytes=1 << 20).empty(), "an event was left on disk with no replay to come"
        assert set(await read_topic(broker.address, "llm.requests", {"old", "late"})) == {"old", "late"}
    finally:
        if publisher is not None:
            await publisher.stop(timeout_s=1.0)
        broker.stop()
