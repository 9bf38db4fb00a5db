"""``llmgw cache invalidate|stats``: operate the response cache through its gRPC service."""

from __future__ import annotations

import argparse
import asyncio
import os

__all__ = ["add_parser"]


async def _invalidate(args: argparse.Namespace) -> int:
    from llmgw.services.cache.server import CacheClient

    async with CacheClient(args.addr) as client:
        deleted = await client.invalidate(tenant=args.tenant or "", prompt=args.prompt or "",
                                          version=args.version or "")
    print(f"invalidated {deleted} entries")
    return 0


async def _stats(args: argparse.Namespace) -> int:
    from llmgw.services.cache.server import CacheClient

    async with CacheClient(args.addr) as client:
        s = await client.stats(args.tenant, args.prompt or "")
    lookups = s.hits + s.misses
    rate = f"{s.hits / lookups:.1%}" if lookups else "-"
    print(f"hits {s.hits}  misses {s.misses}  hit rate {rate}  stores {s.stores}  "
          f"tokens saved {s.tokens_saved}  cost saved ${s.cost_saved_usd:.4f}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cache = sub.add_parser("cache", help="the response cache").add_subparsers(dest="sub", required=True)
    inv = cache.add_parser("invalidate", help="--prompt X [--version V] | --tenant T")
    inv.add_argument("--addr", default=os.environ.get("CACHE_ADDR", "127.0.0.1:50062"))
    inv.add_argument("--tenant")
    inv.add_argument("--prompt")
    inv.add_argument("--version", help="vN (every content of vN) or vN@digest")
    inv.set_defaults(func=lambda a: asyncio.run(_invalidate(a)))
    st = cache.add_parser("stats", help="hits, misses, tokens and dollars saved")
    st.add_argument("--addr", default=os.environ.get("CACHE_ADDR", "127.0.0.1:50062"))
    st.add_argument("--tenant", required=True)
    st.add_argument("--prompt", help="one prompt's figures ('-' for raw messages)")
    st.set_defaults(func=lambda a: asyncio.run(_stats(a)))
