"""``llmgw drift ...``: incidents as a table, per-incident reports, and re-baselining."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from llmgw.commands.events import records
from llmgw.kit.kafka import DRIFT_METRICS_TOPIC, DRIFT_TOPIC

__all__ = ["HEADER", "add_parser", "format_record"]

HEADER = (f"{'time':<8} {'incident':<12} {'state':<6} {'segment':<30} {'detector':<13} {'stat/thr':>9} {'p':>6}  "
          "what changed")


def format_record(rec: dict[str, Any]) -> str:
    """One incident record as a table row: the top drifting cluster with its keywords and an example
    (a length incident: which way, the median lengths and an example)."""
    top = ""
    if length := rec.get("length"):
        example = (length["examples"][0] if length["examples"] else "")[:50]
        top = (f"{length['direction']}: median {length['reference_median_chars']:.0f}->"
               f"{length['current_median_chars']:.0f} chars e.g. {example!r}")
    elif rec.get("clusters"):
        c = rec["clusters"][0]
        example = (c["examples"][0] if c["examples"] else "")[:50]
        top = (f"{c['cell']} {c['reference_share']:.0%}->{c['current_share']:.0%} "
               f"[{', '.join(c['keywords'][:3])}] e.g. {example!r}")
    elif rec.get("reason"):
        top = rec["reason"]
    ratio = rec["statistic"] / rec["threshold"] if rec["threshold"] else 0.0
    p = f"{rec['p_value']:.3f}" if rec.get("p_value") is not None else "-"
    return (f"{time.strftime('%H:%M:%S', time.localtime(rec['time'])):<8} {rec['incident_id'][:12]:<12} "
            f"{rec['state']:<6} {rec['segment'][:30]:<30} {rec['detector'][:13]:<13} {ratio:>8.2f}x {p:>6}  {top}")


async def _tail(args: argparse.Namespace) -> int:
    print(HEADER, flush=True)
    shown = 0
    async for rec in records(args.bootstrap, DRIFT_TOPIC, from_beginning=args.from_beginning,
                             timeout_s=args.timeout):
        if args.segment and rec.get("segment") != args.segment:
            continue
        print(format_record(rec), flush=True)
        shown += 1
        if args.max and shown >= args.max:
            break
    return 0


async def _report(args: argparse.Namespace) -> int:
    from llmgw.commands.drift_report import incident_page

    incidents: dict[str, list[dict[str, Any]]] = {}
    async for rec in records(args.bootstrap, DRIFT_TOPIC, from_beginning=True, timeout_s=args.timeout):
        if not args.incident or rec["incident_id"] == args.incident:
            incidents.setdefault(rec["incident_id"], []).append(rec)
    if not incidents:
        print(f"no incident {args.incident or ''} on {DRIFT_TOPIC}", file=sys.stderr)
        return 1
    segments = {h[0]["segment"] for h in incidents.values()}
    windows: dict[str, list[dict[str, Any]]] = {}
    async for rec in records(args.bootstrap, DRIFT_METRICS_TOPIC, from_beginning=True, timeout_s=args.timeout):
        if rec.get("segment") in segments and rec.get("detectors"):
            windows.setdefault(rec["segment"], []).append(rec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for incident, history in incidents.items():
        path = out / f"{incident}.html"
        path.write_text(incident_page(history, windows.get(history[0]["segment"], []), bootstrap=args.bootstrap,
                                      segment_by=args.segment_by))
        print(f"{path}")
    return 0


def _store(args: argparse.Namespace) -> Any:
    from llmgw.kit.redis import connect
    from llmgw.services.drift.baselines import BaselineStore

    if not args.redis:
        raise SystemExit("llmgw drift baseline: --redis (or $DRIFT_REDIS_URL) is required")
    return BaselineStore(connect(args.redis))


async def _baseline(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        if args.action == "list":
            print(f"{'segment':<36} {'accepted':<32} {'by':<10} {'provisional':<32}")
            for seg in await store.segments():
                acc, prov = await store.load(seg, "accepted"), await store.load(seg, "provisional")
                print(f"{seg:<36} {acc.id if acc else '-':<32} {acc.accepted_by if acc else '':<10} "
                      f"{prov.id if prov else '-':<32}")
        elif args.action == "show":
            for slot in ("accepted", "provisional", "recent"):
                ref = await store.load(args.segment, slot)
                if ref is not None:
                    print(json.dumps({"slot": slot, "id": ref.id, "status": ref.status, "inputs": len(ref.texts),
                                      "created_at": ref.created_at, "accepted_by": ref.accepted_by,
                                      "accepted_at": ref.accepted_at, "examples": ref.texts[:5]}, ensure_ascii=False))
            for entry in await store.history(args.segment):
                print(json.dumps({"history": entry}))
        else:
            ref = await store.accept(args.segment, args.source, by=args.by or getpass.getuser(), note=args.note)
            print(f"{args.segment}: accepted {ref.id} from the {args.source} sample ({len(ref.texts)} inputs) "
                  f"by {ref.accepted_by}; the drift job switches within BASELINE_POLL_S")
    finally:
        await store.close()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    drift = sub.add_parser("drift", help="input drift").add_subparsers(dest="sub", required=True)
    tail = drift.add_parser("tail", help="drift incidents as a table")
    tail.add_argument("--bootstrap", required=True)
    tail.add_argument("--segment", help="e.g. acme/default/summarize/production, or * for global")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=0)
    tail.add_argument("--timeout", type=float, default=0)
    tail.set_defaults(func=lambda a: asyncio.run(_tail(a)))

    report = drift.add_parser("report", help="an HTML page per incident (charts inline)")
    report.add_argument("--bootstrap", required=True)
    report.add_argument("--incident", help="one incident id (default: every incident on the topic)")
    report.add_argument("--out", default=".llmgw/drift", help="directory (default .llmgw/drift)")
    report.add_argument("--timeout", type=float, default=5.0, help="seconds to read the topics")
    report.add_argument("--segment-by", default="",
                        help="the drift job's SEGMENT_BY when not the default (shown in the harvest command)")
    report.set_defaults(func=lambda a: asyncio.run(_report(a)))

    base = drift.add_parser("baseline", help="versioned references: list, show, accept")
    base.add_argument("action", choices=["list", "show", "accept"])
    base.add_argument("--segment")
    base.add_argument("--source", choices=["provisional", "recent"], default="recent",
                      help="accept the first inputs (provisional) or the newest ones (recent)")
    base.add_argument("--by", help="who accepts (default: the current user)")
    base.add_argument("--note", default="", help="why (kept in the history)")
    base.add_argument("--redis", default=os.environ.get("DRIFT_REDIS_URL"), help="default $DRIFT_REDIS_URL")
    base.set_defaults(func=lambda a: asyncio.run(_baseline(a)) if a.action == "list" or a.segment else
                      sys.exit("llmgw drift baseline show/accept: --segment is required"))
