"""Synthetic archive: determinism, geometry, DN encoding, spectra, clouds, STAC validity, s2cloudless."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

from steps import sentinel2 as s2
from steps import synth
from steps.grid import parse_tile
from steps.synth import SceneSpec

T = datetime(2024, 1, 13, 3, 47, 24, 24000, tzinfo=UTC)
POST = SceneSpec("47PPR", T, "sentinel-2a", "05.10", cloud_cover=0.3, cirrus=0.1, swath_edge=True)
PRE = SceneSpec("47PPR", datetime(2021, 12, 9, 3, 47, 24, tzinfo=UTC), "sentinel-2b", "03.01",
                cloud_cover=0.2, cirrus=0.05)
SIZE = 120


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("archive")
    synth.synthesize_archive(out, [POST, PRE], SIZE, seed=3)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_specs_and_seed_give_byte_identical_archive(archive, tmp_path):
    calls = []
    synth.synthesize_archive(tmp_path / "b", [PRE, POST], SIZE, seed=3,
                             progress=lambda k, n, i: calls.append((k, n, i)))
    a, b = _files(archive), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    assert len(a) == 2 * (1 + 1 + 12 + 1) + 2 * (1 + 1 + 13) + 3  # items, xml, bands, SCL; colls + root
    assert calls[-1][:2] == (2, 2)
    synth.synthesize_archive(tmp_path / "c", [PRE], SIZE, seed=4)
    c = _files(tmp_path / "c")
    key = "sentinel-2-c1-l2a/S2B_47PPR_20211209_0_L2A/B04.tif"
    assert c[key] != a[key]


def test_item_ids_layout_and_links(archive):
    l2a = archive / "sentinel-2-c1-l2a" / "S2A_47PPR_20240113_0_L2A" / "S2A_47PPR_20240113_0_L2A.json"
    l1c = archive / "sentinel-2-l1c" / "S2B_47PPR_20211209_0_L1C" / "S2B_47PPR_20211209_0_L1C.json"
    assert l2a.exists() and l1c.exists()
    item = json.loads(l2a.read_text())
    assert set(item["assets"]) == set(s2.L2A_ASSET_KEYS)
    assert set(json.loads(l1c.read_text())["assets"]) == set(s2.L1C_ASSET_KEYS)
    for a in item["assets"].values():
        assert a["href"].startswith("./") and (l2a.parent / a["href"]).exists()
    p = item["properties"]
    assert p["grid:code"] == "MGRS-47PPR" and p["proj:code"] == "EPSG:32647"
    assert (p["mgrs:utm_zone"], p["mgrs:latitude_band"], p["mgrs:grid_square"]) == (47, "P", "PR")
    assert p["s2:processing_baseline"] == "05.10" and "_N0510_" in p["s2:product_uri"]
    assert p["datetime"] == "2024-01-13T03:47:24.024Z"
    assert 20 < p["s2:mean_solar_zenith"] < 60 and 100 < p["s2:mean_solar_azimuth"] < 170
    assert p["view:sun_elevation"] == pytest.approx(90 - p["s2:mean_solar_zenith"])
    assert p["s2:nodata_pixel_percentage"] > 5  # the swath edge
    cat = json.loads((archive / "catalog.json").read_text())
    assert [ln["href"] for ln in cat["links"] if ln["rel"] == "child"] == [
        "./sentinel-2-c1-l2a/collection.json", "./sentinel-2-l1c/collection.json"]


def test_raster_bands_scale_offset_follow_baseline(archive):
    post = json.loads(next((archive / "sentinel-2-c1-l2a").glob("S2A_*/S2A_*.json")).read_text())
    pre = json.loads(next((archive / "sentinel-2-c1-l2a").glob("S2B_*/S2B_*.json")).read_text())
    rb_post = post["assets"]["red"]["raster:bands"][0]
    rb_pre = pre["assets"]["red"]["raster:bands"][0]
    assert (rb_post["scale"], rb_post["offset"], rb_post["nodata"]) == (0.0001, -0.1, 0)
    assert (rb_pre["scale"], rb_pre["offset"]) == (0.0001, 0.0)
    assert post["assets"]["nir08"]["raster:bands"][0]["spatial_resolution"] == 20


def test_footprint_and_transform_follow_the_mgrs_rule(archive):
    tile = parse_tile("47PPR")
    assert (tile.ulx, tile.uly) == (600000.0, 1600020.0)
    d = archive / "sentinel-2-c1-l2a" / "S2A_47PPR_20240113_0_L2A"
    item = json.loads((d / f"{d.name}.json").read_text())
    for name, res in (("B02", 10), ("B05", 20), ("B01", 60), ("SCL", 20)):
        with rasterio.open(d / f"{name}.tif") as ds:
            assert ds.crs.to_epsg() == 32647
            assert tuple(ds.transform)[:6] == (res, 0.0, 600000.0, 0.0, -res, 1600020.0)
            assert ds.shape == (SIZE * 10 // res,) * 2
            assert ds.nodata == 0 and ds.dtypes[0] == ("uint8" if name == "SCL" else "uint16")
            st = ds.tags(ns="IMAGE_STRUCTURE")
            assert (st["COMPRESSION"], st["PREDICTOR"], st["LAYOUT"]) == ("DEFLATE", "2", "COG")
    assert item["assets"]["blue"]["proj:transform"] == [10, 0, 600000.0, 0, -10, 1600020.0]
    assert item["assets"]["coastal"]["proj:shape"] == [SIZE // 6, SIZE // 6]
    lon0, lat0, lon1, lat1 = item["bbox"]
    assert 99.9 < lon0 < lon1 < 100.05 and 14.4 < lat0 < lat1 < 14.5  # Bangkok's NW corner region


@pytest.mark.parametrize("spec", [POST, PRE], ids=["pb0510", "pb0301"])
def test_dn_encoding_reverses_to_rendered_reflectance(archive, spec):
    arrays = synth.render_scene(spec, SIZE, seed=3)
    for level, coll, src, bands in (("L2A", "sentinel-2-c1-l2a", arrays.boa, ("B04", "B08", "B11", "B01")),
                                    ("L1C", "sentinel-2-l1c", arrays.toa, ("B02", "B10", "B12"))):
        d = archive / coll / spec.item_id(level)
        meta = s2.parse_granule_metadata((d / "granule_metadata.xml").read_bytes())
        assert meta.level == level and meta.processing_baseline == spec.processing_baseline
        assert bool(meta.add_offsets) == spec.has_offsets
        for b in bands:
            with rasterio.open(d / f"{b}.tif") as ds:
                dn = ds.read(1)
            scale, offset = s2.reflectance_params(meta, b)
            rho = np.where(dn == 0, np.nan, dn * scale + offset)
            ref = src[b]
            assert np.array_equal(np.isnan(rho), np.isnan(ref)), b
            ok = ~np.isnan(ref)
            assert np.max(np.abs(rho[ok] - ref[ok])) <= 1e-4, b
    if spec.has_offsets:
        with rasterio.open(archive / "sentinel-2-c1-l2a" / spec.item_id() / "B08.tif") as ds:
            assert ds.read(1)[ds.read(1) > 0].min() > 1000  # offset +1000 DN encoded


def test_land_cover_ndvi_in_plausible_ranges():
    arrays = synth.render_scene(replace(POST, cloud_cover=0.0, cirrus=0.0, swath_edge=False), 600, seed=1)
    red = arrays.boa["B04"][::2, ::2]
    nir = arrays.boa["B08"][::2, ::2]
    ndvi = (nir - red) / (nir + red)
    lc = arrays.truth
    med = {c: float(np.median(ndvi[lc == c])) for c in range(1, 6)}
    assert all((lc == c).sum() > 100 for c in range(1, 6)), "every land cover present"
    assert 0.75 < med[synth.TRUTH_DENSE_VEG] < 0.9
    assert 0.35 < med[synth.TRUTH_SPARSE_VEG] < 0.65
    assert 0.05 < med[synth.TRUTH_SOIL] < 0.3
    assert med[synth.TRUTH_WATER] < 0.0
    assert 0.0 < med[synth.TRUTH_BUILT] < 0.25
    assert set(np.unique(arrays.scl)) <= {4, 5, 6}
    # spatially smooth patches: most 20 m neighbours share the class
    assert np.mean(lc[:, 1:] == lc[:, :-1]) > 0.9


def test_clouds_shadows_cirrus_and_nodata_where_specified():
    a = synth.render_scene(replace(POST, cirrus=0.25), 600, seed=2)
    valid = ~a.nodata[20]
    cloud = np.isin(a.scl, (8, 9))
    assert 0.15 < cloud[valid].mean() < 0.45
    assert (a.scl == 9).any() and (a.scl == 3).any() and (a.scl == 10).any()
    # no data: a diagonal region on the east side, DN-0/NaN in every band, SCL 0
    assert 0.1 < a.nodata[20].mean() < 0.6
    assert np.all(a.scl[a.nodata[20]] == 0) and np.all(a.scl[valid] != 0)
    assert a.nodata[20][:, -1].all() and not a.nodata[20][:, 0].any()
    for b, arr in a.boa.items():
        assert np.isnan(arr).sum() == a.nodata[s2.BANDS[b].resolution].sum(), b
    # thick cloud bright and flat, shadows darker than their land cover elsewhere
    assert np.nanmedian(a.boa["B02"][::2, ::2][a.scl == 9]) > 0.35
    nir = a.boa["B08"][::2, ::2]
    sh = a.truth == synth.TRUTH_SHADOW
    assert np.median(nir[sh & (a.landcover == 1)]) < 0.6 * np.median(nir[(a.truth == 1)])
    # cirrus: B10 TOA 0.015-0.04 over cirrus, near 0 over clear land
    b10 = a.toa["B10"]
    t60 = a.truth[1::3, 1::3]
    assert 0.015 <= np.median(b10[t60 == synth.TRUTH_CIRRUS]) <= 0.04
    assert np.nanpercentile(b10[(t60 >= 1) & (t60 <= 5)], 95) < 0.01
    # L1C: blue brighter at TOA than BOA (path radiance), B09 darker (water vapour)
    clear = (a.truth == synth.TRUTH_DENSE_VEG)[::3, ::3]
    assert np.median(a.toa["B01"][clear[:100, :100]] - a.boa["B01"][clear[:100, :100]]) > 0.05
    assert np.median(a.toa["B09"][clear[:100, :100]]) < np.median(a.boa["B09"][clear[:100, :100]])

    none = synth.render_scene(replace(POST, cloud_cover=0.0, cirrus=0.0, swath_edge=False), 120, 2)
    assert not np.isin(none.scl, (0, 3, 8, 9, 10)).any()
    full = synth.render_scene(replace(POST, cloud_cover=1.0, swath_edge=False), 120, 2)
    assert np.isin(full.scl, (8, 9)).all()


def test_land_cover_is_the_same_on_every_date_clouds_are_not():
    a = synth.render_scene(PRE, 120, 5)
    b = synth.render_scene(replace(PRE, datetime=T, processing_baseline="05.10"), 120, 5)
    assert np.array_equal(a.landcover, b.landcover)
    assert not np.array_equal(a.scl, b.scl)


def test_render_is_deterministic_and_rejects_bad_size():
    a = synth.render_scene(POST, 60, 9)
    b = synth.render_scene(POST, 60, 9)
    for k in a.boa:
        assert np.array_equal(a.boa[k], b.boa[k], equal_nan=True)
    with pytest.raises(ValueError, match="multiple of 6"):
        synth.render_scene(POST, 100, 0)


def test_catalog_passes_core_stac_schemas_offline(archive):
    from pystac import STACObjectType
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    v = JsonSchemaSTACValidator()  # core STAC 1.1.0 schemas ship with pystac: no network needed
    kinds = {"Feature": STACObjectType.ITEM, "Collection": STACObjectType.COLLECTION,
             "Catalog": STACObjectType.CATALOG}
    paths = sorted(archive.rglob("*.json"))
    assert len(paths) == 4 + 2 + 1  # items, collections, root
    for p in paths:
        d = json.loads(p.read_text())
        v.validate_core(d, kinds[d["type"]], d["stac_version"], str(p))
    import pystac

    cat = pystac.Catalog.from_file(str(archive / "catalog.json"))
    assert len(list(cat.get_items(recursive=True))) == 4


def test_stac_validator_passes_offline_with_vendored_schemas(archive):
    # steps.stacvalidate runs stac-validator against the schemas vendored in steps/data/stac-schemas
    # (core + eo, projection, raster, view, mgrs, grid); it never fetches. The sentinel-2 extension
    # schema is not vendored (yet): that one "not vendored" report is tolerated, nothing else.
    from steps.stacvalidate import validate_stac

    errors = validate_stac(archive / "catalog.json")
    s2_ext = "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json"
    other = [e for e in errors if not (s2_ext in e and "not vendored" in e)]
    assert other == []
    assert len(errors) in (0, 4)  # 4 items declare the sentinel-2 extension


def test_s2cloudless_agrees_with_truth_on_l1c_toa():
    from s2cloudless import S2PixelCloudDetector

    a = synth.render_scene(replace(POST, cirrus=0.0), 600, seed=4)

    def at60(b: str) -> np.ndarray:
        arr = a.toa[b]
        f = 60 // s2.BANDS[b].resolution
        n = arr.shape[0] // f
        return arr.reshape(n, f, n, f).mean(axis=(1, 3))

    x = np.nan_to_num(np.stack([at60(b) for b in s2.S2CLOUDLESS_BANDS], axis=-1))[None]
    p = S2PixelCloudDetector(threshold=0.4, all_bands=False).get_cloud_probability_maps(x)[0]
    t60 = a.truth[1::3, 1::3]
    for c in (synth.TRUTH_DENSE_VEG, synth.TRUTH_SPARSE_VEG, synth.TRUTH_SOIL, synth.TRUTH_WATER):
        m = t60 == c
        if m.sum() >= 20:
            assert (p[m] < 0.4).mean() > 0.9, synth.TRUTH_CLASSES[c]
    core = (a.scl == 9)[1::3, 1::3]
    assert core.sum() > 50 and (p[core] > 0.4).mean() > 0.95


def test_demo_specs_cover_the_cases_dedupe_and_offsets_need():
    specs = synth.demo_specs()
    assert {s.tile for s in specs} == {"47PPR", "47PQR"}
    assert {s.platform for s in specs} == {"sentinel-2a", "sentinel-2b"}
    assert any(not s.has_offsets for s in specs) and any(s.has_offsets for s in specs)
    assert any(s.cloud_cover == 1.0 for s in specs)
    keys = [(s.tile, s.datetime) for s in specs]
    dups = [s for s in specs if keys.count((s.tile, s.datetime)) > 1]
    assert len(dups) == 2 and {d.sequence for d in dups} == {0, 1}
    newer = max(dups, key=lambda s: s.sequence)
    assert newer.has_offsets and newer.datetime < datetime(2022, 1, 25, tzinfo=UTC)
    assert len({s.item_id() for s in specs}) == len(specs)
    assert all(3 <= s.datetime.hour < 4 for s in specs)


def test_specs_for_range_alternates_platforms_and_picks_baseline_by_date():
    specs = synth.specs_for_range(["47PPR"], date(2022, 1, 10), date(2022, 2, 20), revisit_days=5, seed=1)
    assert len(specs) == 9
    assert [s.platform for s in specs[:3]] == ["sentinel-2a", "sentinel-2b", "sentinel-2a"]
    assert [s.has_offsets for s in specs] == [s.datetime.date() >= date(2022, 1, 25) for s in specs]
    assert specs == synth.specs_for_range(["47PPR"], date(2022, 1, 10), date(2022, 2, 20), seed=1)
    assert specs != synth.specs_for_range(["47PPR"], date(2022, 1, 10), date(2022, 2, 20), seed=2)
    assert synth.specs_for_range(["47PPR"], date(2025, 3, 1), date(2025, 3, 1))[0].platform == "sentinel-2c"


def test_duplicate_ids_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        synth.synthesize_archive(tmp_path, [PRE, PRE], 60)
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_full_tile_renders_at_native_resolutions():
    # the full 10980² tile that bench/ measures (its render time is in the benchmark, not asserted here)
    a = synth.render_scene(POST, 10980, seed=0)
    assert a.boa["B08"].shape == (10980, 10980) and a.boa["B08"].dtype == np.float32
    assert a.scl.shape == (5490, 5490)


def test_item_geometry_excludes_the_no_data_beyond_the_swath_edge(archive):
    d = archive / "sentinel-2-c1-l2a" / POST.item_id()
    item = json.loads((d / f"{d.name}.json").read_text())
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 4 + 1  # the edge crosses the top and bottom sides
    full = synth.data_footprint_lonlat(replace(POST, swath_edge=False), SIZE)
    assert max(p[0] for p in ring) < max(p[0] for p in full)
    assert item["bbox"][2] == pytest.approx(max(p[0] for p in ring))
    # ring is counter-clockwise (positive shoelace area)
    area = sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(ring))
    assert area > 0
