"""Composition root of the router: settings -> config + registry -> providers -> core -> gRPC."""

from __future__ import annotations

from llmgw.kit import tokens
from llmgw.kit.server import GrpcService
from llmgw.ports import LimiterPort
from llmgw.prompts import Registry
from llmgw.router.v1 import router_pb2_grpc
from llmgw.services.limiter.server import LimiterClient
from llmgw.services.router.config import RouterConfig, load_router_config
from llmgw.services.router.core import Router
from llmgw.services.router.providers import make_provider
from llmgw.services.router.server import SERVICE_NAME, RouterServicer
from llmgw.services.router.settings import RouterSettings

__all__ = ["build", "build_core"]


def _with_overrides(cfg: RouterConfig, settings: RouterSettings) -> RouterConfig:
    providers = dict(cfg.providers)
    for name, url in (("openai", settings.openai_base_url), ("anthropic", settings.anthropic_base_url)):
        if url and name in providers:
            providers[name] = providers[name].model_copy(update={"base_url": url})
    return cfg.model_copy(update={"providers": providers})


def build_core(settings: RouterSettings, *, registry: Registry | None = None,
               shaper: LimiterPort | None = None) -> tuple[Router, list[object]]:
    """The core and what to close when it stops. In its own service it loads the prompts and
    shapes through the limiter at ``limiter_addr``; colocated in the ingress it is handed the
    ingress's registry (one copy, following the same live labels) and limiter."""
    cfg = _with_overrides(load_router_config(settings.routes_file), settings)
    tokens.warm_up()  # every attempt counts its prompt: not on the first request's time
    providers = {name: make_provider(name, pcfg) for name, pcfg in cfg.providers.items()}
    closers: list[object] = list(providers.values())
    if shaper is None and settings.limiter_addr:
        client = LimiterClient(settings.limiter_addr)
        shaper = client
        closers.append(client)
    router = Router(cfg, providers, registry or Registry.load(settings.prompts_dir), shaper=shaper,
                    budget_wait_s=settings.provider_budget_wait_s)
    return router, closers


async def build(settings: RouterSettings) -> GrpcService:
    core, providers = build_core(settings)

    async def ready() -> bool:
        # The router has no backing store; it is ready once its config and SDK clients exist.
        return True

    async def on_stop() -> None:
        for p in providers:
            await p.close()  # type: ignore[attr-defined]

    return GrpcService(
        name="router",
        servicers=[(RouterServicer(core), router_pb2_grpc.add_RouterServicer_to_server, SERVICE_NAME)],
        ready=ready,
        on_stop=on_stop,
    )
