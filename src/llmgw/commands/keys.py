"""``llmgw keys create|list|show|revoke|rotate|update|tenant`` and ``llmgw spend``: the key
lifecycle and what keys and tenants spent (docs/keys.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import yaml

from llmgw.keys.ledger import PERIODS, SpendLedger, days_between
from llmgw.keys.model import (
    NANO,
    Budget,
    KeyLimit,
    KeyRecord,
    Scopes,
    Secret,
    TenantRecord,
    digest,
    new_key_id,
    new_secret,
)
from llmgw.keys.store import RedisKeyStore
from llmgw.kit.errors import InvalidArgument
from llmgw.kit.redis import connect

__all__ = ["add_parser", "events_spend", "parse_budget", "parse_duration", "parse_limit"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``30d`` -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not m:
        raise InvalidArgument("duration", f"{text!r}: expected a number and s, m, h or d (e.g. 24h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_budget(text: str) -> Budget:
    """``10/day``, ``250/month``, ``1000/total`` (USD)."""
    m = re.fullmatch(r"\$?(\d+(?:\.\d+)?)/(day|month|total)", text.strip())
    if not m:
        raise InvalidArgument("budget", f"{text!r}: expected USD/period, e.g. 10/day, 250/month, 1000/total")
    return Budget(usd=float(m.group(1)), per=m.group(2))  # type: ignore[arg-type]


def parse_limit(text: str, unit: str) -> KeyLimit:
    """``60/minute`` (requests) or ``100000/minute`` (tokens)."""
    m = re.fullmatch(r"(\d+)/(second|minute|hour|day)", text.strip())
    if not m:
        raise InvalidArgument("limit", f"{text!r}: expected a count per second, minute, hour or day, e.g. 60/minute")
    return KeyLimit(unit=unit, limit=int(m.group(1)), per=m.group(2))  # type: ignore[arg-type]


def _limits(args: argparse.Namespace) -> tuple[KeyLimit, ...]:
    return (*(parse_limit(t, "requests") for t in args.limit or ()),
            *(parse_limit(t, "tokens") for t in args.token_limit or ()))


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds") if ts else "-"


def _public(record: KeyRecord) -> dict[str, Any]:
    """A record as the CLI shows it: no digests (they are not secrets, but have no use here)."""
    return {"id": record.id, "tenant": record.tenant, "name": record.name, "status": record.status,
            "created": _iso(record.created_at), "expires": _iso(record.expires_at),
            "secrets": [{"valid_until": _iso(s.not_after)} for s in record.secrets],
            "scopes": record.scopes.model_dump(), "budgets": [b.model_dump() for b in record.budgets],
            "limits": [lim.model_dump() for lim in record.limits]}


def _run(args: argparse.Namespace, body: Callable[[RedisKeyStore, SpendLedger], Awaitable[int]]) -> int:
    async def go() -> int:
        redis = connect(args.redis_url, None)
        try:
            return await body(RedisKeyStore(redis, args.prefix), SpendLedger(redis, prefix=args.spend_prefix))
        finally:
            await redis.aclose()

    return asyncio.run(go())


def _scopes(args: argparse.Namespace) -> Scopes:
    return Scopes(routes=_csv(args.routes), models=_csv(args.models), prompts=_csv(args.prompts))


def _secret_notice(secret: str, record: KeyRecord) -> None:
    print(f"secret: {secret}")
    print(f"# shown once: store it now. Requests carry it as 'authorization: Bearer <secret>' (or x-api-key);"
          f" logs, events and limit rules know the key as {record.id}.")


def _create(args: argparse.Namespace) -> int:
    budgets = tuple(parse_budget(b) for b in args.budget or ())
    expires = time.time() + parse_duration(args.expires_in) if args.expires_in else None
    if args.file_record:
        # For a read-only key file kept in Git: the record (a digest, never the secret) to add.
        secret = new_secret()
        record = KeyRecord(id=new_key_id(), tenant=args.tenant, name=args.name or "", created_at=time.time(),
                           expires_at=expires, secrets=(Secret(sha256=digest(secret)),), scopes=_scopes(args),
                           budgets=budgets, limits=_limits(args))
        _secret_notice(secret, record)
        print(yaml.safe_dump({"keys": [record.model_dump(exclude_defaults=True)]}, sort_keys=False), end="")
        return 0

    async def body(store: RedisKeyStore, _: SpendLedger) -> int:
        record, secret = await store.create(tenant=args.tenant, name=args.name or "", scopes=_scopes(args),
                                            budgets=budgets, expires_at=expires, limits=_limits(args))
        print(f"created {record.id} for tenant {record.tenant}  scopes: {record.scopes.describe()}  budgets: "
              f"{', '.join(b.describe() for b in record.budgets) or 'none'}")
        _secret_notice(secret, record)
        return 0

    return _run(args, body)


def _list(args: argparse.Namespace) -> int:
    async def body(store: RedisKeyStore, _: SpendLedger) -> int:
        data = (await store.load())[1]
        print(f"{'ID':<18} {'TENANT':<16} {'STATUS':<8} {'EXPIRES':<26} {'NAME'}")
        for r in data.keys:
            if args.tenant and r.tenant != args.tenant:
                continue
            print(f"{r.id:<18} {r.tenant:<16} {r.status:<8} {_iso(r.expires_at):<26} {r.name}")
        return 0

    return _run(args, body)


def _show(args: argparse.Namespace) -> int:
    async def body(store: RedisKeyStore, ledger: SpendLedger) -> int:
        record = await store.get(args.id)
        spent = {per: await ledger.window_spend(record.tenant, "key", record.id, per) / NANO for per in PERIODS}
        print(json.dumps({**_public(record), "spend_usd_this_window": spent}, indent=2))
        return 0

    return _run(args, body)


def _revoke(args: argparse.Namespace) -> int:
    async def body(store: RedisKeyStore, _: SpendLedger) -> int:
        record = await store.revoke(args.id)
        print(f"revoked {record.id}: refused by every ingress within KEYS_POLL_S (0.5 s by default)")
        return 0

    return _run(args, body)


def _rotate(args: argparse.Namespace) -> int:
    grace = parse_duration(args.grace)

    async def body(store: RedisKeyStore, _: SpendLedger) -> int:
        record, secret = await store.rotate(args.id, grace_s=grace)
        print(f"rotated {record.id}: the previous secret stays valid until {_iso(time.time() + grace)}")
        _secret_notice(secret, record)
        return 0

    return _run(args, body)


def _update(args: argparse.Namespace) -> int:
    async def body(store: RedisKeyStore, _: SpendLedger) -> int:
        scopes = _scopes(args) if any((args.routes, args.models, args.prompts, args.all_scopes)) else None
        budgets = () if args.no_budget else (tuple(parse_budget(b) for b in args.budget) if args.budget else None)
        limits = () if args.no_limits else (_limits(args) or None)
        record = await store.update(args.id, scopes=scopes, budgets=budgets, limits=limits)
        print(json.dumps(_public(record), indent=2))
        return 0

    return _run(args, body)


def _tenant(args: argparse.Namespace) -> int:
    async def body(store: RedisKeyStore, _: SpendLedger) -> int:
        current = await store.get_tenant(args.name)
        if args.budget or args.no_budget:
            budgets = () if args.no_budget else tuple(parse_budget(b) for b in args.budget)
            current = TenantRecord(tenant=args.name, budgets=budgets)
            await store.put_tenant(current)
        print(f"tenant {current.tenant}: budgets {', '.join(b.describe() for b in current.budgets) or 'none'}")
        return 0

    return _run(args, body)


# ---- llmgw spend ----

def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument("date", f"{text!r}: expected YYYY-MM-DD (UTC)") from None


async def events_spend(bootstrap: str, *, since: date, until: date, key: str | None = None,
                       tenant: str | None = None) -> tuple[int, int]:
    """(nano-USD charged, requests) over the response events of [since, until) (UTC days, by
    the event's time) for a key or a tenant: the source of truth."""
    from llmgw.commands.events import window
    from llmgw.events.v1 import events_pb2
    from llmgw.kit.kafka import RESPONSES_TOPIC

    start = datetime(since.year, since.month, since.day, tzinfo=UTC).timestamp()
    end = datetime(until.year, until.month, until.day, tzinfo=UTC).timestamp()
    total = count = 0
    # Records are stamped when published, a moment after the event's time: read an hour either side.
    async for r in window(bootstrap, RESPONSES_TOPIC, int((start - 3600) * 1000), int((end + 3600) * 1000)):
        e = events_pb2.ResponseEvent.FromString(r.value)
        if start <= e.time < end and (key is None or e.key_id == key) and (tenant is None or e.tenant == tenant):
            total += e.charged_nanousd
            count += 1
    return total, count


def _spend(args: argparse.Namespace) -> int:
    if not args.key and not args.tenant:
        raise InvalidArgument("key", "name --key (with --tenant for a key not in the store) or --tenant")
    since = _day(args.since)
    until = _day(args.until) if args.until else datetime.now(tz=UTC).date() + timedelta(days=1)
    days = days_between(since, until)

    async def body(store: RedisKeyStore, ledger: SpendLedger) -> int:
        if args.key:
            tenant = args.tenant or (await store.get(args.key)).tenant
            scope, owner = "key", args.key
        else:
            tenant, scope, owner = args.tenant, "tenant", args.tenant
        counted = await ledger.daily(tenant, scope, owner, days)
        live = sum(counted.values())
        print(f"{scope} {owner}, {since} .. {until} (UTC, end excluded)")
        print(f"  live counters (Redis):  ${live / NANO:.9f}")
        if args.bootstrap:
            charged, requests = await events_spend(args.bootstrap, since=since, until=until,
                                                   key=args.key or None, tenant=None if args.key else tenant)
            print(f"  events (Kafka):         ${charged / NANO:.9f} over {requests} responses")
            closed = until <= datetime.now(tz=UTC).date()
            verdict = "agree" if charged == live else ("differ" if closed else "differ (period still open)")
            print(f"  {verdict}")
            return 0 if charged == live or not closed else 1
        return 0

    return _run(args, body)


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", default=os.environ.get("KEYS_REDIS_URL", "redis://127.0.0.1:6379/0"),
                   help="the key store (default $KEYS_REDIS_URL)")
    p.add_argument("--prefix", default=os.environ.get("KEYS_PREFIX", "llmgw:keys"))
    p.add_argument("--spend-prefix", default=os.environ.get("SPEND_PREFIX", "llmgw:spend"))


def _scope_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--routes", help="routes the key may use, comma-separated (default: all)")
    p.add_argument("--models", help="provider/model names every target of its routes must be in (default: all)")
    p.add_argument("--prompts", help="registry prompts it may run; raw messages are then refused (default: all)")
    p.add_argument("--budget", action="append", help="USD per day, month or in total: 10/day (repeatable)")
    p.add_argument("--limit", action="append", help="the key's own request rate limit: 60/minute (repeatable)")
    p.add_argument("--token-limit", action="append", help="the key's own token rate limit: 100000/minute")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="API keys: create, list, show, revoke, rotate").add_subparsers(
        dest="sub", required=True)

    def command(name: str, help_: str, func: Callable[[argparse.Namespace], int], *, by_id: bool = True,
                scopes: bool = False, parent: Any = keys) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_)
        if by_id:
            p.add_argument("id")
        if scopes:
            _scope_args(p)
        _connection(p)
        p.set_defaults(func=func)
        return p

    create = command("create", "a new key; its secret is printed once", _create, by_id=False, scopes=True)
    create.add_argument("--tenant", required=True)
    create.add_argument("--name")
    create.add_argument("--expires-in", help="e.g. 90d")
    create.add_argument("--file-record", action="store_true",
                        help="store nothing: print the secret and the record to add to a KEYS_FILE")
    command("list", "every key (never a secret)", _list, by_id=False).add_argument("--tenant")
    command("show", "a key's record and its spend in the current windows", _show)
    command("revoke", "refuse a key from now on", _revoke)
    command("rotate", "a new secret; the old one stays valid for --grace", _rotate).add_argument(
        "--grace", default="24h", help="how long the previous secret keeps working (default 24h)")
    update = command("update", "replace a key's scopes or budgets", _update, scopes=True)
    update.add_argument("--all-scopes", action="store_true", help="clear the scopes (the key may use everything)")
    update.add_argument("--no-budget", action="store_true", help="remove the key's budgets")
    update.add_argument("--no-limits", action="store_true", help="remove the key's own rate limits")
    tenant = command("tenant", "show or set a tenant's budgets (over all its keys)", _tenant, by_id=False)
    tenant.add_argument("name")
    tenant.add_argument("--budget", action="append", help="USD per day, month or in total: 500/month (repeatable)")
    tenant.add_argument("--no-budget", action="store_true")

    spend = command("spend", "what a key or tenant spent: live counters, and the events on Kafka", _spend,
                    by_id=False, parent=sub)
    spend.add_argument("--key", help="a key's spend (its tenant from the store, or --tenant)")
    spend.add_argument("--tenant", help="a tenant's spend over all its keys")
    spend.add_argument("--since", required=True, help="first UTC day, YYYY-MM-DD")
    spend.add_argument("--until", help="UTC day after the last (default: tomorrow, i.e. through today)")
    spend.add_argument("--bootstrap", help="Kafka: also sum the response events and compare")
