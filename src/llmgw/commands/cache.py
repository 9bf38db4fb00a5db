"""``llmgw cache invalidate|stats|semantic-hits``: operate the response cache (the first two
through its gRPC service; ``semantic-hits`` reads the tenant's recent list in Redis)."""

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
          f"tokens saved {s.tokens_saved}  cost saved ${s.cost_saved_usd:.4f}  "
          f"semantic hits {s.semantic_hits} (of the misses)")
    return 0


async def _semantic_hits(args: argparse.Namespace) -> int:
    import json
    import time

    from pydantic import SecretStr

    from llmgw.kit.redis import connect
    from llmgw.services.cache.keys import semantic_hits_key

    password = os.environ.get("REDIS_PASSWORD")
    redis = connect(args.redis_url, SecretStr(password) if password else None)
    try:
        rows = await redis.lrange(semantic_hits_key(args.tenant, prefix=args.prefix), 0, args.limit - 1)
    finally:
        await redis.aclose()
    hits = [json.loads(r) for r in rows]
    if args.prompt:
        hits = [h for h in hits if h.get("prompt") == args.prompt]
    if args.json:
        print(json.dumps(hits, ensure_ascii=False, indent=1))
        return 0
    if not hits:
        print(f"no semantic hits kept for tenant {args.tenant!r}")
    for h in hits:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(h["at"]))
        print(f"{when}  {h.get('prompt') or '-'}@{h.get('version') or '-'}  similarity {h['similarity']:.3f}\n"
              f"  asked:    {h['question']}\n  answered: {h['matched']}")
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
    sem = cache.add_parser("semantic-hits", help="recent semantic hits of a tenant, both questions side by side")
    sem.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    sem.add_argument("--prefix", default=os.environ.get("KEY_PREFIX", "llmgw:cache"), help="the cache's KEY_PREFIX")
    sem.add_argument("--tenant", required=True)
    sem.add_argument("--prompt", help="only this prompt's hits")
    sem.add_argument("--limit", type=int, default=50)
    sem.add_argument("--json", action="store_true")
    sem.set_defaults(func=lambda a: asyncio.run(_semantic_hits(a)))
