"""``llmgw drift tail``: drift records as a readable table, one line per window and segment."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from llmgw.events_cli import records
from llmgw.kit.kafka import DRIFT_TOPIC

__all__ = ["add_parser", "format_record"]

HEADER = f"{'time':<8} {'segment':<28} {'n':>4} {'drift':<5} {'p':>9} {'novel':>6} {'mmd2':>7}  top change"


def format_record(rec: dict[str, Any]) -> str:
    st = rec["statistics"]
    top = ""
    if rec.get("cells"):
        c = rec["cells"][0]
        example = (c["examples"][0] if c["examples"] else "")[:60]
        top = f"{c['cell']} {c['reference_share']:.0%}->{c['current_share']:.0%} e.g. {example!r}"
    return (f"{time.strftime('%H:%M:%S', time.localtime(rec['time'])):<8} {rec['segment'][:28]:<28} "
            f"{rec['window']['n']:>4} {'YES' if rec.get('drift') else 'no':<5} {st['p_value']:>9.2g} "
            f"{st['novelty_share']:>6.0%} {st['mmd2']:>7.3f}  {top}")


async def _tail(args: argparse.Namespace) -> int:
    print(HEADER, flush=True)
    shown = 0
    async for rec in records(args.bootstrap, DRIFT_TOPIC, from_beginning=args.from_beginning,
                             timeout_s=args.timeout):
        if args.segment and rec.get("segment") != args.segment:
            continue
        if args.only_drift and not rec.get("drift"):
            continue
        print(format_record(rec), flush=True)
        shown += 1
        if args.max and shown >= args.max:
            break
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    drift = sub.add_parser("drift", help="input drift").add_subparsers(dest="sub", required=True)
    tail = drift.add_parser("tail", help="drift records as a table")
    tail.add_argument("--bootstrap", required=True)
    tail.add_argument("--segment", help="e.g. acme/summarize, or * for global")
    tail.add_argument("--only-drift", action="store_true", help="only windows flagged as drift")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=0)
    tail.add_argument("--timeout", type=float, default=0)
    tail.set_defaults(func=lambda a: asyncio.run(_tail(a)))
