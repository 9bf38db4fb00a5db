"""Loading, resolving and rendering prompt versions (format: ``llmgw.prompts.spec``)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2 import Template as Template_
from jinja2.sandbox import SandboxedEnvironment
from pydantic import ValidationError

from llmgw.domain import Message, Sampling
from llmgw.kit.errors import ConfigError, InvalidArgument, NotFound
from llmgw.kit.logging import get_logger
from llmgw.kit.settings import load_yaml
from llmgw.prompts.spec import PromptSpec, Template, VariableSpec

__all__ = ["APPROVALS_FILE", "PRODUCTION", "PromptVersion", "Registry", "read_approvals"]

# Per prompt: which provider variants of which version passed the eval gate (written by
# ``llmgw eval gate``, reviewed and deployed with the prompts).
APPROVALS_FILE = "approvals.yaml"
# The label requests resolve to by default; pointing it at a version takes approvals that count
# towards production (see ``PromptVersion.production_approved``).
PRODUCTION = "production"

_log = get_logger(__name__)
_VERSION_FILE = re.compile(r"^v(\d+)\.ya?ml$")
# Variables are data, never template code: values are passed to a sandboxed environment and
# are never themselves parsed as templates.
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@functools.lru_cache(maxsize=4096)
def _compiled(text: str) -> Template_:
    # Compiling is the costly part of rendering: once per template text, not per request.
    return _ENV.from_string(text)


def _check_type(name: str, spec: VariableSpec, value: str) -> None:
    field = f"variables.{name}"
    if len(value) > spec.max_chars:
        raise InvalidArgument(field, f"longer than {spec.max_chars} characters")
    if spec.choices is not None and value not in spec.choices:
        raise InvalidArgument(field, f"must be one of {', '.join(spec.choices)}")
    try:
        if spec.type == "integer":
            int(value)
        elif spec.type == "number" and not math.isfinite(float(value)):
            raise ValueError(value)
    except ValueError as exc:
        raise InvalidArgument(field, f"expected {spec.type}, got {value!r}") from exc
    if spec.type == "boolean" and value.lower() not in ("true", "false"):
        raise InvalidArgument(field, f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class PromptVersion:
    name: str
    version: str  # "vN"
    digest: str
    spec: PromptSpec
    source: str = ""
    # Providers whose variant of this exact version passed the eval gate (``approvals.yaml``);
    # None when the prompt has no eval gate at all.
    approved: frozenset[str] | None = None
    # Of those, the ones whose pass counts towards the production label: recorded from a real
    # model, or from a stand-in the suite explicitly allows (``llmgw.evals.provenance``).
    production_approved: frozenset[str] | None = None

    def approved_for(self, label: str) -> frozenset[str]:
        """Providers whose approval lets ``label`` point at this version."""
        chosen = self.production_approved if label == PRODUCTION else self.approved
        return chosen or frozenset()

    @property
    def id(self) -> str:
        return f"{self.version}@{self.digest[:12]}"

    @property
    def route(self) -> str:
        return self.spec.route

    @property
    def sampling(self) -> Sampling:
        return self.spec.sampling.to_sampling()

    def supports(self, provider: str) -> bool:
        """Does this version have a template that works for ``provider`` (and, when the prompt is
        gated by evals, did that variant pass)?"""
        return self.unsupported_reason(provider) == ""

    def unsupported_reason(self, provider: str) -> str:
        if provider not in self.spec.variants and self.spec.template is None:
            return f"prompt {self.name} {self.id} has no variant for {provider}"
        if self.approved is not None and provider not in self.approved:
            return f"prompt {self.name} {self.id} has no passing eval for {provider}"
        return ""

    def variables(self, given: Mapping[str, str]) -> dict[str, str]:
        """Validated variables with defaults filled in; InvalidArgument names the first bad one."""
        for name in given:
            if name not in self.spec.variables:
                raise InvalidArgument(f"variables.{name}", f"prompt {self.name!r} has no such variable")
        out: dict[str, str] = {}
        for name, spec in self.spec.variables.items():
            value = given.get(name, spec.default)
            if value is None:
                if spec.required:
                    raise InvalidArgument(f"variables.{name}", f"missing required variable of prompt {self.name!r}")
                continue
            _check_type(name, spec, value)
            out[name] = value
        return out

    def validate(self, variables: Mapping[str, str]) -> None:
        self.variables(variables)

    def template_for(self, provider: str) -> Template:
        tpl = self.spec.variants.get(provider) or self.spec.template  # type: ignore[call-overload]
        if tpl is None:
            raise NotFound(f"prompt {self.name!r} {self.id} has no variant for provider {provider!r}")
        return tpl

    def any_template(self) -> Template:
        """The generic template, else the first variant (e.g. for size estimates)."""
        return self.spec.template or next(iter(self.spec.variants.values()))

    def render(self, variables: Mapping[str, str], provider: str = "") -> tuple[str, tuple[Message, ...]]:
        """(system prompt, messages) of the provider's variant, rendered with the variables."""
        tpl = self.template_for(provider) if provider else self.any_template()
        values: dict[str, str] = {name: "" for name in self.spec.variables}
        values.update(self.variables(variables))
        try:
            system = _compiled(tpl.system).render(values) if tpl.system else ""
            msgs = tuple(Message(m.role, _compiled(m.content).render(values)) for m in tpl.messages)
        except TemplateError as exc:
            raise InvalidArgument("variables", f"prompt {self.name!r} failed to render: {exc}") from exc
        return system, msgs


class Registry:
    """All prompts under a root directory, loaded once and kept in memory (no per-request reads).

    Labels start from the files and follow the live label store when one is attached."""

    def __init__(self, versions: dict[str, dict[str, PromptVersion]], labels: dict[str, dict[str, str]]) -> None:
        self._versions = versions
        self._labels = labels
        # Bumped by every label move: whoever remembers what a label resolved to (the ingress's
        # admission memo) keys it by this, so a promote or rollback is seen by the next request.
        self.generation = 0

    @classmethod
    def load(cls, root: str | Path, *, enforce_approvals: bool = True) -> Registry:
        """``enforce_approvals=False`` is for the eval runner, which must run unapproved versions."""
        root = Path(root)
        versions: dict[str, dict[str, PromptVersion]] = {}
        labels: dict[str, dict[str, str]] = {}
        if not root.is_dir():
            raise ConfigError(f"prompt directory not found: {root}")
        for pdir in sorted(p for p in root.iterdir() if p.is_dir()):
            name = pdir.name
            versions[name] = {}
            for vfile in sorted((pdir / "versions").glob("v*.y*ml")):
                m = _VERSION_FILE.match(vfile.name)
                if not m:
                    raise ConfigError(f"{vfile}: version files are named vN.yaml")
                raw = vfile.read_bytes()
                try:
                    spec = PromptSpec.model_validate(load_yaml(vfile))
                except ValidationError as exc:
                    err = exc.errors()[0]
                    raise ConfigError(f"{vfile}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
                _check_template_vars(vfile, spec)
                version = f"v{m.group(1)}"
                versions[name][version] = PromptVersion(name, version, hashlib.sha256(raw).hexdigest(), spec,
                                                        raw.decode("utf-8"))
            if enforce_approvals and (pdir / APPROVALS_FILE).exists():
                versions[name] = _with_approvals(pdir / APPROVALS_FILE, versions[name])
            label_file = pdir / "labels.yaml"
            label_map = load_yaml(label_file) if label_file.exists() else {}
            if not isinstance(label_map, dict):
                raise ConfigError(f"{label_file}: expected a mapping of label -> version")
            for label, version in label_map.items():
                if str(version) not in versions[name]:
                    raise ConfigError(f"{label_file}: label {label!r} points to unknown version {version!r}")
            labels[name] = {str(k): str(v) for k, v in label_map.items()}
        return cls(versions, labels)

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[PromptVersion]:
        if name not in self._versions:
            raise NotFound(f"prompt {name!r} not found")
        return sorted(self._versions[name].values(), key=lambda v: int(v.version[1:]))

    def labels(self, name: str) -> dict[str, str]:
        return dict(self._labels.get(name, {}))

    def apply_labels(self, live: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str, str]]:
        """Take label moves from the live store; returns the (prompt, label, version) that changed.
        A label naming a version this process does not have is ignored (and logged)."""
        changed = []
        for name, labels in live.items():
            for label, version in labels.items():
                if version not in self._versions.get(name, {}):
                    _log.warning("live_label_unknown_version", prompt=name, label=label, version=version)
                    continue
                if self._labels.setdefault(name, {}).get(label) != version:
                    self._labels[name][label] = version
                    changed.append((name, label, version))
        if changed:
            self.generation += 1
        for name, label, version in changed:
            _log.info("label_moved", prompt=name, label=label, version=version)
        return changed

    def resolve(self, name: str, label: str = "production") -> PromptVersion:
        if name not in self._versions:
            raise NotFound(f"prompt {name!r} not found")
        version = self._labels.get(name, {}).get(label or PRODUCTION)
        if version is None:
            raise NotFound(f"prompt {name!r} has no label {label!r}")
        return self._versions[name][version]

    def get(self, name: str, version_id: str) -> PromptVersion:
        """By immutable id (``vN@digest``) or plain ``vN``."""
        version, _, digest = version_id.partition("@")
        pv = self._versions.get(name, {}).get(version)
        if pv is None or (digest and not pv.digest.startswith(digest)):
            raise NotFound(f"prompt {name!r} version {version_id!r} not found")
        return pv


def read_approvals(path: Path) -> dict[str, dict[str, dict[str, object]]]:
    """version -> provider -> record (at least ``version_id``)."""
    raw = load_yaml(path) if path.exists() else {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ConfigError(f"{path}: expected version -> provider -> record")
    for version, providers in raw.items():
        for provider, record in providers.items():
            if not isinstance(record, dict) or "version_id" not in record:
                raise ConfigError(f"{path}: {version}.{provider}: a record needs version_id")
    return {str(v): {str(p): dict(r) for p, r in ps.items()} for v, ps in raw.items()}


def _with_approvals(path: Path, versions: dict[str, PromptVersion]) -> dict[str, PromptVersion]:
    """An approval counts only for the exact content it was given to (its ``version_id``)."""
    approvals = read_approvals(path)
    out = {}
    for version, pv in versions.items():
        mine = {p: rec for p, rec in approvals.get(version, {}).items() if rec["version_id"] == pv.id}
        # An approval written before provenance was recorded says nothing about what answered: it
        # does not count towards production until the gate is re-run.
        production = frozenset(p for p, rec in mine.items() if rec.get("production") is True)
        out[version] = dataclasses.replace(pv, approved=frozenset(mine), production_approved=production)
    return out


def _check_template_vars(vfile: Path, spec: PromptSpec) -> None:
    """A template may only use declared variables: a typo fails at load, not at request time."""
    templates = ([("default", spec.template)] if spec.template else []) + list(spec.variants.items())
    for provider, tpl in templates:
        for text in [tpl.system, *(m.content for m in tpl.messages)]:
            try:
                used = meta.find_undeclared_variables(_ENV.parse(text))
            except TemplateError as exc:
                raise ConfigError(f"{vfile}: template {provider}: {exc}") from exc
            unknown = used - set(spec.variables)
            if unknown:
                raise ConfigError(f"{vfile}: template {provider} uses undeclared variables {sorted(unknown)}")
