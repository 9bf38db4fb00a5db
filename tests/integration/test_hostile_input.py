"""Hostile input against the running stack: nothing hangs, nothing leaks, nothing jams the events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from llmgw.gateway.v1 import gateway_pb2
from llmgw.kit.embedded import start_tansu
from llmgw.kit.kafka import REQUESTS_TOPIC, RESPONSES_TOPIC, KafkaPublisher, ensure_topics
from llmgw.stack import Stack, start_stack
from tests.helpers import HIGH_LIMITS, Client, auth, read_topic
from tests.rawgrpc import raw_call

pytestmark = pytest.mark.integration


def _msg(text: str, **kw: object) -> gateway_pb2.CompleteRequest:
    return gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content=text)], **kw)  # type: ignore[arg-type]


@pytest.fixture
async def roomy(redis_url: str, topics_ready: str, tmp_path: Path) -> AsyncIterator[Stack]:
    limits = tmp_path / "limits.yaml"
    limits.write_text(HIGH_LIMITS)
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, limits_file=limits)
    yield s
    await s.stop()


@pytest.mark.parametrize("key", ["test-key", None])
async def test_an_oversized_request_is_refused_first_and_events_keep_flowing(
    roomy: Stack, topics_ready: str, key: str | None
) -> None:
    stack = roomy
    client = Client(stack.ingress.address)
    try:
        huge = _msg("poison", metadata={"note": "x" * (2 << 20)})  # a 2 MiB field
        huge.route = "r" * (1 << 20)  # and an oversized route, as the UNAUTHENTICATED event carried
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stub.Complete(huge, metadata=auth(key) if key else (), timeout=10)
        # Refused for its size before authentication: even without a key it is not UNAUTHENTICATED.
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "MAX_REQUEST_BYTES" in err.value.details()
        assert dict(err.value.trailing_metadata() or ()).get("x-invalid-field") == "request"
        run = uuid.uuid4().hex[:6]
        ids = []
        # The next 1 000 events (500 requests, each a request and a response event); with a valid
        # key the same path runs, so a tenth of that shows it.
        for i in range(0, 1000 if key is None else 100, 50):
            batch = await asyncio.gather(*(client.complete(_msg(f"after poison {run} {j}")) for j in range(i, i + 25)))
            ids += [r.request_id for r in batch]
        await stack.ingress.service.servicers[0][0]._core.drain()
    finally:
        await client.close()
    got = await read_topic(topics_ready, RESPONSES_TOPIC, ids, timeout_s=30)
    assert set(got) == set(ids)
    assert set(await read_topic(topics_ready, REQUESTS_TOPIC, ids, timeout_s=30)) == set(ids)


async def test_a_record_the_broker_refuses_is_rejected_once_and_holds_nothing_back(tmp_path: Path) -> None:
    broker = start_tansu()
    try:
        await ensure_topics(broker.address)
        publisher = KafkaPublisher(broker.address, spool_dir=tmp_path / "spool")
        await publisher.start()
        await asyncio.wait_for(publisher.connected.wait(), 30)
        before = REGISTRY.get_sample_value("llmgw_events_rejected_total",
                                           {"topic": REQUESTS_TOPIC, "reason": "MessageSizeTooLargeError"}) or 0
        publisher.publish(REQUESTS_TOPIC, "poison", b"x" * (2 << 20))  # over the producer's 1 MiB
        keys = [f"ok{i}-{uuid.uuid4().hex[:4]}" for i in range(200)]
        for k in keys:
            publisher.publish(REQUESTS_TOPIC, k, k.encode())
        assert await publisher.flush(timeout_s=20), "a poison record jammed the publisher"
        await publisher.stop()
        got = await read_topic(broker.address, REQUESTS_TOPIC, keys, timeout_s=20)
        assert set(got) == set(keys), "every good record arrives"
        assert not await read_topic(broker.address, REQUESTS_TOPIC, ["poison"], timeout_s=2), "the poison one never"
        after = REGISTRY.get_sample_value("llmgw_events_rejected_total",
                                          {"topic": REQUESTS_TOPIC, "reason": "MessageSizeTooLargeError"})
        assert after == before + 1, "rejected exactly once, not retried"
    finally:
        broker.stop()


@pytest.mark.parametrize("bad", [b"tab\there", b"nul\x00byte", "non-ascii-\u00e9".encode(), b"x" * 300])
async def test_a_bad_request_id_is_replaced_and_the_call_answered(stack: Stack, bad: bytes) -> None:
    # Sent over raw HTTP/2: the grpc client library refuses such values, a hostile client doesn't.
    body = _msg(f"bad id {bad[:3]!r}").SerializeToString()
    reply = await raw_call(stack.ingress.address, "/llmgw.gateway.v1.Gateway/Complete", body,
                           [(b"authorization", b"Bearer test-key"), (b"x-request-id", bad)])
    assert reply.status == 0, reply.message  # answered (before: no status at all, the call hung)
    answer = gateway_pb2.CompleteResponse.FromString(reply.messages[0])
    assert answer.text and answer.request_id and answer.request_id.encode() != bad
    assert reply.trailers.get(b"x-request-id") == answer.request_id.encode()
    assert reply.trailers.get(b"x-request-id-replaced") == b"invalid"  # the reply says so


async def test_a_good_request_id_is_kept(stack: Stack) -> None:
    client = Client(stack.ingress.address)
    try:
        reply = await client.stub.Complete(_msg("good id"), metadata=(*auth(), ("x-request-id", "trace-42.a:b")),
                                           timeout=10)
        assert reply.request_id == "trace-42.a:b"
    finally:
        await client.close()


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\x0f", b"garbage that is not protobuf"])
async def test_an_undecodable_body_is_invalid_argument_without_exception_text(stack: Stack, body: bytes) -> None:
    channel = grpc.aio.insecure_channel(stack.ingress.address)
    try:
        for method in ("Complete", "StreamComplete"):
            path = f"/llmgw.gateway.v1.Gateway/{method}"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                if method == "Complete":
                    await channel.unary_unary(path)(body, metadata=auth(), timeout=10)
                else:
                    async for _ in channel.unary_stream(path)(body, metadata=auth(), timeout=10):
                        pass
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.value.details())
            assert "Error" not in err.value.details() and "Traceback" not in err.value.details()
    finally:
        await channel.close()
