"""Live labels: a label move or rollback reaches running services within seconds, no restart.

The files (`prompts/<name>/labels.yaml`, with the move history in `labels.log.jsonl`) are the
reviewed source of truth. ``llmgw prompts promote|rollback`` writes them *and* this store (a Redis
hash per prompt); services poll the store (one round trip per interval, never per request) and
apply what changed. Every move is also published as an audit event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.exceptions import RedisError

from llmgw.kit.logging import get_logger
from llmgw.kit.redis import Client

__all__ = ["LabelStore"]

_log = get_logger(__name__)


class LabelStore:
    def __init__(self, redis: Client, *, prefix: str = "llmgw:prompts") -> None:
        self._redis = redis
        self._prefix = prefix

    def _labels_key(self, prompt: str) -> str:
        return f"{self._prefix}:labels:{prompt}"

    async def get_all(self, prompts: list[str]) -> dict[str, dict[str, str]]:
        pipe = self._redis.pipeline(transaction=False)
        for p in prompts:
            pipe.hgetall(self._labels_key(p))
        rows = await pipe.execute()
        return {p: {k.decode(): v.decode() for k, v in row.items()} for p, row in zip(prompts, rows, strict=True)}

    async def move(self, prompt: str, label: str, version: str) -> None:
        """Point ``label`` at ``version`` for every running service."""
        await self._redis.hset(self._labels_key(prompt), label, version)

    async def seed(self, prompt: str, labels: dict[str, str]) -> None:
        """Load the files' labels where the store has none yet (first deploy)."""
        for label, version in labels.items():
            await self._redis.hsetnx(self._labels_key(prompt), label, version)

    async def follow(self, prompts: list[str], apply: Callable[[dict[str, dict[str, str]]], object],
                     interval_s: float = 1.0) -> None:
        """Poll forever, calling ``apply`` with the store's labels; errors keep the last labels."""
        while True:
            try:
                apply(await self.get_all(prompts))
            except (RedisError, OSError) as exc:
                _log.warning("label_store_unreachable_keeping_labels", error=repr(exc))
            await asyncio.sleep(interval_s)
