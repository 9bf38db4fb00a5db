"""The shared gRPC bootstrap, through a real server and channel."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
import structlog

from llmgw.kit.server import GrpcService, request_id, start_server
from llmgw.limiter.v1 import limiter_pb2, limiter_pb2_grpc
from llmgw.services.limiter.server import SERVICE_NAME

pytestmark = pytest.mark.integration


class _Ids(limiter_pb2_grpc.LimiterServicer):
    """Answers with the request id the servicer sees and the one its log lines are bound to."""

    async def Check(self, request: limiter_pb2.CheckRequest, context: grpc.aio.ServicerContext
                    ) -> limiter_pb2.CheckResponse:
        bound = structlog.contextvars.get_contextvars().get("request_id", "")
        context.set_trailing_metadata((("seen", request_id()), ("logged", bound)))
        return limiter_pb2.CheckResponse(allowed=True)


async def _ready() -> bool:
    return True


@pytest.mark.parametrize("given", ["", "trace-42"])
async def test_one_request_id_per_rpc_for_the_servicer_and_its_logs(given: str) -> None:
    running = await start_server(GrpcService("ids", [(_Ids(), limiter_pb2_grpc.add_LimiterServicer_to_server,
                                                      SERVICE_NAME)], _ready))
    channel = grpc.aio.insecure_channel(running.address)
    try:
        call = limiter_pb2_grpc.LimiterStub(channel).Check(
            limiter_pb2.CheckRequest(), metadata=(("x-request-id", given),) if given else ())
        await call
        ids = dict(await call.trailing_metadata())
        assert ids["seen"] == ids["logged"] and len(ids["seen"]) >= 8
        assert ids["seen"] == given or not given
    finally:
        await channel.close()
        await running.stop(0)


async def test_stop_returns_when_a_readiness_probe_swallows_the_cancel() -> None:
    """A probe built on a client library that catches CancelledError (and answers anyway) must not
    keep the health loop, and so stop(), alive: a CI run hung 300 s in a stack's teardown."""
    probing = asyncio.Event()

    async def swallowing() -> bool:
        probing.set()
        with contextlib.suppress(asyncio.CancelledError):  # what the library does: the cancel is gone
            await asyncio.sleep(0.3)
        return True

    running = await start_server(GrpcService("swallow", [(_Ids(), limiter_pb2_grpc.add_LimiterServicer_to_server,
                                                          SERVICE_NAME)], swallowing, probe_interval_s=0.2))
    await asyncio.sleep(0.5)
    probing.clear()
    await probing.wait()  # stop() lands while the probe runs
    stopping = asyncio.create_task(running.stop(grace=0.1))
    done, _ = await asyncio.wait({stopping}, timeout=10)
    assert done, "stop() still waiting for the health loop"
