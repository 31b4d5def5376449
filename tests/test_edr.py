"""OGC API-EDR over real HTTP: ``raw2ready serve`` on a free loopback port, values checked against the COGs.

Expected values are read here with rasterio from the product COGs (located through index.json), never through
the provider under test. Every CoverageJSON body is validated with covjson-pydantic, every collection
document with edr-pydantic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edr_helpers import Server, get, index_items, physical, query_url, read_pixel, serving

BUDGET = 50_000  # values; a whole 120² demo tile × ≥ 3 dates × 2 parameters is above it


@pytest.fixture(scope="module")
def server(processed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(processed, tmp_path_factory.mktemp("edr-config"), "--pixel-budget", str(BUDGET)) as srv:
        yield srv


@pytest.fixture(scope="module")
def items(processed: Path) -> list[dict[str, Any]]:
    return index_items(processed)


def _tile_items(items: list[dict[str, Any]], tile: str, asset: str = "ndvi") -> list[dict[str, Any]]:
    return sorted((it for it in items if it["tile"] == tile and asset in it["assets"]),
                  key=lambda it: it["datetime"])


def _lonlat_of_pixel(cog: Path, row: int, col: int) -> tuple[float, float]:
    import rasterio
    from pyproj import Transformer

    with rasterio.open(cog) as ds:
        x, y = ds.transform @ (col + 0.5, row + 0.5)
        tf = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
    lon, lat = tf.transform(x, y)
    return float(lon), float(lat)


def _coverage(body: bytes) -> Any:
    from covjson_pydantic.coverage import Coverage

    return Coverage.model_validate_json(body)


def _collection(body: bytes) -> Any:
    from covjson_pydantic.coverage import CoverageCollection

    return CoverageCollection.model_validate_json(body)


def _position(server: Server, collection: str, lon: float, lat: float, **params: str) -> dict[str, Any]:
    url = query_url(server.base, f"/collections/{collection}/position", coords=f"POINT({lon!r} {lat!r})", **params)
    status, headers, body = get(url)
    assert status == 200, (status, body[:400])
    assert headers.get("Content-Type", "").startswith("application/vnd.cov+json")
    _coverage(body)
    return dict(json.loads(body))


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) < 1e-9


# ----------------------------------------------------------------------------------------------- position
@pytest.mark.parametrize(("row", "col"), [(0, 0), (7, 93), (60, 61), (119, 119), (33, 4)])
def test_position_time_series_equals_cog_pixels(server: Server, processed: Path, items: list[dict[str, Any]],
                                                row: int, col: int) -> None:
    series = _tile_items(items, "47PPR")
    lon, lat = _lonlat_of_pixel(processed / series[0]["assets"]["ndvi"], row, col)
    doc = _position(server, "ndvi", lon, lat, datetime="../..")
    # complete and ordered: every 47PPR acquisition, oldest first (the demo tiles do not overlap)
    assert doc["raw2ready:items"] == [it["id"] for it in series]
    times = doc["domain"]["axes"]["t"]["values"]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert doc["domain"]["domainType"] == "PointSeries"
    by_id = {it["id"]: it for it in items}
    for k, item_id in enumerate(doc["raw2ready:items"]):
        it = by_id[item_id]
        expected = physical(*read_pixel(processed / it["assets"]["ndvi"], row, col))
        assert _close(doc["ranges"]["ndvi"]["values"][k], expected), (item_id, row, col)
        raw_cm, nd_cm, _s, _o = read_pixel(processed / it["assets"]["cloud_mask"], row // 2, col // 2)
        assert doc["ranges"]["cloud_mask"]["values"][k] == (None if raw_cm == nd_cm else raw_cm)


def test_cloud_masked_pixels_are_null(server: Server, processed: Path, items: list[dict[str, Any]]) -> None:
    import rasterio

    found = 0
    for it in _tile_items(items, "47PPR"):
        with rasterio.open(processed / it["assets"]["cloud_mask"]) as ds:
            cm = ds.read(1)
        rows, cols = np.nonzero((cm >= 1) & (cm <= 3))  # cloud, cirrus, shadow
        if not len(rows):
            continue
        r20, c20 = int(rows[len(rows) // 2]), int(cols[len(cols) // 2])
        row, col = 2 * r20, 2 * c20
        lon, lat = _lonlat_of_pixel(processed / it["assets"]["ndvi"], row, col)
        doc = _position(server, "ndvi", lon, lat, datetime=it["datetime"][:19] + "Z")
        assert doc["raw2ready:items"] == [it["id"]]
        assert doc["ranges"]["ndvi"]["values"] == [None]
        assert doc["ranges"]["cloud_mask"]["values"] == [int(cm[r20, c20])]
        if "lai" in it["assets"]:  # the same 20 m pixel in the LAI collection
            doc = _position(server, "lai", lon, lat, datetime=it["datetime"][:19] + "Z")
            assert doc["raw2ready:items"] == [it["id"]]
            assert read_pixel(processed / it["assets"]["lai"], r20, c20)[0] == -32768
            assert doc["ranges"]["lai"]["values"] == [None]
            assert doc["ranges"]["cloud_mask"]["values"] == [int(cm[r20, c20])]
        found += 1
    assert found, "the demo archive always has clouded 47PPR pixels (a fully clouded scene and cloudy ones)"


def test_parameter_name_selects_parameters(server: Server, processed: Path, items: list[dict[str, Any]]) -> None:
    it = _tile_items(items, "47PPR")[0]
    lon, lat = _lonlat_of_pixel(processed / it["assets"]["ndvi"], 10, 10)
    doc = _position(server, "ndvi", lon, lat, parameter_name="cloud_mask")
    assert set(doc["ranges"]) == {"cloud_mask"} and set(doc["parameters"]) == {"cloud_mask"}
    doc = _position(server, "ndvi", lon, lat, parameter_name="ndvi")
    assert set(doc["ranges"]) == {"ndvi"}


@pytest.mark.parametrize("which", ["date", "second", "interval", "open-start", "open-end", "empty-start"])
def test_datetime_instants_intervals_and_open_ends(server: Server, processed: Path, items: list[dict[str, Any]],
                                                   which: str) -> None:
    series = _tile_items(items, "47PPR")
    assert len(series) >= 3
    d = [it["datetime"] for it in series]
    k = len(d) // 2
    value, keep = {
        "date": (d[k][:10], lambda t: t[:10] == d[k][:10]),
        "second": (d[k][:19] + "Z", lambda t: t[:19] == d[k][:19]),
        "interval": (f"{d[1][:10]}/{d[-2][:10]}", lambda t: d[1][:10] <= t[:10] <= d[-2][:10]),
        "open-start": (f"../{d[k][:10]}", lambda t: t[:10] <= d[k][:10]),
        "open-end": (f"{d[k][:10]}/..", lambda t: t[:10] >= d[k][:10]),
        "empty-start": (f"/{d[1][:19]}Z", lambda t: t[:19] <= d[1][:19]),
    }[which]
    lon, lat = _lonlat_of_pixel(processed / series[0]["assets"]["ndvi"], 50, 50)
    doc = _position(server, "ndvi", lon, lat, datetime=value)
    expected = [it["id"] for it in series if keep(it["datetime"])]
    assert expected and doc["raw2ready:items"] == expected


def test_no_acquisition_in_range_is_no_content(server: Server, processed: Path, items: list[dict[str, Any]]) -> None:
    it = _tile_items(items, "47PPR")[0]
    lon, lat = _lonlat_of_pixel(processed / it["assets"]["ndvi"], 5, 5)
    status, _h, _b = get(query_url(server.base, "/collections/ndvi/position", coords=f"POINT({lon} {lat})",
                                   datetime="1990-01-01"))
    assert status == 204


# ----------------------------------------------------------------------------------------------- area/cube
def _check_grid_against_cogs(doc: dict[str, Any], processed: Path, items: list[dict[str, Any]]) -> int:
    """Every non-null value equals the COG pixel at its coordinates; returns the number of values checked."""
    import rasterio

    by_id = {it["id"]: it for it in items}
    checked = 0
    for cov in doc["coverages"]:
        xs = cov["domain"]["axes"]["x"]["values"]
        ys = cov["domain"]["axes"]["y"]["values"]
        for k, item_id in enumerate(cov["raw2ready:items"]):
            for param, rng in cov["ranges"].items():
                vals = np.array(rng["values"], dtype=object).reshape(rng["shape"])[k]
                with rasterio.open(processed / by_id[item_id]["assets"][param]) as ds:
                    arr = ds.read(1)
                    scale, offset, nodata = ds.scales[0], ds.offsets[0], ds.nodata
                    for iy, y in enumerate(ys):
                        for ix, x in enumerate(xs):
                            v = vals[iy, ix]
                            if v is None:
                                continue
                            r, c = ds.index(x, y)
                            assert arr[r, c] != nodata
                            assert _close(v, float(arr[r, c]) * scale + offset), (item_id, param, x, y)
                            checked += 1
    return checked


def test_area_on_a_date_equals_cog_window(server: Server, processed: Path, items: list[dict[str, Any]]) -> None:
    import rasterio
    from pyproj import Transformer

    it = _tile_items(items, "47PPR")[-1]
    cog = processed / it["assets"]["ndvi"]
    r0, c0, h, w = 20, 30, 6, 9
    with rasterio.open(cog) as ds:
        t = ds.transform
        window = ds.read(1)[r0:r0 + h, c0:c0 + w]
        tf = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
    # a rectangle 1 m inside the pixel edges of the window, as a lon/lat polygon
    x0, y0 = t @ (c0, r0)
    x1, y1 = t @ (c0 + w, r0 + h)
    ring = [(x0 + 1, y0 - 1), (x1 - 1, y0 - 1), (x1 - 1, y1 + 1), (x0 + 1, y1 + 1), (x0 + 1, y0 - 1)]
    lonlat = [tf.transform(x, y) for x, y in ring]
    wkt = "POLYGON((" + ",".join(f"{lon!r} {lat!r}" for lon, lat in lonlat) + "))"
    status, _h, body = get(query_url(server.base, "/collections/ndvi/area", coords=wkt,
                                     datetime=it["datetime"][:10], parameter_name="ndvi"))
    assert status == 200, body[:300]
    _collection(body)
    doc = json.loads(body)
    assert len(doc["coverages"]) == 1
    cov = doc["coverages"][0]
    assert cov["raw2ready:items"] == [it["id"]]
    xs, ys = cov["domain"]["axes"]["x"]["values"], cov["domain"]["axes"]["y"]["values"]
    vals = np.array(cov["ranges"]["ndvi"]["values"], dtype=object).reshape(cov["ranges"]["ndvi"]["shape"])[0]
    want_x = [t.c + (c0 + i + 0.5) * t.a for i in range(w)]
    want_y = [t.f + (r0 + j + 0.5) * t.e for j in range(h)]
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            if x in want_x and y in want_y:
                raw = int(window[want_y.index(y), want_x.index(x)])
                assert _close(vals[iy, ix], None if raw == -32768 else raw * 1e-4), (x, y)
            else:
                assert vals[iy, ix] is None, (x, y)
    assert set(want_x) <= set(xs) and set(want_y) <= set(ys)


def test_cube_and_radius_values_equal_cogs(server: Server, processed: Path, items: list[dict[str, Any]]) -> None:
    series = _tile_items(items, "47PPR")
    lon, lat = _lonlat_of_pixel(processed / series[0]["assets"]["ndvi"], 40, 40)
    d = 0.0004
    status, _h, body = get(query_url(server.base, "/collections/ndvi/cube",
                                     bbox=f"{lon - d},{lat - d},{lon + d},{lat + d}", datetime="../.."))
    assert status == 200, body[:300]
    _collection(body)
    doc = json.loads(body)
    assert [i for c in doc["coverages"] for i in c["raw2ready:items"]] == [it["id"] for it in series]
    assert _check_grid_against_cogs(doc, processed, items) > 100
    status, _h, body = get(query_url(server.base, "/collections/ndvi/radius", coords=f"POINT({lon} {lat})",
                                     within="35", within_units="m", datetime=series[1]["datetime"][:10]))
    assert status == 200, body[:300]
    _collection(body)
    doc = json.loads(body)
    assert _check_grid_against_cogs(doc, processed, items) > 0
    n = sum(v is not None for v in doc["coverages"][0]["ranges"]["cloud_mask"]["values"])
    assert 0 < n <= 49  # pixels whose centre is within 35 m: at most a 7×7 block at 10 m


def test_pixel_budget_refuses_large_requests_with_400(server: Server, items: list[dict[str, Any]]) -> None:
    w, s, e, n = _tile_items(items, "47PPR")[0]["bbox"]
    status, _h, body = get(query_url(server.base, "/collections/ndvi/cube", bbox=f"{w},{s},{e},{n}",
                                     datetime="../.."))
    assert status == 400
    assert "pixel budget" in json.loads(body)["description"]
    status, _h, body = get(query_url(server.base, "/collections/ndvi/cube", bbox=f"{w},{s},{e},{n}",
                                     datetime="../..", parameter_name="cloud_mask"))
    assert status == 200, body[:300]  # 20 m only: a quarter of the pixels fits the budget
    _collection(body)


@pytest.mark.parametrize(("path", "params"), [
    ("position", {"coords": "POINT(200 10)"}),
    ("position", {"coords": "POINT(nan 10)"}),
    ("position", {"coords": "POINT(abc)"}),
    ("position", {"coords": "LINESTRING(99 14, 100 15)"}),
    ("position", {"coords": "POINT EMPTY"}),
    ("position", {"coords": "POINT(99.93 14.46)", "datetime": "2024-02-30"}),
    ("position", {"coords": "POINT(99.93 14.46)", "datetime": "2024-01-02/2024-01-01"}),
    ("position", {"coords": "POINT(99.93 14.46)", "datetime": "a/b/c"}),
    ("position", {"coords": "POINT(99.93 14.46)", "datetime": "99999999999999999999"}),
    ("position", {"coords": "POINT(99.93 14.46)", "parameter-name": "ndvi,nope"}),
    ("position", {"coords": "POINT(99.93 14.46)", "z": "5"}),
    ("position", {}),
    ("area", {"coords": "POLYGON((99 14, 100 15, 100 14, 99 15, 99 14))"}),
    ("area", {"coords": "POINT(99.93 14.46)"}),
    ("cube", {"bbox": "1,2,3"}),
    ("cube", {"bbox": "99,14,0,100,15,1"}),
    ("cube", {"bbox": "a,b,c,d"}),
    ("cube", {"bbox": "100,14,99,15"}),
    ("radius", {"coords": "POINT(99.93 14.46)"}),
    ("radius", {"coords": "POINT(99.93 14.46)", "within": "5", "within-units": "parsec"}),
    ("radius", {"coords": "POINT(99.93 14.46)", "within": "-5", "within-units": "m"}),
])
def test_malformed_requests_are_400_never_500(server: Server, path: str, params: dict[str, str]) -> None:
    url = f"{server.base}/collections/ndvi/{path}?{urllib.parse.urlencode(params)}"
    status, _h, body = get(url)
    assert status == 400, (status, body[:300])
    assert json.loads(body)["description"]


# ----------------------------------------------------------------------------------------------- LAI
def test_lai_position_equals_cog_pixels(server: Server, processed: Path, items: list[dict[str, Any]]) -> None:
    series = _tile_items(items, "47PPR", asset="lai")
    assert series, "every processed 47PPR scene has an `lai` asset"
    lon, lat = _lonlat_of_pixel(processed / series[0]["assets"]["lai"], 12, 17)
    doc = _position(server, "lai", lon, lat, datetime="../..")
    assert doc["raw2ready:items"] == [it["id"] for it in series]
    assert set(doc["ranges"]) == {"lai", "lai_flags", "cloud_mask"}
    for k, it in enumerate(series):
        for param in ("lai", "lai_flags", "cloud_mask"):  # all three on the same 20 m grid
            expected = physical(*read_pixel(processed / it["assets"][param], 12, 17))
            assert _close(doc["ranges"][param]["values"][k], expected), (it["id"], param)
    assert any(v is not None for v in doc["ranges"]["lai"]["values"])
    assert doc["parameters"]["lai"]["unit"]["symbol"]["value"] == "m2.m-2"


# ----------------------------------------------------------------------------------------------- metadata
def test_collection_documents_validate_with_edr_pydantic(server: Server, items: list[dict[str, Any]]) -> None:
    from edr_pydantic.collections import Collection, Collections

    for cid in ("ndvi", "lai"):
        status, _h, body = get(f"{server.base}/collections/{cid}?f=json")
        assert status == 200
        coll = Collection.model_validate_json(body)
        assert coll.data_queries is not None
        assert set(coll.data_queries.model_dump(exclude_none=True)) == {"position", "radius", "area", "cube"}
        doc = json.loads(body)
        first, last = doc["extent"]["temporal"]["interval"][0]
        assert first[:19] == min(it["datetime"] for it in items)[:19]
        assert last[:19] == max(it["datetime"] for it in items)[:19]
    status, _h, body = get(f"{server.base}/collections?f=json")
    assert status == 200
    Collections.model_validate_json(body)


def test_html_pages_render(server: Server, processed: Path, items: list[dict[str, Any]]) -> None:
    it = _tile_items(items, "47PPR")[0]
    lon, lat = _lonlat_of_pixel(processed / it["assets"]["ndvi"], 3, 3)
    d = 0.0003
    ring = [(lon - d, lat - d), (lon + d, lat - d), (lon + d, lat + d), (lon - d, lat + d), (lon - d, lat - d)]
    poly = "POLYGON((" + ",".join(f"{x} {y}" for x, y in ring) + "))"
    pages = {  # url -> texts the rendered page must contain
        f"{server.base}/?f=html": ["raw2ready EDR"],
        f"{server.base}/collections?f=html": ["Sentinel-2 NDVI (raw2ready)", "Sentinel-2 leaf area index"],
        f"{server.base}/collections/ndvi?f=html": ["/collections/ndvi/position", "/collections/ndvi/area",
                                                   "cloud_mask", "Cloud, cirrus and shadow mask"],
        f"{server.base}/collections/lai?f=html": ["/collections/lai/cube", "lai_flags"],
        query_url(server.base, "/collections/ndvi/position", coords=f"POINT({lon} {lat})", f="html"):
            ['"domainType":"PointSeries"', it["id"]],
        query_url(server.base, "/collections/lai/area", coords=poly, datetime=it["datetime"][:10], f="html"):
            ['"type":"CoverageCollection"', it["id"]],
    }
    for url, texts in pages.items():
        status, headers, body = get(url)
        assert status == 200, (url, body[:300])
        assert headers["Content-Type"].startswith("text/html")
        page = body.decode()
        assert "Exception" not in page, url
        for text in texts:
            assert text in page, (url, text)


def test_other_edr_paths_are_4xx_not_500(server: Server, processed: Path, items: list[dict[str, Any]]) -> None:
    it = _tile_items(items, "47PPR")[0]
    lon, lat = _lonlat_of_pixel(processed / it["assets"]["ndvi"], 3, 3)
    point = urllib.parse.quote(f"POINT({lon} {lat})")
    for cid in ("ndvi", "lai"):
        # no instances (pygeoapi alone answers 500 here, or invents an instance for any identifier)
        for path, want in (("instances", 404), ("instances?f=html", 404), ("instances/latest", 404),
                           (f"instances/latest/position?coords={point}", 404),
                           ("locations", 400), ("locations/here", 400), ("items", 400),
                           ("trajectory?coords=LINESTRING(99%2014,100%2015)", 400), ("corridor", 400)):
            status, _h, body = get(f"{server.base}/collections/{cid}/{path}")
            assert status == want, (cid, path, status, body[:300])


def test_generated_config_and_openapi_validate(server: Server) -> None:
    cfg = server.config_dir / "pygeoapi-config.yml"
    oas = server.config_dir / "pygeoapi-openapi.yml"
    env = {**os.environ, "PYGEOAPI_CONFIG": str(cfg), "PYGEOAPI_OPENAPI": str(oas)}
    exe = str(Path(sys.executable).parent / "pygeoapi")
    for args in (["config", "validate", "-c", str(cfg)], ["openapi", "validate", str(oas)]):
        res = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Valid" in res.stdout + res.stderr


# ----------------------------------------------------------------------------------------------- S3
@pytest.mark.s3
def test_serve_from_an_s3_catalog(processed: Path, items: list[dict[str, Any]], s3_env: dict[str, str],
                                  tmp_path: Path) -> None:
    from r2r_helpers import make_bucket, upload_tree

    make_bucket("edr-serve")
    upload_tree(processed, "edr-serve", "products")
    series = _tile_items(items, "47PPR")
    lon, lat = _lonlat_of_pixel(processed / series[0]["assets"]["ndvi"], 60, 61)
    with serving("s3://edr-serve/products", tmp_path, "--pixel-budget", str(BUDGET)) as srv:
        doc = _position(srv, "ndvi", lon, lat, datetime="../..")
        assert doc["raw2ready:items"] == [it["id"] for it in series]
        for k, it in enumerate(series):  # read from S3 through GDAL, compared with the local copy
            expected = physical(*read_pixel(processed / it["assets"]["ndvi"], 60, 61))
            assert _close(doc["ranges"]["ndvi"]["values"][k], expected), it["id"]
        assert any(v is not None for v in doc["ranges"]["ndvi"]["values"])
        d = 0.0003
        status, _h, body = get(query_url(srv.base, "/collections/ndvi/cube",
                                         bbox=f"{lon - d},{lat - d},{lon + d},{lat + d}", datetime="../.."))
        assert status == 200, body[:300]
        _collection(body)
        assert _check_grid_against_cogs(json.loads(body), processed, items) > 10
