"""The GCRA reference (the in-process limiter) with an injected clock: exact keys and retry-after."""

from __future__ import annotations

from llmgw.services.limiter.local import Bucket, LocalGcra
from llmgw.services.limiter.rules import parse_rules


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def rpm(limit: int, key: str = "k", shadow: bool = False) -> Bucket:
    return Bucket(key, 60_000 / limit, 60_000, 1, shadow)


def test_a_full_burst_then_exactly_the_rate() -> None:
    clock = Clock()
    g = LocalGcra(clock)
    assert [g.check([rpm(3)])[0] for _ in range(4)] == [True, True, True, False]
    allowed, retry_ms, idx, _ = g.check([rpm(3)])
    assert not allowed and retry_ms == 20_000 and idx == 0  # one emission interval
    clock.t += 20.0
    assert g.check([rpm(3)])[0] and not g.check([rpm(3)])[0]


def test_all_or_nothing_across_limits() -> None:
    g = LocalGcra(Clock())
    burst, daily = rpm(100, "burst"), Bucket("daily", 86_400_000 / 2, 86_400_000, 1)
    assert g.check([burst, daily])[0] and g.check([burst, daily])[0]
    allowed, _, idx, results = g.check([burst, daily])
    assert not allowed and idx == 1
    assert results[0][1] == 98  # the refused check charged nothing


def test_shadow_never_refuses_and_remaining_counts_down() -> None:
    g = LocalGcra(Clock())
    assert all(g.check([rpm(1, shadow=True)])[0] for _ in range(3))
    assert [g.check([rpm(3, "r")])[3][0][1] for _ in range(3)] == [2, 1, 0]


def test_a_cost_above_the_limit_says_wait_a_whole_period() -> None:
    g = LocalGcra(Clock())
    allowed, retry_ms, _, _ = g.check([Bucket("t", 60_000 / 100, 60_000, 500)])
    assert not allowed and retry_ms == 60_000


def test_per_value_override_replaces_the_wildcard_rule() -> None:
    rules = parse_rules({"domains": {"gateway": [
        {"match": {"tenant": "*"}, "limits": [{"name": "default-rpm", "unit": "requests", "limit": 60, "per": "minute"}]},
        {"match": {"tenant": "acme"}, "limits": [{"name": "acme-rpm", "unit": "requests", "limit": 600, "per": "minute"}]},
        {"match": {"tenant": "*", "route": "*"}, "limits": [{"name": "model-tpm", "unit": "tokens", "limit": 9, "per": "minute"}]},
    ]}})
    names = lambda d: [lim.name for _, lim in rules.matching("gateway", d)]  # noqa: E731
    assert names({"tenant": "acme", "route": "r"}) == ["acme-rpm", "model-tpm"]
    assert names({"tenant": "globex"}) == ["default-rpm"]
