"""Base for the gRPC clients services use to reach each other.

One long-lived channel per peer, reused by every call; the request id and the trace context
travel in metadata; a
remote status is rebuilt into the same ``LlmgwError`` the in-process core would have raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
import structlog

from llmgw.kit import tracing
from llmgw.kit.errors import DeadlineExceeded, Unavailable, from_status
from llmgw.kit.server import REQUEST_ID_KEY

__all__ = ["GrpcClient", "translate_rpc_errors"]

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
]


@contextlib.contextmanager
def translate_rpc_errors(peer: str) -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        md = {k: v for k, v in (exc.trailing_metadata() or ()) if isinstance(v, str)}
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            raise Unavailable(f"{peer}: {exc.details()}", metadata=md) from exc
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded(f"{peer}: deadline exceeded") from exc
        raise from_status(code, exc.details() or "", md) from exc


class GrpcClient:
    peer = "peer"

    def __init__(self, address: str, *, timeout_s: float = 5.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)

    @staticmethod
    def metadata(request_id: str = "") -> tuple[tuple[str, str], ...]:
        rid = request_id or structlog.contextvars.get_contextvars().get("request_id", "")
        # traceparent of the current span (traces on): the peer's server span joins the trace.
        return (((REQUEST_ID_KEY, rid),) if rid else ()) + tracing.carrier_pairs()

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
