"""Router settings (environment variables are the field names in upper case)."""

from __future__ import annotations

from pathlib import Path

from llmgw.kit.settings import ServiceSettings

DEFAULT_ROUTES = Path(__file__).with_name("routes.yaml")


class RouterSettings(ServiceSettings):
    port: int = 50063
    routes_file: Path = DEFAULT_ROUTES
    prompts_dir: Path = Path("prompts")
    # Overrides the providers' base_url in the routes file (the embedded fake providers).
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    # The limiter, for outbound shaping (its "provider" domain); empty: no shaping.
    limiter_addr: str = ""
    # How long a call may wait for provider budget before the router moves to the next target.
    provider_budget_wait_s: float = 1.0
