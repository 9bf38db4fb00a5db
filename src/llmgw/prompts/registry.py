"""Loading, resolving and rendering prompt versions."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmgw.domain import Message
from llmgw.kit.errors import ConfigError, InvalidArgument, NotFound
from llmgw.kit.settings import load_yaml

__all__ = ["PromptVersion", "Registry", "Template"]

_VERSION_FILE = re.compile(r"^v(\d+)\.ya?ml$")
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Var(_Strict):
    description: str = ""
    required: bool = True
    max_chars: int = Field(default=20_000, gt=0)


class _Msg(_Strict):
    role: str = Field(pattern=r"^(user|assistant)$")
    content: str


class Template(_Strict):
    """One provider variant: a system prompt and a message list, both Jinja (sandboxed)."""

    system: str = ""
    messages: list[_Msg] = Field(min_length=1)


class _VersionFile(_Strict):
    description: str = ""
    route: str = ""
    variables: dict[str, _Var] = {}
    template: Template
    # Provider-specific variants (key: provider name); the default template serves the rest.
    variants: dict[str, Template] = {}


@dataclass(frozen=True)
class PromptVersion:
    name: str
    version: str  # "vN"
    digest: str
    spec: _VersionFile
    labels: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.version}@{self.digest[:12]}"

    @property
    def route(self) -> str:
        return self.spec.route

    def validate(self, variables: Mapping[str, str]) -> None:
        """Raise InvalidArgument naming the first bad variable."""
        for name, var in self.spec.variables.items():
            value = variables.get(name)
            if value is None:
                if var.required:
                    raise InvalidArgument(f"variables.{name}", f"missing required variable of prompt {self.name!r}")
                continue
            if len(value) > var.max_chars:
                raise InvalidArgument(f"variables.{name}", f"longer than {var.max_chars} characters")
        for name in variables:
            if name not in self.spec.variables:
                raise InvalidArgument(f"variables.{name}", f"prompt {self.name!r} has no such variable")

    def template_for(self, provider: str) -> Template:
        return self.spec.variants.get(provider, self.spec.template)

    def render(self, variables: Mapping[str, str], provider: str = "") -> tuple[str, tuple[Message, ...]]:
        """(system prompt, messages) of the provider's variant, rendered with the variables."""
        tpl = self.template_for(provider)
        values = {name: variables.get(name, "") for name in self.spec.variables}
        values.update(variables)
        try:
            system = _ENV.from_string(tpl.system).render(values) if tpl.system else ""
            msgs = tuple(Message(m.role, _ENV.from_string(m.content).render(values)) for m in tpl.messages)
        except TemplateError as exc:
            raise InvalidArgument("variables", f"prompt {self.name!r} failed to render: {exc}") from exc
        return system, msgs


class Registry:
    """All prompts under a root directory, loaded once and kept in memory (no per-request reads)."""

    def __init__(self, versions: dict[str, dict[str, PromptVersion]], labels: dict[str, dict[str, str]]) -> None:
        self._versions = versions
        self._labels = labels

    @classmethod
    def load(cls, root: str | Path) -> Registry:
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
                    spec = _VersionFile.model_validate(load_yaml(vfile))
                except ValidationError as exc:
                    raise ConfigError(f"{vfile}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
                _check_template_vars(vfile, spec)
                version = f"v{m.group(1)}"
                versions[name][version] = PromptVersion(name, version, hashlib.sha256(raw).hexdigest(), spec)
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

    def resolve(self, name: str, label: str = "production") -> PromptVersion:
        if name not in self._versions:
            raise NotFound(f"prompt {name!r} not found")
        version = self._labels.get(name, {}).get(label or "production")
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


def _check_template_vars(vfile: Path, spec: _VersionFile) -> None:
    """A template may only use declared variables: a typo fails at load, not at request time."""
    for provider, tpl in [("default", spec.template), *spec.variants.items()]:
        for text in [tpl.system, *(m.content for m in tpl.messages)]:
            try:
                used = meta.find_undeclared_variables(_ENV.parse(text))
            except TemplateError as exc:
                raise ConfigError(f"{vfile}: template {provider}: {exc}") from exc
            unknown = used - set(spec.variables)
            if unknown:
                raise ConfigError(f"{vfile}: template {provider} uses undeclared variables {sorted(unknown)}")
