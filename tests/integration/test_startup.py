"""What a service does before it reports SERVING, so its first request is not the slow one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# Run in a fresh interpreter: in the test process another test may have loaded the encoding.
_BUILD = """
import asyncio, sys
from pathlib import Path
from llmgw.kit import tokens
from llmgw.kit.settings import load_settings

async def main() -> None:
    which = sys.argv[1]
    assert not tokens.loaded()
    if which == "ingress":
        from llmgw.services.ingress.app import build
        from llmgw.services.ingress.settings import IngressSettings
        settings = load_settings(IngressSettings, {}, kafka_bootstrap="127.0.0.1:9", api_keys="k=t",
                                 http_port=-1, spool_dir=Path(sys.argv[2]), publish_events=False)
        service = await build(settings)
        print(tokens.loaded())
        await service.on_stop()
    else:
        from llmgw.services.router.app import build_core
        from llmgw.services.router.settings import RouterSettings
        build_core(load_settings(RouterSettings, {}))
        print(tokens.loaded())

asyncio.run(main())
"""


@pytest.mark.parametrize("service", ["ingress", "router"])
def test_a_service_loads_its_token_counter_before_it_serves(service: str, tmp_path: Path) -> None:
    """Every miss counts its prompt's tokens: loading the encoding (about 0.2 s) belongs to the
    start, not to the first request after a restart."""
    done = subprocess.run([sys.executable, "-c", _BUILD, service, str(tmp_path / "spool")],
                          capture_output=True, text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True"
