"""A fault-injecting HTTP proxy for the S3 API server: 503 SlowDown answers and dropped connections.

It sits on loopback between the client (boto3 and GDAL) and moto's server and forwards every request,
except that while the fault window is open it answers some requests with S3's ``503 SlowDown`` error and
drops others without any answer (the TCP connection is closed mid-request). The schedule is
deterministic (by request number) and the window closes after ``fault_requests`` requests.

``hold_put`` (a regular expression searched in the request path) freezes the first matching PUT
mid-upload: the proxy has its headers, not yet its body (it withholds ``100 Continue``), and tells the test
(``held``) so that it can ``kill -9`` the uploader right then. After ``release()`` the proxy reads what the
client managed to send; an incomplete body is discarded (what an S3 server does with an aborted upload), a
complete one is forwarded (``held_outcome`` says which).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class FaultProxy:
    """Forward to ``upstream`` (http://host:port); inject faults into the first ``fault_requests`` requests."""

    def __init__(self, upstream: str, fault_requests: int = 80, every_503: int = 3, every_drop: int = 7,
                 hold_put: str | None = None) -> None:
        up = urlparse(upstream)
        self.up_host, self.up_port = up.hostname or "127.0.0.1", up.port or 80
        self.fault_requests, self.every_503, self.every_drop = fault_requests, every_503, every_drop
        self.count = 0
        self.injected_503 = 0
        self.injected_drop = 0
        self.lock = threading.Lock()
        self.hold_put = hold_put
        self.held = threading.Event()  # the PUT to hold has arrived and is frozen
        self.held_path = ""
        self.held_outcome = ""  # "discarded (N of M bytes)" or "forwarded"
        self.held_done = threading.Event()  # the held request has been settled
        self._release = threading.Event()
        self._claimed = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _hold(self, length: int) -> bytes | None:
                """Freeze this PUT until released; then its body, or None when the client died mid-upload."""
                proxy.held_path = self.path
                proxy.held.set()
                proxy._release.wait(60)
                body = b""
                with contextlib.suppress(OSError):
                    while len(body) < length:
                        chunk = self.rfile.read1(length - len(body))
                        if not chunk:
                            break
                        body += chunk
                if len(body) < length:
                    proxy.held_outcome = f"discarded ({len(body)} of {length} bytes)"
                    self.close_connection = True
                    return None
                proxy.held_outcome = "forwarded"
                return body

            def _claim_hold(self) -> bool:
                if self.command != "PUT" or not proxy.hold_put or not re.search(proxy.hold_put, self.path):
                    return False
                with proxy.lock:
                    claim, proxy._claimed = not proxy._claimed, True
                return claim

            def handle_expect_100(self) -> bool:
                if self._claim_hold():  # no "100 Continue": the client keeps the body, as at a slow server
                    self._holding = True
                    return True
                return super().handle_expect_100()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                hold = getattr(self, "_holding", False) or self._claim_hold()
                self._holding = False
                if hold:
                    try:
                        held_body = self._hold(length)
                        if held_body is not None:
                            self._serve(held_body)
                    finally:
                        proxy.held_done.set()
                    return
                self._serve(self.rfile.read(length) if length else b"")

            def _serve(self, body: bytes) -> None:
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

    def release(self) -> None:
        """Let a held PUT go on (see the module docstring)."""
        self._release.set()

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
