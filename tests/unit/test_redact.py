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


# Built from parts: a literal secret in the repository trips secret scanners.
_AWS = "AKIA" + "IOSFODNN7EXAMPLE"
_GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
_JWT = "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(("text", "secret"), [
    ("openai sk-proj-" + "Ab12Cd34Ef56Gh78", "Ab12Cd34Ef56Gh78"),
    ("anthropic sk-ant-api03-" + "Zz9Yy8Xx7Ww6", "Zz9Yy8Xx7Ww6"),
    (f"aws {_AWS} in a config", _AWS),
    ("aws_secret_access_key=" + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
    (f"github {_GH}", _GH),
    ("fine-grained github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnop", "11ABCDEFG0123456789"),
    ("slack xoxb-" + "123456789012-abcdefABCDEF", "abcdefABCDEF"),
    ("stripe sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("google AIza" + "SyD-abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz"),
    (f"jwt {_JWT}", _JWT),
    ("authorization: Bearer " + "opaque.token-value_123", "opaque.token-value_123"),
    ("Authorization: Basic " + "dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("url ?api_key=" + "abc123def456&x=1", "abc123def456"),
    ('json {"apiKey": "' + "k-998877665544" + '"}', "k-998877665544"),
    ("env OPENROUTER_API_KEY=" + "or-v1-5566778899", "or-v1-5566778899"),
    ("password: " + "hunter2hunter2", "hunter2hunter2"),
    ("x-auth-token=" + "t0k3nvalue99", "t0k3nvalue99"),
])
def test_every_common_secret_format_is_masked(text: str, secret: str) -> None:
    from llmgw.kit.redact import mask_secrets

    out = mask_secrets(text)
    assert secret not in out and "[SECRET]" in out, out


def test_masking_keeps_ordinary_text() -> None:
    from llmgw.kit.redact import mask_secrets

    text = "The token limit is 4096; ask about the password reset page. Order ABC-12345."
    assert mask_secrets(text) == text


_HEADER = "Bearer sk-" + "leak0123456789"
_IN_TRACEBACK = "token=" + "inside-a-traceback-77"


def test_stdlib_records_of_other_libraries_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from llmgw.kit.logging import mask_stdlib_logging

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        mask_stdlib_logging("info")
        logging.getLogger("grpc._cython.cygrpc").warning("metadata %s", ("authorization", _HEADER))
        try:
            raise ValueError(_IN_TRACEBACK)  # the source line in the traceback names no secret
        except ValueError:
            logging.getLogger("aiokafka").exception("failed")
    finally:
        root.handlers = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "leak0123456789" not in err and "inside-a-traceback-77" not in err
    assert "[SECRET]" in err and "metadata" in err


def test_repeated_texts_are_redacted_once_and_the_memory_stays_bounded() -> None:
    """A hit's events redact the same cached answer every time: the result is remembered, for
    short texts and a bounded number of them, and is the same as redacting afresh."""
    from llmgw.kit import redact as mod

    fn = Redactor().for_tenant("acme")
    text = "Mail me at ana@example.com, key sk-abcdefghijklmnopqrstuvwx"
    first = fn(text)
    assert first == fn(text) == Redactor().for_tenant("acme")(text)
    assert "ana@example.com" not in first and "sk-abc" not in first
    for i in range(mod._MEMO_ENTRIES + 50):
        assert "[PHONE]" in fn(f"call +1 555 0100 {i:04d} now")
    memo = next(c.cell_contents for c in fn.__closure__ or () if isinstance(c.cell_contents, dict))
    assert len(memo) == mod._MEMO_ENTRIES and text not in memo  # the oldest went first
    long = "x" * (mod._MEMO_MAX_CHARS + 1) + " ana@example.com"
    assert fn(long).endswith("[EMAIL]") and long not in memo
