"""Keys and spend, the parts with no I/O: the key ring's verdicts, the key file source followed
live, what a request may cost and is charged (docs/keys.md)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from llmgw.commands.keys import parse_budget, parse_duration
from llmgw.domain import Completion, Usage
from llmgw.keys.model import NANO, Budget, KeyRecord, Scopes, Secret, TenantRecord, digest, to_nano, window
from llmgw.keys.ring import KeyFollower, KeyRing, bootstrap_id
from llmgw.keys.store import KeyData
from llmgw.kit.errors import ConfigError, InvalidArgument, Unauthenticated
from llmgw.services.ingress.spend import SpendGuard
from llmgw.services.router.config import Price, RouterConfig

ROUTES = RouterConfig.model_validate({
    "providers": {"openai": {"api_key_env": "X"}, "anthropic": {"api_key_env": "Y"}}, "default_route": "cheap",
    "routes": {
        "cheap": {"targets": [{"provider": "openai", "model": "mini"}]},
        "fallback": {"targets": [{"provider": "openai", "model": "mini"}, {"provider": "anthropic", "model": "big"}]},
        "hedged": {"hedge": True, "targets": [{"provider": "openai", "model": "mini"},
                                              {"provider": "anthropic", "model": "big"}]},
        "mystery": {"targets": [{"provider": "openai", "model": "unlisted"}]},
    },
    "pricing": {"mini": {"input": 1.0, "output": 2.0}, "big": {"input": 10.0, "output": 20.0}},
})


def _record(secret: str, **kw: object) -> KeyRecord:
    return KeyRecord.model_validate({"id": "key-abc", "tenant": "acme", "secrets": [{"sha256": digest(secret)}], **kw})


class TestRing:
    def test_a_key_is_known_by_its_digest_and_carries_its_and_its_tenants_budgets(self) -> None:
        data = KeyData((_record("s1", budgets=[{"usd": 5, "per": "day"}]),),
                       (TenantRecord(tenant="acme", budgets=(Budget(usd=100, per="month"),)),))
        who = KeyRing(data).identify("Bearer s1")
        assert (who.tenant, who.key_id) == ("acme", "key-abc")
        assert who.budgets == (("key", Budget(usd=5, per="day")), ("tenant", Budget(usd=100, per="month")))

    @pytest.mark.parametrize(("record", "said"), [
        ({"status": "revoked"}, "revoked"),
        ({"expires_at": 1.0}, "expired"),
        ({"secrets": [{"sha256": digest("s1"), "not_after": 1.0}]}, "rotated out"),
    ])
    def test_revoked_expired_and_rotated_out_are_unauthenticated(self, record: dict[str, object], said: str) -> None:
        with pytest.raises(Unauthenticated, match=said):
            KeyRing(KeyData((_record("s1", **record),))).identify("Bearer s1")

    def test_bootstrap_keys_keep_their_stable_id(self) -> None:
        who = KeyRing(bootstrap={"k1": "acme"}).identify("Bearer k1")
        assert who.key_id == bootstrap_id("k1") and who.tenant == "acme"
        with pytest.raises(Unauthenticated):
            KeyRing(bootstrap={"k1": "acme"}).identify("Bearer k2")


async def test_the_key_file_is_followed_and_a_bad_edit_keeps_the_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    rec = _record("s1").model_dump(exclude_defaults=True)
    path.write_text(yaml.safe_dump({"keys": [rec]}))
    follower = KeyFollower(bootstrap={}, key_file=path)
    await follower.start()
    assert follower.current.identify("Bearer s1").key_id == "key-abc"
    path.write_text(yaml.safe_dump({"keys": [{**rec, "status": "revoked"}]}))
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert await follower.poll()
    with pytest.raises(Unauthenticated, match="revoked"):
        follower.current.identify("Bearer s1")
    path.write_text("keys: [{id: nope}]")
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert not await follower.poll()  # rejected: the ring in force stays
    with pytest.raises(Unauthenticated, match="revoked"):
        follower.current.identify("Bearer s1")


async def test_a_bad_key_file_fails_the_start(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [{id: key-x, tenant: acme, secrets: [{sha256: not-hex}]}]")
    with pytest.raises(ConfigError, match="sha256"):
        await KeyFollower(bootstrap={}, key_file=path).start()


class TestPricing:
    guard = SpendGuard(None, ROUTES)

    def test_worst_case_is_the_dearest_target_and_the_sum_when_hedged(self) -> None:
        # 1M input tokens + 1M output tokens: mini $3, big $30.
        assert self.guard.worst_case("cheap", 1_000_000, 1_000_000) == 3 * NANO
        assert self.guard.worst_case("fallback", 1_000_000, 1_000_000) == 30 * NANO
        assert self.guard.worst_case("hedged", 1_000_000, 1_000_000) == 33 * NANO

    def test_an_unpriced_model_is_refused_unless_a_price_is_stated(self) -> None:
        with pytest.raises(ConfigError, match="unlisted"):
            self.guard.worst_case("mystery", 10, 10)
        stated = SpendGuard(None, ROUTES, unpriced=Price(input=5, output=5))
        assert stated.worst_case("mystery", 1_000_000, 0) == 5 * NANO
        # Charged at that price too, never as free.
        done = Completion(text="x", provider="openai", model="unlisted", usage=Usage(1_000_000, 0, None))
        assert stated.charge(done, hit=False, reserved=99) == 5 * NANO
        assert self.guard.charge(done, hit=False, reserved=99) == 99

    def test_a_hit_is_free_and_a_priced_answer_costs_its_usage(self) -> None:
        done = Completion(text="x", provider="openai", model="mini", usage=Usage(10, 5, 0.000_02))
        assert self.guard.charge(done, hit=True, reserved=0) == 0
        assert self.guard.charge(done, hit=False, reserved=0) == 20_000

    def test_a_cut_stream_costs_what_was_sent_at_the_dearest_target(self) -> None:
        assert self.guard.partial("fallback", 1000, 500) == to_nano((1000 * 10 + 500 * 20) / 1e6)


def test_money_is_integer_billionths_rounded_up_without_float_noise() -> None:
    assert to_nano(1e-6) == 1000
    assert to_nano(0.1 + 0.2) == 300_000_000
    assert to_nano(1e-10) == 1  # never rounded down to free


def test_windows_are_utc_calendar_periods() -> None:
    last = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert (window("day", last), window("month", last), window("total", last)) == ("2026-12-31", "2026-12", "total")
    assert (window("day", last + 2), window("month", last + 2)) == ("2027-01-01", "2027-01")


def test_cli_parsers_name_the_bad_value() -> None:
    assert parse_budget("10/day") == Budget(usd=10, per="day")
    assert parse_budget("$2.5/total") == Budget(usd=2.5, per="total")
    assert parse_duration("24h") == 86_400
    with pytest.raises(InvalidArgument, match="budget"):
        parse_budget("10 per day")
    with pytest.raises(InvalidArgument, match="duration"):
        parse_duration("soon")


def test_scopes_and_budgets_are_strict() -> None:
    with pytest.raises(ValueError, match="one budget per period"):
        KeyRecord(id="key-a", tenant="t", secrets=(Secret(sha256=digest("x")),),
                  budgets=(Budget(usd=1, per="day"), Budget(usd=2, per="day")))
    assert Scopes().describe() == "all"


def test_a_keys_own_limits_become_a_rule_on_its_id_replacing_a_file_rule_on_exactly_it() -> None:
    from llmgw.keys.limits import with_key_limits
    from llmgw.services.limiter.rules import parse_rules

    base = {"domains": {"gateway": [
        {"match": {"tenant": "*"}, "limits": [{"name": "rpm", "unit": "requests", "limit": 60, "per": "minute"}]},
        {"match": {"api_key": "key-abc"}, "limits": [{"name": "old", "unit": "requests", "limit": 1, "per": "second"}]},
    ]}}
    limited = _record("s1", limits=[{"limit": 5, "per": "minute"}, {"unit": "tokens", "limit": 900, "per": "hour"}])
    rules = parse_rules(with_key_limits(base, [limited, _record("s2").model_copy(update={"id": "key-other"})]))
    names = {limit.name for _, limit in rules.matching("gateway", {"tenant": "acme", "api_key": "key-abc"})}
    assert names == {"rpm", "key-abc.requests-per-minute", "key-abc.tokens-per-hour"}
    # A revoked key's limits are gone with it; a key with none adds nothing.
    assert with_key_limits(base, [limited.model_copy(update={"status": "revoked"})]) == base
    with pytest.raises(ValueError, match="one limit per unit and period"):
        _record("s1", limits=[{"limit": 5}, {"limit": 6}])
