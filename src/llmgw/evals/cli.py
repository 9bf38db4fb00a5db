"""``llmgw eval ...``: validate suites, run them, gate versions, write reports, generate attacks."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import yaml

from llmgw.domain import Message, Sampling
from llmgw.evals.adversarial import generate
from llmgw.evals.assertions import Checker, Grader, load_module_path
from llmgw.evals.baselines import baseline_problems, score_baselines
from llmgw.evals.harvest import candidates_path, load_candidates
from llmgw.evals.harvest_cli import add_harvest_parser
from llmgw.evals.provenance import model_source, reference_source
from llmgw.evals.report import html_report, json_report, matrix_lines
from llmgw.evals.results import (
    GateResult,
    RunRecord,
    gate,
    load_record,
    record_path,
    write_approvals,
)
from llmgw.evals.runner import Progress, route_targets, run_version
from llmgw.evals.suite import Suite, load_suite, suite_dirs
from llmgw.kit.errors import ConfigError, InvalidArgument
from llmgw.prompts.registry import PromptVersion, Registry
from llmgw.services.router.config import RouterConfig, load_router_config
from llmgw.services.router.providers import Provider, make_provider
from llmgw.services.router.settings import DEFAULT_ROUTES

__all__ = ["add_parser", "route_providers"]


def route_providers(prompts: Path, routes: Path, name: str, version: str) -> list[str]:
    pv = Registry.load(prompts, enforce_approvals=False).get(name, version)
    return [t.provider for t in route_targets(load_router_config(routes), pv)]


def _suites(args: argparse.Namespace) -> list[Suite]:
    evals = Path(args.evals)
    if getattr(args, "prompt", None):
        return [load_suite(evals / args.prompt)]
    return [load_suite(d) for d in suite_dirs(evals)]


def _versions(reg: Registry, suite: Suite, wanted: str | None) -> list[PromptVersion]:
    """``--version`` (comma-separated), else every version a label points at."""
    if wanted:
        return [reg.get(suite.prompt, v.strip()) for v in wanted.split(",") if v.strip()]
    labelled = sorted(set(reg.labels(suite.prompt).values()), key=lambda v: int(v[1:]))
    return [reg.get(suite.prompt, v) for v in labelled]


def _validate(args: argparse.Namespace) -> int:
    reg = Registry.load(args.prompts, enforce_approvals=False)
    gated = Registry.load(args.prompts)  # what the router and promote see: approvals by exact content
    config = load_router_config(args.routes)
    problems: list[str] = []
    suites = {s.prompt: s for s in _suites(args)}
    for name in [args.prompt] if args.prompt else reg.names():
        suite = suites.get(name)
        if suite is None:
            problems.append(f"{name}: no eval suite (evals/{name}/cases/*.yaml)")
            continue
        problems += suite.problems() + Checker(suite).check_python_names()
        newest = reg.versions(name)[-1]
        for case in suite.cases:
            if case.expects_error:
                continue
            try:
                newest.validate(case.vars)
            except InvalidArgument as exc:
                problems.append(f"{name}: case {case.id}: {exc.message}")
        problems += _label_problems(reg, gated, config, name)
        scores = asyncio.run(score_baselines(suite))
        problems += baseline_problems(suite, scores)
        total, adv, kinds = suite.composition()
        mix = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        print(f"ok   {name}: {total} cases, {adv} adversarial ({mix})")
        bar = suite.settings.min_pass_rate - suite.settings.baseline_margin
        print(f"     no-model baselines (must stay below {bar:.0%}): "
              + ", ".join(f"{s.name} {s.pass_rate:.0%}" for s in scores))
        waiting = load_candidates(suite)
        if waiting:
            print(f"     {len(waiting)} drift candidates await review in {candidates_path(suite)} "
                  "(add assertions and move them to a cases file)")
    for name in sorted(set(suites) - set(reg.names())):
        problems.append(f"{name}: eval suite for a prompt the registry does not have")
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


def _label_problems(reg: Registry, gated: Registry, config: RouterConfig, name: str) -> list[str]:
    """Every label needs a passing eval for every provider of its route; production needs passes
    that count towards production (from a model, or stand-ins the suite allows)."""
    problems = []
    for label, version in reg.labels(name).items():
        pv = reg.get(name, version)
        approved = gated.get(name, version)
        for t in route_targets(config, pv):
            if t.provider not in (approved.approved or frozenset()):
                problems.append(f"{name}: label {label} -> {pv.id} has no passing eval for {t.provider}")
            elif approved.approved is not None and t.provider not in approved.approved_for(label):
                problems.append(f"{name}: label {label} -> {pv.id}: the {t.provider} approval comes from replies "
                                f"not recorded from a model, which do not count towards {label} (approvals.yaml "
                                "`source`; record with provider keys or set reference_in_production)")
    return problems


Recording = tuple[dict[str, Provider], Callable[[str, str], dict[str, str]]]


@asynccontextmanager
async def _recording_providers(args: argparse.Namespace, config: RouterConfig,
                               suite: Suite) -> AsyncIterator[Recording | None]:
    """None: replay. ``--record``: the configured providers (real keys), replies labelled with the
    model and SDK; ``--record --reference``: the local fake providers answering with the suite's
    ``responder.py``, replies labelled as that stand-in (``llmgw.evals.provenance``)."""
    if not args.record:
        yield None
        return
    runner = None
    source: Callable[[str, str], dict[str, str]] = model_source
    if args.reference:
        from aiohttp import web

        from llmgw.fakeproviders import FakeProviders, create_app

        responder_file = suite.root / "responder.py"
        responder = load_module_path(responder_file).respond
        stand_in = reference_source(responder_file, Path(args.evals))
        source = lambda provider, model: stand_in  # noqa: E731 - the same stand-in answers for every provider
        runner = web.AppRunner(create_app(FakeProviders(responder=responder)))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        urls = {"openai": f"http://127.0.0.1:{port}/v1", "anthropic": f"http://127.0.0.1:{port}"}
        cfgs = {n: c.model_copy(update={"base_url": urls[n], "fallback_api_key": "fake"})
                for n, c in config.providers.items()}
    else:
        cfgs = dict(config.providers)
    providers: dict[str, Provider] = {n: make_provider(n, c) for n, c in cfgs.items()}
    try:
        yield providers, source
    finally:
        for p in providers.values():
            await p.close()
        if runner is not None:
            await runner.cleanup()


_GRADER_PROMPT = (
    "You grade an AI assistant's answer against a rubric. Reply with PASS or FAIL on the first line, "
    "then one sentence why.\n\nRubric: {rubric}\n\nAnswer:\n<answer>\n{output}\n</answer>")


def _grader(spec: str | None, config: RouterConfig) -> tuple[Grader | None, Provider | None]:
    """``--grader openai:gpt-4o-mini``: a real provider grades ``rubric`` assertions at temperature 0
    (without it they are reported as skipped, never as passed)."""
    if not spec:
        return None, None
    name, _, model = spec.partition(":")
    if name not in config.providers or not model:
        raise ConfigError(f"--grader: expected PROVIDER:MODEL with a configured provider, got {spec!r}")
    provider = make_provider(name, config.providers[name])

    async def grade(rubric: str, output: str) -> tuple[bool, str]:
        reply = await provider.complete(model, "", (Message("user", _GRADER_PROMPT.format(
            rubric=rubric, output=output)),), Sampling(temperature=0, max_tokens=100), 60)
        verdict, _, why = reply.text.strip().partition("\n")
        return verdict.strip().upper().startswith("PASS"), why.strip() or verdict

    return grade, provider


async def _run_async(args: argparse.Namespace) -> list[tuple[Suite, list[RunRecord]]]:
    config = load_router_config(args.routes)
    reg = Registry.load(args.prompts, enforce_approvals=False)
    grade, grader_provider = _grader(getattr(args, "grader", None), config)
    try:
        return await _run_suites(args, config, reg, grade)
    finally:
        if grader_provider is not None:
            await grader_provider.close()


async def _run_suites(args: argparse.Namespace, config: RouterConfig, reg: Registry,
                      grade: Grader | None) -> list[tuple[Suite, list[RunRecord]]]:
    out = []
    for suite in _suites(args):
        checker = Checker(suite, grader=grade)
        records = []
        for pv in _versions(reg, suite, args.version):
            async with _recording_providers(args, config, suite) as recording:
                providers, source = recording if recording else (None, None)
                record = await run_version(suite, reg, config, pv.version, cassettes=suite.root / "cassettes",
                                           providers=providers, source=source, repeat=args.repeat,
                                           checker=checker, progress=lambda n, label: Progress(n, label))
            records.append(record)
            if not args.no_save:
                record_path(suite, pv.version).parent.mkdir(exist_ok=True)
                record_path(suite, pv.version).write_text(record.to_json() + "\n")
        out.append((suite, records))
    return out


def _run(args: argparse.Namespace) -> int:
    for suite, records in asyncio.run(_run_async(args)):
        for line in matrix_lines(records):
            print(line)
        _write_reports(args, suite, records, None, {})
    return 0


def _write_reports(args: argparse.Namespace, suite: Suite, records: list[RunRecord], baseline: RunRecord | None,
                   gates: dict[str, list[GateResult]]) -> None:
    if not records:
        return
    if args.html:
        path = Path(args.html.replace("{prompt}", suite.prompt))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html_report(records, baseline, gates))
        print(f"report: {path}")
    if args.json:
        path = Path(args.json.replace("{prompt}", suite.prompt))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json_report(records, baseline, gates))
        print(f"json: {path}")


def _baseline(reg: Registry, suite: Suite, pv: PromptVersion, wanted: str | None) -> RunRecord | None:
    """``--baseline``, else production (when gating another version), else the newest earlier
    version with results."""
    if wanted:
        return load_record(suite, reg.get(suite.prompt, wanted).version)
    production = reg.labels(suite.prompt).get("production")
    candidates = ([production] if production and production != pv.version else []) + [
        v.version for v in reversed(reg.versions(suite.prompt)) if int(v.version[1:]) < int(pv.version[1:])]
    for version in candidates:
        if record_path(suite, version).exists():
            return load_record(suite, version)
    return None


def _gate(args: argparse.Namespace) -> int:
    fresh: dict[tuple[str, str], RunRecord] = {}
    if args.rerun:  # gate what the cassettes give now, not what a results file claims
        args.record, args.reference, args.no_save = False, False, True
        fresh = {(r.prompt, r.version): r for _, records in asyncio.run(_run_async(args)) for r in records}
    reg = Registry.load(args.prompts, enforce_approvals=False)
    gated = Registry.load(args.prompts)
    config = load_router_config(args.routes)
    failed = False
    for suite in _suites(args):
        records, gates = [], {}
        baseline = None
        for pv in _versions(reg, suite, args.version):
            record = fresh.get((suite.prompt, pv.version)) or load_record(suite, pv.version)
            if record.version_id != pv.id:
                print(f"FAIL {suite.prompt}@{pv.version}: results are for {record.version_id}, the file is now "
                      f"{pv.id}: re-run the evals", file=sys.stderr)
                failed = True
                continue
            baseline = _baseline(reg, suite, pv, args.baseline)
            if baseline is not None and baseline.version == pv.version:
                baseline = None
            results = gate(suite, record, baseline, [t.provider for t in route_targets(config, pv)])
            gates[pv.version] = results
            records.append(record)
            against = f" vs {baseline.version}" if baseline else ""
            for r in results:
                rate = f"{r.pass_rate:.1%}"
                if r.baseline_rate is not None:
                    rate += f" (baseline {r.baseline_rate:.1%})"
                print(f"{'PASS' if r.passed else 'FAIL'} {suite.prompt}@{pv.version}{against} {r.provider}: {rate}"
                      + (f"; regressions: {', '.join(r.regressions)}" if r.regressions else ""))
                for why in r.reasons:
                    print(f"     {why}")
                print(f"     source: {r.source}" + ("" if r.production else
                                                    "; does not count towards production"))
                if r.production_note:
                    print(f"     {r.production_note}")
            failed |= not all(r.passed for r in results)
            if args.approve:
                print(f"approvals: {write_approvals(Path(args.prompts), record, results, by=getpass.getuser())}")
            else:
                failed |= _approvals_backed(gated.get(suite.prompt, pv.version), results)
        _write_reports(args, suite, records, baseline, gates)
    return 1 if failed else 0


def _approvals_backed(pv: PromptVersion, results: list[GateResult]) -> bool:
    """An approval in approvals.yaml that the gate does not give is an error (hand-edited file)."""
    bad = False
    for r in results:
        if r.provider in (pv.approved or frozenset()) and not r.passed:
            print(f"FAIL {pv.name}@{pv.version} {r.provider}: approvals.yaml approves it but the gate fails",
                  file=sys.stderr)
            bad = True
        elif r.provider in (pv.production_approved or frozenset()) and not r.production:
            print(f"FAIL {pv.name}@{pv.version} {r.provider}: approvals.yaml counts it towards production but its "
                  f"replies are not from a model ({r.source}) and the suite does not allow that", file=sys.stderr)
            bad = True
    return bad


def _report(args: argparse.Namespace) -> int:
    reg = Registry.load(args.prompts, enforce_approvals=False)
    config = load_router_config(args.routes)
    for suite in _suites(args):
        versions = _versions(reg, suite, args.version)
        records = [load_record(suite, pv.version) for pv in versions]
        baseline = _baseline(reg, suite, versions[-1], args.baseline) if versions else None
        gates = {pv.version: gate(suite, r, baseline if baseline and baseline.version != r.version else None,
                                  [t.provider for t in route_targets(config, pv)])
                 for pv, r in zip(versions, records, strict=True)}
        args.html = args.html or f".llmgw/evals/{suite.prompt}.html"
        _write_reports(args, suite, records, baseline, gates)
    return 0


def _generate(args: argparse.Namespace) -> int:
    if not args.prompt:
        raise ConfigError("generate-adversarial needs --prompt")
    suite = load_suite(Path(args.evals) / args.prompt)
    cases = generate(suite.cases, args.only.split(",") if args.only else ())
    out = Path(args.out) if args.out else suite.root / "cases" / "generated.yaml"
    if out.resolve().parent == (suite.root / "cases").resolve() and out.exists() and not args.force:
        raise ConfigError(f"{out} exists: pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Generated by `llmgw eval generate-adversarial`: deterministic transformations of the normal\n"
                   "# cases. Review before committing.\n" + yaml.safe_dump(cases, sort_keys=False, allow_unicode=True))
    print(f"{len(cases)} adversarial cases -> {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ev = sub.add_parser("eval", help="the evaluation suite").add_subparsers(dest="sub", required=True)

    def cmd(name: str, func: object, help_: str, *, versions: bool = True) -> argparse.ArgumentParser:
        p = ev.add_parser(name, help=help_)
        p.add_argument("--evals", default="evals", help="suites root (default: evals)")
        p.add_argument("--prompts", default="prompts", help="registry root (default: prompts)")
        p.add_argument("--routes", default=str(DEFAULT_ROUTES), help="routes file (default: the shipped one)")
        p.add_argument("--prompt", help="one prompt (default: every suite)")
        if versions:
            p.add_argument("--version", help="versions, comma-separated (default: every labelled version)")
            p.add_argument("--html", help="write an HTML report ({prompt} is replaced)")
            p.add_argument("--json", help="write a JSON report ({prompt} is replaced)")
        p.set_defaults(func=func)
        return p

    cmd("validate", _validate, "suite composition (>= 50 cases, >= half adversarial), cases, approvals",
        versions=False)
    run = cmd("run", _run, "run suites: version x provider matrix, from cassettes unless --record")
    for p in (run, cmd("gate", _gate, "fail when a version regresses against its baseline")):
        p.add_argument("--repeat", type=int, default=1, help="run each case N times; a case passes if all do")
        p.add_argument("--record", action="store_true", help="call the providers (real keys) and save cassettes")
        p.add_argument("--reference", action="store_true",
                       help="with --record: record the local fake providers answering with evals/<prompt>/responder.py")
        p.add_argument("--no-save", action="store_true", help="do not write evals/<prompt>/results/")
        p.add_argument("--grader", help="PROVIDER:MODEL grading rubric assertions (real keys; else skipped)")
    gate_ = ev.choices["gate"]
    gate_.add_argument("--rerun", action="store_true", help="first re-run the versions from their cassettes")
    gate_.add_argument("--baseline", help="version to compare with (default: production, else the previous one)")
    gate_.add_argument("--approve", action="store_true",
                       help="write the verdict to prompts/<prompt>/approvals.yaml (what promote and the router use)")
    rep = cmd("report", _report, "HTML/JSON report of stored results")
    rep.add_argument("--baseline")
    gen = cmd("generate-adversarial", _generate, "derive adversarial cases from the normal ones, offline",
              versions=False)
    gen.add_argument("--only", help="transformations, comma-separated (default: all)")
    gen.add_argument("--out", help="default: evals/<prompt>/cases/generated.yaml")
    gen.add_argument("--force", action="store_true")
    add_harvest_parser(ev)

