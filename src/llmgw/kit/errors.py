"""One error hierarchy for every llmgw core, mapped to gRPC status codes at the boundary.

    LlmgwError                      INTERNAL
    ├── InvalidArgument(field)      INVALID_ARGUMENT   the caller's fault; names the field
    ├── Unauthenticated             UNAUTHENTICATED
    ├── PermissionDenied            PERMISSION_DENIED
    ├── NotFound                    NOT_FOUND
    ├── RateLimited                 RESOURCE_EXHAUSTED carries retry_after_s and the limit hit
    ├── BudgetExceeded              RESOURCE_EXHAUSTED a dollar budget; carries what is left
    ├── Unavailable                 UNAVAILABLE        retriable; may carry the attempts made
    ├── DeadlineExceeded            DEADLINE_EXCEEDED  retriable
    ├── Aborted                     ABORTED            a stream cut short
    └── ConfigError                 FAILED_PRECONDITION a bad config file or setting

Foreign exceptions (redis, aiokafka, openai, anthropic, grpc) are translated where they enter,
with ``raise ... from exc``. Code that decides whether to retry reads ``retriable``, never names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import grpc

__all__ = [
    "Aborted",
    "BudgetExceeded",
    "ConfigError",
    "DeadlineExceeded",
    "InvalidArgument",
    "LlmgwError",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
    "from_status",
]


class LlmgwError(Exception):
    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Extra trailing metadata to send with the status (e.g. retry-after).
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(LlmgwError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", metadata={"x-invalid-field": field})
        self.field = field


class Unauthenticated(LlmgwError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LlmgwError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(LlmgwError):
    code = grpc.StatusCode.NOT_FOUND


class RateLimited(LlmgwError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float,
        limit: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        md = {"retry-after": _retry_after_header(retry_after_s), "x-ratelimit-limit-hit": limit}
        md.update(metadata or {})
        super().__init__(message, metadata=md)
        self.retry_after_s = retry_after_s
        self.limit = limit


class BudgetExceeded(LlmgwError):
    """A request whose worst-case cost does not fit in a key's or tenant's budget."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, budget: str, remaining_usd: float) -> None:
        super().__init__(message, metadata={"x-llmgw-budget": budget,
                                            "x-llmgw-budget-remaining-usd": f"{remaining_usd:.9f}"})
        self.budget = budget
        self.remaining_usd = remaining_usd


class Unavailable(LlmgwError):
    code = grpc.StatusCode.UNAVAILABLE
    retriable = True

    def __init__(
        self,
        message: str,
        *,
        attempts: Sequence[Any] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata)
        self.attempts = list(attempts)


class DeadlineExceeded(LlmgwError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retriable = True


class Aborted(LlmgwError):
    code = grpc.StatusCode.ABORTED


class ConfigError(LlmgwError):
    code = grpc.StatusCode.FAILED_PRECONDITION


def _retry_after_header(seconds: float) -> str:
    # HTTP's Retry-After is whole seconds; round up so a client that obeys it never retries early.
    whole = int(seconds)
    return str(whole if whole == seconds else whole + 1)


_BY_CODE: dict[grpc.StatusCode, type[LlmgwError]] = {
    cls.code: cls
    for cls in (Unauthenticated, PermissionDenied, NotFound, Unavailable, DeadlineExceeded, Aborted, ConfigError)
}


def from_status(
    code: grpc.StatusCode, details: str, metadata: Mapping[str, str] | None = None
) -> LlmgwError:
    """Rebuild a domain error from a gRPC status, so a remote peer's error reads like a local one."""
    md = dict(metadata or {})
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field = md.get("x-invalid-field", "")
        problem = details[len(field) + 2 :] if field and details.startswith(field + ": ") else details
        return InvalidArgument(field or "request", problem)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = float(md.get("retry-after", "1") or 1)
        limit = md.get("x-ratelimit-limit-hit", "")
        extra = {k: v for k, v in md.items() if k.startswith("x-ratelimit-")}
        return RateLimited(details, retry_after_s=retry, limit=limit, metadata=extra)
    cls = _BY_CODE.get(code, LlmgwError)
    return cls(details, metadata=md)
