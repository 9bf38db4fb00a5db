"""The prompt registry: prompts as reviewed files, immutable content-hashed versions, labels.

    prompts/<name>/versions/<vN>.yaml   one immutable version each
    prompts/<name>/labels.yaml          label -> version, e.g. ``production: v2``
    prompts/<name>/approvals.yaml       provider variants per version that passed the eval gate

A version's id is ``<vN>@<sha256 prefix of the file>``: editing a released file changes its id,
so caches and events never confuse two contents under one name.
"""

from llmgw.prompts.labels import LabelStore
from llmgw.prompts.registry import PromptVersion, Registry
from llmgw.prompts.spec import PromptSpec, Template

__all__ = ["LabelStore", "PromptSpec", "PromptVersion", "Registry", "Template"]
