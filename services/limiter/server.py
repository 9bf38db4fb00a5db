"""gRPC adapter for the limiter: proto -> core -> proto, nothing else."""

from __future__ import annotations

import grpc

from llmgw.domain import Decision, LimitStatus
from llmgw.kit.client import GrpcClient, translate_rpc_errors
from llmgw.kit.errors import InvalidArgument
from llmgw.limiter.v1 import limiter_pb2, limiter_pb2_grpc
from llmgw.ports import Descriptor, LimiterPort

__all__ = ["SERVICE_NAME", "LimiterClient", "LimiterServicer"]

SERVICE_NAME = limiter_pb2.DESCRIPTOR.services_by_name["Limiter"].full_name


def _decision_to_pb(d: Decision) -> limiter_pb2.CheckResponse:
    return limiter_pb2.CheckResponse(
        allowed=d.allowed,
        retry_after_ms=d.retry_after_ms,
        limit_name=d.limit_name,
        reservation_id=d.reservation_id,
        statuses=[
            limiter_pb2.LimitStatus(
                name=s.name, unit=s.unit, limit=s.limit, remaining=s.remaining,
                reset_after_ms=s.reset_after_ms, shadow=s.shadow,
            )
            for s in d.statuses
        ],
    )


def _decision_from_pb(pb: limiter_pb2.CheckResponse) -> Decision:
    return Decision(
        allowed=pb.allowed,
        retry_after_ms=pb.retry_after_ms,
        limit_name=pb.limit_name,
        reservation_id=pb.reservation_id,
        statuses=tuple(
            LimitStatus(s.name, s.unit, s.limit, s.remaining, s.reset_after_ms, s.shadow) for s in pb.statuses
        ),
    )


class LimiterServicer(limiter_pb2_grpc.LimiterServicer):
    def __init__(self, core: LimiterPort) -> None:
        self._core = core

    async def Check(
        self, request: limiter_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> limiter_pb2.CheckResponse:
        decision = await self._core.check(
            [(e.key, e.value) for e in request.descriptor],
            requests=request.requests,
            tokens=request.tokens,
            request_id=request.request_id,
            domain=request.domain or "gateway",
        )
        return _decision_to_pb(decision)

    async def Settle(
        self, request: limiter_pb2.SettleRequest, context: grpc.aio.ServicerContext
    ) -> limiter_pb2.SettleResponse:
        refunded = await self._core.settle(request.reservation_id, request.actual_tokens)
        return limiter_pb2.SettleResponse(refunded_tokens=refunded)

    async def Pause(
        self, request: limiter_pb2.PauseRequest, context: grpc.aio.ServicerContext
    ) -> limiter_pb2.PauseResponse:
        if request.pause_ms <= 0:
            raise InvalidArgument("pause_ms", "must be positive")
        paused = await self._core.pause([(e.key, e.value) for e in request.descriptor],
                                        seconds=request.pause_ms / 1000, domain=request.domain or "provider")
        return limiter_pb2.PauseResponse(paused_ms=paused)


class LimiterClient(GrpcClient):
    """``LimiterPort`` over gRPC."""

    peer = "limiter"

    def __init__(self, address: str, *, timeout_s: float = 1.0) -> None:
        super().__init__(address, timeout_s=timeout_s)
        self._stub = limiter_pb2_grpc.LimiterStub(self.channel)

    async def check(
        self,
        descriptor: Descriptor,
        *,
        requests: int = 1,
        tokens: int = 0,
        request_id: str = "",
        domain: str = "gateway",
    ) -> Decision:
        req = limiter_pb2.CheckRequest(
            domain=domain,
            descriptor=[limiter_pb2.DescriptorEntry(key=k, value=v) for k, v in descriptor],
            requests=requests,
            tokens=tokens,
            request_id=request_id,
        )
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Check(req, timeout=self.timeout_s, metadata=self.metadata(request_id))
        return _decision_from_pb(pb)

    async def settle(self, reservation_id: str, actual_tokens: int) -> int:
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Settle(
                limiter_pb2.SettleRequest(reservation_id=reservation_id, actual_tokens=actual_tokens),
                timeout=self.timeout_s,
                metadata=self.metadata(),
            )
        return pb.refunded_tokens

    async def pause(self, descriptor: Descriptor, *, seconds: float, domain: str = "provider") -> int:
        req = limiter_pb2.PauseRequest(
            domain=domain, descriptor=[limiter_pb2.DescriptorEntry(key=k, value=v) for k, v in descriptor],
            pause_ms=max(1, int(seconds * 1000)),
        )
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Pause(req, timeout=self.timeout_s, metadata=self.metadata())
        return pb.paused_ms

    async def admit(self, descriptor: Descriptor, *, domain: str = "gateway") -> Decision:
        # Over gRPC every admission is its own exact check (leases live in a colocated core).
        return await self.check(descriptor, requests=1, tokens=0, domain=domain)
