"""gRPC adapter for the router: proto -> core -> proto. (Its client, what the ingress imports, is
``client.py``: it must not pull in the core and the provider SDKs.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from llmgw.convert import (
    attempts_to_pb,
    completion_fields,
    deltas_to_pb,
    messages_from_pb,
    output_from_pb,
    sampling_from_pb,
    usage_to_pb,
)
from llmgw.domain import RouteCall
from llmgw.router.v1 import router_pb2, router_pb2_grpc
from llmgw.services.router.client import SERVICE_NAME
from llmgw.services.router.core import Router

__all__ = ["SERVICE_NAME", "RouterServicer", "call_from_pb"]


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
