"""What really runs for a request, as its cache key and cacheability must see it.

The router resolves sampling as the caller's values, then the prompt version's, then the route's
defaults, and calls the route's targets in order. The cache key is built from the same: a
request that leaves temperature unset on a route (or prompt) at 0.9 is a sampled request, and an
edit of the route's targets (another model) must not keep serving the old model's answers.
"""

from __future__ import annotations

import hashlib
import json

from llmgw.domain import Sampling
from llmgw.kit.errors import NotFound
from llmgw.prompts import PromptVersion
from llmgw.services.router.config import RouterConfig

__all__ = ["effective_sampling", "route_for", "route_name"]


def route_name(route: str, routes: RouterConfig | None) -> str:
    """The route a request runs on: the one it (or its prompt) names, else the default route."""
    if route or routes is None:
        return route
    return routes.default_route


def route_for(model: str, routes: RouterConfig | None) -> str:
    """A request's ``model``: a route's name, or a ``provider/model`` that is the first target of a
    route (that route then runs, fallback included). Without routes here, the name is the route."""
    if routes is None or not model or model in routes.routes:
        return model
    if "/" in model:
        provider, name = model.split("/", 1)
        for route, cfg in routes.routes.items():
            first = cfg.targets[0]
            if (first.provider, first.model) == (provider, name):
                return route
    raise NotFound(f"model {model!r}: no route is named so, nor has it as its first target (see GET /v1/models)")


def effective_sampling(sampling: Sampling, version: PromptVersion | None, route: str,
                       routes: RouterConfig | None) -> tuple[Sampling, str]:
    """(the sampling that runs, a digest of the route's targets); the digest is "" when the
    routes are unknown here (then only the route's name is in the key)."""
    if version is not None:
        sampling = sampling.with_defaults(version.sampling)
    cfg = routes.routes.get(route_name(route, routes)) if routes is not None else None
    if cfg is None:
        return sampling, ""
    targets = json.dumps([[t.provider, t.model] for t in cfg.targets], separators=(",", ":"))
    return sampling.with_defaults(cfg.sampling_defaults), hashlib.sha256(targets.encode()).hexdigest()[:16]
