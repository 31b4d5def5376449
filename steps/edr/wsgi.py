"""WSGI plumbing shared by the middlewares in front of pygeoapi (:mod:`steps.edr.app`, :mod:`steps.edr.viewer`):
run the wrapped application to completion and send a (possibly rewritten) body with a correct length."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class Buffered:
    """A complete response of the wrapped application."""

    status: str
    headers: list[tuple[str, str]]
    exc_info: Any
    body: bytes

    def header(self, name: str) -> str:
        """A header's value ('' when absent), case-insensitive."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def send(self, start_response: StartResponse, body: bytes) -> list[bytes]:
        """Start the response with the original status and headers, ``Content-Length`` set for ``body``."""
        headers = [(k, v) for k, v in self.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(self.status, headers, self.exc_info)
        return [body]


def buffered(app: WSGIApp, environ: dict[str, Any]) -> Buffered:
    """Run ``app`` on ``environ`` and collect its status, headers and whole body (closing the iterable)."""
    captured: dict[str, Any] = {}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        captured["status"], captured["headers"], captured["exc_info"] = status, headers, exc_info
        return lambda _data: None

    result = app(environ, capture)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Buffered(captured["status"], list(captured["headers"]), captured["exc_info"], body)
