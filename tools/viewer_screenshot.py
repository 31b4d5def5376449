"""Screenshot of the web viewer (``/viewer`` of ``raw2ready serve``) in headless Chromium: ``docs/viewer.png``.

Uses Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``) through
Selenium, pointed at ``/usr/bin/chromedriver`` so that Selenium Manager never downloads a browser or driver.
The browser resolves no host name but loopback (``--host-resolver-rules``): the page must work from this
server alone, and the base map of the pygeoapi configuration (OpenStreetMap) stays blank here.

::

    make demo
    .venv/bin/python tools/viewer_screenshot.py --catalog raw2ready-demo/products   # serves it, then shoots
    .venv/bin/python tools/viewer_screenshot.py --url http://127.0.0.1:5000          # a running server

The script opens the viewer on the latest date, clicks a pixel whose NDVI series has both values and
cloud-masked gaps, draws a small field around it, and saves the page. ``tests/test_viewer.py`` drives the
viewer with the same helpers (:func:`chromium`, :func:`open_viewer`, :func:`click_latlng`, …).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
APT_PACKAGES = "chromium chromium-driver"
REPO = Path(__file__).resolve().parents[1]


def browser_missing() -> str | None:
    """Why the browser cannot be driven here (None when it can)."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            return f"{exe} is missing: apt-get install -y {APT_PACKAGES}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1250) -> Iterator[Any]:
    """A headless Chromium WebDriver (Debian's binaries, a fresh profile, no network but loopback)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="raw2ready-chromium-"))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, script: str, timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``script`` (JavaScript returning a value) until it is truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            status = driver.execute_script("var s = document.getElementById('r2r-status'); return s && s.textContent;")
            raise TimeoutError(f"timed out waiting for {what or script!r} (viewer status: {status!r})")
        time.sleep(0.1)


def open_viewer(driver: Any, base: str, timeout: float = 20.0) -> None:
    """Open ``base/viewer`` and wait until the catalog is loaded and the map is set up."""
    driver.get(f"{base}/viewer")
    wait_for(driver, "return window.raw2readyViewer && window.raw2readyViewer.ready;", timeout, "the viewer")


def set_view(driver: Any, lat: float, lon: float, zoom: float) -> None:
    """Centre the map (synchronously, no animation)."""
    driver.execute_script("window.raw2readyViewer.map.setView([arguments[0], arguments[1]], arguments[2], "
                          "{animate: false});", lat, lon, zoom)


def wait_tiles(driver: Any, timeout: float = 20.0) -> None:
    """Wait until the overlay of the current date and product has loaded its tiles."""
    wait_for(driver, "var s = window.raw2readyViewer.state; var d = s.meta.dates[s.dateIndex];"
                     "return document.body.dataset.tilesLoaded === d.date + '/' + s.product;", timeout, "map tiles")


def series_seq(driver: Any) -> int:
    """How many queries have completed so far."""
    return int(driver.execute_script("return Number(document.getElementById('r2r-series').dataset.seq || 0);"))


def wait_series(driver: Any, after: int, timeout: float = 30.0) -> dict[str, Any]:
    """Wait for the query after completed query number ``after``; its ``lastSeries`` (JSON round trip)."""
    wait_for(driver, f"return Number(document.getElementById('r2r-series').dataset.seq || 0) > {after};",
             timeout, "the time series")
    return dict(json.loads(driver.execute_script("return JSON.stringify(window.raw2readyViewer.lastSeries);")))


def click_latlng(driver: Any, lat: float, lon: float) -> None:
    """A real mouse click on the map at (lat, lon) (viewport pixel from the Leaflet map)."""
    from selenium.webdriver.common.action_chains import ActionChains

    x, y = driver.execute_script(
        "var m = window.raw2readyViewer.map; var p = m.latLngToContainerPoint([arguments[0], arguments[1]]);"
        "var r = m.getContainer().getBoundingClientRect(); return [r.left + p.x, r.top + p.y];", lat, lon)
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(round(x), round(y))
    actions.w3c_actions.pointer_action.click()
    actions.perform()
    time.sleep(0.05)  # two clicks closer than the double-click interval at one place would be a double click


def chart_values(driver: Any, collection: str) -> tuple[list[str], list[float | None]]:
    """The times and values plotted in a chart (its ``data-times``/``data-values``)."""
    t, v = driver.execute_script(
        "var s = document.getElementById('r2r-chart-' + arguments[0]); return [s.dataset.times, s.dataset.values];",
        collection)
    return json.loads(t), json.loads(v)


def draw_field(driver: Any, corners: list[tuple[float, float]], after: int, timeout: float = 30.0) -> dict[str, Any]:
    """Draw a field with clicks on its corners (lat, lon) and Finish; the resulting ``lastSeries``."""
    driver.find_element("id", "r2r-draw").click()
    for lat, lon in corners:
        click_latlng(driver, lat, lon)
    driver.find_element("id", "r2r-finish").click()
    return wait_series(driver, after, timeout)


# -------------------------------------------------------------------------------------------- the picture
def _get_json(url: str) -> Any:
    """GET and parse JSON; None for an error status or no connection."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def pick_location(base: str) -> tuple[float, float, list[float]]:
    """(lat, lon, bbox) of a point in the latest date's first scene whose NDVI series has values and gaps."""
    meta = _get_json(f"{base}/viewer/items.json")
    latest = meta["dates"][-1]
    bbox = next(it["bbox"] for it in meta["items"] if it["id"] == latest["items"][0])
    w, s, e, n = bbox
    best = (s + 0.55 * (n - s), w + 0.45 * (e - w))
    for fy in (0.55, 0.35, 0.7, 0.25, 0.8):
        for fx in (0.45, 0.3, 0.6, 0.2, 0.75):
            lat, lon = s + fy * (n - s), w + fx * (e - w)
            wkt = urllib.parse.quote(f"POINT({lon:.7f} {lat:.7f})")
            cov = _get_json(f"{base}/collections/ndvi/position?coords={wkt}&parameter-name=ndvi&f=json")
            values = cov["ranges"]["ndvi"]["values"] if cov else []
            if any(v is None for v in values) and sum(v is not None for v in values) >= 3:
                return lat, lon, bbox
    return best[0], best[1], bbox


def take_screenshot(base: str, out: Path) -> Path:
    """Open the viewer at ``base``, click a pixel, draw a field, save the page as PNG at ``out``."""
    lat, lon, (w, s, e, n) = pick_location(base)
    with chromium() as driver:
        open_viewer(driver, base)
        driver.execute_script("window.raw2readyViewer.map.fitBounds([[arguments[1], arguments[0]], "
                              "[arguments[3], arguments[2]]], {animate: false});", w, s, e, n)
        wait_tiles(driver)
        dx, dy = (e - w) / 8, (n - s) / 8
        field = [(lat - dy, lon - dx), (lat - dy, lon + dx), (lat + dy, lon + dx * 1.2), (lat + dy * 1.1, lon - dx)]
        draw_field(driver, field, series_seq(driver))
        seq = series_seq(driver)
        click_latlng(driver, lat, lon)
        wait_series(driver, seq)
        wait_tiles(driver)
        time.sleep(0.3)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(catalog: Path, timeout: float = 60.0) -> Iterator[str]:
    """``raw2ready serve`` for ``catalog`` on a free loopback port (its own process group); yields its URL."""
    port = _free_port()
    exe = shutil.which("raw2ready", path=str(Path(sys.executable).parent)) or "raw2ready"
    cfg = Path(tempfile.mkdtemp(prefix="raw2ready-viewer-"))
    log = (cfg / "serve.log").open("w")
    proc = subprocess.Popen([exe, "serve", "--catalog", str(catalog), "--port", str(port), "--config-out", str(cfg),
                             "--workers", "1", "--threads", "8"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while _get_json(f"{base}/conformance?f=json") is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("raw2ready serve did not start:\n" + (cfg / "serve.log").read_text())
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        log.close()
        shutil.rmtree(cfg, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--catalog", type=Path, help="a product output root to serve (e.g. raw2ready-demo/products)")
    src.add_argument("--url", help="base URL of a running `raw2ready serve`")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "viewer.png", help="PNG to write")
    args = ap.parse_args(argv)
    missing = browser_missing()
    if missing:
        sys.stderr.write(f"viewer_screenshot: {missing}\n")
        return 2
    if args.url:
        out = take_screenshot(args.url.rstrip("/"), args.out)
    else:
        with serve(args.catalog) as base:
            out = take_screenshot(base, args.out)
    sys.stdout.write(f"{out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
