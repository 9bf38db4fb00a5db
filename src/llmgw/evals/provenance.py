"""Where a recorded reply came from, so a pass rate says what it measured.

Every cassette reply carries a source; results count the sources of the replies they scored; an
approval names them. Two kinds:

    model:<provider>/<model> (<sdk> <version>)      a real provider called with real keys
    reference:<responder file>@<sha12>              a scripted stand-in (``--record --reference``)

A reply recorded before sources existed is ``unknown``: it counts as a stand-in, never as a model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["UNKNOWN", "from_models", "model_source", "reference_source", "summary"]

UNKNOWN = "unknown"
_SDK = {"openai": "openai", "anthropic": "anthropic"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def model_source(provider: str, model: str) -> dict[str, str]:
    """A real recording: the provider, the model asked for, the SDK and its version, and when."""
    sdk = _SDK.get(provider, provider)
    try:
        version = importlib.metadata.version(sdk)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return {"kind": "model", "label": f"model:{provider}/{model} ({sdk} {version})", "at": _now()}


def reference_source(responder: Path, evals_root: Path) -> dict[str, str]:
    """A stand-in: which responder file (by content) answered."""
    try:
        name = responder.resolve().relative_to(evals_root.resolve().parent).as_posix()
    except ValueError:
        name = responder.name
    digest = hashlib.sha256(responder.read_bytes()).hexdigest()[:12]
    return {"kind": "reference", "label": f"reference:{name}@{digest}", "at": _now()}


def from_models(sources: Mapping[str, int]) -> bool:
    """Were all these replies (label -> count) recorded from real models?"""
    return bool(sources) and all(label.startswith("model:") for label in sources)


def summary(sources: Mapping[str, int]) -> str:
    """One line for a matrix cell or an approval: the source, or the mix with counts."""
    if not sources:
        return UNKNOWN
    if len(sources) == 1:
        return next(iter(sources))
    return "mixed: " + ", ".join(f"{label} x{n}" for label, n in sorted(sources.items()))
