"""gRPC adapter for the router: proto -> core -> proto."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from llmgw.convert import (
    attempts_from_pb,
    attempts_to_pb,
    completion_fields,
    deltas_from_pb,
    deltas_to_pb,
    messages_from_pb,
    messages_to_pb,
    output_fields,
    output_from_pb,
    sampling_from_pb,
    sampling_to_pb,
    tool_calls_from_pb,
    usage_from_pb,
    usage_to_pb,
)
from llmgw.domain import Chunk, Completion, RouteCall
from llmgw.kit.client import GrpcClient, translate_rpc_errors
from llmgw.router.v1 import router_pb2, router_pb2_grpc
from llmgw.services.router.core import Router

__all__ = ["SERVICE_NAME", "RouterClient", "RouterServicer"]

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name


def call_from_pb(r: router_pb2.RouteRequest, time_remaining: float | None = None) -> RouteCall:
    return RouteCall(
        deadline=time.monotonic() + time_remaining if time_remaining is not None else None,
        route=r.route,
        request_id=r.request_id,
        tenant=r.tenant,
        prompt=r.prompt,
        prompt_version=r.prompt_version,
        variables=dict(r.variables),
        messages=messages_from_pb(r.messages),
        sampling=sampling_from_pb(r.sampling),
        output=output_from_pb(r.tools, r.tool_choice, r.response_format),
    )


def call_to_pb(c: RouteCall) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(
        request_id=c.request_id,
        route=c.route,
        prompt=c.prompt,
        prompt_version=c.prompt_version,
        variables=dict(c.variables),
        messages=messages_to_pb(c.messages),
        sampling=sampling_to_pb(c.sampling),
        tenant=c.tenant,
        **output_fields(c.output),
    )


def _completion_from(pb: router_pb2.RouteResponse | router_pb2.RouteChunk, text: str) -> Completion:
    return Completion(
        text=text,
        provider=pb.provider,
        model=pb.model,
        usage=usage_from_pb(pb.usage),
        attempts=attempts_from_pb(pb.attempts),
        finish_reason=pb.finish_reason,
        tool_calls=tool_calls_from_pb(pb.tool_calls),
    )


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, core: Router) -> None:
        self._core = core

    async def Route(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        completion = await self._core.route(call_from_pb(request, context.time_remaining()))
        return router_pb2.RouteResponse(**completion_fields(completion))  # type: ignore[arg-type]

    async def StreamRoute(
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.RouteChunk]:
        async for chunk in self._core.stream(call_from_pb(request, context.time_remaining())):
            if chunk.final and chunk.completion is not None:
                c = chunk.completion
                yield router_pb2.RouteChunk(
                    final=True, provider=c.provider, model=c.model, usage=usage_to_pb(c.usage),
                    attempts=attempts_to_pb(c.attempts), finish_reason=c.finish_reason,
                )  # the tool calls went out as deltas; the ingress assembles them
            else:
                yield router_pb2.RouteChunk(delta=chunk.delta, tool_calls=deltas_to_pb(chunk.tool_calls))


class RouterClient(GrpcClient):
    """``RouterPort`` over gRPC. No client timeout of its own: the caller's deadline bounds it."""

    peer = "router"

    def __init__(self, address: str, *, timeout_s: float = 120.0) -> None:
        super().__init__(address, timeout_s=timeout_s)
        self._stub = router_pb2_grpc.RouterStub(self.channel)

    def _timeout(self, call: RouteCall) -> float:
        # The caller's deadline travels on: gRPC propagates it to the router as its own deadline.
        if call.deadline is None:
            return self.timeout_s
        return max(0.001, min(self.timeout_s, call.deadline - time.monotonic()))

    async def route(self, call: RouteCall) -> Completion:
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Route(
                call_to_pb(call), timeout=self._timeout(call), metadata=self.metadata(call.request_id)
            )
        return _completion_from(pb, pb.text)

    async def stream(self, call: RouteCall) -> AsyncIterator[Chunk]:
        with translate_rpc_errors(self.peer):
            stream = self._stub.StreamRoute(
                call_to_pb(call), timeout=self._timeout(call), metadata=self.metadata(call.request_id)
            )
            async for pb in stream:
                if pb.final:
                    yield Chunk(delta="", final=True, completion=_completion_from(pb, ""))
                else:
                    yield Chunk(delta=pb.delta, tool_calls=deltas_from_pb(pb.tool_calls))
