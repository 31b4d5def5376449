"""A fault-injecting HTTP proxy for the S3 API server: 503 SlowDown answers and dropped connections.

It sits on loopback between the client (boto3 and GDAL) and moto's server and forwards every request,
except that while the fault window is open it answers some requests with S3's ``503 SlowDown`` error and
drops others without any answer (the TCP connection is closed mid-request). The schedule is
deterministic (by request number) and the window closes after ``fault_requests`` requests.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class FaultProxy:
    """Forward to ``upstream`` (http://host:port); inject faults into the first ``fault_requests`` requests."""

    def __init__(self, upstream: str, fault_requests: int = 80, every_503: int = 3, every_drop: int = 7) -> None:
        up = urlparse(upstream)
        self.up_host, self.up_port = up.hostname or "127.0.0.1", up.port or 80
        self.fault_requests, self.every_503, self.every_drop = fault_requests, every_503, every_drop
        self.count = 0
        self.injected_503 = 0
        self.injected_drop = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.count += 1
                    n = proxy.count
                fault = None
                if n <= proxy.fault_requests:
                    if n % proxy.every_drop == 0:
                        fault = "drop"
                    elif n % proxy.every_503 == 0:
                        fault = "503"
                if fault == "drop":
                    with proxy.lock:
                        proxy.injected_drop += 1
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "503":
                    with proxy.lock:
                        proxy.injected_503 += 1
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 (http.server's names)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's endpoint URL."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
