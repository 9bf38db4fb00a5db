"""Contract evolution: only additive changes. ``python -m llmgw.contracts --write`` records the
current messages (field name -> number, type, repeated) in ``proto/contracts.lock.json``; the test
suite compares against it, so removing, renumbering or retyping a field fails CI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FileDescriptor

from llmgw.cache.v1 import cache_pb2
from llmgw.events.v1 import events_pb2
from llmgw.gateway.v1 import gateway_pb2
from llmgw.limiter.v1 import limiter_pb2
from llmgw.router.v1 import router_pb2

__all__ = ["LOCK", "breaking_changes", "snapshot"]

LOCK = Path(__file__).resolve().parents[2] / "proto" / "contracts.lock.json"
FILES: list[FileDescriptor] = [m.DESCRIPTOR for m in (gateway_pb2, limiter_pb2, cache_pb2, router_pb2, events_pb2)]


def _messages(d: Descriptor) -> dict[str, Any]:
    out = {d.full_name: {f.name: [f.number, f.type, int(f.is_repeated)] for f in d.fields}}
    for nested in d.nested_types:
        if not nested.GetOptions().map_entry:
            out.update(_messages(nested))
    return out


def snapshot() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fd in FILES:
        for msg in fd.message_types_by_name.values():
            out.update(_messages(msg))
    return dict(sorted(out.items()))


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    problems = []
    for msg, fields in old.items():
        if msg not in new:
            problems.append(f"{msg}: message removed")
            continue
        for name, spec in fields.items():
            if name not in new[msg]:
                problems.append(f"{msg}.{name}: field removed (reserve its number instead)")
            elif new[msg][name] != spec:
                problems.append(f"{msg}.{name}: number/type/repeated changed {spec} -> {new[msg][name]}")
        used = {spec[0]: name for name, spec in fields.items()}
        for name, spec in new[msg].items():
            if name not in fields and spec[0] in used:
                problems.append(f"{msg}.{name}: reuses number {spec[0]} of {used[spec[0]]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help="accept the current contracts as the new baseline")
    args = parser.parse_args()
    current = snapshot()
    if args.write:
        old = json.loads(LOCK.read_text()) if LOCK.exists() else {}
        problems = breaking_changes(old, current)
        if problems:
            print("refusing to record breaking changes:", *problems, sep="\n  ", file=sys.stderr)
            return 1
        LOCK.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(current)} messages in {LOCK}")
        return 0
    problems = breaking_changes(json.loads(LOCK.read_text()), current)
    print("\n".join(problems) or "contracts: additive only")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
