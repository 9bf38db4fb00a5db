"""A key's own rate limits as limiter rules: one gateway-domain rule per key, matching its id.

The rules file's rules keep applying beside them; a file rule on exactly ``{api_key: <id>}`` of a
key that has limits of its own is replaced by the key's (the key record is the newer word), and a
file rule on ``{api_key: "*"}`` is overridden for that key, as any per-value rule overrides "*".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmgw.keys.model import KeyRecord

__all__ = ["with_key_limits"]


def with_key_limits(rules: dict[str, Any], keys: Iterable[KeyRecord]) -> dict[str, Any]:
    """The rules file's data (as loaded) with the keys' own limits added to its gateway domain."""
    own: list[dict[str, Any]] = [{"match": {"api_key": k.id},
            "limits": [{"name": lim.name(k.id), "unit": lim.unit, "limit": lim.limit, "per": lim.per}
                       for lim in k.limits]}
           for k in keys if k.limits and k.status == "active"]
    if not own:
        return rules
    replaced = {r["match"]["api_key"] for r in own}
    gateway = [r for r in rules.get("domains", {}).get("gateway", [])
               if set(r.get("match", {})) != {"api_key"} or r["match"]["api_key"] not in replaced]
    return {**rules, "domains": {**rules.get("domains", {}), "gateway": [*gateway, *own]}}
