"""Run a suite against one prompt version on every provider of its route, through the gateway's
own registry and router (only the provider adapter is swapped for a cassette)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from llmgw.domain import RouteCall
from llmgw.evals.assertions import Checker
from llmgw.evals.cassette import Cassette, CassetteProvider
from llmgw.evals.results import CaseResult, ProviderResult, RunRecord, Try
from llmgw.evals.suite import Case, Suite
from llmgw.kit.errors import LlmgwError, NotFound
from llmgw.prompts.registry import PromptVersion, Registry
from llmgw.services.router.config import RouteConfig, RouterConfig, Target
from llmgw.services.router.core import Router
from llmgw.services.router.providers import Provider

__all__ = ["Progress", "route_targets", "run_version"]


def route_targets(config: RouterConfig, pv: PromptVersion) -> list[Target]:
    """The first target of each provider on the version's route that has a variant for it."""
    route = config.routes.get(pv.route or config.default_route)
    if route is None:
        raise NotFound(f"route {pv.route!r} of prompt {pv.name!r} not found")
    seen: dict[str, Target] = {}
    for t in route.targets:
        if t.provider not in seen and pv.unsupported_reason(t.provider) == "":
            seen[t.provider] = t
    return list(seen.values())


class Progress:
    """A one-line progress bar on a terminal, a line per 10 % otherwise."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None) -> None:
        self.total, self.done, self.failed, self.label = total, 0, 0, label
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._last_decile = -1

    def step(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        frac = self.done / max(1, self.total)
        line = f"{self.label} [{'#' * int(frac * 30):<30}] {self.done}/{self.total}  failed {self.failed}"
        if self._tty:
            print("\r" + line, end="" if self.done < self.total else "\n", file=self._stream, flush=True)
        elif int(frac * 10) != self._last_decile:
            self._last_decile = int(frac * 10)
            print(line, file=self._stream, flush=True)


async def _run_case(router: Router, pv: PromptVersion, case: Case, checker: Checker, repeat: int) -> CaseResult:
    tries = []
    for i in range(repeat):
        output, error = "", ""
        try:
            completion = await router.route(RouteCall(route="eval", request_id=f"eval-{case.id}-{i}", prompt=pv.name,
                                                      prompt_version=pv.id, variables=case.vars))
            output = completion.text
        except NotFound:
            raise  # a missing recording is the run's problem, not the case's
        except LlmgwError as exc:
            error = f"{exc.code.name}: {exc.message}"
        verdicts = await checker.check(output, case, error)
        tries.append(Try(output, error, [asdict(v) for v in verdicts]))
    return CaseResult(case.id, list(case.tags), dict(case.vars), tries)


async def run_version(
    suite: Suite,
    registry: Registry,
    config: RouterConfig,
    version: str,
    *,
    cassettes: Path,
    providers: Mapping[str, Provider] | None = None,
    source: Callable[[str, str], dict[str, str]] | None = None,
    repeat: int = 1,
    checker: Checker | None = None,
    progress: Callable[[int, str], Progress] | None = None,
) -> RunRecord:
    """``providers`` given: call them and record the cassettes, each reply labelled with
    ``source(provider, model)`` (``llmgw.evals.provenance``); else replay them."""
    if providers is not None and source is None:
        raise ValueError("recording needs the source of the replies")
    pv = registry.get(suite.prompt, version)
    checker = checker or Checker(suite)
    record = RunRecord(suite.prompt, pv.version, pv.id, suite.digest, repeat,
                       "record" if providers is not None else "replay", time.time())
    route = config.routes[pv.route or config.default_route]
    for target in route_targets(config, pv):
        cassette = Cassette(cassettes / pv.version / f"{target.provider}.jsonl", target.provider)
        inner = providers.get(target.provider) if providers is not None else None
        if providers is not None and inner is None:
            raise NotFound(f"no provider {target.provider!r} to record with")
        single = RouterConfig(
            providers={target.provider: config.providers[target.provider]},
            routes={"eval": RouteConfig(defaults=route.defaults, targets=[target.model_copy(update={"attempts": 1})])},
            default_route="eval", pricing=config.pricing,
        )
        # A breaker would skip the rest of a suite after a few provider errors: every case must run.
        single = single.model_copy(update={"breaker": single.breaker.model_copy(update={"min_calls": 10**9})})
        adapter = CassetteProvider(cassette, inner, source(target.provider, target.model) if source else None)
        router = Router(single, {target.provider: adapter}, registry)
        bar = progress(len(suite.cases), f"{suite.prompt}@{pv.version} {target.provider}") if progress else None
        sem = asyncio.Semaphore(suite.settings.concurrency)

        async def one(case: Case, router: Router = router, bar: Progress | None = bar,
                      sem: asyncio.Semaphore = sem) -> CaseResult:
            async with sem:
                result = await _run_case(router, pv, case, checker, repeat)
            if bar:
                bar.step(not result.passed)
            return result

        cases = await asyncio.gather(*(one(c) for c in suite.cases))
        record.providers[target.provider] = ProviderResult(target.provider, target.model, list(cases),
                                                           dict(sorted(adapter.sources.items())))
        if providers is not None:
            cassette.save()
    return record
