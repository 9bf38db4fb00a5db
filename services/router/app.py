"""Composition root of the router: settings -> config + registry -> providers -> core -> gRPC."""

from __future__ import annotations

from llmgw.kit.server import GrpcService
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


def build_core(settings: RouterSettings) -> tuple[Router, list[object]]:
    cfg = _with_overrides(load_router_config(settings.routes_file), settings)
    providers = {name: make_provider(name, pcfg) for name, pcfg in cfg.providers.items()}
    shaper = LimiterClient(settings.limiter_addr) if settings.limiter_addr else None
    router = Router(cfg, providers, Registry.load(settings.prompts_dir), shaper=shaper,
                    budget_wait_s=settings.provider_budget_wait_s)
    closers: list[object] = [*providers.values(), *([shaper] if shaper else [])]
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
