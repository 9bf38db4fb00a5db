"""Assertion checks: each turns (output, assertion) into a verdict with a reason a person can read.

``passed`` is None when an assertion could not run here (a model-graded rubric without a grader):
such a case is reported as skipped, never counted as passed.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from llmgw.evals.suite import (
    Assertion,
    Case,
    Contains,
    Equals,
    ExpectError,
    JsonFields,
    JsonSchema,
    Length,
    Python,
    Refusal,
    Regex,
    Rubric,
    Similar,
    Suite,
)
from llmgw.kit.errors import ConfigError

__all__ = ["Checker", "Grader", "Verdict", "is_refusal", "load_module_path", "normalize"]

# A grader answers (rubric, output) -> (passed, reason); only with a real provider.
Grader = Callable[[str, str], Awaitable[tuple[bool, str]]]

# Phrases models use to decline. Deliberately conservative: a false "refusal" fails no_refusal cases.
_REFUSAL = re.compile(
    r"\b(i\s*(?:can(?:'|\u2019)?t|cannot|won(?:'|\u2019)?t|will not|(?:am|'m) not able to|(?:am|'m) unable to)"
    r"\s+(?:help|assist|do|comply|provide|share|reveal|answer|follow|process|disclose)"
    r"|i(?:'|\u2019)?m sorry,? but|i must decline|not able to comply|against (?:my|the) (?:guidelines|policy))",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?]+[.!?]+(?=\s|$)|[^.!?]+$")


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip(".!?\"'`").strip().casefold()


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text))


def _count(text: str, unit: str) -> int:
    if unit == "words":
        return len(text.split())
    if unit == "sentences":
        return len([s for s in _SENTENCE.findall(text.strip()) if s.strip()])
    return len(text)


@dataclass(frozen=True, slots=True)
class Verdict:
    type: str
    passed: bool | None
    reason: str = ""


class Checker:
    """Checks for one suite; loads its ``checks.py`` and the embedding model only when used."""

    def __init__(self, suite: Suite, *, grader: Grader | None = None,
                 embed: Callable[[list[str]], Any] | None = None) -> None:
        self._suite = suite
        self._grader = grader
        self._embed = embed
        self._checks: ModuleType | None = None

    def _checks_module(self) -> ModuleType:
        if self._checks is None:
            path = self._suite.root / "checks.py"
            if not path.exists():
                raise ConfigError(f"{self._suite.root}: a python assertion needs checks.py")
            self._checks = load_module_path(path)
        return self._checks

    def check_python_names(self) -> list[str]:
        """Problems with python assertions that name no function in checks.py (for validate)."""
        names = {a.check for c in self._suite.cases for a in c.assert_ if isinstance(a, Python)}
        if not names:
            return []
        module = self._checks_module()
        return [f"{self._suite.prompt}: checks.py has no function {n!r}" for n in sorted(names)
                if not callable(getattr(module, n, None))]

    def _similarity(self, output: str, reference: str) -> float:
        if self._embed is None:
            from llmgw.kit.embed import SentenceEmbedder

            self._embed = SentenceEmbedder().encode
        vecs = self._embed([output, reference])
        return float(vecs[0] @ vecs[1])  # normalized embeddings: the dot product is the cosine

    async def check(self, output: str, case: Case, error: str = "") -> list[Verdict]:
        """Verdicts for one answer; ``error`` is the gateway's rejection, when it rejected the call."""
        if error or case.expects_error:
            return [_after_error(error, case, a) for a in case.assert_]
        return [await self._one(output, case, a) for a in case.assert_]

    async def _one(self, output: str, case: Case, a: Assertion) -> Verdict:
        if isinstance(a, Equals):
            ok = normalize(output) == normalize(a.value) if a.normalize else output == a.value
            return Verdict(a.type, ok, "" if ok else f"expected {a.value!r}")
        if isinstance(a, Contains):
            hay, needle = (output.casefold(), a.value.casefold()) if a.normalize else (output, a.value)
            ok = (needle in hay) == (a.type == "contains")
            return Verdict(a.type, ok, "" if ok else f"{'missing' if a.type == 'contains' else 'contains'} {a.value!r}")
        if isinstance(a, Regex):
            found = re.search(a.pattern, output) is not None
            ok = found == (a.type == "regex")
            return Verdict(a.type, ok, "" if ok else f"{'no match' if a.type == 'regex' else 'matches'} /{a.pattern}/")
        if isinstance(a, JsonSchema):
            return _json_schema(output, a)
        if isinstance(a, JsonFields):
            return _json_fields(output, a)
        if isinstance(a, Length):
            n = _count(output, a.unit)
            ok = n >= a.min and (a.max is None or n <= a.max)
            bounds = f"{a.min}..{a.max if a.max is not None else ''}"
            return Verdict(a.type, ok, "" if ok else f"{n} {a.unit}, expected {bounds}")
        if isinstance(a, Refusal):
            refused = is_refusal(output)
            ok = refused == (a.type == "refusal")
            return Verdict(a.type, ok, "" if ok else ("no refusal" if a.type == "refusal" else "refused"))
        if isinstance(a, Similar):
            threshold = a.threshold or self._suite.settings.similarity_threshold
            sim = self._similarity(output, a.reference)
            return Verdict(a.type, sim >= threshold, f"similarity {sim:.2f} (threshold {threshold:.2f})")
        if isinstance(a, Python):
            return self._python(output, case, a)
        if isinstance(a, ExpectError):
            return _expect_error("", a)
        assert isinstance(a, Rubric)
        if self._grader is None:
            return Verdict(a.type, None, "skipped: model-graded, run with --grader and a real provider")
        ok, why = await self._grader(a.rubric, output)
        return Verdict(a.type, ok, why)

    def _python(self, output: str, case: Case, a: Python) -> Verdict:
        func = getattr(self._checks_module(), a.check, None)
        if not callable(func):
            raise ConfigError(f"{self._suite.root}/checks.py: no function {a.check!r}")
        try:
            result = func(output, case)
        except Exception as exc:  # a crashing check fails the case, with the reason, not the run
            return Verdict(a.type, False, f"{a.check} raised {type(exc).__name__}: {exc}")
        ok, why = result if isinstance(result, tuple) else (bool(result), "")
        return Verdict(a.type, bool(ok), str(why) or ("" if ok else f"{a.check} failed"))


def _after_error(error: str, case: Case, a: Assertion) -> Verdict:
    if isinstance(a, ExpectError):
        return _expect_error(error, a)
    if case.expects_error:
        return Verdict(a.type, True, "not checked: the request is expected to be rejected")
    return Verdict(a.type, False, f"request failed: {error}")


def _expect_error(error: str, a: ExpectError) -> Verdict:
    if not error:
        return Verdict(a.type, False, "expected the gateway to reject the request; it answered")
    ok = a.contains.casefold() in error.casefold()
    return Verdict(a.type, ok, "" if ok else f"error {error!r} lacks {a.contains!r}")


def _parse_json(output: str) -> Any:
    """The reply as JSON, tolerating a Markdown code fence around it; raises JSONDecodeError."""
    text = output.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    return json.loads(fenced.group(1) if fenced else text)


def _same(have: Any, want: Any) -> bool:
    if want is None or have is None:
        return have is None and want is None
    if isinstance(want, str) and re.fullmatch(r"[\d\s()+./-]{7,}", want):
        return re.sub(r"\D", "", str(have)) == re.sub(r"\D", "", want)
    if isinstance(want, str):
        return " ".join(str(have).split()).casefold() == " ".join(want.split()).casefold()
    return bool(have == want)


def _json_fields(output: str, a: JsonFields) -> Verdict:
    try:
        value = _parse_json(output)
    except json.JSONDecodeError as exc:
        return Verdict(a.type, False, f"not JSON: {exc.msg} at {exc.pos}")
    if not isinstance(value, dict):
        return Verdict(a.type, False, "not a JSON object")
    wrong = [f"{k}: expected {want!r}, got {value.get(k)!r}" for k, want in a.fields.items()
             if not _same(value.get(k), want)]
    return Verdict(a.type, not wrong, "; ".join(wrong))


def _json_schema(output: str, a: JsonSchema) -> Verdict:
    import jsonschema

    try:
        value = _parse_json(output)
    except json.JSONDecodeError as exc:
        return Verdict(a.type, False, f"not JSON: {exc.msg} at {exc.pos}")
    try:
        jsonschema.validate(value, a.schema_)
    except jsonschema.ValidationError as exc:
        path = "/".join(map(str, exc.absolute_path)) or "(root)"
        return Verdict(a.type, False, f"{path}: {exc.message}")
    return Verdict(a.type, True)


def load_module_path(path: Path) -> ModuleType:
    """Import a Python file by path (used for suite responders)."""
    spec = importlib.util.spec_from_file_location(f"llmgw_evals_{path.parent.name.replace('-', '_')}_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
