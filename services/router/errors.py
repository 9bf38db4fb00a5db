"""Provider errors, classified once where they leave the SDK.

    ProviderError(kind=...)
      retryable     5xx, 529 overloaded, timeouts, connection and protocol errors, malformed or
                    truncated responses                              -> retry, then fall back; breaker counts it
      rate_limited  429 (the provider's quota)                       -> pause the target, move on; not a failure
      caller        400 invalid request, context too long            -> INVALID_ARGUMENT, no fallback
      config        401/403, unknown model (404)                     -> fall back, alert metric

Messages are ours (a fixed vocabulary plus the provider's own error text for HTTP errors): no
Python exception type or text ever reaches a caller; the detail goes to the log.
"""

from __future__ import annotations

from typing import Literal

import grpc

from llmgw.kit.errors import LlmgwError

__all__ = ["ProviderError", "classify_status"]

Kind = Literal["retryable", "rate_limited", "caller", "config"]


class ProviderError(LlmgwError):
    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, provider: str, kind: Kind, message: str, *, status: int = 0,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.kind: Kind = kind
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retriable(self) -> bool:  # type: ignore[override]
        return self.kind in ("retryable", "rate_limited")


def classify_status(status: int) -> Kind:
    if status in (401, 403, 404):
        return "config"
    if status in (400, 413, 422):
        return "caller"
    if status == 429:
        return "rate_limited"
    return "retryable"  # 408, 409, 5xx, 529 and anything unexpected
