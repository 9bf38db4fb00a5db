"""What an authenticated key may use: its scopes, checked once a request is resolved (the route
it runs on, every model that route may call, the registry prompt). docs/keys.md "Scopes"."""

from __future__ import annotations

from llmgw.keys.ring import Identity
from llmgw.kit.errors import PermissionDenied
from llmgw.services.router.config import RouterConfig

__all__ = ["check_scopes", "may_use_route"]


def check_scopes(identity: Identity, *, route: str, prompt: str, routes: RouterConfig | None) -> None:
    """PermissionDenied naming what the key may not use."""
    scopes = identity.scopes
    _check_route(identity, route, routes)
    if scopes.prompts and prompt not in scopes.prompts:
        what = f"prompt {prompt!r}" if prompt else "raw messages (no prompt)"
        raise PermissionDenied(f"{what}: API key {identity.key_id} may only run prompts {', '.join(scopes.prompts)}")


def may_use_route(identity: Identity, route: str, routes: RouterConfig | None) -> bool:
    """Whether the key may run on ``route`` (GET /v1/models lists only those)."""
    try:
        _check_route(identity, route, routes)
    except PermissionDenied:
        return False
    return True


def _check_route(identity: Identity, route: str, routes: RouterConfig | None) -> None:
    scopes = identity.scopes
    if scopes.routes and route not in scopes.routes:
        raise PermissionDenied(f"route {route!r}: API key {identity.key_id} may use routes "
                               f"{', '.join(scopes.routes)}")
    if scopes.models:
        cfg = routes.routes.get(route) if routes is not None else None
        if cfg is None:
            # Without the routes this ingress can't tell which models a route calls: refuse
            # rather than let a scoped key spend on a model it may not use.
            raise PermissionDenied(f"route {route!r}: its models are unknown here, and API key {identity.key_id} "
                                   "is limited to models")
        for target in cfg.targets:
            name = f"{target.provider}/{target.model}"
            if name not in scopes.models:
                raise PermissionDenied(f"model {name!r} (a target of route {route!r}): API key {identity.key_id} "
                                       f"may use models {', '.join(scopes.models)}")
