"""Client side of grpc.health.v1: is a peer SERVING?"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["peer_serving"]


async def peer_serving(channel: grpc.aio.Channel, service: str = "", *, timeout_s: float = 1.0) -> bool:
    try:
        resp = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
    except grpc.aio.AioRpcError:
        return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING
