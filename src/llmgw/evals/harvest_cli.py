"""``llmgw eval harvest``: candidate eval cases from a drift incident, or from a segment's traffic."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from llmgw.evals.harvest import (
    Embed,
    Input,
    case_text,
    dedupe,
    load_candidates,
    nearest_to,
    novel_to,
    parse_request_event,
    variables_of,
    with_source,
    write_candidates,
)
from llmgw.evals.suite import load_suite
from llmgw.inputs import SEGMENT_FIELDS
from llmgw.kit.errors import ConfigError, NotFound

__all__ = ["add_harvest_parser", "harvest_command"]


async def _incident(bootstrap: str, wanted: str, timeout_s: float) -> list[dict[str, Any]]:
    from llmgw.commands.events import records
    from llmgw.kit.kafka import DRIFT_TOPIC

    history: dict[str, list[dict[str, Any]]] = {}
    async for rec in records(bootstrap, DRIFT_TOPIC, from_beginning=True, timeout_s=timeout_s):
        if rec.get("type") == "incident" and rec["incident_id"].startswith(wanted):
            history.setdefault(rec["incident_id"], []).append(rec)
    if not history:
        raise NotFound(f"no incident {wanted!r} on {DRIFT_TOPIC} (read for {timeout_s:g} s)")
    if len(history) > 1:
        raise ConfigError(f"incident id {wanted!r} is ambiguous: {', '.join(sorted(history))}")
    return next(iter(history.values()))


def _examples(history: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The examples of what the incident is about, and of everything else it lists. It is about
    its new group (inputs unlike the reference and like each other) when it has one, else its
    novel cell when that grew (inputs unlike the whole reference), else its leading cluster: a
    known cluster whose share moved a little with the mix is not the news."""
    about: dict[str, None] = {}
    other: dict[str, None] = {}
    for rec in history:
        clusters = rec.get("clusters", [])
        grown = [c for c in clusters if c["current_share"] > c["reference_share"]]
        lead = next((c for c in grown if c["cell"] == "new"),
                    next((c for c in grown if c["cell"] == "novel"), grown[0] if grown else None))
        for c in clusters:
            (about if c is lead else other).update(dict.fromkeys(c["examples"]))
    return list(about), [t for t in other if t not in about]


def _ranges(history: list[dict[str, Any]]) -> dict[int, tuple[int, int]]:
    """partition -> [first, last] offsets over every window the incident reported."""
    out: dict[int, tuple[int, int]] = {}
    for rec in history:
        for part, (lo, hi) in rec.get("window", {}).get("offsets", {}).items():
            old = out.get(int(part), (lo, hi))
            out[int(part)] = (min(old[0], lo), max(old[1], hi))
    return out


async def _inputs(args: argparse.Namespace, segment_by: list[str]) -> tuple[list[Input], dict[str, Any]]:
    """The inputs to choose from, and what every candidate's source records."""
    from llmgw.commands.events import offset_ranges, window

    if args.incident:
        history = await _incident(args.bootstrap, args.incident, args.timeout)
        segment = history[0]["segment"]
        raw = [r.value async for r in offset_ranges(args.bootstrap, args.requests_topic, _ranges(history))]
        meta = {"incident": history[0]["incident_id"], "examples": _examples(history)}
    else:
        since = _when(args.since)
        segment = args.segment
        raw = [r.value async for r in window(args.bootstrap, args.requests_topic, int(since * 1000),
                                             int(time.time() * 1000))]
        meta = {"since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))}
    items = [parse_request_event(v, segment_by) for v in raw]
    mine = [i for i in items if segment == "*" or i.segment == segment]
    if items and not mine:
        raise NotFound(f"none of the {len(items)} request events read is in segment {segment!r} as "
                       f"--segment-by {','.join(segment_by)} forms it: pass the drift job's SEGMENT_BY")
    return mine, {**meta, "segment": segment}


def _when(text: str) -> float:
    """An age like 30m / 6h / 2d, else what ``llmgw events replay --from`` takes (unix seconds,
    ISO 8601)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    from llmgw.commands.events import when_ms

    return when_ms(text) / 1000


async def _harvest(args: argparse.Namespace, embed: Embed | None) -> int:
    segment_by = [f.strip() for f in args.segment_by.split(",") if f.strip()]
    items, meta = await _inputs(args, segment_by)
    prompts = Counter(i.prompt for i in items if i.prompt)
    prompt = args.prompt or (prompts.most_common(1)[0][0] if prompts else "")
    if not prompt:
        raise NotFound("no prompt traffic among these inputs: pass --prompt")
    items = [i for i in items if i.prompt == prompt]
    suite = load_suite(Path(args.evals) / prompt)
    if embed is None:
        from llmgw.kit.embed import SentenceEmbedder

        embed = SentenceEmbedder().encode
    known = [case_text(dict(c.vars)) for c in suite.cases]
    if args.incident:
        about, other = meta["examples"]
        picked = nearest_to(items, about, other + known, embed, min_similarity=args.min_similarity)
    else:
        picked = novel_to(items, known, embed)
    source = {k: v for k, v in meta.items() if k in ("incident", "since")}
    picked = [with_source(i, **source) for i in picked]
    waiting = [case_text(dict(c["vars"])) for c in load_candidates(suite)]
    kept, dropped = dedupe(picked, known + waiting, embed, threshold=args.dedupe)
    names = sorted({k for c in suite.cases for k in c.vars})
    chosen, no_vars = [], 0
    for item in kept[: args.max]:
        variables = variables_of(item, names)
        if variables is None:
            no_vars += 1
        else:
            chosen.append((item, variables))
    where = f"incident {meta['incident']}" if args.incident else f"segment {meta['segment']} since {meta['since']}"
    print(f"{where}: {len(items)} {prompt} inputs read, {len(picked)} selected, {dropped} duplicates of cases, "
          f"candidates or each other dropped" + (f", {no_vars} without variables skipped" if no_vars else ""))
    if not chosen:
        print("no new candidates")
        return 0
    path = write_candidates(suite, chosen)
    print(f"{len(chosen)} candidates -> {path} (tagged from-drift, no assertions: review them)")
    return 0


def harvest_command(args: argparse.Namespace, embed: Embed | None = None) -> int:
    if bool(args.incident) == bool(args.segment):
        raise ConfigError("eval harvest: pass --incident ID, or --segment S with --since T")
    if args.segment and not args.since:
        raise ConfigError("eval harvest --segment: --since is required (unix seconds, ISO 8601, or e.g. 6h)")
    return asyncio.run(_harvest(args, embed))


def add_harvest_parser(ev: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from llmgw.kit.kafka import REQUESTS_TOPIC

    p = ev.add_parser("harvest", help="candidate cases from a drift incident's inputs (or a segment's)")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p.add_argument("--incident", help="a drift incident id (or a unique prefix, as `llmgw drift tail` shows)")
    p.add_argument("--segment", help="a drift segment, e.g. acme/default/summarize/production")
    p.add_argument("--since", help="with --segment: unix seconds, ISO 8601, or an age (30m, 6h, 2d)")
    p.add_argument("--evals", default="evals", help="suites root (default: evals)")
    p.add_argument("--prompt", help="default: the prompt of the inputs")
    p.add_argument("--requests-topic", default=REQUESTS_TOPIC)
    p.add_argument("--segment-by", default=",".join(SEGMENT_FIELDS),
                   help="the drift job's SEGMENT_BY (default tenant,route,prompt,label)")
    p.add_argument("--max", type=int, default=20, help="at most this many new candidates (default 20)")
    p.add_argument("--min-similarity", type=float, default=0.3,
                   help="with --incident: keep inputs at least this close to an example (cosine, default 0.3) "
                        "and closer to one than to the suite's cases")
    p.add_argument("--dedupe", type=float, default=0.92,
                   help="drop an input this close to a case, a candidate or a kept input (cosine, default 0.92)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to read the drift topic")
    p.set_defaults(func=harvest_command)
