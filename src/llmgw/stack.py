"""The whole request path in one process: every service as a real gRPC server on a free port,
plus the fake providers. Tests and benchmarks use it; ``llmgw up`` runs separate processes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from llmgw.fakeproviders import FakeProviders, create_app
from llmgw.kit.embedded import free_port
from llmgw.kit.server import RunningServer, start_server
from llmgw.kit.settings import load_settings
from llmgw.services.cache.app import build as build_cache
from llmgw.services.cache.settings import CacheSettings
from llmgw.services.ingress.app import build as build_ingress
from llmgw.services.ingress.settings import IngressSettings
from llmgw.services.limiter.app import build as build_limiter
from llmgw.services.limiter.settings import LimiterSettings
from llmgw.services.router.app import build as build_router
from llmgw.services.router.settings import RouterSettings

__all__ = ["FakeProviderServer", "Stack", "start_fake_providers", "start_stack"]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeProviderServer:
    state: FakeProviders
    runner: web.AppRunner
    port: int

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_fake_providers() -> FakeProviderServer:
    state = FakeProviders()
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return FakeProviderServer(state, runner, port)


@dataclass
class Stack:
    ingress: RunningServer
    limiter: RunningServer
    cache: RunningServer
    router: RunningServer
    fake: FakeProviderServer
    prefix: str
    owns_fake: bool = True  # False when the fake providers were handed in (shared by stacks)
    servers: list[RunningServer] = field(default_factory=list)
    # How the ingress was built: a replica (``add_ingress``) is built the same way.
    ingress_settings: IngressSettings | None = None
    limiter_settings: LimiterSettings | None = None
    cache_settings: CacheSettings | None = None
    router_settings: RouterSettings | None = None

    @property
    def http(self) -> str:
        """The ingress's HTTP face, ``http://host:port``."""
        return f"http://{self.ingress.service.endpoints['http']}"

    async def add_ingress(self) -> RunningServer:
        """Another ingress replica on the same peers, Redis and settings (its own ports)."""
        assert self.ingress_settings is not None
        replica = await start_server(await build_ingress(self.ingress_settings, limiter_settings=self.limiter_settings,
                                                         cache_settings=self.cache_settings,
                                                         router_settings=self.router_settings))
        self.servers.append(replica)
        return replica

    async def stop(self) -> None:
        # Ingress first: it drains its after-reply work and flushes events before peers go.
        for s in [*self.servers, self.ingress, self.router, self.cache, self.limiter]:
            await s.stop(grace=1.0)
        if self.owns_fake:
            await self.fake.stop()


async def start_stack(
    *,
    redis_url: str,
    kafka_bootstrap: str,
    api_keys: str = "test-key=acme,other-key=globex",
    prompts_dir: Path = REPO / "prompts",
    limits_file: Path | None = None,
    routes_file: Path | None = None,
    fake: FakeProviderServer | None = None,
    ingress_overrides: dict[str, Any] | None = None,
    cache_overrides: dict[str, Any] | None = None,
    router_overrides: dict[str, Any] | None = None,
    limiter_overrides: dict[str, Any] | None = None,
    colocate: tuple[str, ...] = (),
    prefix: str | None = None,
) -> Stack:
    """Start limiter, cache, router and ingress; keys get a fresh prefix so runs never collide.

    ``colocate`` ("limiter", "cache", "router") runs those cores inside the ingress too, with the
    very settings of the services (same Redis keys, routes, prompts and providers): the services
    keep running for the router's outbound quotas and the cache's Stats/Invalidate."""
    # A given prefix: a "restart" that finds the previous run's cache and limits in Redis.
    prefix = prefix or f"llmgw-test-{uuid.uuid4().hex[:8]}"
    owns_fake = fake is None
    fake = fake or await start_fake_providers()
    lim_kw: dict[str, Any] = {"redis_url": redis_url, "key_prefix": f"{prefix}:rl", "port": 0}
    if limits_file:
        lim_kw["limits_file"] = limits_file
    limiter_settings = load_settings(LimiterSettings, {}, **lim_kw, **(limiter_overrides or {}))
    cache_settings = load_settings(CacheSettings, {}, redis_url=redis_url, key_prefix=f"{prefix}:cache",
                                   **(cache_overrides or {}))
    limiter = await start_server(await build_limiter(limiter_settings))
    cache = await start_server(await build_cache(cache_settings))
    rt_kw: dict[str, Any] = {"prompts_dir": prompts_dir, "openai_base_url": fake.openai_url,
                             "anthropic_base_url": fake.anthropic_url, "limiter_addr": limiter.address,
                             **(router_overrides or {})}
    if routes_file:
        rt_kw["routes_file"] = routes_file
    router_settings = load_settings(RouterSettings, {}, **rt_kw)
    router = await start_server(await build_router(router_settings))
    ingress_settings = load_settings(
        IngressSettings,
        {},
        limiter_addr=limiter.address,
        cache_addr=cache.address,
        router_addr=router.address,
        kafka_bootstrap=kafka_bootstrap,
        api_keys=api_keys,
        prompts_dir=prompts_dir,
        colocate=frozenset(colocate),
        http_port=0,
        **({"routes_file": str(routes_file)} if routes_file else {}),
        **(ingress_overrides or {}),
    )
    ingress = await start_server(await build_ingress(ingress_settings, limiter_settings=limiter_settings,
                                                     cache_settings=cache_settings, router_settings=router_settings))
    return Stack(ingress, limiter, cache, router, fake, prefix, owns_fake, ingress_settings=ingress_settings,
                 limiter_settings=limiter_settings, cache_settings=cache_settings, router_settings=router_settings)
