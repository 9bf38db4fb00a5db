"""Prometheus metrics shared by every service; each process serves them on METRICS_PORT."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["RPC_HANDLED", "RPC_LATENCY", "SERVING", "child", "start_metrics_server"]

RPC_HANDLED = Counter(
    "llmgw_grpc_server_handled_total", "RPCs completed, by status code", ["service", "method", "code"]
)
RPC_LATENCY = Histogram(
    "llmgw_grpc_server_handling_seconds",
    "Server-side RPC latency",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SERVING = Gauge("llmgw_serving", "1 when the service's health is SERVING", ["service"])


@functools.lru_cache(maxsize=16384)
def child(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per label set: prometheus_client's labels()
    takes a lock and validates on every call, which costs more than the update itself, and hot
    paths update on every request."""
    return metric.labels(*labels)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=host)
