"""Local fake OpenAI and Anthropic HTTP servers with fault injection, driven by the real SDKs."""

from llmgw.fakeproviders.server import FakeProviders, Faults, create_app

__all__ = ["FakeProviders", "Faults", "create_app"]
