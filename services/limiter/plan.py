"""What one descriptor's decision touches in Redis: its limits, their bucket keys, and how those keys
fall into shards.

Key layout (``<prefix>`` is ``llmgw:rl`` by default):

    <prefix>:{<domain>:<subject>}:<limit>        a bucket; <subject> is the rule's descriptor values
    <prefix>:pause:{<domain>:<descriptor>}        a provider's pause
    <prefix>:res:{<tag of its shard's buckets>}:<owner>:<uuid>   a token reservation

The hash tag is the bucket's subject (``gateway:tenant=acme``), not its limit: every limit on the
same subject (a tenant's requests and tokens per minute) shares one slot and is decided in one
script, while different tenants, keys, routes and providers spread over the cluster's shards.

On a single server every key of a decision is in one group and the decision is one atomic script.
On a Redis Cluster the keys are grouped by slot; a decision whose limits live in several slots runs
one script per slot at once, and when any refuses, what the others charged is given back (see
``RedisLimiter.check``). No limit is ever exceeded either way: each bucket is charged only by its
own atomic script.

A reservation id names its reservation key and the token buckets it may adjust, so the settle
script declares every key it touches: ``res-key TAB bucket TAB bucket``, one line per shard.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from llmgw.kit.errors import InvalidArgument
from llmgw.kit.redis import hash_tag
from llmgw.services.limiter.rules import Limit, Rule

__all__ = ["Group", "Plan", "build_plan", "parse_reservation", "reservation_id", "void_entries"]

_FIELD, _LINE = "\t", "\n"


def _spec(limit: Limit) -> str:
    tail = f"{int(limit.shadow)},{int(limit.unit == 'tokens')}"
    if limit.algorithm == "gcra":
        interval = limit.period_ms / limit.limit
        return f"g,{interval!r},{interval * limit.gcra_burst!r},{tail}"
    return f"w,{limit.period_ms},{limit.limit},{tail}"


@dataclass(frozen=True, slots=True)
class Group:
    """The part of a decision that lives in one slot (the whole decision outside a cluster)."""

    indices: tuple[int, ...]  # into Plan.matched
    keys: tuple[str, ...]
    specs: str  # the CHECK script's bucket specs, built once
    tag: str  # the hash tag its reservation key shares with its buckets
    pause: str  # the pause key, when the pause lives in this slot; else ""


@dataclass(frozen=True, slots=True)
class Plan:
    matched: list[tuple[Rule, Limit]]
    keys: list[str]
    groups: tuple[Group, ...]


def bucket_tag(domain: str, subject: str) -> str:
    return hash_tag(f"{domain}:{subject}")


def bucket_key(prefix: str, domain: str, rule: Rule, limit: Limit, descriptor: dict[str, str]) -> str:
    subject = quote(rule.bucket(descriptor), safe="=|")
    return f"{prefix}:{bucket_tag(domain, subject)}:{limit.name}"


def pause_key(prefix: str, domain: str, descriptor: Sequence[tuple[str, str]]) -> str:
    subject = quote("|".join(f"{k}={v}" for k, v in descriptor), safe="=|")
    return f"{prefix}:pause:{bucket_tag(domain, subject)}"


def _tag_of(key: str) -> str:
    start = key.index("{")
    return key[start:key.index("}", start) + 1]


def build_plan(prefix: str, domain: str, descriptor: Sequence[tuple[str, str]], matched: list[tuple[Rule, Limit]],
               *, pausable: bool, slot_of: Callable[[str], int] | None) -> Plan:
    """``slot_of``: the cluster's key slot function; ``None`` outside a cluster (one group)."""
    desc = dict(descriptor)
    keys = [bucket_key(prefix, domain, rule, limit, desc) for rule, limit in matched]
    pause = pause_key(prefix, domain, descriptor) if pausable else ""
    by_slot: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_slot.setdefault(slot_of(key) if slot_of else 0, []).append(i)
    pause_slot = (slot_of(pause) if slot_of else 0) if pause else None
    if pause_slot is not None and pause_slot not in by_slot:
        by_slot[pause_slot] = []  # a shard of its own: only the pause is read there
    groups = []
    for slot, indices in by_slot.items():
        tag = _tag_of(keys[indices[0]]) if indices else _tag_of(pause)
        groups.append(Group(tuple(indices), tuple(keys[i] for i in indices),
                            ";".join(_spec(matched[i][1]) for i in indices), tag,
                            pause if slot == pause_slot else ""))
    return Plan(matched, keys, tuple(groups))


def _entry(plan: Plan, i: int, units: int, sub_bucket: int | None = None) -> list[object]:
    """One bucket's entry for the settle and refund scripts (_lua._ADJUST): [key, T ms, units] for
    GCRA, [key, "w", units, sub-bucket] for a window (a reservation's sub-bucket is filled in by
    CHECK when it charges)."""
    limit, key = plan.matched[i][1], plan.keys[i]
    if limit.algorithm == "gcra":
        return [key, limit.period_ms / limit.limit, units]
    return [key, "w", units] if sub_bucket is None else [key, "w", units, sub_bucket]


def token_entries(plan: Plan, group: Group, tokens: int) -> list[list[object]]:
    """The reservation payload's entries: the group's token buckets and their estimate."""
    if tokens <= 0:
        return []
    return [_entry(plan, i, tokens) for i in group.indices
            if plan.matched[i][1].unit == "tokens" and not plan.matched[i][1].shadow]


def void_entries(plan: Plan, charged: Sequence[tuple[int, int]], requests: int, tokens: int) -> list[list[object]]:
    """Entries that give back what a group's CHECK charged: ``charged`` holds (plan index,
    sub-bucket) of each bucket it charged (sub-bucket 0 for GCRA)."""
    costs = ((i, sub, tokens if plan.matched[i][1].unit == "tokens" else requests) for i, sub in charged)
    return [_entry(plan, i, cost, sub) for i, sub, cost in costs if cost > 0]


def reservation_id(parts: Sequence[tuple[str, list[list[object]]]]) -> str:
    """One line per shard: its reservation key and the bucket keys its settle may adjust."""
    return _LINE.join(_FIELD.join([res, *(str(e[0]) for e in entries)]) for res, entries in parts)


def parse_reservation(prefix: str, rid: str) -> list[list[str]]:
    """[[reservation key, bucket key, ...], ...]; refuses anything that is not this limiter's."""
    parts = [line.split(_FIELD) for line in rid.split(_LINE) if line]
    for keys in parts:
        if not keys[0].startswith(f"{prefix}:res:") or any(not k.startswith(f"{prefix}:") for k in keys):
            raise InvalidArgument("reservation_id", "not a reservation made by this limiter")
    return parts


def payload(entries: list[list[object]]) -> str:
    return json.dumps({"buckets": entries}) if entries else ""
