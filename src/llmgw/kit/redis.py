"""One way to open Redis for every service: short timeouts, password from a Secret."""

from __future__ import annotations

import redis.asyncio as aioredis
from pydantic import SecretStr

__all__ = ["connect"]


def connect(url: str, password: SecretStr | None = None) -> aioredis.Redis:
    # Short socket timeouts: a dead Redis must cost milliseconds, never seconds (callers add
    # their own tighter per-operation budgets on top).
    return aioredis.Redis.from_url(
        url,
        password=password.get_secret_value() if password else None,
        socket_timeout=1.0,
        socket_connect_timeout=0.5,
        health_check_interval=10,
    )
