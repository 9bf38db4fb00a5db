from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.cli import main as cli
from llmgw.kit.errors import ConfigError
from llmgw.services.limiter.rules import parse_rules

GOOD = {
    "domains": {
        "gateway": [
            {"match": {"tenant": "*"}, "limits": [{"name": "rpm", "unit": "requests", "limit": 5, "per": "minute"}]},
            {"match": {"tenant": "acme", "route": "*"},
             "limits": [{"name": "acme-tpm", "unit": "tokens", "limit": 100, "per": "minute", "shadow": True}]},
        ]
    }
}


def test_matching_by_wildcard_and_value() -> None:
    rules = parse_rules(GOOD)
    names = [lim.name for _, lim in rules.matching("gateway", {"tenant": "acme", "route": "r"})]
    assert names == ["rpm", "acme-tpm"]
    assert [lim.name for _, lim in rules.matching("gateway", {"tenant": "globex"})] == ["rpm"]
    assert rules.matching("other", {"tenant": "acme"}) == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["domains"]["gateway"][0].update(extra=1), "extra"),
        (lambda d: d["domains"]["gateway"][0]["limits"][0].update(per="fortnight"), "per"),
        (lambda d: d["domains"]["gateway"][0]["limits"][0].update(limit=0), "limit"),
        (lambda d: d["domains"]["gateway"][0].update(match={"colour": "red"}), "colour"),
        (lambda d: d["domains"]["gateway"][1]["limits"][0].update(name="rpm"), "used twice"),
        (lambda d: d["domains"]["gateway"][1].update(match={"tenant": "*", "model": "*"}), "never sent 'model'"),
        (lambda d: d["domains"].update(custom=[]), "unknown domain 'custom'"),
        (lambda d: d["domains"]["gateway"][1].update(match={"tenant": "*"}), r"gateway\[0\] and gateway\[1\]"),
    ],
)
def test_bad_rules_are_rejected_with_the_key_named(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_rules(data)


def test_limits_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shipped = Path(__file__).resolve().parents[2] / "services" / "limiter" / "limits.yaml"
    assert cli(["limits", "check", str(shipped)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains: {gateway: [{match: {tenant: '*'}, limits: [{name: x, unit: bananas, limit: 1, per: day}]}]}")
    assert cli(["limits", "check", str(bad)]) == 1
    assert "unit" in capsys.readouterr().err
