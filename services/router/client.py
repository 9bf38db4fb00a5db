"""The router's gRPC client (``RouterPort`` over gRPC). Kept apart from the servicer so that a
process calling the router (the ingress) never imports the router core or the provider SDKs:
they take seconds to import."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from llmgw.convert import (
    attempts_from_pb,
    deltas_from_pb,
    messages_to_pb,
    output_fields,
    sampling_to_pb,
    tool_calls_from_pb,
    usage_from_pb,
)
from llmgw.domain import Chunk, Completion, RouteCall
from llmgw.kit.client import GrpcClient, translate_rpc_errors
from llmgw.router.v1 import router_pb2, router_pb2_grpc

__all__ = ["SERVICE_NAME", "RouterClient", "call_to_pb"]

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name


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
