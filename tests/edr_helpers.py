"""Helpers for the EDR tests: start ``raw2ready serve`` on a free loopback port, HTTP GETs, COG reads.

Everything here is independent of :mod:`steps.edr`: expected values come from the index JSON and rasterio.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r2r_helpers import _free_port

INDEX = "raw2ready-s2-vegetation/index.json"


@dataclass
class Server:
    """A running ``raw2ready serve``."""

    base: str
    config_dir: Path
    proc: subprocess.Popen[str]


@contextmanager
def serving(catalog: Path | str, config_dir: Path, *extra: str, timeout: float = 60.0) -> Iterator[Server]:
    """Run ``raw2ready serve`` for ``catalog`` in its own process group; stop it (SIGTERM to that group)."""
    port = _free_port()
    exe = shutil.which("raw2ready", path=str(Path(sys.executable).parent)) or "raw2ready"
    log = (config_dir / "serve.log").open("w")
    proc = subprocess.Popen([exe, "serve", "--catalog", str(catalog), "--port", str(port), "--host", "127.0.0.1",
                             "--config-out", str(config_dir), "--workers", "1", "--threads", "8", *extra],
                            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError("raw2ready serve exited:\n" + (config_dir / "serve.log").read_text())
            try:
                with urllib.request.urlopen(f"{base}/conformance?f=json", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + (config_dir / "serve.log").read_text())
            time.sleep(0.2)
        yield Server(base, config_dir, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group we created for this server only
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()


def get(url: str, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``; (status, headers, body) also for 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def query_url(base: str, path: str, **params: str) -> str:
    """``base + path`` with query parameters (``parameter_name`` → ``parameter-name``)."""
    q = {k.replace("_", "-"): v for k, v in params.items()}
    return f"{base}{path}?{urllib.parse.urlencode(q)}"


def get_json(url: str) -> Any:
    """GET and parse JSON; asserts 200."""
    status, _h, body = get(url)
    assert status == 200, (status, body[:500])
    return json.loads(body)


def index_items(catalog: Path) -> list[dict[str, Any]]:
    """Rows of the catalog's index.json."""
    return list(json.loads((catalog / INDEX).read_text())["items"])


def read_pixel(path: Path, row: int, col: int) -> tuple[int, float | None, float, float]:
    """(raw, nodata, scale, offset) of one pixel of band 1, read with rasterio directly."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        v = ds.read(1, window=Window(col, row, 1, 1))[0, 0]
        return int(v), ds.nodata, float(ds.scales[0]), float(ds.offsets[0])


def physical(raw: int, nodata: float | None, scale: float, offset: float) -> float | None:
    """What the API must return for a stored value."""
    if nodata is not None and raw == nodata:
        return None
    return raw * scale + offset


def edr_openapi_subset(doc: dict[str, Any], base: str, examples: dict[str, list[str]] | None) -> dict[str, Any]:
    """The EDR operations of pygeoapi's generated OpenAPI document, made self-contained for fuzzing.

    The operations: every EDR query path (``/collections/<id>/{position,radius,area,cube}``), the documents of
    those collections and ``/collections`` (which :mod:`steps.edr.app` rewrites).
    pygeoapi's document ``$ref``s parameter definitions on schemas.opengis.net, which a loopback-only test
    cannot fetch; here they are replaced by equivalent inline query parameters (``coords``, ``datetime``,
    ``parameter-name``, ``z``, ``crs``, and ``within``/``within-units`` for radius); the document's own
    ``#/components/parameters`` (``f``, ``lang``) are inlined. With ``examples`` every parameter that has
    some is an enum of them (good and bad values that reach the provider's data path); without, each is any
    string (and ``bbox`` any numbers). Response schemas are dropped: the check is "no 5xx", not the
    response shape.
    """

    def param(name: str, required: bool = False) -> dict[str, Any]:
        good = (examples or {}).get(name)
        schema: dict[str, Any] = {"type": "string", "enum": good} if good else {"type": "string"}
        return {"name": name, "in": "query", "required": required, "schema": schema}

    local = doc.get("components", {}).get("parameters", {})
    queries = ("position", "radius", "area", "cube")
    edr = {p.rsplit("/", 1)[0] for p in doc["paths"] if p.startswith("/collections/") and p.endswith(queries)}
    paths: dict[str, Any] = {}
    for path, item in doc["paths"].items():
        qt = path.rsplit("/", 1)[-1]
        if not (path == "/collections" or path in edr or (path.rsplit("/", 1)[0] in edr and qt in queries)):
            continue
        op = dict(item["get"])
        params: list[dict[str, Any]] = []
        for p in op["parameters"]:
            ref = p.get("$ref", "")
            if ref.endswith("Coords.yaml"):
                params.append(param("coords", required=True))
            elif ref.endswith("#/components/parameters/datetime"):
                params.append(param("datetime"))
            elif ref.endswith("parameter-name.yaml"):
                params.append(param("parameter-name"))
            elif ref.endswith("z.yaml"):
                params.append(param("z"))
            elif ref.endswith("/crs"):
                params.append(param("crs"))
            elif p.get("name") == "bbox" and examples:
                params.append(param("bbox", required=True))
            elif ref.startswith("#/components/parameters/"):
                inline = dict(local[ref.rsplit("/", 1)[-1]])
                params.append(inline if examples else {**inline, "schema": {"type": "string"}})
            elif "$ref" not in p:
                params.append(p)  # inline already: bbox (cube), f
        if qt == "radius":
            params += [param("within", required=True), param("within-units", required=True)]
        op["parameters"] = params
        op["responses"] = {"default": {"description": "any response"}}
        op["operationId"] = op["operationId"] + ("Examples" if examples else "Any")
        paths[path] = {"get": op}
    return {"openapi": "3.0.2", "info": {"title": "raw2ready EDR (fuzz subset)", "version": "1"},
            "servers": [{"url": base}], "paths": paths}
