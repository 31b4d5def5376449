"""Benchmark at real size: EDR position and 1-ha area time series from the per-scene COGs, from the
time-series store (``steps/products/cube.py``) and from pygeoapi's ``xarray-edr`` over an equivalent Zarr, on local
disk and on a local S3 server with injected latency, side by side in one run.

Run: ``.venv/bin/python bench/bench_edr.py [--size 10980] [--dates 24,96,290] [--queries 24]
[--s3-dates 290] [--s3-servers s3rver:cog+store,moto:store]
[--delay-ms 30] [--clients 16] [--tput-queries 600] [--workers 2] [--threads 4]
[--work $TMPDIR/raw2ready-edr-bench] [--write-doc]``.

1. Synthesizes ``max(--dates)`` dates of one full-size tile (``bench/edr_synth.py``: the four product COGs
   in the pipeline's encoding + item sidecars; realistic content in 24 query patches, no data elsewhere),
   cached in ``--work``. For each N of ``--dates`` an output root holds the first N dates (hard links),
   its catalog (``steps.products.catalog.rebuild_catalog``) and
   its store (``steps.products.cube.rebuild``, timed; on the
   smallest N also one appended date, ``steps.products.cube.sync``, timed) and, for ``xarray-edr``, a Zarr of the
   same NDVI (int16 + scale_factor, chunks N × 32 × 32 in shards N × 512 × 512, zstd, like the store).
2. S3: per S3 API server of ``--s3-servers`` (``s3rver`` from the npm registry, installed in ``--work`` on
   first use; moto's ``moto_server``), that server with ``bench/s3_latency_proxy.py`` in front
   (``--delay-ms`` per request, counts requests and bytes); the roots of ``--s3-dates`` are uploaded to it.
3. Per configuration (where × path × N), in phases each with a fresh server (``raw2ready serve``, COG path
   with ``--no-cube``; xarray-edr: pygeoapi under gunicorn, same workers/threads), after one warm-up round
   of queries elsewhere in the tile (opens indexes, handles, arrays) and ``POSIX_FADV_DONTNEED`` on every
   file of the root (drops the page cache): ``--queries`` *cold* queries, one per patch (pixels, COG
   blocks, store shards and chunks never touched by that server), then the same queries again (*warm*).
   Position and area (10 × 10 px polygon, ours; xarray-edr: ``cube`` with that 10 × 10 px box) are
   separate phases. Bytes and requests per query: at the proxy (S3) or from the workers'
   ``/proc/<pid>/io`` (local: read syscalls and bytes read from the block device). RSS: sum of the
   gunicorn workers' VmRSS after the phase.
4. Throughput for the largest N: ``--tput-queries`` position queries from ``--clients`` concurrent
   clients, each a pixel never queried before (page cache dropped first).
Prints markdown tables; ``--write-doc`` writes ``docs/EDR_BENCHMARK.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edr_synth

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AREA_PX = 10
BUCKET = "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ------------------------------------------------------------------------------------------ preparing
def prepare_root(work: Path, items: list[dict[str, Any]], n: int, append_probe: bool) -> dict[str, Any]:
    """An output root with the first ``n`` dates, its catalog and store (cached); timings and sizes."""
    from steps.products import cube
    from steps.products.catalog import item_folder_from_item, rebuild_catalog
    from steps.storage import LocalStorage

    root = work / f"n{n}"
    info_path = root / "bench-prep.json"
    if info_path.exists():
        return dict(json.loads(info_path.read_text()))
    if root.exists():
        shutil.rmtree(root)
    storage = LocalStorage(root)

    def link(it: dict[str, Any]) -> None:
        folder = item_folder_from_item(it)
        src, dst = work / "archive" / folder, root / folder
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            (dst / f.name).hardlink_to(f)

    info: dict[str, Any] = {"dates": n}
    first = n - 1 if append_probe else n
    for it in items[:first]:
        link(it)
    t0 = time.perf_counter()
    rebuild_catalog(storage)
    info["catalog_s"] = time.perf_counter() - t0
    print(f"  n={n}: store rebuild of {first} dates …", flush=True)
    t0 = time.perf_counter()
    cube.rebuild(storage)
    info["store_build_s"] = time.perf_counter() - t0
    info["store_build_dates"] = first
    if append_probe:
        link(items[n - 1])
        rebuild_catalog(storage)
        t0 = time.perf_counter()
        res = cube.sync(storage)
        info["append_s"] = time.perf_counter() - t0
        info["append_segments"] = res[0].segments
    info["cog_bytes"] = sum(_du(work / "archive" / item_folder_from_item(it)) for it in items[:n])
    info["store_bytes"] = _du(root / "cube")
    info_path.write_text(json.dumps(info, indent=1))
    print(f"  n={n}: {json.dumps(info)}", flush=True)
    return info


def build_xarray_zarr(work: Path, items: list[dict[str, Any]], n: int, size: int) -> tuple[Path, float, int]:
    """Zarr of physical NDVI for xarray-edr (int16 + scale_factor/_FillValue, decoded by xarray to float):
    chunks (n, 32, 32) in shards (n, 512, 512), zstd, full tile extent; only the patches' chunks are written
    (the rest is the fill value, i.e. no data, as in the COGs). Cached; returns (path, seconds, bytes)."""
    import rasterio
    import xarray as xr
    import zarr
    from rasterio.windows import Window
    from zarr.codecs import ZstdCodec

    from steps.products.catalog import item_folder_from_item

    path = work / f"n{n}" / "ndvi-xarray.zarr"
    done = path.with_suffix(".done")
    if done.exists():
        return path, float(done.read_text()), _du(path)
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    grid = edr_synth.tile_grid(size)
    xs = grid.ulx + (np.arange(size) + 0.5) * 10.0
    ys = grid.uly - (np.arange(size) + 0.5) * 10.0
    times = np.array([np.datetime64(it["properties"]["datetime"].rstrip("Z"), "ns") for it in items[:n]])
    coords = xr.Dataset(coords={"time": ("time", times), "y": ("y", ys, {"units": "m", "axis": "Y"}),
                                "x": ("x", xs, {"units": "m", "axis": "X"})})
    coords.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    g = zarr.open_group(path, mode="a")
    arr = g.create_array("ndvi", shape=(n, size, size), dtype="int16", chunks=(n, 32, 32), shards=(n, 512, 512),
                         compressors=[ZstdCodec(level=3)], fill_value=-32768, dimension_names=("time", "y", "x"),
                         attributes={"scale_factor": 0.0001, "add_offset": 0.0, "_FillValue": -32768, "units": "1",
                                     "long_name": "NDVI"})
    for r0, c0 in edr_synth.patch_origins(size):
        stack = np.empty((n, edr_synth.PATCH, edr_synth.PATCH), dtype="int16")
        for k, it in enumerate(items[:n]):
            with rasterio.open(work / "archive" / item_folder_from_item(it) / "ndvi.tif") as ds:
                stack[k] = ds.read(1, window=Window(c0, r0, edr_synth.PATCH, edr_synth.PATCH))
        arr[:, r0:r0 + edr_synth.PATCH, c0:c0 + edr_synth.PATCH] = stack
    zarr.consolidate_metadata(path)
    secs = time.perf_counter() - t0
    done.write_text(str(secs))
    return path, secs, _du(path)


def drop_page_cache(paths: list[Path]) -> int:
    """``POSIX_FADV_DONTNEED`` on every file below ``paths`` (no root needed); returns files touched."""
    n = 0
    for base in paths:
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                try:
                    fd = os.open(Path(dirpath) / name, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    n += 1
                finally:
                    os.close(fd)
    return n


# ------------------------------------------------------------------------------------------ servers
@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], base: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process group; wait for ``/conformance``; stop it afterwards."""
    fh = log.open("w")
    proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/conformance?f=json", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {log.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        fh.close()


def worker_pids(master: int) -> list[int]:
    """PIDs of the gunicorn workers (children of the master)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            out.append(int(p.name))
    return sorted(out)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def proc_io(pids: list[int]) -> tuple[int, int]:
    """(read syscalls, bytes read from the block device) summed over ``pids``."""
    syscr = rb = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                k, v = line.split(":")
                if k == "syscr":
                    syscr += int(v)
                elif k == "read_bytes":
                    rb += int(v)
    return syscr, rb


class Proxy:
    """Client of the latency proxy's ``/__stats__``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def stats(self) -> tuple[int, int, float]:
        with urllib.request.urlopen(f"{self.url}/__stats__", timeout=10) as r:
            d = json.loads(r.read())
        return int(d["requests"]), int(d["bytes_out"]), float(d["upstream_s"])


def fetch(url: str) -> tuple[float, dict[str, Any]]:
    """(seconds, parsed JSON) of one GET; raises on non-200."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status}")
    return time.perf_counter() - t0, json.loads(body)


def pct(ts: list[float], q: float) -> float:
    s = sorted(ts)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


# ------------------------------------------------------------------------------------------ queries
@dataclass
class Site:
    """Where queries go: UTM grid and lon/lat transformer."""

    grid: edr_synth.TileGrid
    to_ll: Any

    def centre(self, r: int, c: int) -> tuple[float, float]:
        return self.grid.ulx + (c + 0.5) * 10.0, self.grid.uly - (r + 0.5) * 10.0

    def lonlat(self, r: int, c: int) -> tuple[float, float]:
        x, y = self.centre(r, c)
        lon, lat = self.to_ll.transform(x, y)
        return float(lon), float(lat)


def url_position(kind: str, base: str, site: Site, r: int, c: int) -> str:
    if kind == "xarray":
        x, y = site.centre(r, c)
        q = {"coords": f"POINT({x!r} {y!r})", "parameter-name": "ndvi"}
        return f"{base}/collections/ndvi-xarray/position?{urllib.parse.urlencode(q)}"
    lon, lat = site.lonlat(r, c)
    return f"{base}/collections/ndvi/position?{urllib.parse.urlencode({'coords': f'POINT({lon!r} {lat!r})'})}"


def url_area(kind: str, base: str, site: Site, r: int, c: int, first: str, last: str) -> str:
    """A 10 × 10 px polygon (edges 1 m outside the outer pixel centres... 4 m inside the outer pixel edges)."""
    x0, y1 = site.centre(r, c)
    x1, y0 = site.centre(r + AREA_PX - 1, c + AREA_PX - 1)
    x0, y0, x1, y1 = x0 - 4, y0 - 4, x1 + 4, y1 + 4
    if kind == "xarray":
        q = {"bbox": f"{x0},{y0},{x1},{y1}", "datetime": f"{first}/{last}", "parameter-name": "ndvi"}
        return f"{base}/collections/ndvi-xarray/cube?{urllib.parse.urlencode(q)}"
    ring = [site.to_ll.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    wkt = "POLYGON((" + ",".join(f"{lo!r} {la!r}" for lo, la in ring) + "))"
    return f"{base}/collections/ndvi/area?{urllib.parse.urlencode({'coords': wkt})}"


@dataclass
class Run:
    """Measurements of one configuration."""

    where: str
    kind: str
    n: int
    cells: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


KIND_LABEL = {"cog": "COGs (--no-cube)", "store": "store", "xarray": "xarray-edr (Zarr)"}


def xarray_config(zarr_path: Path, port: int, out_dir: Path) -> tuple[Path, Path]:
    """A pygeoapi configuration (and OpenAPI document) with one xarray-edr collection over ``zarr_path``."""
    import yaml
    from pygeoapi.openapi import generate_openapi_document

    cfg = {
        "server": {"bind": {"host": "127.0.0.1", "port": port}, "url": f"http://127.0.0.1:{port}",
                   "mimetype": "application/json; charset=UTF-8", "encoding": "utf-8", "languages": ["en-US"],
                   "limits": {"default_items": 10, "max_items": 1000},
                   "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "attribution": "OSM"}},
        "logging": {"level": "WARNING"},
        "metadata": {"identification": {"title": "bench", "description": "bench", "keywords": ["bench"],
                                        "url": "http://example.org", "terms_of_service": "http://example.org"},
                     "license": {"name": "CC0", "url": "http://example.org"},
                     "provider": {"name": "bench", "url": "http://example.org"}, "contact": {"name": "bench"}},
        "resources": {"ndvi-xarray": {
            "type": "collection", "title": "NDVI cube", "description": "NDVI cube (UTM 47N)",
            "keywords": ["ndvi"], "extents": {"spatial": {"bbox": [99, 14, 101, 15]}},
            "providers": [{"type": "edr", "name": "xarray-edr", "data": str(zarr_path), "x_field": "x",
                           "y_field": "y", "time_field": "time",
                           "format": {"name": "zarr", "mimetype": "application/zip"}}],
        }},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "xarray-config.yml"
    oas_path = out_dir / "xarray-openapi.yml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    oas_path.write_text(generate_openapi_document(cfg_path, "yaml"))
    return cfg_path, oas_path


class Bench:
    """Runs the phases of one configuration."""

    def __init__(self, a: argparse.Namespace, site: Site, patches: list[tuple[int, int]], first: str) -> None:
        self.a = a
        self.site = site
        self.patches = patches
        self.first = first
        self.rng = random.Random(11)
        self.used: set[tuple[int, int]] = set()  # (row // 32, col // 32) chunks queried so far

    def pixels(self, k: int, margin: int = 0) -> list[tuple[int, int]]:
        """One pixel per patch for ``k`` patches (round robin), each in a 32² chunk not queried before."""
        out = []
        for i in range(k):
            r0, c0 = self.patches[i % len(self.patches)]
            for _ in range(10_000):
                r = r0 + self.rng.randrange(edr_synth.PATCH - margin)
                c = c0 + self.rng.randrange(edr_synth.PATCH - margin)
                if (r // 32, c // 32) not in self.used:
                    break
            self.used.add((r // 32, c // 32))
            out.append((r, c))
        return out

    def server(self, kind: str, catalog: str, env: dict[str, str], zarr_path: Path | None,
               tag: str) -> Any:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        cfg = self.a.work / "config" / tag
        if kind == "xarray":
            assert zarr_path is not None
            x_cfg, x_oas = xarray_config(zarr_path, port, cfg)
            argv = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(self.a.workers),
                    "--threads", str(self.a.threads), "--worker-class", "gthread", "--log-level", "warning",
                    "--timeout", "600", "pygeoapi.flask_app:APP"]
            env = {**env, "PYGEOAPI_CONFIG": str(x_cfg), "PYGEOAPI_OPENAPI": str(x_oas)}
        else:
            argv = [str(BIN / "raw2ready"), "serve", "--catalog", catalog, "--port", str(port), "--config-out",
                    str(cfg), "--workers", str(self.a.workers), "--threads", str(self.a.threads)]
            argv += ["--no-cube"] if kind == "cog" else []
        return base, running(argv, env, base, self.a.work / f"{tag}.log")

    def phase(self, run: Run, query: str, catalog: str, env: dict[str, str], files: list[Path],
              proxy: Proxy | None, zarr_path: Path | None, last: str, tput: bool) -> None:
        kind = run.kind
        tag = f"{run.where}-{kind}-n{run.n}-{query}"
        cache = self.a.work / "phases" / f"{tag}.json"
        if tag in self.a.skip:
            print(f"  {tag}: skipped (--skip)", flush=True)
            return
        if cache.exists() and not self.a.fresh:  # measured by an earlier, interrupted run
            run.raw[query] = json.loads(cache.read_text())
            self.pixels(self.a.queries, margin=AREA_PX if query == "area" else 0)
            if tput:
                self.pixels(self.a.tput_queries if kind == "store" else self.a.tput_queries_slow)
            print(f"  {tag}: from {cache}", flush=True)
            return
        base, ctx = self.server(kind, catalog, env, zarr_path, tag)

        def url(r: int, c: int) -> str:
            if query == "position":
                return url_position(kind, base, self.site, r, c)
            return url_area(kind, base, self.site, r, c, self.first, last)

        drop_page_cache(files)
        with ctx as proc:
            # warm-up elsewhere (no-data part of the tile): loads the index, opens handles/arrays per worker
            far = [(self.site.grid.size - 40 - 37 * i, 25 + 41 * i) for i in range(2 * self.a.workers)]
            t_first, _ = fetch(url(*far[0]))
            with ThreadPoolExecutor(len(far)) as pool:
                list(pool.map(lambda rc: fetch(url(*rc)), far[1:]))
            drop_page_cache(files)
            pids = worker_pids(proc.pid)
            pix = self.pixels(self.a.queries, margin=AREA_PX if query == "area" else 0)
            res: dict[str, Any] = {"first_ms": t_first * 1000}
            for temp in ("cold", "warm"):
                ts, reqs, nbytes, up_s = [], [], [], []
                values = []
                for r, c in pix:
                    s0 = proxy.stats() if proxy else (*proc_io(pids), 0.0)
                    t, doc = fetch(url(r, c))
                    s1 = proxy.stats() if proxy else (*proc_io(pids), 0.0)
                    ts.append(t * 1000)
                    reqs.append(s1[0] - s0[0])
                    nbytes.append(s1[1] - s0[1])
                    up_s.append(s1[2] - s0[2])
                    values.append(_ndvi_values(doc))
                res[temp] = {"p50": statistics.median(ts), "p95": pct(ts, 0.95), "req": statistics.mean(reqs),
                             "bytes": statistics.mean(nbytes), "upstream_ms": 1000 * statistics.mean(up_s),
                             "n": len(ts)}
                res.setdefault("values", values)
            res["pixels"] = pix
            if tput:
                drop_page_cache(files)
                nq = self.a.tput_queries if kind == "store" else self.a.tput_queries_slow
                urls = [url(r, c) for r, c in self.pixels(nq)]
                res["tput"] = throughput(urls, self.a.clients)
            res["rss"] = [rss_bytes(p) for p in worker_pids(proc.pid)]
            res["load"] = os.getloadavg()[0]
        run.raw[query] = res
        cache.parent.mkdir(exist_ok=True)
        cache.write_text(json.dumps(res))
        c, w = res["cold"], res["warm"]
        print(f"  {tag}: first {res['first_ms']:.0f} ms; cold p50 {c['p50']:.1f} p95 {c['p95']:.1f} "
              f"({c['req']:.1f} req, {_gb(c['bytes'])}); warm p50 {w['p50']:.1f} p95 {w['p95']:.1f} "
              f"({w['req']:.1f} req, {_gb(w['bytes'])}); RSS {[_gb(x) for x in res['rss']]}"
              + (f"; tput {res['tput']}" if tput else ""), flush=True)


def _ndvi_values(doc: dict[str, Any]) -> list[Any]:
    if doc.get("type") == "CoverageCollection":
        covs = doc["coverages"]
        vals = covs[0]["ranges"]["ndvi"]["values"] if covs else []
    else:
        vals = doc["ranges"]["ndvi"]["values"]
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else round(float(v), 4) for v in vals]


def throughput(urls: list[str], clients: int) -> dict[str, Any]:
    """Successful requests per second with ``clients`` concurrent clients; failures counted."""
    def one(u: str) -> bool:
        try:
            fetch(u)
        except (OSError, RuntimeError, http.client.HTTPException, ValueError):
            return False
        return True

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ok = sum(pool.map(one, urls))
    secs = time.perf_counter() - t0
    return {"rps": ok / secs, "failed": len(urls) - ok, "queries": len(urls), "clients": clients}


# ------------------------------------------------------------------------------------------ S3
S3_KEYS = {"moto": ("testing", "testing"), "s3rver": ("S3RVER", "S3RVER")}
S3RVER_VERSION = "3.7.1"


def _s3rver(work: Path) -> Path:
    """The s3rver executable (npm package ``s3rver``, installed below ``work`` on first use)."""
    prefix = work / "s3rver"
    exe = prefix / "node_modules" / ".bin" / "s3rver"
    if not exe.exists():
        print(f"installing s3rver {S3RVER_VERSION} from the npm registry …", flush=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        f"s3rver@{S3RVER_VERSION}"], check=True)
    return exe


@contextlib.contextmanager
def s3_server(work: Path, delay_ms: float, server: str = "moto") -> Iterator[tuple[str, str]]:
    """An S3 API server (``moto`` in server mode, or ``s3rver``) + the latency proxy in front of it; yields
    (server endpoint, proxy endpoint).

    moto keeps objects in memory or spooled files and reads a *whole* object to answer a range request;
    s3rver (Node.js) keeps each object in a file and answers a range request by reading that range, as an
    object store does. s3rver gets suffix ranges (``bytes=-N``) wrong, which the store reader does not use
    once an array's ``shard_indexes`` is loaded (GDAL does not use them either).
    """
    sport, pport = _free_port(), _free_port()
    tmp = work / f"{server}-data"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    log = (work / f"{server}.log").open("w")
    if server == "moto":
        argv = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(sport)]
    elif server == "s3rver":
        argv = [str(_s3rver(work)), "-d", str(tmp), "-a", "127.0.0.1", "-p", str(sport), "-s",
                "--no-vhost-buckets"]
    else:
        raise SystemExit(f"unknown S3 server {server!r} (moto, s3rver)")
    srv = subprocess.Popen(argv, env={**os.environ, "TMPDIR": str(tmp)}, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("s3_latency_proxy.py")), "--upstream",
                              f"http://127.0.0.1:{sport}", "--port", str(pport), "--delay-ms", str(delay_ms)],
                             start_new_session=True)
    try:
        for url in (f"http://127.0.0.1:{sport}", f"http://127.0.0.1:{pport}/__stats__"):
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2):
                        break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{url} did not start") from None
                    time.sleep(0.2)
        yield f"http://127.0.0.1:{sport}", f"http://127.0.0.1:{pport}"
    finally:
        for proc in (proxy, srv):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def s3_env(endpoint: str, server: str = "moto") -> dict[str, str]:
    key, secret = S3_KEYS[server]
    return {"RAW2READY_S3_ENDPOINT_URL": endpoint, "RAW2READY_S3_ACCESS_KEY_ID": key,
            "RAW2READY_S3_SECRET_ACCESS_KEY": secret, "RAW2READY_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}


def upload(root: Path, endpoint: str, prefix: str, server: str = "moto") -> tuple[float, int]:
    """Upload every file of ``root`` (except the xarray Zarr) to ``s3://bench/<prefix>/``; (seconds, files)."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    key, secret = S3_KEYS[server]
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=BUCKET)
    files = [p for p in root.rglob("*") if p.is_file() and "ndvi-xarray.zarr" not in p.parts
             and p.name not in ("bench-prep.json", ".lock")]
    cfg = TransferConfig(multipart_threshold=1 << 30)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: s3.upload_file(str(p), BUCKET, f"{prefix}/{p.relative_to(root).as_posix()}",
                                               Config=cfg), files))
    return time.perf_counter() - t0, len(files)


# ------------------------------------------------------------------------------------------ report
def machine() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    return (f"{cpu}, {os.cpu_count()} logical CPUs{mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}")


def tables(runs: list[Run]) -> str:
    out = []
    for query in ("position", "area"):
        title = ("Position series (one pixel, all dates)" if query == "position"
                 else f"1-ha area series ({AREA_PX} × {AREA_PX} px polygon, all dates)")
        out += [f"### {title}", "",
                "| where | path | N | first request (ms) | cold p50 / p95 (ms) | warm p50 / p95 (ms) | "
                "cold: requests, bytes per query | warm: requests, bytes per query | worker RSS after | load |",
                "|---|---|---:|---:|---:|---:|---|---|---|---:|"]
        for r in runs:
            res = r.raw.get(query)
            if res is None:
                continue
            c, w = res["cold"], res["warm"]
            unit = "GETs" if r.where.startswith("S3") else "read syscalls"
            byt = "" if r.where.startswith("S3") else " from disk"

            def io(d: dict[str, Any], unit: str = unit, byt: str = byt) -> str:
                s = f"{d['req']:.0f} {unit}, {_gb(d['bytes'])}{byt}"
                if d.get("upstream_ms"):
                    s += f" (server {d['upstream_ms']:.0f} ms)"
                return s

            rss = " + ".join(f"{x / 2**20:.0f}" for x in res["rss"]) + " MiB"
            load = f"{res['load']:.1f}" if "load" in res else "—"
            out.append(f"| {r.where} | {KIND_LABEL[r.kind]} | {r.n} | {res['first_ms']:.0f} | "
                       f"{c['p50']:.1f} / {c['p95']:.1f} | {w['p50']:.1f} / {w['p95']:.1f} | {io(c)} | {io(w)} | "
                       f"{rss} | {load} |")
        out.append("")
    tp = [(r, r.raw["position"]["tput"]) for r in runs if "tput" in r.raw.get("position", {})]
    if tp:
        out += ["### Throughput: position queries, each a pixel never queried before", "",
                "| where | path | N | clients | queries | queries/s | failed |", "|---|---|---:|---:|---:|---:|---:|"]
        for r, t in tp:
            out.append(f"| {r.where} | {KIND_LABEL[r.kind]} | {r.n} | {t['clients']} | {t['queries']} | "
                       f"{t['rps']:.1f} | {t['failed']} |")
        out.append("")
    return "\n".join(out)


def targets(runs: list[Run], big: int, s3_dates: int | None, s3_wheres: list[str]) -> str:
    def get(where: str, kind: str, n: int | None) -> Run | None:
        return next((r for r in runs if r.where == where and r.kind == kind and r.n == n), None)

    rows = ["| target | measured | met |", "|---|---|---|"]

    def add(name: str, value: float | None, limit: float, fmt: str, le: bool = True) -> None:
        if value is None:
            rows.append(f"| {name} | not measured | — |")
            return
        ok = value <= limit if le else value >= limit
        rows.append(f"| {name} | {fmt.format(value)} | {'yes' if ok else 'NO'} |")

    st, cog = get("local", "store", big), get("local", "cog", big)
    p = st.raw["position"] if st else None
    add(f"position, {big} dates, local, cold p50 ≤ 50 ms", p["cold"]["p50"] if p else None, 50, "{:.1f} ms")
    add(f"position, {big} dates, local, warm p50 ≤ 20 ms", p["warm"]["p50"] if p else None, 20, "{:.1f} ms")
    s3sts = [get(w, "store", s3_dates) for w in s3_wheres]
    for w, s3st in zip(s3_wheres, s3sts, strict=True):
        s3p = s3st.raw["position"] if s3st else None
        add(f"position, {s3_dates} dates, {w}, cold p50 ≤ 150 ms", s3p["cold"]["p50"] if s3p else None, 150,
            "{:.1f} ms")
    if p and cog:
        add("store ≥ 10× faster cold than COGs (local, same run)",
            cog.raw["position"]["cold"]["p50"] / p["cold"]["p50"], 10, "{:.1f}×", le=False)
    for w, s3st in zip(s3_wheres, s3sts, strict=True):
        s3cog = get(w, "cog", s3_dates)
        if s3st and s3cog:
            add(f"store ≥ 10× faster cold than COGs ({w}, same run)",
                s3cog.raw["position"]["cold"]["p50"] / s3st.raw["position"]["cold"]["p50"], 10, "{:.1f}×", le=False)
    for r in (st, *s3sts):
        if r and "tput" in r.raw["position"]:
            add(f"≥ 50 new-point queries/s ({r.where}, 2 cores)", r.raw["position"]["tput"]["rps"], 50,
                "{:.1f}/s", le=False)
    rss = max((max(x) for r in runs for x in (r.raw.get(q, {}).get("rss", [0]) for q in ("position", "area"))
               if r.kind == "store"), default=None)
    add("RSS ≤ 1 GiB per worker (store path, max over runs)", rss / 2**30 if rss else None, 1.0, "{:.2f} GiB")
    for r in (st, *s3sts):
        if r and "area" in r.raw:
            for temp in ("cold", "warm"):
                ratio = r.raw["area"][temp]["p50"] / r.raw["position"][temp]["p50"]
                add(f"1-ha area within 2× position ({r.where}, {temp} p50)", ratio, 2.0, "{:.2f}×")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980, help="tile side in 10 m pixels")
    ap.add_argument("--dates", default="24,96,290", help="comma-separated series lengths N")
    ap.add_argument("--queries", type=int, default=24, help="cold (and warm) queries per phase, one per patch")
    ap.add_argument("--s3-dates", default="290", help="N values also run on S3 (comma-separated; '' none)")
    ap.add_argument("--s3-servers", default="s3rver:cog+store,moto:store",
                    help="S3 API servers and the paths measured on each ('' none): server:kind+kind,…")
    ap.add_argument("--kinds", default="cog,store,xarray")
    ap.add_argument("--delay-ms", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--tput-queries", type=int, default=600, help="throughput queries (store path)")
    ap.add_argument("--tput-queries-slow", type=int, default=48, help="throughput queries (COGs, xarray)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "raw2ready-edr-bench")
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="re-measure phases cached by an interrupted run")
    ap.add_argument("--skip", default="", help="comma-separated phase tags not to run, e.g. "
                    "'S3 +latency (moto)-cog-n290-area'")
    a = ap.parse_args()
    a.skip = {x.strip() for x in a.skip.split(",") if x.strip()}
    t_start = time.perf_counter()
    import hashlib

    code = "; ".join(f"{f} sha256 {hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:12]} (mtime "
                     f"{time.strftime('%H:%M:%S', time.gmtime((ROOT / f).stat().st_mtime))} UTC)"
                     for f in ("steps/products/cube.py", "steps/edr/provider.py", "steps/edr/index.py",
                               "steps/edr/query.py", "steps/edr/plan.py", "steps/edr/reader.py",
                               "steps/edr/coverage.py"))
    print(f"code: {code}", flush=True)
    ns = sorted(int(x) for x in a.dates.split(","))
    s3_ns = [int(x) for x in a.s3_dates.split(",") if x]
    s3_servers = [(part.split(":")[0], part.split(":")[1].split("+")) for part in a.s3_servers.split(",") if part]
    a.work = a.work / f"size{a.size}"
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"synthesizing {ns[-1]} dates of {a.size}² px …", flush=True)
    t0 = time.perf_counter()
    items = edr_synth.build_archive(a.work / "archive", a.size, ns[-1])
    synth_s = time.perf_counter() - t0
    prep = {n: prepare_root(a.work, items, n, append_probe=(n == ns[0])) for n in ns}
    zarrs = {}
    if "xarray" in a.kinds:
        for n in ns:
            zarrs[n] = build_xarray_zarr(a.work, items, n, a.size)
            print(f"  n={n}: xarray Zarr {zarrs[n][0]} ({zarrs[n][1]:.0f} s, {_gb(zarrs[n][2])})", flush=True)
    from pyproj import Transformer

    grid = edr_synth.tile_grid(a.size)
    site = Site(grid, Transformer.from_crs(f"EPSG:{grid.epsg}", "EPSG:4326", always_xy=True))
    patches = edr_synth.patch_origins(a.size)
    first = items[0]["properties"]["datetime"][:10]
    bench = Bench(a, site, patches, first)
    runs: list[Run] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAW2READY_S3", "AWS_"))}
    agree: list[str] = []

    def record_agreement(group: list[Run]) -> None:
        ref = group[0].raw.get("position", {}).get("values")
        for r in group[1:]:
            mine = r.raw.get("position", {}).get("values")
            if ref is None or mine is None:
                continue
            ok = mine == ref
            agree.append(f"{r.where} N={r.n}: {KIND_LABEL[r.kind]} vs {KIND_LABEL[group[0].kind]}: "
                         f"{'identical' if ok else 'DIFFERENT'}")

    for n in ns:
        last = items[n - 1]["properties"]["datetime"][:10]
        files = [a.work / f"n{n}"]
        group = []
        for kind in a.kinds.split(","):
            # every configuration queries the same pixels (each on a fresh server, page cache dropped)
            bench.rng = random.Random(11)
            bench.used = set()
            r = Run("local", kind, n)
            for query in ("position", "area"):
                bench.phase(r, query, str(a.work / f"n{n}"), base_env, files, None,
                            zarrs[n][0] if kind == "xarray" else None, last, tput=(n == ns[-1] and query == "position"))
            runs.append(r)
            group.append(r)
        record_agreement(group)
    s3_info: dict[str, Any] = {}
    for server, kinds in s3_servers:
        if not s3_ns:
            break
        where = f"S3 +latency ({server})"
        with s3_server(a.work, a.delay_ms, server) as (endpoint, proxy_url):
            for n in s3_ns:
                secs, nfiles = upload(a.work / f"n{n}", endpoint, f"n{n}", server)
                s3_info[f"{server} N={n}"] = {"upload_s": secs, "files": nfiles}
                print(f"  {server}: uploaded n{n}: {nfiles} files in {secs:.0f} s", flush=True)
            env = {**base_env, **s3_env(proxy_url, server)}
            proxy = Proxy(proxy_url)
            for n in s3_ns:
                last = items[n - 1]["properties"]["datetime"][:10]
                group = []
                for kind in kinds:
                    bench.rng = random.Random(11)
                    bench.used = set()
                    r = Run(where, kind, n)
                    for query in ("position", "area"):
                        bench.phase(r, query, f"s3://{BUCKET}/n{n}", env, [], proxy, None, last,
                                    tput=(query == "position" and kind == "store"))
                    runs.append(r)
                    group.append(r)
                record_agreement(group)
    total_s = time.perf_counter() - t_start
    table = tables(runs)
    tgt = targets(runs, ns[-1], s3_ns[-1] if s3_ns else None, [f"S3 +latency ({srv})" for srv, _k in s3_servers])
    prep_lines = ["| N | COG bytes (4 products) | store bytes | store rebuild | per date | catalog rebuild |",
                  "|---:|---:|---:|---:|---:|---:|"]
    for n, p in prep.items():
        prep_lines.append(f"| {n} | {_gb(p['cog_bytes'])} | {_gb(p['store_bytes'])} | {p['store_build_s']:.0f} s "
                          f"({p['store_build_dates']} dates) | {p['store_build_s'] / p['store_build_dates']:.2f} s | "
                          f"{p['catalog_s']:.1f} s |")
    small = prep[ns[0]]
    append_line = (f"Appending one date to the {ns[0] - 1}-date store (`cube sync`: a new 1-date segment over the "
                   f"whole tile): {small['append_s']:.1f} s. The N={ns[0]} store is left as it is then "
                   f"({small['append_segments']} segments, as on a live tile after an append), so its reads "
                   f"touch {small['append_segments']} segments.")
    disk = _du(a.work)
    summary = {
        "synth_s": synth_s, "total_s": total_s, "disk_bytes": disk, "s3": s3_info, "agree": agree,
        "xarray": {n: {"build_s": z[1], "bytes": z[2]} for n, z in zarrs.items()},
    }
    (a.work / "results.json").write_text(json.dumps({"runs": [r.__dict__ for r in runs], "prep": prep,
                                                     "summary": summary}, indent=1, default=str))
    print(table)
    print(tgt)
    print("\n".join(prep_lines))
    print(append_line)
    print("\n".join(agree))
    print(f"total {total_s / 60:.1f} min (synthesis {synth_s / 60:.1f} min); work dir {_gb(disk)}")
    if a.write_doc:
        cmd = "python bench/bench_edr.py " + " ".join(sys.argv[1:])
        xr_lines = ", ".join(f"N={n}: {_gb(z[2])} ({z[1]:.0f} s)" for n, z in zarrs.items())
        doc = ROOT / "docs" / "EDR_BENCHMARK.md"
        # the hand-written analysis ("## Findings" to the end) survives a rewrite of the measured sections
        old = doc.read_text(encoding="utf-8") if doc.exists() else ""
        notes = old[old.index("## Findings"):] if "## Findings" in old else NOTES
        doc.write_text(_DOC.format(
            table=table, targets=tgt, prep="\n".join(prep_lines), append=append_line, machine=machine(),
            cmd=cmd.strip(), when=time.strftime("%Y-%m-%d", time.gmtime()), total=total_s / 60,
            synth=synth_s / 60, disk=_gb(disk), agree="; ".join(agree) or "not checked", xr=xr_lines,
            queries=a.queries, delay=a.delay_ms, workers=a.workers, threads=a.threads, size=a.size,
            s3=", ".join(f"{k}: {v['files']} files uploaded in {v['upload_s']:.0f} s" for k, v in s3_info.items()),
            notes=notes, code=code, s3rver=S3RVER_VERSION), encoding="utf-8")
        print(f"wrote {doc}")


NOTES = "## Findings\n\n(to be written from the numbers above)\n"

_DOC = """# EDR serving benchmark at real size

The EDR provider (`steps/edr/provider.py`) answering from the per-scene COGs (`raw2ready serve --no-cube`)
and from the time-series store (`steps/products/cube.py`, the default), next to pygeoapi's own `xarray-edr` over an
equivalent Zarr, for position and 1-ha area time series over N dates of one full {size} × {size} px tile,
on local disk and on two local S3 API servers (s3rver and moto) behind a proxy adding {delay:.0f} ms per
request. One run, side by side; gunicorn {workers} workers × {threads} threads for every server.

## Results

{table}
### Acceptance targets (issue 14 item 4)

{targets}

### Building the store

{prep}

{append}

xarray-edr's Zarr (NDVI only, patches only written): {xr}. S3: {s3}.

Values: {agree}.

## How it was measured

* Machine: {machine}.
* Command: `{cmd}` (run {when}; {total:.0f} min in all, of which {synth:.0f} min synthesizing dates not yet
  cached; work directory {disk} on disk, of which the COGs and the stores are the bulk).
* Code measured (at the start of this invocation): {code}.
* Data: `bench/edr_synth.py` writes, per date, the four product COGs of tile 47PPR at full size in the
  pipeline's encoding (GDAL COG driver, DEFLATE level 6, predictor 2 for NDVI/LAI, 512² blocks,
  products' nodata/scale/offset) but **without internal overviews** (never read by EDR), plus item
  sidecars; the catalog and the store are then built by the project's own code (`rebuild_catalog`,
  `cube.rebuild`). **Synthetic-content caveat:** realistic content (parcels with crop calendars, noise and
  texture; cloud, cirrus and shadow classes with NDVI/LAI no data under them; LAI and flags from NDVI) only
  in 24 query patches of 512 × 512 px (one COG block and one store shard each, in distinct 20 m blocks),
  ≈ 5 % of the tile; everywhere else no data. Queried blocks and chunks therefore compress as real ones
  would (the NDVI patch blocks DEFLATE to ≈ 75 % of raw: the noise is realistic), but whole-tile costs
  (store build and append times, store and COG sizes) are far below those of a tile full of land.
* Cold: each phase starts a fresh server, sends one round of warm-up queries far from the patches (index
  loaded, COG handles / Zarr arrays opened in the workers), then drops the page cache of every file of the
  root with `posix_fadvise(POSIX_FADV_DONTNEED)` (no root needed) and sends {queries} sequential queries,
  one per patch: pixels, COG blocks, store shards and chunks that this server never touched. The warm-up
  round has loaded each store array's `shard_indexes` (one object per array and segment, ≈ 1 MB for a 10 m
  array), as any query of the tile does first. Warm: the same queries again. "First request" is the first
  warm-up query of a fresh server (catalog index load, imports, opening every COG/array of the series, the
  store's `shard_indexes`). On S3 the servers keep objects in their own files (s3rver) or in memory /
  spooled files (moto) that this machine's page cache holds, so "cold" there means a fresh server (no
  GDAL block cache, no open handles, no chunk ever fetched).
* S3 API servers: s3rver {s3rver} (Node.js, from the npm registry; answers a range request by reading that
  range of the object's file, as an object store does) and moto's server mode (reads the *whole object*
  for every range request: ≈ 35 ms for a 70 MB shard, time that a real object store does not spend).
* Requests and bytes per query: on S3 counted at the proxy (GET/HEAD and response body bytes; "server N ms"
  is the mean time the S3 server itself took per query, summed over its requests); locally the workers'
  `/proc/<pid>/io` (read syscalls and bytes read from the block device).
* xarray-edr has no coordinate transformation and no `area` query: it is queried in UTM at the same
  pixel centres, its area row is a `cube` query with the same 10 × 10 px box over all dates, and it
  serves NDVI only (ours returns NDVI and the 20 m cloud mask: two arrays per query). No S3 run for it
  (pygeoapi reads S3 Zarr through s3fs, which is not installed).
* RSS: VmRSS of each gunicorn worker after the phase (the position phase includes the throughput run).
* Throughput: `--clients` concurrent clients, each query a pixel in a 32² chunk not queried before, page
  cache dropped before.

{notes}
"""


if __name__ == "__main__":
    main()
