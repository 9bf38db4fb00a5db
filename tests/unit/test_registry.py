from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.kit.errors import ConfigError, InvalidArgument, NotFound
from llmgw.prompts import Registry

REPO = Path(__file__).resolve().parents[2]


def _write(root: Path, body: str, labels: str = "production: v1\n") -> Path:
    d = root / "p" / "versions"
    d.mkdir(parents=True)
    (d / "v1.yaml").write_text(body)
    (root / "p" / "labels.yaml").write_text(labels)
    return root


SIMPLE = """
variables: {x: {}}
template:
  system: sys
  messages: [{role: user, content: "X={{ x }}"}]
variants:
  anthropic:
    messages: [{role: user, content: "<x>{{ x }}</x>"}]
"""


class TestRegistry:
    def test_shipped_prompts_load(self) -> None:
        reg = Registry.load(REPO / "prompts")
        assert {"summarize", "classify-ticket"} <= set(reg.names())
        assert reg.resolve("summarize").id.startswith("v1@")

    def test_resolve_and_render_provider_variants(self, tmp_path: Path) -> None:
        pv = Registry.load(_write(tmp_path, SIMPLE)).resolve("p", "production")
        assert pv.render({"x": "1"}, "openai") == ("sys", (pv.render({"x": "1"})[1][0],))
        system, msgs = pv.render({"x": "1"}, "anthropic")
        assert system == "" and msgs[0].content == "<x>1</x>"

    def test_missing_and_unknown_variables_name_the_field(self, tmp_path: Path) -> None:
        pv = Registry.load(_write(tmp_path, SIMPLE)).resolve("p")
        with pytest.raises(InvalidArgument) as e:
            pv.validate({})
        assert e.value.field == "variables.x"
        with pytest.raises(InvalidArgument) as e:
            pv.validate({"x": "1", "y": "2"})
        assert e.value.field == "variables.y"

    def test_unknown_prompt_label_and_version(self, tmp_path: Path) -> None:
        reg = Registry.load(_write(tmp_path, SIMPLE))
        for call in (lambda: reg.resolve("nope"), lambda: reg.resolve("p", "staging"),
                     lambda: reg.get("p", "v9"), lambda: reg.get("p", "v1@000000")):
            with pytest.raises(NotFound):
                call()

    def test_version_id_follows_content(self, tmp_path: Path) -> None:
        a = Registry.load(_write(tmp_path / "a", SIMPLE)).resolve("p").id
        b = Registry.load(_write(tmp_path / "b", SIMPLE.replace("system: sys", "system: sys2"))).resolve("p").id
        assert a != b and a.split("@")[0] == b.split("@")[0] == "v1"

    def test_template_using_an_undeclared_variable_fails_at_load(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="undeclared"):
            Registry.load(_write(tmp_path, SIMPLE.replace("{{ x }}", "{{ y }}", 1)))

    def test_label_to_missing_version_fails_at_load(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="unknown version"):
            Registry.load(_write(tmp_path, SIMPLE, labels="production: v7\n"))

    def test_sandbox_blocks_attribute_escapes(self, tmp_path: Path) -> None:
        body = SIMPLE.replace("X={{ x }}", "{{ x.__class__.__mro__ }}")
        pv = Registry.load(_write(tmp_path, body)).resolve("p")
        with pytest.raises(InvalidArgument):
            pv.render({"x": "1"})
