"""What a fake provider does wrong, and when: the faults real providers show.

Per provider, settable at run time (``POST /_control/{provider}`` with any of these fields):

- ``latency_ms``: wait before answering at all
- ``error_rate`` + ``status``: that share of calls fails with ``status``; ``fail_next``: the next N
- ``status_rates``: independent error rates per status, e.g. ``{"500": 0.2, "429": 0.1}``
- ``retry_after`` (s) / ``retry_after_ms`` / ``retry_after_date``: the wait an error advertises, as
  ``retry-after`` in seconds, as ``retry-after-ms``, or as ``retry-after`` in HTTP-date form
- ``rpm`` / ``tpm``: the provider's own limits over a sliding minute: 429 with ``retry-after`` and
  ``retry-after-ms`` to the moment a call fits
- ``fault`` + ``fault_rate``: a broken answer (``FAULTS``) in that share of calls (default all)
- ``stall_ms``: how long ``stall`` hangs after the first chunk (before a unary answer)
- ``first_token_ms``: a slow first token; ``chunk_delay_ms``: slow chunks
- ``reply``: a fixed answer text
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["FAULTS", "Faults", "Quota"]

# disconnect_*: the connection drops (before / after the first content chunk); malformed_*: an
# event (or a unary body) that is not JSON; truncate: the stream ends cleanly but without its
# terminal event (OpenAI: no finish_reason chunk; Anthropic: no message_delta / message_stop),
# a unary answer without finish_reason / stop_reason; stall: hang ``stall_ms`` mid-answer.
# Unary answers only: not_json: a 200 whose body is an HTML page (a proxy's error page);
# no_choices: a 200 JSON answer with no choices (OpenAI) / no content and no stop_reason (Anthropic).
FAULTS = ("", "disconnect_before_first", "disconnect_after_first", "malformed_before_first",
          "malformed_after_first", "truncate", "stall", "not_json", "no_choices")


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    status: int = 500
    status_rates: dict[str, float] = field(default_factory=dict)
    retry_after: float | None = None
    retry_after_ms: float | None = None
    retry_after_date: bool = False
    fail_next: int = 0
    rpm: int = 0
    tpm: int = 0
    fault: str = ""
    fault_rate: float = 1.0
    stall_ms: float = 30_000.0
    first_token_ms: float = 0.0
    reply: str | None = None
    # Delay between streamed chunks.
    chunk_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {[f for f in FAULTS if f]}")
        self.status_rates = {str(k): float(v) for k, v in self.status_rates.items()}

    def failing_status(self, rng: random.Random) -> int | None:
        """The status this call fails with, or None."""
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.status
        if self.error_rate > 0 and rng.random() < self.error_rate:
            return self.status
        for status, rate in self.status_rates.items():
            if rng.random() < rate:
                return int(status)
        return None

    def broken(self, rng: random.Random) -> str:
        """The fault this call shows ("" for none)."""
        if self.fault and rng.random() < self.fault_rate:
            return self.fault
        return ""

    def retry_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["retry-after"] = (
                email.utils.formatdate(time.time() + self.retry_after, usegmt=True)
                if self.retry_after_date else _seconds(self.retry_after)
            )
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(int(self.retry_after_ms))
        return headers


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


@dataclass
class Quota:
    """A provider's RPM/TPM over a sliding minute, as the providers enforce them."""

    calls: deque[tuple[float, int]] = field(default_factory=deque)

    def refused(self, faults: Faults, now: float) -> float | None:
        """Seconds until a call fits, or None when it fits now."""
        while self.calls and now - self.calls[0][0] >= 60:
            self.calls.popleft()
        waits = []
        if faults.rpm and len(self.calls) >= faults.rpm:
            waits.append(60 - (now - self.calls[len(self.calls) - faults.rpm][0]))
        if faults.tpm and sum(t for _, t in self.calls) >= faults.tpm:
            waits.append(60 - (now - self.calls[0][0]))
        return max(waits) if waits else None

    def record(self, now: float, tokens: int) -> None:
        self.calls.append((now, tokens))

    @staticmethod
    def headers(wait_s: float) -> dict[str, str]:
        return {"retry-after": str(max(1, math.ceil(wait_s))), "retry-after-ms": str(max(1, int(wait_s * 1000)))}
