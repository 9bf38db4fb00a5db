"""The prompt version file format (strict: unknown keys are rejected).

    description: Summarize a text in one sentence.
    route: default                      # the route used when the request names none
    sampling: {temperature: 0, max_tokens: 200}   # defaults under the caller's values
    variables:
      text: {type: string, max_chars: 20000}
      sentences: {type: integer, default: "1", required: false}
    template:                           # optional: serves every provider without a variant
      system: ...
      messages: [{role: user, content: "..."}]
    variants:                           # one per provider; the router only uses providers
      anthropic: {system: ..., messages: [...]}   # that have a variant (or the template)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmgw.domain import Sampling

__all__ = ["PromptSpec", "SamplingSpec", "Template", "VariableSpec"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariableSpec(_Strict):
    description: str = ""
    type: Literal["string", "integer", "number", "boolean"] = "string"
    required: bool = True
    # Used when the caller leaves the variable out (makes it optional).
    default: str | None = None
    max_chars: int = Field(default=20_000, gt=0)
    # Allowed values, when the variable is an enumeration.
    choices: list[str] | None = None


class _Msg(_Strict):
    role: Literal["user", "assistant"]
    content: str


class Template(_Strict):
    """One provider variant: a system prompt and a message list, both sandboxed Jinja."""

    system: str = ""
    messages: list[_Msg] = Field(min_length=1)


class SamplingSpec(_Strict):
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] = []

    def to_sampling(self) -> Sampling:
        return Sampling(self.temperature, self.max_tokens, self.top_p, tuple(self.stop))


class PromptSpec(_Strict):
    description: str = ""
    route: str = ""
    sampling: SamplingSpec = SamplingSpec()
    variables: dict[str, VariableSpec] = {}
    template: Template | None = None
    variants: dict[Literal["openai", "anthropic"], Template] = {}

    @model_validator(mode="after")
    def _has_a_template(self) -> PromptSpec:
        if self.template is None and not self.variants:
            raise ValueError("a version needs a template or at least one provider variant")
        return self
