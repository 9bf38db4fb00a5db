"""Prometheus metrics shared by every service; each process serves them on METRICS_PORT."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = ["RPC_HANDLED", "RPC_LATENCY", "SERVING", "start_metrics_server"]

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


def start_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=host)
