"""Two limiter processes, one Redis, 200 concurrent callers against one limit: exactly the limit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from llmgw.kit.embedded import free_port
from llmgw.kit.health import peer_serving
from llmgw.services.limiter.server import LimiterClient

pytestmark = pytest.mark.integration


async def test_two_processes_admit_exactly_the_limit(redis_url: str, tmp_path: Path) -> None:
    limits = tmp_path / "limits.yaml"
    limits.write_text("domains: {gateway: [{match: {tenant: '*'}, limits: [{name: rpm, unit: requests, limit: 73, per: minute}]}]}")
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen([sys.executable, "-m", "llmgw.services.limiter"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL,
                         env={**os.environ, "PORT": str(p), "REDIS_URL": redis_url, "LIMITS_FILE": str(limits),
                              "KEY_PREFIX": prefix, "REDIS_TIMEOUT_S": "2", "REPLICAS": "2"})
        for p in ports
    ]
    clients = [LimiterClient(f"127.0.0.1:{p}", timeout_s=10) for p in ports]
    try:
        for c in clients:
            for _ in range(200):
                if await peer_serving(c.channel):
                    break
                await asyncio.sleep(0.1)
        decisions = await asyncio.gather(
            *(clients[i % 2].check([("tenant", "acme")], request_id=f"r{i}") for i in range(200))
        )
    finally:
        for c in clients:
            await c.close()
        for p in procs:
            p.terminate()
            p.wait(10)
    admitted = sum(d.allowed for d in decisions)
    assert admitted == 73, "no over-admission and no under-admission across replicas"
    refused = [d for d in decisions if not d.allowed]
    assert all(d.limit_name == "rpm" and d.retry_after_ms > 0 for d in refused)
