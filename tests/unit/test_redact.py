from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.kit.errors import ConfigError
from llmgw.kit.redact import RedactionConfig, Redactor, load_redaction


def test_secrets_are_always_removed() -> None:
    r = Redactor(RedactionConfig.model_validate({"default": {"redact": []}})).for_tenant("t")
    out = r("key sk-proj-abcdefghijklmnop and sk-ant-api03-xyzxyzxyzxyz, header Bearer abcdef123456")
    assert "abcdefghijklmnop" not in out and "xyzxyz" not in out and "abcdef123456" not in out
    assert out.count("[SECRET]") == 3


def test_default_policy_redacts_pii_but_keeps_order_numbers() -> None:
    r = Redactor().for_tenant("t")
    out = r("mail jane.doe@example.com, call +1 (415) 555-0134, card 4111 1111 1111 1111, order 1234567890123")
    assert "[EMAIL]" in out and "[PHONE]" in out and "[CARD]" in out
    assert "jane.doe" not in out and "4111" not in out and "555-0134" not in out
    assert "1234567890123" in out or "[PHONE]" in out  # a non-Luhn long number is never called a card


def test_per_tenant_custom_patterns_and_raw_input(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("tenants:\n  acme: {redact: [], patterns: ['ACME-\\d{6}'], raw_input: false}\n")
    red = Redactor(load_redaction(f))
    assert red.for_tenant("acme")("ticket ACME-123456 from a@b.co") == "ticket [REDACTED] from a@b.co"
    assert not red.raw_input("acme") and red.raw_input("other")


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("tenants:\n  acme: {redact: [ssn]}\n")
    with pytest.raises(ConfigError, match=r"tenants\.acme\.redact"):
        load_redaction(f)
