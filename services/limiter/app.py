"""Composition root of the limiter: settings -> Redis -> core -> gRPC service.

``start_core`` is also how the ingress runs the limiter in its own process (``COLOCATE``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from llmgw.keys.limits import with_key_limits
from llmgw.keys.model import KeyRecord
from llmgw.keys.ring import KeyFollower
from llmgw.keys.store import KeyData, RedisKeyStore
from llmgw.kit.errors import ConfigError
from llmgw.kit.logging import get_logger
from llmgw.kit.redis import connect
from llmgw.kit.reload import FileWatcher
from llmgw.kit.scripts import ScriptBatcher
from llmgw.kit.server import GrpcService
from llmgw.kit.settings import load_yaml
from llmgw.kit.tasks import in_background
from llmgw.limiter.v1 import limiter_pb2_grpc
from llmgw.services.limiter.core import RedisLimiter
from llmgw.services.limiter.rules import RuleSet, parse_rules
from llmgw.services.limiter.server import SERVICE_NAME, LimiterServicer
from llmgw.services.limiter.settings import LimiterSettings

__all__ = ["build", "start_core"]

_log = get_logger(__name__)


def _load(path: Path) -> dict[str, Any]:
    """The rules file's data, checked on its own (a bad file is named as such)."""
    data = load_yaml(path)
    parse_rules(data, source=str(path))
    return dict(data)


class _Rules:
    """The rules in force: the rules file's plus the keys' own rate limits (docs/keys.md), rebuilt
    when either changes."""

    def __init__(self, path: Path) -> None:
        self._file = _load(path)
        self._keys: tuple[KeyRecord, ...] = ()
        self.apply: Callable[[RuleSet], None] = lambda rules: None

    def current(self) -> RuleSet:
        return parse_rules(with_key_limits(self._file, self._keys), source="rules file + keys' own limits")

    def file_changed(self, data: dict[str, Any]) -> None:
        self._file = data
        self._rebuild()

    def keys_changed(self, data: KeyData) -> None:
        self._keys = data.keys
        self._rebuild()

    def _rebuild(self) -> None:
        try:
            self.apply(self.current())
        except ConfigError as exc:  # e.g. a key limit whose name a file rule already uses
            _log.error("key_limits_rejected_keeping_rules", error=exc.message)


async def start_core(
    settings: LimiterSettings, batcher: ScriptBatcher | None = None
) -> tuple[RedisLimiter, Callable[[], Awaitable[None]]]:
    """The core with its Redis and its rules file followed (hot reload); returns it and its stop.
    ``batcher``: share another core's script pipeline on the same Redis (colocated ingress); its
    Redis then belongs to whoever made the batcher, and this stop leaves it open."""
    redis = batcher.redis if batcher is not None else connect(settings.redis_url, settings.redis_password)
    rules = _Rules(settings.limits_file)
    core = RedisLimiter(
        redis,
        rules.current(),
        prefix=settings.key_prefix,
        timeout_s=settings.redis_timeout_s,
        replicas=settings.replicas,
        batcher=batcher,
        lease_max=settings.lease_max,
        lease_ttl_s=settings.lease_ttl_s,
    )
    rules.apply = core.replace_rules
    watcher = FileWatcher(settings.limits_file, _load, rules.file_changed)
    stop_reload = in_background(watcher.run(settings.reload_interval_s), name="limits-reload")
    stop_keys = await _follow_keys(settings, rules)

    async def stop() -> None:
        await stop_reload()
        await stop_keys()
        await core.close()
        if batcher is None:
            await redis.aclose()

    return core, stop


async def _follow_keys(settings: LimiterSettings, rules: _Rules) -> Callable[[], Awaitable[None]]:
    """Follow the key store (KEYS_REDIS_URL), so a key's own limits apply within KEYS_POLL_S."""
    if not settings.keys_redis_url:
        return _nothing
    redis = connect(settings.keys_redis_url, settings.keys_redis_password)
    follower = KeyFollower(bootstrap={}, store=RedisKeyStore(redis, settings.keys_prefix),
                           poll_s=settings.keys_poll_s, on_change=rules.keys_changed)
    await follower.start()
    stop_follow = in_background(follower.run(), name="keys")

    async def stop() -> None:
        await stop_follow()
        await redis.aclose()

    return stop


async def _nothing() -> None:
    return None


async def build(settings: LimiterSettings) -> GrpcService:
    core, stop = await start_core(settings)
    return GrpcService(
        name="limiter",
        servicers=[(LimiterServicer(core), limiter_pb2_grpc.add_LimiterServicer_to_server, SERVICE_NAME)],
        ready=core.ready,
        on_stop=stop,
    )
