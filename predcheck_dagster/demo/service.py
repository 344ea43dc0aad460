"""A local HTTP service that fails intermittently, for the demo's ``flaky_api`` pipeline.

It cycles between *healthy* and *degraded*: degraded, each request is slow and fails with 503
with probability ``fail_rate``. The cycle is driven by wall-clock time, so the failure rate a
step sees depends on when it runs and for how long (what the profiler sees: a long elapsed time
with low CPU while requests wait).

Run it: ``python -m predcheck_dagster.demo.service --port 8765``.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

DEFAULT_PORT = 8765


class FlakyService:
    """Health schedule: degraded for ``degraded_s`` out of every ``period_s`` seconds."""

    def __init__(self, period_s: float = 40.0, degraded_s: float = 15.0, fail_rate: float = 0.6,
                 slow_s: float = 0.3, seed: int = 7) -> None:
        self.period_s, self.degraded_s, self.fail_rate, self.slow_s = period_s, degraded_s, fail_rate, slow_s
        self.t0 = time.time()
        self.forced: str | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests = 0
        self.failures = 0

    def state(self) -> str:
        if self.forced:
            return self.forced
        return "degraded" if (time.time() - self.t0) % self.period_s >= self.period_s - self.degraded_s else "healthy"

    def handle_work(self, units: int) -> tuple[int, dict]:
        state = self.state()
        with self._lock:
            self.requests += 1
            fail = state == "degraded" and self._rng.random() < self.fail_rate
            self.failures += int(fail)
        time.sleep(self.slow_s if state == "degraded" else 0.01)
        if fail:
            return 503, {"error": "service degraded", "state": state}
        return 200, {"result": sum(i * i for i in range(units)) % 1_000_003, "state": state}


def make_server(service: FlakyService, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path == "/work":
                code, body = service.handle_work(int(query.get("units", ["100"])[0]))
                self._send(code, body)
            elif url.path == "/state":
                if "force" in query:
                    forced = query["force"][0]
                    service.forced = None if forced == "auto" else forced
                self._send(200, {"state": service.state(), "requests": service.requests,
                                 "failures": service.failures})
            else:
                self._send(404, {"error": f"no route {url.path!r}"})

        def log_message(self, *args: object) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(service: FlakyService | None = None, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start the service on a background thread; returns the server and its base URL."""
    server = make_server(service or FlakyService(), port=port)
    threading.Thread(target=server.serve_forever, name="predcheck-flaky-service", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description="predcheck demo: an intermittently failing HTTP service")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--period", type=float, default=40.0, help="seconds per health cycle")
    parser.add_argument("--degraded", type=float, default=15.0, help="degraded seconds per cycle")
    args = parser.parse_args()
    server = make_server(FlakyService(period_s=args.period, degraded_s=args.degraded), port=args.port)
    print(f"flaky service on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
