"""Traces across processes, as ``llmgw up --otel`` runs them: the caller's W3C traceparent enters
at the ingress, travels in gRPC metadata to every service's own process, and the one trace id is
in each service's exported spans, in the log lines written inside the request, and in the events."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import grpc
import pytest

from llmgw.demo import DEMO_KEY
from llmgw.events.v1 import events_pb2
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.kit.embedded import free_port
from llmgw.up import start_system
from tests.helpers import otlp_receiver, read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def _log_lines(path: Path, trace_id: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("trace_id") == trace_id]


async def test_one_trace_id_in_every_service_its_logs_and_events(tmp_path: Path) -> None:
    system = await start_system(tmp_path, ingress_port=free_port(), with_drift=False, otel="file")
    stopped = False
    try:
        assert system.fake_url
        async with aiohttp.ClientSession() as http:  # one failure: the router retries and logs it
            await http.post(f"{system.fake_url}/_control/openai", json={"fail_next": 1, "status": 503})
        async with grpc.aio.insecure_channel(system.ingress_addr) as channel:
            call = gateway_pb2_grpc.GatewayStub(channel).Complete(
                gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="traced")]),
                metadata=(("authorization", f"Bearer {DEMO_KEY}"), ("x-request-id", "not a valid id!"),
                          ("traceparent", f"00-{TRACE_ID}-b7ad6b7169203331-01")), timeout=30)
            reply = await call
        assert reply.provider == "openai" and [a.status for a in reply.attempts] == ["error", "ok"]
        rid = reply.request_id
        events = await read_topic(system.kafka, "llm.responses", [rid])
        assert events_pb2.ResponseEvent.FromString(events[rid]).trace_id == TRACE_ID
        system.stop()  # SIGTERM: each service exports what it queued before it exits
        stopped = True
        for service in ("ingress", "limiter", "cache", "router"):
            spans = [json.loads(line) for line in (tmp_path / "traces" / f"{service}.jsonl").read_text().splitlines()]
            mine = [s for s in spans if s["context"]["trace_id"] == f"0x{TRACE_ID}"]
            assert mine, service
            assert all(s["resource"]["attributes"]["service.name"] == f"llmgw-{service}" for s in mine)
        assert _log_lines(tmp_path / "logs" / "ingress.log", TRACE_ID)[0]["event"] == "request_id_replaced"
        assert any(line["event"] == "provider_failed" for line in _log_lines(tmp_path / "logs" / "router.log", TRACE_ID))
    finally:
        if not stopped:
            system.stop()


async def test_every_service_exports_one_connected_trace_to_an_otlp_collector(tmp_path: Path) -> None:
    """The production path: each service's spans over OTLP/HTTP (protobuf) to a collector, decoded
    here with the official OTLP classes: one trace, one tree, each hop's server span a remote child."""
    with otlp_receiver() as collector:
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
        system = await start_system(tmp_path, ingress_port=free_port(), with_drift=False,
                                    extra_env={name: otlp for name in ("ingress", "limiter", "cache", "router")})
        try:
            assert system.fake_url
            async with aiohttp.ClientSession() as http:  # one failed attempt, then the retry answers
                await http.post(f"{system.fake_url}/_control/openai", json={"fail_next": 1, "status": 503})
            async with grpc.aio.insecure_channel(system.ingress_addr) as channel:
                reply = await gateway_pb2_grpc.GatewayStub(channel).Complete(
                    gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="over otlp")]),
                    metadata=(("authorization", f"Bearer {DEMO_KEY}"),
                              ("traceparent", f"00-{TRACE_ID}-b7ad6b7169203331-01")), timeout=30)
            assert [a.status for a in reply.attempts] == ["error", "ok"]
        finally:
            system.stop()  # SIGTERM: each service exports what it queued before it exits
        mine = [(svc, s) for svc, s in collector.spans() if s.trace_id.hex() == TRACE_ID]
    by_id = {s.span_id: (svc, s) for svc, s in mine}
    assert {svc for svc, _ in mine} == {"llmgw-ingress", "llmgw-limiter", "llmgw-cache", "llmgw-router"}
    caller = bytes.fromhex("b7ad6b7169203331")
    for svc, s in mine:  # one tree: every parent is the caller's span or a span of this trace
        assert s.parent_span_id == caller or s.parent_span_id in by_id, (svc, s.name)
        assert s.end_time_unix_nano >= s.start_time_unix_nano > 0
    (root,) = [s for _, s in mine if s.parent_span_id == caller]
    assert root.name == "llmgw.gateway.v1.Gateway/Complete" and root.kind == root.SPAN_KIND_SERVER
    assert root.flags == 0x300  # its parent is remote (the caller)
    for svc in ("llmgw-limiter", "llmgw-cache", "llmgw-router"):
        # Each hop: server spans under another process's span (the limiter also under the router's
        # provider shaping), at least one called by the ingress.
        server = [s for v, s in mine if v == svc and s.kind == s.SPAN_KIND_SERVER]
        callers = {by_id[s.parent_span_id][0] for s in server}
        assert "llmgw-ingress" in callers and svc not in callers, (svc, callers)
        assert all(s.flags == 0x300 for s in server), svc
    attempts = [s for v, s in mine if v == "llmgw-router" and s.name.startswith("chat ")]
    assert [s.status.code for s in sorted(attempts, key=lambda s: s.start_time_unix_nano)] == [2, 0]  # ERROR, UNSET
