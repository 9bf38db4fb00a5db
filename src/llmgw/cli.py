"""The ``llmgw`` command."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _up(args: argparse.Namespace) -> int:
    from llmgw.up import main as up

    return up(demo=args.demo, exit_after_demo=args.exit_after_demo, workdir=args.workdir, port=args.port,
              colocate=args.colocate, http_port=args.http_port, otel=args.otel)


def _limits_check(args: argparse.Namespace) -> int:
    from llmgw.kit.errors import ConfigError
    from llmgw.services.limiter.rules import load_rules

    bad = 0
    for path in args.files:
        try:
            rules = load_rules(path)
        except ConfigError as exc:
            print(f"FAIL {exc.message}", file=sys.stderr)
            bad += 1
            continue
        count = sum(len(r.limits) for rules_ in rules.domains.values() for r in rules_)
        print(f"ok   {path}: {len(rules.domains)} domain(s), {count} limit(s)")
        for domain, domain_rules in rules.domains.items():
            for rule in domain_rules:
                for limit in rule.limits:
                    print(f"     {domain} {rule.match} {limit.name}: {limit.worst_case()}")
    return 1 if bad else 0


def _topics_create(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from llmgw.kit.kafka import DEFAULT_TOPICS, DRIFT_GLOBAL_TOPIC, KafkaSecurity, ensure_topics

    security = KafkaSecurity(
        protocol=os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        sasl_mechanism=os.environ.get("KAFKA_SASL_MECHANISM", "PLAIN"),
        username=os.environ.get("KAFKA_SASL_USERNAME"),
        password=os.environ.get("KAFKA_SASL_PASSWORD"),
    )
    # The drift job's global inputs go to one replica: that topic keeps its one partition.
    topics = {name: parts if name == DRIFT_GLOBAL_TOPIC else args.partitions or parts
              for name, parts in DEFAULT_TOPICS.items()}
    asyncio.run(ensure_topics(args.bootstrap, topics, replication=args.replication,
                              retention_ms=args.retention_ms, security=security))
    print(f"topics ready on {args.bootstrap}: {', '.join(topics)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmgw", description="llmgw: an LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run every service locally on the embedded default")
    up.add_argument("--demo", action="store_true", help="run the short demo once everything is SERVING")
    up.add_argument("--exit-after-demo", action="store_true", help="stop everything after the demo")
    up.add_argument("--workdir", default=".llmgw", help="logs and generated config (default .llmgw)")
    up.add_argument("--port", type=int, default=50050, help="the ingress port (default 50050)")
    up.add_argument("--http-port", type=int, default=8080,
                    help="the ingress's OpenAI-compatible HTTP port (default 8080; /v1)")
    up.add_argument("--colocate", nargs="?", const="limiter,cache", default="", metavar="CORES",
                    help="the ingress runs these cores itself: limiter,cache (the default: a hit is one gRPC hop) "
                         "and/or router (a miss goes app -> ingress -> provider); docs/cache.md \"Topologies\"")
    up.add_argument("--otel", choices=("file", "console"), nargs="?", const="file", default=None,
                    help="traces on: JSON lines per service in <workdir>/traces (file, the default) or on each "
                         "service's stdout (console); docs/operations.md")
    up.set_defaults(func=_up)

    limits = sub.add_parser("limits", help="rate-limit rules").add_subparsers(dest="sub", required=True)
    check = limits.add_parser("check", help="validate limit files (for CI)")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=_limits_check)

    from llmgw.commands.cache import add_parser as add_cache
    from llmgw.commands.drift import add_parser as add_drift
    from llmgw.commands.events import add_parser as add_events
    from llmgw.commands.keys import add_parser as add_keys
    from llmgw.evals.cli import add_parser as add_evals
    from llmgw.prompts.cli import add_parser as add_prompts

    add_prompts(sub)
    add_evals(sub)
    add_events(sub)
    add_cache(sub)
    add_drift(sub)
    add_keys(sub)

    topics = sub.add_parser("topics", help="Kafka topics").add_subparsers(dest="sub", required=True)
    tcreate = topics.add_parser("create", help="create the llm.* topics if missing")
    tcreate.add_argument("--bootstrap", required=True)
    tcreate.add_argument("--partitions", type=int, default=0, help="default: 3 for events, 1 for drift")
    tcreate.add_argument("--replication", type=int, default=1)
    tcreate.add_argument("--retention-ms", type=int, default=None)
    tcreate.set_defaults(func=_topics_create)

    args = parser.parse_args(argv)
    from llmgw.kit.errors import LlmgwError

    try:
        return int(args.func(args))
    except LlmgwError as exc:
        print(f"llmgw: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
