"""The shared gRPC bootstrap, through a real server and channel."""

from __future__ import annotations

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
