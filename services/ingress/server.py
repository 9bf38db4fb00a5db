"""gRPC adapter for the public Gateway API: proto -> core -> proto."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from llmgw.convert import (
    attempts_to_pb,
    deltas_to_pb,
    messages_from_pb,
    output_from_pb,
    sampling_from_pb,
    tool_calls_to_pb,
    usage_to_pb,
)
from llmgw.domain import Chunk
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.kit.errors import InvalidArgument
from llmgw.kit.memo import Memo
from llmgw.kit.server import REQUEST_ID_KEY, header, request_id, request_id_replaced
from llmgw.services.ingress.core import Gateway, Reply, cache_metadata, remaining_metadata
from llmgw.services.ingress.request import CacheMode, GatewayRequest

__all__ = ["SERVICE_NAME", "GatewayServicer"]

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name


def request_from_pb(r: gateway_pb2.CompleteRequest, fingerprint: bytes = b"") -> GatewayRequest:
    try:
        mode = CacheMode(r.cache_mode)
    except ValueError as exc:
        raise InvalidArgument("cache_mode", f"unknown value {r.cache_mode}") from exc
    return GatewayRequest(
        prompt=r.prompt,
        label=r.label,
        variables=dict(r.variables),
        messages=messages_from_pb(r.messages),
        route=r.route,
        sampling=sampling_from_pb(r.sampling),
        output=output_from_pb(r.tools, r.tool_choice, r.response_format),
        model=r.model,
        cache_mode=mode,
        metadata=dict(r.metadata),
        fingerprint=fingerprint,
    )


class RequestTooLarge(InvalidArgument):
    """Over MAX_REQUEST_BYTES: refused before anything reads the fields."""


class _Requests:
    """Protobuf -> GatewayRequest, remembered for recent requests: a repeat (what a cache
    answers) is recognized by its canonical bytes and reuses its GatewayRequest, whose fingerprint
    then lets the core reuse its admission too. Requests over ``max_bytes`` are converted anew."""

    def __init__(self, *, max_entries: int, max_bytes: int, max_request_bytes: int = 256 * 1024) -> None:
        self._memo: Memo[bytes, GatewayRequest] = Memo(max_entries)
        self._max_bytes = max_bytes
        self._max_request_bytes = max_request_bytes

    def convert(self, r: gateway_pb2.CompleteRequest) -> GatewayRequest:
        wire = r.SerializeToString(deterministic=True)
        # First of all, before authentication builds an event from the fields: the size.
        if len(wire) > self._max_request_bytes:
            raise RequestTooLarge("request", f"{len(wire)} bytes is over the limit of {self._max_request_bytes} "
                                             "bytes (MAX_REQUEST_BYTES)")
        if len(wire) > self._max_bytes:
            return request_from_pb(r)
        known = self._memo.get(wire)
        if known is None:
            known = request_from_pb(r, wire)  # an invalid one raises: never remembered
            self._memo.put(wire, known)
        return known


def _reply_metadata(reply: Reply) -> tuple[tuple[str, str], ...]:
    replaced = (("x-request-id-replaced", "invalid"),) if request_id_replaced() else ()
    return ((REQUEST_ID_KEY, reply.request_id), *replaced, *remaining_metadata(reply.limits).items(),
            *cache_metadata(reply).items())


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, core: Gateway, *, memo_entries: int = 1024, memo_max_bytes: int = 4096,
                 max_request_bytes: int = 256 * 1024) -> None:
        self._core = core
        self._requests = _Requests(max_entries=memo_entries, max_bytes=memo_max_bytes,
                                   max_request_bytes=max_request_bytes)


    def _convert(self, request: gateway_pb2.CompleteRequest, rid: str) -> GatewayRequest:
        try:
            return self._requests.convert(request)
        except RequestTooLarge as exc:
            self._core.refused(rid, exc)
            raise

    async def Complete(
        self, request: gateway_pb2.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CompleteResponse:
        rid = request_id()
        reply = await self._core.complete(
            header(context, "authorization"), self._convert(request, rid), request_id=rid,
            time_remaining=context.time_remaining(),
        )
        context.set_trailing_metadata(_reply_metadata(reply))
        c = reply.completion
        return gateway_pb2.CompleteResponse(
            request_id=reply.request_id,
            text=c.text,
            provider=c.provider,
            model=c.model,
            prompt_version=reply.prompt_version,
            cache_hit=reply.cache_hit,
            cache_tier=reply.cache_tier,
            cache_similarity=reply.cache_similarity,
            usage=usage_to_pb(c.usage),
            attempts=attempts_to_pb(c.attempts),
            finish_reason=c.finish_reason,
            tool_calls=tool_calls_to_pb(c.tool_calls),
        )

    async def StreamComplete(
        self, request: gateway_pb2.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.CompleteChunk]:
        rid = request_id()
        async for item in self._core.stream(
            header(context, "authorization"), self._convert(request, rid), request_id=rid,
            time_remaining=context.time_remaining(),
        ):
            if isinstance(item, Chunk):
                yield gateway_pb2.CompleteChunk(request_id=rid, delta=item.delta,
                                                tool_calls=deltas_to_pb(item.tool_calls))
                continue
            context.set_trailing_metadata(_reply_metadata(item))
            c = item.completion
            yield gateway_pb2.CompleteChunk(
                request_id=item.request_id,
                final=True,
                provider=c.provider,
                model=c.model,
                prompt_version=item.prompt_version,
                cache_hit=item.cache_hit,
                cache_tier=item.cache_tier,
                cache_similarity=item.cache_similarity,
                usage=usage_to_pb(c.usage),
                attempts=attempts_to_pb(c.attempts),
                finish_reason=c.finish_reason,
            )
