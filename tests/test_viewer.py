"""The web viewer at ``/viewer`` of ``raw2ready serve``: a real browser (Debian's headless Chromium through
Selenium and /usr/bin/chromedriver) clicks the map and draws a field; the charts' values must equal the EDR
responses the test fetches itself over HTTP. Also the map tiles (PNG, no data transparent), the landing-page
links, the packaged assets (no CDN) and serving from S3.

The browser tests skip when Chromium is absent (``apt-get install -y chromium chromium-driver``; CI's
``.ci/run`` installs both). Browser helpers are shared with ``tools/viewer_screenshot.py``, which writes
``docs/viewer.png``; ``UPDATE_VIEWER_SCREENSHOT=1`` makes this test write it too.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edr_helpers import Server, get, get_json, index_items, query_url, serving

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import viewer_screenshot as vs  # noqa: E402

needs_browser = pytest.mark.skipif(vs.browser_missing() is not None,
                                   reason=f"no browser to drive: {vs.browser_missing()}")


@pytest.fixture(scope="module")
def server(processed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(processed, tmp_path_factory.mktemp("viewer-config")) as srv:
        yield srv


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if vs.browser_missing():
        pytest.skip(f"no browser to drive: {vs.browser_missing()}")
    with vs.chromium() as d:
        yield d


@pytest.fixture(scope="module")
def items(processed: Path) -> list[dict[str, Any]]:
    return index_items(processed)


# ------------------------------------------------------------------------------------------ helpers
def _lonlat(cog: Path, row: float, col: float) -> tuple[float, float]:
    import rasterio
    from pyproj import Transformer

    with rasterio.open(cog) as ds:
        x, y = ds.transform @ (col, row)
        tf = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
    lon, lat = tf.transform(x, y)
    return float(lon), float(lat)


def _stack(processed: Path, series: list[dict[str, Any]], asset: str) -> np.ndarray:
    import rasterio

    planes = []
    for it in series:
        with rasterio.open(processed / it["assets"][asset]) as ds:
            planes.append(ds.read(1) == ds.nodata)
    return np.stack(planes)


def _mixed_pixel(processed: Path, items: list[dict[str, Any]]) -> tuple[dict[str, Any], int, int]:
    """(latest item of a tile, row, col) of an NDVI pixel away from the edges that is no data (cloud-masked)
    on some dates and valid on at least two, and whose LAI has values too."""
    for tile in sorted({it["tile"] for it in items}):
        series = sorted((it for it in items if it["tile"] == tile and "ndvi" in it["assets"]),
                        key=lambda it: it["datetime"])
        if len(series) < 3:
            continue
        nd = _stack(processed, series, "ndvi")
        lai_nd = _stack(processed, series, "lai").repeat(2, axis=1).repeat(2, axis=2)[:, :nd.shape[1], :nd.shape[2]]
        ok = nd.any(axis=0) & ((~nd).sum(axis=0) >= 2) & (~lai_nd).any(axis=0)
        h, w = ok.shape
        ok[: h // 6], ok[-h // 6:], ok[:, : w // 6], ok[:, -w // 6:] = False, False, False, False
        rows, cols = np.nonzero(ok)
        if len(rows):
            k = len(rows) // 2
            return series[-1], int(rows[k]), int(cols[k])
    raise AssertionError("the demo catalog has no pixel with both values and cloud-masked dates")


def _wkt_point(wkt: str) -> tuple[float, float]:
    m = re.fullmatch(r"POINT\(([-0-9.]+) ([-0-9.]+)\)", wkt)
    assert m, wkt
    return float(m.group(1)), float(m.group(2))


def _area_means(doc: dict[str, Any], param: str) -> dict[str, float | None]:
    """Per-date mean of the non-null values of ``param`` over every Grid coverage (None: no value)."""
    sums: dict[str, list[float]] = {}
    for cov in doc["coverages"]:
        times = cov["domain"]["axes"]["t"]["values"]
        vals = np.array([np.nan if v is None else v for v in cov["ranges"][param]["values"]], dtype=np.float64)
        vals = vals.reshape(len(times), -1)
        for t, row in zip(times, vals, strict=True):
            sums.setdefault(t, []).extend(row[~np.isnan(row)].tolist())
    return {t: (float(np.mean(v)) if v else None) for t, v in sorted(sums.items())}


def _png(body: bytes) -> np.ndarray:
    """(bands, h, w) of a PNG, decoded with GDAL's PNG driver."""
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a map tile is a plain image
        with MemoryFile(body) as mem, mem.open() as ds:
            assert ds.driver == "PNG"
            return np.asarray(ds.read())


def _tile_pixel(lon: float, lat: float, z: int) -> tuple[int, int, int, int]:
    """(x, y) of the XYZ tile holding (lon, lat) and the (row, col) of that point in its 256² image."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    t = tms.tile(lon, lat, z)
    b = tms.xy_bounds(t)
    mx, my = tms.xy(lon, lat)
    col = int((mx - b.left) / (b.right - b.left) * 256)
    row = int((b.top - my) / (b.top - b.bottom) * 256)
    return t.x, t.y, row, col


# ------------------------------------------------------------------------------------------ browser
@needs_browser
def test_clicked_pixel_chart_values_equal_edr_position(server: Server, driver: Any, processed: Path,
                                                       items: list[dict[str, Any]]) -> None:
    item, row, col = _mixed_pixel(processed, items)
    cog = processed / item["assets"]["ndvi"]
    lon, lat = _lonlat(cog, row + 0.5, col + 0.5)
    vs.open_viewer(driver, server.base)
    vs.set_view(driver, lat, lon, 18)  # a 10 m pixel is ~17 screen pixels: the click lands well inside it
    seq = vs.series_seq(driver)
    vs.click_latlng(driver, lat, lon)
    got = vs.wait_series(driver, seq)
    assert got["kind"] == "point" and not got["errors"], got
    clon, clat = _wkt_point(got["wkt"])
    assert abs(clon - lon) < 2e-5 and abs(clat - lat) < 2e-5, (got["wkt"], lon, lat)

    for collection in ("ndvi", "lai"):
        # what the EDR API answers for the clicked coordinates, fetched here over HTTP
        direct = get_json(query_url(server.base, f"/collections/{collection}/position", coords=got["wkt"], f="json"))
        times, values = vs.chart_values(driver, collection)
        assert times == direct["domain"]["axes"]["t"]["values"]
        assert values == direct["ranges"][collection]["values"]  # same numbers, None where null
        assert got["series"][collection]["values"] == values
        # and the click hit the intended pixel: the pixel centre answers the same
        centre = get_json(query_url(server.base, f"/collections/{collection}/position",
                                    coords=f"POINT({lon!r} {lat!r})", f="json"))
        assert centre["ranges"][collection]["values"] == values
    ndvi = vs.chart_values(driver, "ndvi")[1]
    assert any(v is None for v in ndvi) and sum(v is not None for v in ndvi) >= 2, ndvi
    # masked dates are gaps: one gap mark per null, and the line restarts after each gap
    gaps, moves = driver.execute_script(
        "var g = document.querySelector('#r2r-chart-ndvi g.r2r-series[data-kind=point]');"
        "var p = g.querySelector('path.r2r-line');"
        "return [g.querySelectorAll('.r2r-gap-group').length, p ? (p.getAttribute('d').match(/M/g) || []).length : 0];")
    assert gaps == sum(v is None for v in ndvi)
    runs = sum(1 for k, v in enumerate(ndvi) if v is not None and (k == 0 or ndvi[k - 1] is None))
    assert moves == runs


@needs_browser
def test_drawn_field_chart_is_the_mean_of_the_edr_area(server: Server, driver: Any, processed: Path,
                                                       items: list[dict[str, Any]]) -> None:
    item, row, col = _mixed_pixel(processed, items)
    cog = processed / item["assets"]["ndvi"]
    corners = [_lonlat(cog, row - 3.2, col - 3.7), _lonlat(cog, row - 2.8, col + 4.1),
               _lonlat(cog, row + 3.9, col + 3.3), _lonlat(cog, row + 3.1, col - 4.2)]
    clon, clat = _lonlat(cog, row + 0.5, col + 0.5)
    vs.open_viewer(driver, server.base)
    vs.set_view(driver, clat, clon, 17)
    got = vs.draw_field(driver, [(la, lo) for lo, la in corners], vs.series_seq(driver))
    assert got["kind"] == "area" and not got["errors"], got
    ring = re.fullmatch(r"POLYGON\(\((.*)\)\)", got["wkt"])
    assert ring, got["wkt"]
    vertices = [tuple(float(v) for v in p.split()) for p in ring.group(1).split(",")]
    assert len(vertices) == 5 and vertices[0] == vertices[-1]
    for (lo, la), (vlo, vla) in zip(corners, vertices, strict=False):
        assert abs(lo - vlo) < 3e-5 and abs(la - vla) < 3e-5

    for collection in ("ndvi", "lai"):
        doc = get_json(query_url(server.base, f"/collections/{collection}/area", coords=got["wkt"],
                                 parameter_name=collection, f="json"))
        expected = _area_means(doc, collection)
        times, values = vs.chart_values(driver, collection)
        assert times == list(expected)
        for t, v in zip(times, values, strict=True):
            if expected[t] is None:
                assert v is None, t
            else:
                assert v == pytest.approx(expected[t], rel=1e-12, abs=1e-12), t
        assert any(v is not None for v in values)
        # the chart keeps the last pixel (if any) next to the field
        kinds = driver.execute_script(
            "return Array.from(document.querySelectorAll('#r2r-chart-' + arguments[0] + ' g.r2r-series'))"
            ".map(function (g) { return g.dataset.kind; });", collection)
        assert "area" in kinds


@needs_browser
def test_date_slider_and_product_switch_change_the_map(server: Server, driver: Any, tmp_path: Path) -> None:
    vs.open_viewer(driver, server.base)
    meta = get_json(f"{server.base}/viewer/items.json")
    dates = [d["date"] for d in meta["dates"]]
    assert driver.find_element("id", "r2r-date-label").text == dates[-1]
    vs.wait_tiles(driver)
    driver.execute_script("var s = document.getElementById('r2r-date'); s.value = 0;"
                          "s.dispatchEvent(new Event('input'));")
    assert driver.find_element("id", "r2r-date-label").text == dates[0]
    driver.find_element("css selector", "label[for=r2r-product-lai]").click()
    vs.wait_tiles(driver)
    src = driver.execute_script(
        "return Array.from(document.querySelectorAll('#r2r-map img.leaflet-tile')).map(function (i) {"
        " return i.getAttribute('src'); });")
    assert any(f"viewer/tiles/{dates[0]}/lai/" in s for s in src), src
    # the page itself was built from this server alone
    requests = driver.execute_script("return performance.getEntriesByType('resource').map(function (e) {"
                                     " return e.name; });")
    assert not [u for u in requests if not u.startswith(server.base) and "tile.openstreetmap" not in u], requests

    shot = vs.take_screenshot(server.base, tmp_path / "viewer.png")
    img = _png(shot.read_bytes())
    assert img.shape[1] > 600 and img.shape[2] > 1000
    if os.environ.get("UPDATE_VIEWER_SCREENSHOT"):
        shutil.copyfile(shot, REPO / "docs" / "viewer.png")


@needs_browser
def test_click_outside_every_scene_says_so(server: Server, driver: Any, items: list[dict[str, Any]]) -> None:
    vs.open_viewer(driver, server.base)
    w, s, _e, _n = items[0]["bbox"]
    vs.set_view(driver, s - 0.004, w - 0.004, 15)
    seq = vs.series_seq(driver)
    vs.click_latlng(driver, s - 0.004, w - 0.004)
    got = vs.wait_series(driver, seq)
    assert got["series"] == {} and set(got["errors"]) == {"ndvi", "lai"}
    assert "no scene covers" in driver.find_element("id", "r2r-status").text
    assert driver.execute_script("return document.getElementById('r2r-chart-ndvi').dataset.status;") == "error"


# ------------------------------------------------------------------------------------------ HTTP
def test_map_tile_is_png_with_transparent_no_data(server: Server, processed: Path, items: list[dict[str, Any]]) -> None:
    import rasterio

    from steps.edr.viewer import colourise

    item, _row, _col = _mixed_pixel(processed, items)
    cog = processed / item["assets"]["ndvi"]
    with rasterio.open(cog) as ds:
        raw = ds.read(1)
        nodata = ds.nodata
    # a no-data pixel and a valid one, each inside a 3×3 block of its own kind (no edge ambiguity)
    blocks = np.lib.stride_tricks.sliding_window_view(raw == nodata, (3, 3)).reshape(raw.shape[0] - 2,
                                                                                      raw.shape[1] - 2, 9)
    all_nd, all_ok = blocks.all(axis=2), (~blocks).all(axis=2)
    assert all_nd.any() and all_ok.any()
    z = 18
    for mask, want_alpha in ((all_nd, 0), (all_ok, 255)):
        r, c = (int(v[len(v) // 2]) for v in np.nonzero(mask))
        lon, lat = _lonlat(cog, r + 1.5, c + 1.5)
        x, y, pr, pc = _tile_pixel(lon, lat, z)
        for key in (item["id"], item["datetime"][:10]):  # one scene, and the mosaic of its day
            status, headers, body = get(f"{server.base}/viewer/tiles/{key}/ndvi/{z}/{x}/{y}.png")
            assert status == 200 and headers["Content-Type"] == "image/png", body[:200]
            img = _png(body)
            assert img.shape == (4, 256, 256)
            assert img[3, pr, pc] == want_alpha, (key, r, c)
            if want_alpha:
                rgb, _alpha = colourise(np.array([[raw[r + 1, c + 1]]]), np.array([[True]]), "ndvi")
                assert img[:3, pr, pc].tolist() == rgb[:, 0, 0].tolist()
    # a zoomed-out tile holding the whole scene: opaque inside, transparent around it
    lon, lat = _lonlat(cog, raw.shape[0] / 2, raw.shape[1] / 2)
    x, y, _pr, _pc = _tile_pixel(lon, lat, 13)
    status, _h, body = get(f"{server.base}/viewer/tiles/{item['id']}/lai/13/{x}/{y}.png")
    alpha = _png(body)[3]
    assert status == 200 and (alpha == 0).any() and (alpha == 255).any()
    # a tile far from every scene is empty; unknown keys and products are 404
    status, _h, body = get(f"{server.base}/viewer/tiles/{item['datetime'][:10]}/ndvi/12/0/0.png")
    assert status == 200 and not _png(body)[3].any()
    assert get(f"{server.base}/viewer/tiles/S2X_00XXX_nope/ndvi/12/0/0.png")[0] == 404
    assert get(f"{server.base}/viewer/tiles/{item['id']}/cloud_mask/12/0/0.png")[0] == 404


def test_items_document_lists_dates_and_scenes(server: Server, items: list[dict[str, Any]]) -> None:
    meta = get_json(f"{server.base}/viewer/items.json")
    assert sorted(it["id"] for it in meta["items"]) == sorted(it["id"] for it in items)
    assert [d["date"] for d in meta["dates"]] == sorted({it["datetime"][:10] for it in items})
    for d in meta["dates"]:
        assert sorted(d["items"]) == sorted(it["id"] for it in items if it["datetime"][:10] == d["date"])
    assert set(meta["products"]) == {"ndvi", "lai"}


def test_landing_page_links_to_the_viewer(server: Server) -> None:
    doc = get_json(f"{server.base}/?f=json")
    assert [lk for lk in doc["links"] if lk["href"] == f"{server.base}/viewer" and lk["type"] == "text/html"]
    status, headers, body = get(f"{server.base}/?f=html")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f'href="{server.base}/viewer"' in body.decode()
    assert int(headers["Content-Length"]) == len(body)


def test_viewer_page_and_assets_are_served_without_a_cdn(server: Server) -> None:
    status, headers, body = get(f"{server.base}/viewer")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assets = [r for r in refs if r.endswith((".js", ".css"))]
    assert assets and not [r for r in assets if "://" in r], assets  # every script and style sheet from here
    for ref in assets:
        assert get(f"{server.base}/{ref}")[0] == 200, ref
    for lic in ("leaflet", "bootstrap"):
        status, _h, text = get(f"{server.base}/viewer/static/vendor/{lic}/LICENSE")
        assert status == 200 and b"Copyright" in text
    assert get(f"{server.base}/viewer/static/..%2F..%2Fedr%2Fviewer.py")[0] == 404
    assert get(f"{server.base}/viewer/static/viewer.html")[0] == 404
    assert get(f"{server.base}/viewer/")[0] == 200  # redirected to /viewer
    # the EDR documents are still rewritten behind the viewer
    assert "storageCrs" not in get_json(f"{server.base}/collections/ndvi?f=json")


@pytest.mark.s3
def test_viewer_serves_an_s3_catalog(processed: Path, items: list[dict[str, Any]], s3_env: dict[str, str],
                                     tmp_path: Path) -> None:
    import rasterio

    from r2r_helpers import make_bucket, upload_tree

    make_bucket("viewer-serve")
    upload_tree(processed, "viewer-serve", "products")
    item = items[-1]
    with rasterio.open(processed / item["assets"]["ndvi"]) as ds:
        lon, lat = _lonlat(processed / item["assets"]["ndvi"], ds.height / 2, ds.width / 2)
    x, y, _pr, _pc = _tile_pixel(lon, lat, 15)
    with serving("s3://viewer-serve/products", tmp_path) as srv:
        meta = get_json(f"{srv.base}/viewer/items.json")
        assert len(meta["items"]) == len(items)
        status, headers, body = get(f"{srv.base}/viewer/tiles/{item['id']}/ndvi/15/{x}/{y}.png")
        assert status == 200 and headers["Content-Type"] == "image/png", body[:300]
        assert (_png(body)[3] == 255).any()
