"""Small helpers for calling the gateway and reading topics in tests."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer

from llmgw.events import request_id_of
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc

KEY = "test-key"
# Limits no test of other things reaches: their load is the providers' or the broker's problem.
HIGH_LIMITS = "domains: {gateway: [{match: {tenant: '*'}, limits: [{name: rps, unit: requests, limit: 100000, per: second}]}]}"


def auth(key: str = KEY) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def prompt_request(text: str = "hello world", **kw: Any) -> gateway_pb2.CompleteRequest:
    return gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": text}, **kw)


class Client:
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)

    async def complete(self, req: gateway_pb2.CompleteRequest, key: str | None = KEY) -> Any:
        return await self.stub.Complete(req, metadata=auth(key) if key else (), timeout=10)

    async def stream(self, req: gateway_pb2.CompleteRequest, key: str = KEY) -> list[gateway_pb2.CompleteChunk]:
        return [c async for c in self.stub.StreamComplete(req, metadata=auth(key), timeout=10)]

    async def close(self) -> None:
        await self.channel.close()


async def read_topic(bootstrap: str, topic: str, want: Iterable[str], *, timeout_s: float = 20.0) -> dict[str, bytes]:
    """Read ``topic`` from the beginning until every key in ``want`` was seen; returns key -> value
    (a request event is found by its key and by its request id)."""
    wanted = set(want)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
    )
    await consumer.start()
    seen: dict[str, bytes] = {}
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not wanted <= set(seen) and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    if r.key is not None:
                        seen[r.key.decode()] = r.value
                        seen[request_id_of(topic, r.key, r.value)] = r.value
    finally:
        await consumer.stop()
    return {k: v for k, v in seen.items() if k in wanted}


def ungated_prompts(dst: Path) -> Path:
    """A copy of the shipped prompts without their eval approvals, for tests about label moves and
    serving new versions (eval gating has its own tests in tests/integration/test_evals.py)."""
    from llmgw.stack import REPO

    shutil.copytree(REPO / "prompts", dst)
    for approvals in dst.glob("*/approvals.yaml"):
        approvals.unlink()
    return dst


def semantic_replica(redis: Any, prefix: str, embedder: Any, **semantic: Any) -> Any:
    """A cache core with the semantic tier on for every request (near cache off: every lookup
    goes to Redis, as another replica's would). ``exact_ttl_s``: the exact tier's TTL."""
    from llmgw.kit.scripts import ScriptBatcher
    from llmgw.services.cache.core import RedisCache
    from llmgw.services.cache.policy import CachePolicy, Policy, SemanticPolicy
    from llmgw.services.cache.semantic.tier import SemanticTier

    exact_ttl_s = int(semantic.pop("exact_ttl_s", 3600))
    lock_ttl_s = float(semantic.pop("lock_ttl_s", 30.0))
    policy = CachePolicy(default=Policy(ttl_s=exact_ttl_s, semantic=SemanticPolicy(enabled=True, **semantic)))
    batcher = ScriptBatcher(redis)
    return RedisCache(redis, prefix=prefix, policy=policy, batcher=batcher, timeout_s=1.0, lock_ttl_s=lock_ttl_s,
                      semantic=SemanticTier(batcher, lambda: embedder, prefix=prefix))


class OtlpReceiver:
    """A real HTTP server standing in for an OpenTelemetry collector's OTLP/HTTP receiver: it
    keeps what each POST carried (headers, the body un-gzipped) and answers ``replies`` in turn,
    then 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.replies: list[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append((headers, body))
                self.send_response(receiver.replies.pop(0) if receiver.replies else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def spans(self) -> list[tuple[str, Any]]:
        """(service.name, span) for every span received, decoded with the official OTLP classes."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for headers, body in list(self.received):
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                service = next(kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name")
                out += [(service, span) for ss in rs.scope_spans for span in ss.spans]
        return out


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
        receiver._server.server_close()
