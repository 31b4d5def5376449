"""EDR building blocks in-process: the overlap rule, index caching, the datetime grammar, the COG reader, the
query parser and the read plan."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

EPSG = 32647


def _write_cog(path: Path, value: int, x0: float, y0: float, n: int = 64, res: float = 10.0) -> None:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full((n, n), value, dtype=np.int16)
    data[0, 0] = -32768
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="int16", crs=f"EPSG:{EPSG}",
                       transform=from_origin(x0, y0, res, res), nodata=-32768, tiled=True, blockxsize=32,
                       blockysize=32, compress="deflate") as ds:
        ds.write(data, 1)
        ds.scales, ds.offsets = (0.0001,), (0.0,)


def _row(item_id: str, tile: str, when: str, x0: float, y0: float, n: int = 64, res: float = 10.0) -> dict[str, Any]:
    from pyproj import Transformer

    tf = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True)
    lons, lats = tf.transform([x0, x0 + n * res, x0, x0 + n * res], [y0, y0, y0 - n * res, y0 - n * res])
    folder = f"raw2ready-s2-vegetation/x/{item_id}"
    return {"id": item_id, "datetime": when, "tile": tile, "platform": "sentinel-2a", "epsg": f"EPSG:{EPSG}",
            "bbox": [min(lons), min(lats), max(lons), max(lats)], "clear_fraction": 1.0,
            "item": f"{folder}/{item_id}.json", "assets": {"ndvi": f"{folder}/ndvi.tif"},
            "grids": {"ndvi": {"shape": [n, n], "transform": [res, 0.0, x0, 0.0, -res, y0]}}}


@pytest.fixture
def overlap_catalog(tmp_path: Path) -> Path:
    """Two tiles of one acquisition overlapping by 14 columns (A: 0.1, B: 0.2), plus a later A-only scene."""
    rows = [
        _row("A1", "47PPR", "2024-01-13T03:47:20.024Z", 600000, 1600000),
        _row("B1", "47PQR", "2024-01-13T03:47:20.024Z", 600500, 1600000),
        _row("A2", "47PPR", "2024-01-18T03:47:20.024Z", 600000, 1600000),
    ]
    for r, v in zip(rows, (1000, 2000, 3000), strict=True):
        _write_cog(tmp_path / r["assets"]["ndvi"], v, r["grids"]["ndvi"]["transform"][2],
                   r["grids"]["ndvi"]["transform"][5])
    idx = tmp_path / "raw2ready-s2-vegetation/index.json"
    idx.write_text(json.dumps({"type": "raw2ready-index", "version": 1, "items": rows}))
    return tmp_path


def _provider(catalog: Path, **opts: Any) -> Any:
    from steps.edr.provider import Raw2ReadyEDRProvider

    return Raw2ReadyEDRProvider({"name": "steps.edr.provider.Raw2ReadyEDRProvider", "type": "edr",
                                 "data": str(catalog), "options": {"collection": "ndvi", **opts}})


def _lonlat(x: float, y: float) -> Any:
    import shapely
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True).transform(x, y)
    return shapely.Point(lon, lat)


@pytest.mark.parametrize(("x", "expect"), [
    (600515.0, ["A1", "A2"]),   # in both tiles, nearer A's centre (600320) than B's (600820)
    (600635.0, ["B1", "A2"]),   # in both tiles, nearer B's centre
    (600995.0, ["B1"]),         # only in B (A2 does not reach here)
])
def test_overlapping_tiles_give_one_value_per_acquisition_from_the_nearest_centre(
        overlap_catalog: Path, x: float, expect: list[str]) -> None:
    from covjson_pydantic.coverage import Coverage

    p = _provider(overlap_catalog)
    doc = p.query(query_type="position", wkt=_lonlat(x, 1599685.0), datetime_="../..", select_properties=["ndvi"])
    Coverage.model_validate_json(json.dumps(doc))
    assert doc["raw2ready:items"] == expect
    value = {"A1": 0.1, "B1": 0.2, "A2": 0.3}
    assert doc["ranges"]["ndvi"]["values"] == [value[i] for i in expect]


def test_tile_centre_tie_goes_to_the_smaller_tile_id(overlap_catalog: Path) -> None:
    p = _provider(overlap_catalog)
    # x = 600570 is 250 m from both centres (600320 and 600820), to the metre
    doc = p.query(query_type="position", wkt=_lonlat(600570.0, 1599685.0), datetime_="2024-01-13",
                  select_properties=[])
    assert doc["raw2ready:items"] == ["A1"]


def test_area_over_two_tiles_uses_one_tile_per_acquisition(overlap_catalog: Path) -> None:
    from covjson_pydantic.coverage import CoverageCollection

    a, b = _lonlat(600600.0, 1599700.0), _lonlat(600660.0, 1599650.0)
    doc = _provider(overlap_catalog).query(query_type="cube", bbox=[a.x, b.y, b.x, a.y], datetime_="2024-01-13",
                                           select_properties=None)
    CoverageCollection.model_validate_json(json.dumps(doc))
    assert [c["raw2ready:items"] for c in doc["coverages"]] == [["B1"]]
    vals = [v for v in doc["coverages"][0]["ranges"]["ndvi"]["values"] if v is not None]
    assert vals and set(vals) == {0.2}


def test_area_across_the_overlap_splits_pixels_at_the_midpoint_between_tile_centres(
        overlap_catalog: Path) -> None:
    from covjson_pydantic.coverage import CoverageCollection

    a, b = _lonlat(600541.0, 1599700.0), _lonlat(600599.0, 1599641.0)
    doc = _provider(overlap_catalog).query(query_type="cube", bbox=[a.x, b.y, b.x, a.y], datetime_="../..",
                                           select_properties=["ndvi"])
    CoverageCollection.model_validate_json(json.dumps(doc))
    by_item = {}
    for cov in doc["coverages"]:
        xs = cov["domain"]["axes"]["x"]["values"]
        vals = np.array(cov["ranges"]["ndvi"]["values"], dtype=object).reshape(cov["ranges"]["ndvi"]["shape"])
        for k, item_id in enumerate(cov["raw2ready:items"]):
            present = np.array([[v is not None for v in row] for row in vals[k]])
            cols = {xs[ix] for ix in np.flatnonzero(present.any(axis=0))}
            by_item[item_id] = (cols, {v for v in vals[k].ravel() if v is not None})
    # centres at 600320 (A) and 600820 (B): the 13 January acquisition splits at x = 600570
    assert by_item["A1"] == ({600545.0, 600555.0, 600565.0}, {0.1})
    assert by_item["B1"] == ({600575.0, 600585.0, 600595.0}, {0.2})
    assert by_item["A2"][0] == {600545.0, 600555.0, 600565.0, 600575.0, 600585.0, 600595.0}


def test_responses_are_written_by_orjson_as_pygeoapi_would_write_them(overlap_catalog: Path) -> None:
    """coverage_json (installed into pygeoapi's EDR module) reads back as the same document as pygeoapi's
    own to_json, escapes < and > like it, and hands what orjson refuses to it."""
    import pygeoapi.api.environmental_data_retrieval as edr_api
    from pygeoapi.util import to_json

    from steps.edr.app import coverage_json, install_coverage_json

    a, b = _lonlat(600541.0, 1599700.0), _lonlat(600599.0, 1599641.0)
    docs = [_provider(overlap_catalog).query(query_type="cube", bbox=[a.x, b.y, b.x, a.y], datetime_="../..",
                                             select_properties=None),
            _provider(overlap_catalog).query(query_type="position", wkt=_lonlat(600005.0, 1599995.0),
                                             datetime_="../..", select_properties=[]),
            {"x": [0.1, 1e-05, 123456789.123, -0.0, None, 2**40], "t": "<script>"}]
    for doc in docs:
        text = coverage_json(doc)
        assert json.loads(text) == json.loads(to_json(doc)) and "<" not in text and ">" not in text
    assert None in docs[0]["coverages"][0]["ranges"]["ndvi"]["values"]  # nulls went through
    assert coverage_json({"big": 2**70}) == to_json({"big": 2**70})  # beyond orjson: pygeoapi's writer
    assert coverage_json(docs[1], pretty=True) == to_json(docs[1], True)
    install_coverage_json()
    assert edr_api.to_json is coverage_json


def test_nodata_pixel_is_null(overlap_catalog: Path) -> None:
    doc = _provider(overlap_catalog).query(query_type="position", wkt=_lonlat(600005.0, 1599995.0),
                                           datetime_="../..", select_properties=[])
    assert doc["raw2ready:items"] == ["A1", "A2"]
    assert doc["ranges"]["ndvi"]["values"] == [None, None]


def test_pixel_budget_is_checked_before_reading(overlap_catalog: Path) -> None:
    from pygeoapi.provider.base import ProviderInvalidQueryError

    a, b = _lonlat(600000.0, 1600000.0), _lonlat(601100.0, 1599400.0)
    with pytest.raises(ProviderInvalidQueryError, match="pixel budget of 100"):
        _provider(overlap_catalog, pixel_budget=100).query(
            query_type="cube", bbox=[a.x, b.y, b.x, a.y], datetime_=None, select_properties=[])


def test_index_is_cached_and_reloaded_when_it_changes(overlap_catalog: Path) -> None:
    from steps.edr.index import load_index

    catalog = str(overlap_catalog)
    first, _ = load_index(catalog)
    again, _ = load_index(catalog)
    assert again is first and len(first.items) == 3
    idx = overlap_catalog / "raw2ready-s2-vegetation/index.json"
    doc = json.loads(idx.read_text())
    doc["items"] = doc["items"][:2]
    idx.write_text(json.dumps(doc))
    st = idx.stat()
    os.utime(idx, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    reloaded, _ = load_index(catalog)
    assert reloaded is not first and [it.id for it in reloaded.items] == ["A1", "B1"]


@pytest.mark.parametrize(("text", "start", "end"), [
    ("2024-01-13", datetime(2024, 1, 13, tzinfo=UTC), datetime(2024, 1, 14, tzinfo=UTC)),
    ("2024-01-13T03:47:20Z", datetime(2024, 1, 13, 3, 47, 20, tzinfo=UTC),
     datetime(2024, 1, 13, 3, 47, 21, tzinfo=UTC)),
    ("2024-01-13T10:47:20+07:00", datetime(2024, 1, 13, 3, 47, 20, tzinfo=UTC),
     datetime(2024, 1, 13, 3, 47, 21, tzinfo=UTC)),
    ("2024-01-01/2024-01-31", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),
    ("../2024-01-31", None, datetime(2024, 2, 1, tzinfo=UTC)),
    ("2024-01-01/..", datetime(2024, 1, 1, tzinfo=UTC), None),
    ("/2024-01-31", None, datetime(2024, 2, 1, tzinfo=UTC)),
    ("../..", None, None),
    ("", None, None),
])
def test_datetime_grammar(text: str, start: datetime | None, end: datetime | None) -> None:
    from steps.edr.timeq import parse_datetime_query

    r = parse_datetime_query(text)
    assert (r.start, r.end) == (start, end)


@pytest.mark.parametrize("text", ["2024", "2024-02-30", "2024-01-01T24:00:00Z", "2024-01-02/2024-01-01",
                                  "a/b/c", "99999999999999999999", "2024-01-01T00:00:00+25:00", "x" * 100,
                                  "9999-12-31T23:59:59-14:00/.."])
def test_datetime_grammar_rejects(text: str) -> None:
    from steps.edr.timeq import DatetimeQueryError, parse_datetime_query

    # the last one is well-formed but lies beyond year 9999 in UTC: refused (400), never a crash (500)
    with pytest.raises(DatetimeQueryError):
        parse_datetime_query(text)


@pytest.mark.s3
def test_catalog_in_s3_is_read_through_gdal_and_cached_by_etag(overlap_catalog: Path, s3_env: dict[str, str]) -> None:
    from steps.edr.index import load_index

    from r2r_helpers import make_bucket, upload_tree

    make_bucket("edr")
    upload_tree(overlap_catalog, "edr", "cat")
    p = _provider(overlap_catalog, index_check_interval_s=0)
    p.catalog = "s3://edr/cat"
    doc = p.query(query_type="position", wkt=_lonlat(600515.0, 1599685.0), datetime_="../..",
                  select_properties=["ndvi"])
    assert doc["raw2ready:items"] == ["A1", "A2"] and doc["ranges"]["ndvi"]["values"] == [0.1, 0.3]
    first, _ = load_index("s3://edr/cat", 0)
    assert load_index("s3://edr/cat", 0)[0] is first  # same ETag: no reload
    idx = overlap_catalog / "raw2ready-s2-vegetation/index.json"
    doc_idx = json.loads(idx.read_text())
    doc_idx["items"] = doc_idx["items"][:1]
    from steps.storage import open_storage

    open_storage("s3://edr/cat").write_bytes("raw2ready-s2-vegetation/index.json", json.dumps(doc_idx).encode())
    assert [it.id for it in load_index("s3://edr/cat", 0)[0].items] == ["A1"]


def test_serve_explains_itself_and_refuses_a_catalog_without_index(tmp_path: Path) -> None:
    from r2r_helpers import run_cli

    res = run_cli("serve", "--help")
    assert res.returncode == 0 and "--write-config-only" in res.stdout and "--pixel-budget" in res.stdout
    res = run_cli("serve", "--catalog", str(tmp_path), "--write-config-only")
    assert res.returncode == 3, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("raw2ready:")] == [
        f"raw2ready: invalid input: no catalog index below {tmp_path} (run `raw2ready catalog rebuild` first)"]


def test_serve_write_config_only_writes_both_files_and_prints_example_urls(overlap_catalog: Path,
                                                                           tmp_path: Path) -> None:
    import yaml

    from r2r_helpers import run_cli

    out = tmp_path / "cfg"
    res = run_cli("-q", "serve", "--catalog", str(overlap_catalog), "--config-out", str(out), "--write-config-only",
                  "--url", "https://edr.example.org", "--pixel-budget", "1234")
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load((out / "pygeoapi-config.yml").read_text())
    assert set(cfg["resources"]) == {"ndvi", "lai"}
    prov = cfg["resources"]["ndvi"]["providers"][0]
    assert prov["name"] == "steps.edr.provider.Raw2ReadyEDRProvider" and prov["options"]["pixel_budget"] == 1234
    assert cfg["server"]["url"] == "https://edr.example.org"
    oas = yaml.safe_load((out / "pygeoapi-openapi.yml").read_text())
    assert "/collections/ndvi/position" in oas["paths"] and "/collections/lai/cube" in oas["paths"]
    assert "https://edr.example.org/collections/ndvi/position?coords=POINT(" in res.stdout


def test_cog_windows_are_read_in_parallel_and_returned_in_order(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import rasterio
    from rasterio.windows import Window

    from steps.edr import reader
    from steps.edr.plan import PixelWindow

    # varied names: the reader shards by a CRC of the URL, and names differing in one low bit share a shard
    paths = [tmp_path / f"{i:02d}-{i * 2654435761 % 10**9}.tif" for i in range(8)]
    for i, p in enumerate(paths):
        _write_cog(p, 100 * (i + 1), 600000, 1600000)
    reqs = [reader.WindowRead(str(p), PixelWindow(r, c, h, w))
            for p in paths for r, c, h, w in ((0, 0, 1, 1), (40, 3, 5, 7), (33, 31, 2, 2))]
    active, peak, threads = [0], [0], set()
    lock = threading.Lock()
    real = reader._read

    def slow_read(req: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.02)  # long enough for reads on other reader threads to overlap
        try:
            return real(req)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(reader, "_read", slow_read)
    out = reader.read_windows(reqs, workers=4)
    for req, arr in zip(reqs, out, strict=True):
        w = req.window
        with rasterio.open(req.url) as ds:
            want = ds.read(1, window=Window(w.col0, w.row0, w.width, w.height))
        assert arr.shape == (w.height, w.width) and np.array_equal(arr, want)
    assert len(threads) > 1 and peak[0] > 1  # several reader threads, reading at the same time


def test_cog_reads_touch_only_the_blocks_of_their_window(tmp_path: Path) -> None:
    """Garbage in one internal block must not matter to a window outside it (it is never read)."""
    import rasterio
    import rasterio.errors

    from steps.edr import reader
    from steps.edr.plan import PixelWindow

    path = tmp_path / "blocks.tif"
    _write_cog(path, 1234, 600000, 1600000)  # 64² pixels in 32² deflate blocks
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))  # lower-right block (x=1, y=1)
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * size)
    reader.invalidate()  # no reader thread may keep a dataset of an older file at this path
    (a, b) = reader.read_windows([reader.WindowRead(str(path), PixelWindow(5, 7, 1, 1)),
                                  reader.WindowRead(str(path), PixelWindow(0, 0, 32, 32))])
    assert a.tolist() == [[1234]] and int(b[10, 10]) == 1234 and int(b[0, 0]) == -32768
    with pytest.raises(rasterio.errors.RasterioIOError):  # the damaged block is really unreadable
        reader.read_windows([reader.WindowRead(str(path), PixelWindow(40, 40, 1, 1))])


# ------------------------------------------------------------------------------------------ query parsing
def _parse(query_type: str, collection: str = "ndvi", **args: Any) -> Any:
    from steps.edr.query import parse_query

    return parse_query(query_type, collection, args)


def test_query_parser_validates_a_position_query() -> None:
    import shapely

    q = _parse("position", wkt=shapely.Point(100.5, 14.25), datetime_="2024-01-13/2024-01-14")
    assert q.shape.point == (100.5, 14.25) and q.shape.is_point
    assert (q.trange.start, q.trange.end) == (datetime(2024, 1, 13, tzinfo=UTC), datetime(2024, 1, 15, tzinfo=UTC))
    assert q.params == ("ndvi", "cloud_mask")  # nothing named: the whole collection, main product first
    # named parameters come back in the collection's order, blanks ignored
    assert _parse("position", "lai", wkt=shapely.Point(0, 0), select_properties=[" cloud_mask", "lai", ""]
                  ).params == ("lai", "cloud_mask")


def test_query_parser_converts_radius_units_and_bounds_the_circle() -> None:
    import shapely

    q = _parse("radius", wkt=shapely.Point(100.0, 14.0), within="1.5", within_units="KM")
    assert q.shape.radius_m == 1500.0 and not q.shape.is_point
    assert _parse("radius", wkt=shapely.Point(100.0, 14.0), within="2", within_units="mi").shape.radius_m == 3218.688
    # the index pre-filter box holds the whole circle: 1.5 km north, south, east and west of the centre
    w, s, e, n = q.shape.lonlat_bounds()
    assert n > 14.0 + 1500 / 111_000 and s < 14.0 - 1500 / 111_000
    assert e > 100.0 + 1500 / (111_320 * np.cos(np.radians(14.0))) and w < 100.0 - 1500 / 111_320


@pytest.mark.parametrize(("query_type", "args", "message"), [
    ("position", {"wkt": None}, "missing coords parameter"),
    ("position", {"wkt": "POINT(1 2)"}, "coords must be a WKT POINT"),
    ("position", {"wkt": "POLY", "datetime_": "2024-13-01"}, "coords must be a WKT POINT"),  # geometry first
    ("cube", {"bbox": [100, 14, 101, 15, 0, 10]}, "no vertical axis: bbox takes 4 numbers"),
    ("cube", {"bbox": [101, 14, 100, 15]}, "minlon < maxlon"),
    ("cube", {"bbox": [100, 14, 181, 15]}, "longitude in [-180, 180]"),
    ("radius", {"within": "5", "within_units": "ft"}, "within-units must be one of m, km, mi"),
    ("radius", {"within": "-5", "within_units": "m"}, "positive finite distance"),
    ("radius", {"within": "201", "within_units": "km"}, "limited to 200 km"),
    ("position", {"z": "10"}, "no vertical axis; omit z"),
    ("position", {"datetime_": "2024-02-30"}, "datetime '2024-02-30' is not a valid"),
    ("position", {"select_properties": ["ndvi", "lai"]}, "unknown parameter-name lai; collection 'ndvi' has ndvi"),
    ("area", {"wkt": "bowtie"}, "polygon is not valid"),
])
def test_query_parser_refuses_malformed_queries_with_a_message_for_the_client(
        query_type: str, args: dict[str, Any], message: str) -> None:
    import shapely

    from steps.edr.query import QueryError

    given = dict(args)
    if query_type in ("position", "radius") and "wkt" not in given:
        given["wkt"] = shapely.Point(100.0, 14.0)
    if given.get("wkt") == "POLY":
        given["wkt"] = shapely.box(100, 14, 101, 15)
    if given.get("wkt") == "bowtie":
        given["wkt"] = shapely.Polygon([(100, 14), (101, 15), (101, 14), (100, 15)])
    with pytest.raises(QueryError) as err:
        _parse(query_type, **given)
    assert message in str(err.value)


# ------------------------------------------------------------------------------------------ read planning
def _index(*rows: dict[str, Any]) -> Any:
    from steps.edr.index import CatalogIndex

    return CatalogIndex.from_json({"items": list(rows)})


def _with_cloud_mask(row: dict[str, Any]) -> dict[str, Any]:
    """The row with a 20 m ``cloud_mask`` on the 10 m ``ndvi`` grid's extent."""
    g = row["grids"]["ndvi"]
    n, (res, _b, x0, _d, _e, y0) = g["shape"][0], g["transform"]
    return {**row, "assets": {**row["assets"], "cloud_mask": row["assets"]["ndvi"].replace("ndvi", "cloud_mask")},
            "grids": {**row["grids"], "cloud_mask": {"shape": [n // 2, n // 2],
                                                     "transform": [2 * res, 0.0, x0, 0.0, -2 * res, y0]}}}


def _plan(index: Any, query_type: str, budget: int = 1_000_000, store_min_dates: int | None = None,
          **args: Any) -> Any:
    from steps.edr.plan import plan_query

    return plan_query(index, _parse(query_type, **args), pixel_budget=budget, store_min_dates=store_min_dates)


def test_plan_reads_the_pixel_that_contains_a_known_utm_point_on_each_grid() -> None:
    from steps.edr.plan import PixelWindow

    index = _index(_with_cloud_mask(_row("A1", "47PPR", "2024-01-13T03:47:20.024Z", 600000, 1600000)),
                   _with_cloud_mask(_row("A2", "47PPR", "2024-01-18T03:47:20.024Z", 600000, 1600000)))
    # (600137, 1599957): 137 m east and 43 m south of the upper-left corner (600000, 1600000) →
    # 10 m pixel row 4 (43 / 10), col 13 (137 / 10); 20 m pixel row 2 (43 / 20), col 6 (137 / 20)
    plan = _plan(index, "position", wkt=_lonlat(600137.0, 1599957.0))
    assert plan.series is not None and [it.id for it in plan.series.steps] == ["A1", "A2"]
    got = {(ti, k): (plan.reads[i].item.id, plan.reads[i].asset, plan.reads[i].window)
           for (_g, ti, k), i in plan.slots.items()}
    assert got == {
        (0, "ndvi"): ("A1", "raw2ready-s2-vegetation/x/A1/ndvi.tif", PixelWindow(4, 13, 1, 1)),
        (0, "cloud_mask"): ("A1", "raw2ready-s2-vegetation/x/A1/cloud_mask.tif", PixelWindow(2, 6, 1, 1)),
        (1, "ndvi"): ("A2", "raw2ready-s2-vegetation/x/A2/ndvi.tif", PixelWindow(4, 13, 1, 1)),
        (1, "cloud_mask"): ("A2", "raw2ready-s2-vegetation/x/A2/cloud_mask.tif", PixelWindow(2, 6, 1, 1)),
    }
    assert len(plan.reads) == 4 and plan.store_groups == ()  # no store asked for: every read from the COGs


def test_plan_groups_a_tiles_repeated_window_for_the_time_series_store() -> None:
    rows = [_row(f"A{d}", "47PPR", f"2024-01-{d:02d}T03:47:20.024Z", 600000, 1600000) for d in (3, 8, 13)]
    index = _index(*rows)
    point = _lonlat(600123.0, 1599876.0)
    plan = _plan(index, "position", store_min_dates=2, wkt=point, select_properties=["ndvi"])
    assert plan.store_groups == ((0, 1, 2),)  # one tile, one product, one pixel, three dates
    assert _plan(index, "position", store_min_dates=4, wkt=point).store_groups == ()  # fewer dates than asked
    one_date = _plan(index, "position", store_min_dates=2, wkt=point, datetime_="2024-01-08")
    assert [it.id for it in one_date.series.steps] == ["A8"] and one_date.store_groups == ()


def test_plan_of_a_point_outside_every_tile_or_a_range_without_acquisitions_is_no_data() -> None:
    from steps.edr.plan import NoDataError

    index = _index(_row("A1", "47PPR", "2024-01-13T03:47:20.024Z", 600000, 1600000))
    with pytest.raises(NoDataError, match="no acquisition covers this point"):
        _plan(index, "position", wkt=_lonlat(600700.0, 1599876.0))  # 60 m east of the 640 m raster
    with pytest.raises(NoDataError, match="no acquisition covers this point"):
        _plan(index, "position", wkt=_lonlat(600123.0, 1599876.0), datetime_="2024-01-14/2024-02-01")
    with pytest.raises(NoDataError, match="no acquisition covers this area"):
        _plan(index, "radius", wkt=_lonlat(600123.0, 1599876.0), within="50", within_units="m",
              datetime_="../2024-01-12")
    assert _plan(index, "position", wkt=_lonlat(600635.0, 1599876.0)).reads[0].window.col0 == 63  # last column


def test_plan_of_a_radius_keeps_the_pixel_centres_inside_and_samples_the_coarser_grid() -> None:
    from steps.edr.plan import PixelWindow

    index = _index(_with_cloud_mask(_row("A1", "47PPR", "2024-01-13T03:47:20.024Z", 600000, 1600000)))
    # centre of 10 m pixel (row 20, col 30); 14 m reaches its 4 edge neighbours (10 m), no diagonal (14.1 m)
    plan = _plan(index, "radius", wkt=_lonlat(600305.0, 1599795.0), within="14", within_units="m")
    assert plan.series is None and len(plan.grids) == 1
    g = plan.grids[0]
    assert g.window == PixelWindow(19, 29, 3, 3) and g.epsg == EPSG and g.owned == (None,)
    assert g.xs.tolist() == [600295.0, 600305.0, 600315.0] and g.ys.tolist() == [1599805.0, 1599795.0, 1599785.0]
    assert g.inside.tolist() == [[False, True, False], [True, True, True], [False, True, False]]
    assert g.resample["ndvi"] is None  # the finest grid: read as it is
    # 20 m: centres x 600295/600305/600315 fall in columns 14, 15, 15; y 1599805/1599795/1599785 in rows 9, 10, 10
    cm = g.resample["cloud_mask"]
    assert cm is not None and cm.window == PixelWindow(9, 14, 2, 2)
    assert cm.rows[:, 0].tolist() == [0, 1, 1] and cm.cols[0].tolist() == [0, 1, 1]
    assert [(plan.reads[i].key, plan.reads[i].window) for i in plan.slots.values()] == [
        ("ndvi", PixelWindow(19, 29, 3, 3)), ("cloud_mask", PixelWindow(9, 14, 2, 2))]


def test_plan_leaves_an_asset_an_item_lacks_unread_and_refuses_above_the_budget() -> None:
    from steps.edr.query import QueryError

    index = _index(_with_cloud_mask(_row("A1", "47PPR", "2024-01-13T03:47:20.024Z", 600000, 1600000)),
                   _row("A2", "47PPR", "2024-01-18T03:47:20.024Z", 600000, 1600000))  # A2: no cloud mask
    point = _lonlat(600123.0, 1599876.0)
    plan = _plan(index, "position", budget=4, wkt=point)  # 2 dates × 2 parameters: exactly the budget
    assert sorted(plan.slots) == [(0, 0, "cloud_mask"), (0, 0, "ndvi"), (0, 1, "ndvi")]
    with pytest.raises(QueryError, match="2 time steps × 2 parameters = 4 values, above this server's pixel "
                                         "budget of 3"):
        _plan(index, "position", budget=3, wkt=point)


def test_index_grids_are_the_pipelines_grid_type_one_instance_per_distinct_grid() -> None:
    from steps.products.raster import Grid

    a = _with_cloud_mask(_row("A1", "47PPR", "2024-01-13T03:47:20.024Z", 600000, 1600000))
    b = _with_cloud_mask(_row("A2", "47PPR", "2024-01-18T03:47:20.024Z", 600000, 1600000))
    index = _index(a, b)
    g1, g2 = index.items[0].grids, index.items[1].grids
    assert isinstance(g1["ndvi"], Grid) and g1["ndvi"] is g2["ndvi"] and g1["cloud_mask"] is g2["cloud_mask"]
    ndvi = g1["ndvi"]
    assert (ndvi.crs, ndvi.epsg, ndvi.shape, ndvi.width, ndvi.height, ndvi.res) == (
        "EPSG:32647", 32647, (64, 64), 64, 64, 10.0)
    assert ndvi.bounds == (600000.0, 1599360.0, 600640.0, 1600000.0) and ndvi.centre == (600320.0, 1599680.0)
    assert ndvi.to_proj() == a["grids"]["ndvi"]  # the index's form, unchanged
    assert ndvi.scaled(20.0) == g1["cloud_mask"]


def test_lonlat_utm_transformers_are_cached_per_thread() -> None:
    import threading

    from steps.sentinel2.grid import lonlat_to_utm, utm_to_lonlat

    mine = lonlat_to_utm(EPSG)
    assert lonlat_to_utm(EPSG) is mine and utm_to_lonlat(EPSG) is not mine
    other: list[Any] = []
    t = threading.Thread(target=lambda: other.append(lonlat_to_utm(EPSG)))
    t.start()
    t.join()
    assert other[0] is not mine  # pyproj transformers are not thread-safe: each thread has its own
    x, y = mine.transform(*utm_to_lonlat(EPSG).transform(600137.0, 1599957.0))
    assert abs(x - 600137.0) < 1e-6 and abs(y - 1599957.0) < 1e-6
