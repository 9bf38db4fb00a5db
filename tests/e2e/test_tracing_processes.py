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
from tests.helpers import read_topic

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
