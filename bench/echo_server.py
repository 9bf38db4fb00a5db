"""A bare gRPC server built exactly like the limiter (same bootstrap, interceptors, contract) whose
Check answers at once without Redis: the baseline of bench/limiter.py. Run as its own process."""

from __future__ import annotations

import os

import grpc

from llmgw.kit.main import run
from llmgw.kit.server import GrpcService, serve_forever
from llmgw.limiter.v1 import limiter_pb2, limiter_pb2_grpc
from llmgw.services.limiter.server import SERVICE_NAME


class Echo(limiter_pb2_grpc.LimiterServicer):
    async def Check(self, request: limiter_pb2.CheckRequest, context: grpc.aio.ServicerContext
                    ) -> limiter_pb2.CheckResponse:
        return limiter_pb2.CheckResponse(allowed=True)


async def _ready() -> bool:
    return True


if __name__ == "__main__":
    service = GrpcService("echo", [(Echo(), limiter_pb2_grpc.add_LimiterServicer_to_server, SERVICE_NAME)], _ready)
    run(serve_forever(service, host="127.0.0.1", port=int(os.environ["PORT"]), metrics_port=0, grace=0.5))
