"""A latency-injecting, request-counting HTTP proxy in front of an S3 API server (for ``bench_edr.py``).

Every request waits ``--delay-ms`` before it is forwarded (a fixed first-byte latency, as to a remote
object store), then goes to ``--upstream`` on a keep-alive connection of the handling thread. The proxy
counts requests, response body bytes and the time the upstream took to answer (to tell the server's own
service time from the injected latency). ``GET /__stats__`` answers those counters as JSON (not forwarded).

Run: ``python bench/s3_latency_proxy.py --upstream http://127.0.0.1:PORT --port P --delay-ms 30``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class Stats:
    """Counters shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.upstream_s = 0.0
        self.by_method: dict[str, int] = {}

    def add(self, method: str, bytes_in: int, bytes_out: int, upstream_s: float) -> None:
        with self.lock:
            self.requests += 1
            self.bytes_in += bytes_in
            self.bytes_out += bytes_out
            self.upstream_s += upstream_s
            self.by_method[method] = self.by_method.get(method, 0) + 1

    def doc(self) -> dict[str, object]:
        with self.lock:
            return {"requests": self.requests, "bytes_out": self.bytes_out, "bytes_in": self.bytes_in,
                    "upstream_s": self.upstream_s, "by_method": dict(self.by_method)}


def serve(upstream: str, port: int, delay_s: float) -> None:
    up = urlparse(upstream)
    host, uport = up.hostname or "127.0.0.1", up.port or 80
    stats = Stats()
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _conn(self, fresh: bool = False) -> http.client.HTTPConnection:
            c = getattr(local, "conn", None)
            if c is None or fresh:
                if c is not None:
                    c.close()
                c = local.conn = http.client.HTTPConnection(host, uport, timeout=300)
            return c

        def _handle(self) -> None:
            if self.path == "/__stats__":
                body = json.dumps(stats.doc()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body_in = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            time.sleep(delay_s)
            t0 = time.perf_counter()
            for attempt in (0, 1):
                try:
                    c = self._conn(fresh=attempt == 1)
                    c.request(self.command, self.path, body=body_in or None, headers=headers)
                    r = c.getresponse()
                    data = r.read()
                    break
                except (ConnectionError, http.client.HTTPException, OSError):
                    if attempt == 1:
                        raise
            up_s = time.perf_counter() - t0
            self.send_response(r.status, r.reason)
            for k, v in r.getheaders():
                if k.lower() not in _HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data) if self.command != "HEAD"
                                                   else int(r.getheader("Content-Length") or 0)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            stats.add(self.command, len(body_in), len(data), up_s)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 (BaseHTTPRequestHandler names)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    Server(("127.0.0.1", port), Handler).serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=30.0)
    a = ap.parse_args()
    serve(a.upstream, a.port, a.delay_ms / 1000)


if __name__ == "__main__":
    main()
