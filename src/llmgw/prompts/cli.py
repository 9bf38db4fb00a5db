"""``llmgw prompts ...``: the prompt author's commands."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from llmgw.kit.errors import PermissionDenied
from llmgw.prompts.registry import APPROVALS_FILE, Registry, read_approvals
from llmgw.prompts.workflow import AUDIT_TOPIC, LabelMove, diff, move_label, new_version, rollback_target, validate_all
from llmgw.services.router.settings import DEFAULT_ROUTES

__all__ = ["add_parser"]


def _list(args: argparse.Namespace) -> int:
    reg = Registry.load(args.dir)
    for name in reg.names():
        labels = ", ".join(f"{lbl}={v}" for lbl, v in sorted(reg.labels(name).items()))
        print(f"{name:<24} versions: {', '.join(v.id for v in reg.versions(name))}  labels: {labels}")
    return 0


def _show(args: argparse.Namespace) -> int:
    reg = Registry.load(args.dir)
    name, _, version = args.ref.partition("@")
    pv = reg.get(name, version) if version else reg.resolve(name, args.label)
    print(f"# {name}@{pv.id}")
    approvals = read_approvals(Path(args.dir) / name / APPROVALS_FILE).get(pv.version, {})
    for provider, rec in sorted(approvals.items()):
        if rec["version_id"] != pv.id:
            print(f"# eval {provider}: approval is for {rec['version_id']}, not this content")
            continue
        rate = rec.get("pass_rate")
        production = "counts towards production" if rec.get("production") is True else "not for production"
        note = f" ({rec['production_note']})" if rec.get("production_note") else ""
        print(f"# eval {provider}: {rate:.1%} of {rec.get('cases', '?')} cases" if isinstance(rate, float)
              else f"# eval {provider}: passed", end="")
        print(f", source {rec.get('source', 'unknown')}; {production}{note}")
    if not approvals:
        print("# eval: no approvals for this version")
    print(pv.source, end="")
    return 0


def _diff(args: argparse.Namespace) -> int:
    print(diff(Path(args.dir), args.a, args.b), end="")
    return 0


def _new(args: argparse.Namespace) -> int:
    print(f"created {new_version(Path(args.dir), args.name, source=args.source)} — edit it, then open a review")
    return 0


async def _publish(move: LabelMove, redis_url: str | None, kafka: str | None) -> None:
    if redis_url:
        from llmgw.kit.redis import connect
        from llmgw.prompts.labels import LabelStore

        redis = connect(redis_url)
        try:
            await LabelStore(redis).move(move.prompt, move.label, move.version)
        finally:
            await redis.aclose()
    if kafka:
        from llmgw.kit.kafka import KafkaPublisher, ensure_topics

        await ensure_topics(kafka, {AUDIT_TOPIC: 1})
        publisher = KafkaPublisher(kafka)
        await publisher.start()
        publisher.publish(AUDIT_TOPIC, f"{move.prompt}/{move.label}", move.to_json())
        await publisher.stop(timeout_s=10)


def _announce(move: LabelMove, args: argparse.Namespace) -> int:
    asyncio.run(_publish(move, args.redis, args.kafka))
    where = " and the live label store" if args.redis else ""
    print(f"{move.prompt}: {move.label} {move.previous} -> {move.version} ({move.reason} by {move.actor}); "
          f"written to labels.yaml{where}" + (f"; audit event on {AUDIT_TOPIC}" if args.kafka else ""))
    return 0


def _cleared(args: argparse.Namespace, ref: str) -> None:
    """A label may only point at a version whose every route provider passed its evals: the
    router would not serve the others (see ``llmgw eval gate``)."""
    from llmgw.evals.cli import route_providers
    from llmgw.evals.results import missing_approvals

    name, _, version = ref.partition("@")
    providers = route_providers(Path(args.dir), Path(args.routes), name, version)
    missing = missing_approvals(Path(args.dir), name, version, providers)
    if missing:
        raise PermissionDenied(
            f"refused: {ref} has no passing eval for {', '.join(missing)}; run `llmgw eval run --prompt {name} "
            f"--version {version} --record` and `llmgw eval gate --prompt {name} --version {version} --approve`")
    stand_ins = missing_approvals(Path(args.dir), name, version, providers, args.label)
    if stand_ins:
        raise PermissionDenied(
            f"refused: {ref} passed its evals for {', '.join(stand_ins)} only on replies not recorded from a model "
            f"(see approvals.yaml `source`), which do not count towards {args.label}; record with provider keys "
            f"(`llmgw eval run --prompt {name} --version {version} --record`) and re-gate, or allow stand-ins "
            f"explicitly with reference_in_production in evals/{name}/suite.yaml")


def _promote(args: argparse.Namespace) -> int:
    _cleared(args, args.ref)
    return _announce(move_label(Path(args.dir), args.ref, args.label, reason="promote"), args)


def _rollback(args: argparse.Namespace) -> int:
    target = rollback_target(Path(args.dir), args.name, args.label)
    _cleared(args, target)
    return _announce(move_label(Path(args.dir), target, args.label, reason="rollback"), args)


def _validate(args: argparse.Namespace) -> int:
    for line in validate_all(Path(args.dir)):
        print(line)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    prompts = sub.add_parser("prompts", help="the prompt registry").add_subparsers(dest="sub", required=True)

    def cmd(name: str, func: object, help_: str) -> argparse.ArgumentParser:
        p = prompts.add_parser(name, help=help_)
        p.add_argument("--dir", default="prompts", help="the registry root (default: prompts)")
        p.set_defaults(func=func)
        return p

    def live(p: argparse.ArgumentParser) -> None:
        p.add_argument("--redis", default=os.environ.get("LABELS_REDIS_URL"),
                       help="the live label store (default $LABELS_REDIS_URL): running services follow it")
        p.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP"),
                       help=f"publish an audit event on {AUDIT_TOPIC} (default $KAFKA_BOOTSTRAP)")
        p.add_argument("--routes", default=str(DEFAULT_ROUTES),
                       help="routes file: the providers whose eval approval the version needs")

    cmd("list", _list, "prompts, versions and labels")
    show = cmd("show", _show, "print a version (NAME@V, or NAME with --label)")
    show.add_argument("ref")
    show.add_argument("--label", default="production")
    d = cmd("diff", _diff, "unified diff of two versions: NAME@A NAME@B")
    d.add_argument("a")
    d.add_argument("b")
    n = cmd("new-version", _new, "copy the newest version (or --from V) to the next number")
    n.add_argument("name")
    n.add_argument("--from", dest="source")
    pr = cmd("promote", _promote, "point a label at a version: NAME@V --label L")
    pr.add_argument("ref")
    pr.add_argument("--label", required=True)
    live(pr)
    rb = cmd("rollback", _rollback, "move a label back to its previous version")
    rb.add_argument("name")
    rb.add_argument("--label", required=True)
    live(rb)
    cmd("validate", _validate, "load and render every version of every prompt")
