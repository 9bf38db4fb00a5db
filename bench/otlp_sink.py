"""A stand-in OpenTelemetry collector for the benchmarks: an OTLP/HTTP receiver in its own process
that takes every POST (200, empty body) and counts requests and bytes, decoding nothing (a real
collector runs elsewhere; here it shares the machine's two cores, so it does as little as it can).

    python -m bench.otlp_sink --port N      # GET /stats -> {"requests": .., "bytes": ..}
"""

from __future__ import annotations

import argparse
import http.server
import json
import subprocess
import sys
from typing import Any

from llmgw.kit.embedded import wait_tcp


class _Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector does
    requests = 0
    received = 0

    def do_POST(self) -> None:
        size = int(self.headers.get("content-length") or 0)
        self.rfile.read(size)
        type(self).requests += 1
        type(self).received += size
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = json.dumps({"requests": type(self).requests, "bytes": type(self).received}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def start(port: int) -> subprocess.Popen[bytes]:
    """The sink in its own process, listening when this returns."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink", "--port", str(port)])
    wait_tcp("127.0.0.1", port)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), _Sink).serve_forever()


if __name__ == "__main__":
    main()
