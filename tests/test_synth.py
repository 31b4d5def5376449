"""The synthesizer: scene model, and its output in the REAL formats (ESA XML, Earth Search v1 items, SAFE).

Format checks compare against the real files copied to ``tests/data/real`` (provenance in
``tests/data/real/PROVENANCE.md``): XML element paths/attributes/order are a subset of a real file of the
same kind, item keys exist in real items, SAFE paths map onto ``safe-layout-T29UNU/TREE.txt``; and the
project's own readers (``steps.sentinel2``) give back the spec's values.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

import synthesizer as synth
from steps.sentinel2.bands import BANDS, L1C_BANDS, L2A_BANDS
from steps.sentinel2.grid import parse_tile
from synthesizer import SceneSpec
from synthesizer.esa import product_names

T = datetime(2024, 1, 13, 3, 47, 24, 24000, tzinfo=UTC)
POST = SceneSpec("47PPR", T, "sentinel-2a", "05.10", cloud_cover=0.3, cirrus=0.1, swath_edge=True)
PRE = SceneSpec("47PPR", datetime(2021, 12, 9, 3, 47, 24, tzinfo=UTC), "sentinel-2b", "03.01",
                cloud_cover=0.2, cirrus=0.05)
SIZE = 120

REAL = Path(__file__).parent / "data" / "real"
T29UNU = REAL / "safe-layout-T29UNU" / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
T29UNU_TL = T29UNU / "GRANULE" / "L2A_T29UNU_A038058_20221005T115407" / "MTD_TL.xml"
T01CCV = REAL / "real-metadata" / "S2B_MSIL2A_20191228T210519_N0212_R071_T01CCV_20201003T104658"
T46RER = REAL / "real-metadata" / "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248"
ITEM_29RKH = REAL / "rio-tiler-pds" / "S2A_29RKH_20200219_0_L2A" / "S2A_29RKH_20200219_0_L2A.json"
ITEM_STACTOOLS_L1C = REAL / "stac-items" / "stac-utils+pystac" / "example-sentinel2.json"
TILEINFO_19UDP = REAL / "rio-tiler-pds" / "S2A_19UDP_20170729_L1C" / "tileInfo.json"
L2A_DIR = "sentinel-2-c1-l2a"
L1C_DIR = "sentinel-2-l1c"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("archive")
    synth.synthesize_archive(out, [POST, PRE], SIZE, seed=3)
    return out


@pytest.fixture(scope="module")
def post_arrays() -> synth.SceneArrays:
    return synth.render_scene(POST, SIZE, seed=3)


@pytest.fixture(scope="module")
def safes(tmp_path_factory, post_arrays) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("safe")
    return {
        "L2A": synth.write_safe(root, POST, post_arrays),
        "L1C": synth.write_safe(root, POST, post_arrays, level="L1C"),
        "zip": synth.write_safe(root / "zipped", POST, post_arrays, zip=True),
    }


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _item(archive: Path, spec: SceneSpec, level: str = "L2A") -> tuple[Path, dict]:
    d = archive / (L2A_DIR if level == "L2A" else L1C_DIR) / spec.item_id(level)
    return d, json.loads((d / f"{d.name}.json").read_text())


# ------------------------------------------------------------------------------------------ determinism
def test_same_specs_and_seed_give_byte_identical_archive(archive, tmp_path):
    calls = []
    synth.synthesize_archive(tmp_path / "b", [PRE, POST], SIZE, seed=3,
                             progress=lambda k, n, i: calls.append((k, n, i)))
    a, b = _files(archive), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    # per item: JSON + MTD_TL + product XML + tileInfo + bands (+ SCL for L2A); 2 collections + root
    assert len(a) == 2 * (4 + 12 + 1) + 2 * (4 + 13) + 3
    assert calls[-1][:2] == (2, 2)
    synth.synthesize_archive(tmp_path / "c", [PRE], SIZE, seed=4)
    c = _files(tmp_path / "c")
    key = f"{L2A_DIR}/S2B_47PPR_20211209_0_L2A/B04.tif"
    assert c[key] != a[key]


def test_safe_and_zip_are_byte_identical_when_written_twice(safes, post_arrays, tmp_path):
    again = synth.write_safe(tmp_path, POST, post_arrays)
    assert _files(again) == _files(safes["L2A"])
    z2 = synth.write_safe(tmp_path / "z", POST, post_arrays, zip=True)
    assert z2.read_bytes() == safes["zip"].read_bytes()


# ------------------------------------------------------------------------------------------ ESA XML
def _paths(xml: bytes) -> dict[str, set[str]]:
    """Element path (namespaces stripped, repeated siblings merged) -> attribute names seen there."""
    out: dict[str, set[str]] = {}

    def walk(el: ET.Element, pre: str) -> None:
        p = f"{pre}/{el.tag.rsplit('}', 1)[-1]}"
        out.setdefault(p, set()).update(a.rsplit("}", 1)[-1] for a in el.attrib)
        for c in el:
            walk(c, p)

    walk(ET.fromstring(xml), "")
    return out


def _child_orders(xml: bytes) -> dict[str, list[str]]:
    """Per element path: its children's distinct local names in document order (first occurrence)."""
    out: dict[str, list[str]] = {}

    def walk(el: ET.Element, pre: str) -> None:
        p = f"{pre}/{el.tag.rsplit('}', 1)[-1]}"
        names = out.setdefault(p, [])
        for c in el:
            n = c.tag.rsplit("}", 1)[-1]
            if n not in names:
                names.append(n)
            walk(c, p)

    walk(ET.fromstring(xml), "")
    return out


def _qualified(xml: bytes) -> set[str]:
    """Paths of elements written in a namespace (ESA qualifies only the root and its children)."""
    out: set[str] = set()

    def walk(el: ET.Element, pre: str) -> None:
        p = f"{pre}/{el.tag.rsplit('}', 1)[-1]}"
        if el.tag.startswith("{"):
            out.add(p)
        for c in el:
            walk(c, p)

    walk(ET.fromstring(xml), "")
    return out


def _is_subsequence(sub: list[str], seq: list[str]) -> bool:
    it = iter(seq)
    return all(x in it for x in sub)


# L1C products of baseline ≥ 04.00 carry Radiometric_Offset_List/RADIO_ADD_OFFSET (PSD 14.9, after
# QUANTIFICATION_VALUE); the only real L1C XML here is PB 03.01, which has none.
_L1C_OFFSET_PATHS = {
    "/Level-1C_User_Product/General_Info/Product_Image_Characteristics/Radiometric_Offset_List": set(),
    "/Level-1C_User_Product/General_Info/Product_Image_Characteristics/Radiometric_Offset_List/RADIO_ADD_OFFSET":
        {"band_id"},
}


def _assert_real_shaped(ours: bytes, real: bytes, allowed: dict[str, set[str]] | None = None) -> None:
    mine, theirs = _paths(ours), {**_paths(real), **(allowed or {})}
    extra = sorted(set(mine) - set(theirs))
    assert extra == [], f"element paths not in the real file: {extra}"
    bad_attrs = {p: sorted(a - theirs[p]) for p, a in mine.items() if a - theirs[p]}
    assert bad_attrs == {}, f"attributes not in the real file: {bad_attrs}"
    real_order = _child_orders(real)
    if allowed:  # place the allowed extras where ESA puts them
        pic = "/Level-1C_User_Product/General_Info/Product_Image_Characteristics"
        order = real_order[pic]
        order.insert(order.index("QUANTIFICATION_VALUE") + 1, "Radiometric_Offset_List")
        real_order[pic + "/Radiometric_Offset_List"] = ["RADIO_ADD_OFFSET"]
    for p, names in _child_orders(ours).items():
        want = real_order.get(p, [])
        assert _is_subsequence(names, want), f"{p}: child order {names} vs real {want}"
    assert _qualified(ours) == _qualified(real) & set(mine)
    assert ET.fromstring(ours).tag == ET.fromstring(real).tag  # same root element and namespace URI


@pytest.mark.parametrize(("spec", "real_dir", "product"), [
    (POST, T29UNU, "MTD_MSIL2A.xml"), (PRE, T01CCV, "MTD_MSIL2A.xml")], ids=["pb0510-vs-0400", "pb0301-vs-0212"])
def test_l2a_xml_is_a_subset_of_the_real_files(archive, spec, real_dir, product):
    d, _ = _item(archive, spec)
    real_tl = T29UNU_TL if real_dir == T29UNU else real_dir / "MTD_TL.xml"
    _assert_real_shaped((d / "product_metadata.xml").read_bytes(), (real_dir / product).read_bytes())
    _assert_real_shaped((d / "granule_metadata.xml").read_bytes(), real_tl.read_bytes())
    has_offsets = b"<BOA_ADD_OFFSET_VALUES_LIST>" in (d / "product_metadata.xml").read_bytes()
    assert has_offsets == spec.has_offsets == (b"BOA_ADD_OFFSET" in (real_dir / product).read_bytes())
    assert b"PROCESSING_BASELINE" not in (d / "granule_metadata.xml").read_bytes()  # product XML only


@pytest.mark.parametrize("spec", [POST, PRE], ids=["pb0510", "pb0301"])
def test_l1c_xml_is_a_subset_of_the_real_files(archive, spec):
    d, _ = _item(archive, spec, "L1C")
    pxml = (d / "product_metadata.xml").read_bytes()
    _assert_real_shaped(pxml, (T46RER / "MTD_MSIL1C.xml").read_bytes(), _L1C_OFFSET_PATHS)
    _assert_real_shaped((d / "granule_metadata.xml").read_bytes(), (T46RER / "MTD_TL.xml").read_bytes())
    assert (b"<RADIO_ADD_OFFSET" in pxml) == spec.has_offsets


def test_tile_xml_round_trips_through_the_real_parser(archive, post_arrays):
    from steps.sentinel2.metadata import parse_tile_metadata

    d, item = _item(archive, POST)
    tm = parse_tile_metadata((d / "granule_metadata.xml").read_bytes(), source="granule_metadata.xml")
    tile = parse_tile("47PPR")
    assert (tm.level, tm.tile_id, tm.epsg, tm.ulx, tm.uly) == ("L2A", "47PPR", 32647, tile.ulx, tile.uly)
    assert tm.sizes == {10: (SIZE, SIZE), 20: (SIZE // 2, SIZE // 2), 60: (SIZE // 6, SIZE // 6)}
    assert tm.sensing_time == POST.datetime and tm.granule_id == item["properties"]["s2:granule_id"]
    assert tm.baseline_hint == "05.10" and tm.angle_step == 5000.0
    np.testing.assert_allclose(tm.sun_zenith, post_arrays.sun_zenith, atol=1e-4)
    assert 90 - tm.mean_sun_zenith == pytest.approx(item["properties"]["view:sun_elevation"], abs=1e-6)
    assert tm.cloud_coverage == pytest.approx(item["properties"]["eo:cloud_cover"])
    # every band incl. B10, NaN outside each detector's strip like the real grids; several detectors
    # see the tile when it is not cut by the swath edge
    for spec in (POST, PRE):
        d, _ = _item(archive, spec)
        tm = parse_tile_metadata((d / "granule_metadata.xml").read_bytes())
        assert {b for b, _ in tm.view_grids} == set(BANDS)
        assert all(np.isnan(z).any() and not np.isnan(z).all() for z, _ in tm.view_grids.values())
        assert abs(tm.mean_view_zenith - float(np.nanmean(tm.view_zenith))) < 1.0
    assert len({det for _, det in tm.view_grids}) >= 4


@pytest.mark.parametrize("spec", [POST, PRE], ids=["pb0510", "pb0301"])
def test_product_xml_round_trips_through_the_real_parser(archive, spec):
    from steps.sentinel2.metadata import parse_product_metadata

    for level in ("L2A", "L1C"):
        d, item = _item(archive, spec, level)
        pm = parse_product_metadata((d / "product_metadata.xml").read_bytes(), source="product_metadata.xml")
        p = item["properties"]
        assert (pm.level, pm.processing_baseline, pm.platform) == (level, spec.processing_baseline, spec.platform)
        assert pm.product_uri == p["s2:product_uri"] and pm.datatake_id == p["s2:datatake_id"]
        assert pm.sensing_start == spec.datetime and pm.quantification == 10000.0
        assert pm.add_offsets == (dict.fromkeys(BANDS, -1000.0) if spec.has_offsets else {})
        assert pm.nodata_value == 0 and pm.saturated_value == 65535
        assert pm.cloud_coverage == pytest.approx(p["eo:cloud_cover"])
        assert pm.reflectance_u == pytest.approx(p["s2:reflectance_conversion_factor"])
        names = product_names(spec, level)
        assert list(pm.image_files) == names.image_files() and pm.tile_ids == ("47PPR",)


# ------------------------------------------------------------------------------------------ items
def _real_keys() -> dict[str, set[str]]:
    es = json.loads(ITEM_29RKH.read_text())
    st = json.loads(ITEM_STACTOOLS_L1C.read_text())
    st_props = {k.replace("sentinel2:", "s2:") for k in st["properties"]}
    red = es["assets"]["red"]
    return {"l2a_props": set(es["properties"]), "l2a_assets": set(es["assets"]) | {"product_metadata"},
            "l1c_props": set(es["properties"]) | st_props,
            "l1c_assets": set(st["assets"]) | {"tileinfo_metadata"},
            "band_asset": set(red) | {"proj:transform"}, "meta_asset": set(es["assets"]["granule_metadata"]),
            "raster_band": set(red["raster:bands"][0]), "eo_band": set(red["eo:bands"][0])}


def test_item_keys_exist_in_real_items_of_that_collection(archive):
    real = _real_keys()
    for spec, level in itertools.product((POST, PRE), ("L2A", "L1C")):
        _, item = _item(archive, spec, level)
        lv = level.lower()
        assert set(item["properties"]) <= real[f"{lv}_props"], set(item["properties"]) - real[f"{lv}_props"]
        assert set(item["assets"]) <= real[f"{lv}_assets"], set(item["assets"]) - real[f"{lv}_assets"]
        for key, a in item["assets"].items():
            if "metadata" in key:
                assert set(a) <= real["meta_asset"]
            elif key != "scl":
                assert set(a) <= real["band_asset"]
                assert set(a["raster:bands"][0]) <= real["raster_band"] and set(a["eo:bands"][0]) <= real["eo_band"]
    # and the L2A has every key the pipeline needs
    _, item = _item(archive, POST)
    assert {BANDS[b].asset_key for b in L2A_BANDS} | {"scl", "granule_metadata", "product_metadata",
                                                        "tileinfo_metadata"} == set(item["assets"])
    _, item = _item(archive, POST, "L1C")
    assert {BANDS[b].asset_key for b in L1C_BANDS} <= set(item["assets"])


def test_item_ids_layout_and_links(archive):
    d, item = _item(archive, POST)
    for a in item["assets"].values():
        assert a["href"].startswith("./") and (d / a["href"]).exists()
    p = item["properties"]
    assert p["grid:code"] == "MGRS-47PPR" and p["proj:epsg"] == 32647
    assert (p["mgrs:utm_zone"], p["mgrs:latitude_band"], p["mgrs:grid_square"]) == (47, "P", "PR")
    assert p["s2:processing_baseline"] == "05.10" and "_N0510_" in p["s2:product_uri"]
    assert p["datetime"] == "2024-01-13T03:47:24.024Z" and p["s2:sequence"] == "0"
    assert p["earthsearch:boa_offset_applied"] is False
    assert p["s2:nodata_pixel_percentage"] > 5  # the swath edge
    derived = [ln for ln in item["links"] if ln["rel"] == "derived_from"]
    assert len(derived) == 1 and (d / derived[0]["href"]).resolve() == _item(archive, POST, "L1C")[0].resolve() / (
        f"{POST.item_id('L1C')}.json")
    cat = json.loads((archive / "catalog.json").read_text())
    assert [ln["href"] for ln in cat["links"] if ln["rel"] == "child"] == [
        f"./{L2A_DIR}/collection.json", f"./{L1C_DIR}/collection.json"]


def test_items_parse_with_the_real_item_reader(archive):
    from steps.sentinel2.items import parse_item

    for spec, level in itertools.product((POST, PRE), ("L2A", "L1C")):
        d, obj = _item(archive, spec, level)
        it = parse_item(obj, str(d / f"{d.name}.json"))
        assert (it.level, it.tile, it.platform, it.processing_baseline) == (level, "47PPR", spec.platform,
                                                                            spec.processing_baseline)
        assert it.datetime == spec.datetime and it.epsg == 32647 and it.sequence == 0
        b = it.bands["B04"]
        assert Path(b.href).exists() and (b.scale, b.offset) == (0.0001, -0.1 if spec.has_offsets else 0.0)
        assert Path(it.product_metadata_href or "").name == "product_metadata.xml"
        assert Path(it.granule_metadata_href or "").name == "granule_metadata.xml"
        assert it.boa_offset_applied is (False if level == "L2A" else None)
        if level == "L2A":
            assert it.scl is not None and len(it.derived_from) == 1


def test_tileinfo_has_the_aws_shape_and_the_tile_origin(archive):
    from steps.sentinel2.items import parse_tileinfo

    real = json.loads(TILEINFO_19UDP.read_text())
    for spec in (POST, PRE):
        d, item = _item(archive, spec)
        obj = json.loads((d / "tileinfo_metadata.json").read_text())
        assert set(obj) == set(real) and set(obj["datastrip"]) == set(real["datastrip"])
        assert obj["tileGeometry"]["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG:8.8.1:32647"
        ti = parse_tileinfo(obj)
        assert (ti.tile, ti.epsg, ti.origin) == ("47PPR", 32647, (600000.0, 1600020.0))
        assert ti.product_name + ".SAFE" == item["properties"]["s2:product_uri"]
        assert obj["path"] == f"tiles/47/P/PR/{spec.datetime.year}/{spec.datetime.month}/{spec.datetime.day}/0"
    assert json.loads((_item(archive, POST)[0] / "tileinfo_metadata.json").read_text())[
        "dataCoveragePercentage"] < 95  # the swath edge


def test_raster_bands_scale_offset_follow_baseline(archive):
    rb_post = _item(archive, POST)[1]["assets"]["red"]["raster:bands"][0]
    rb_pre = _item(archive, PRE)[1]["assets"]["red"]["raster:bands"][0]
    assert (rb_post["scale"], rb_post["offset"], rb_post["nodata"]) == (0.0001, -0.1, 0)
    assert (rb_pre["scale"], rb_pre["offset"]) == (0.0001, 0.0)
    assert _item(archive, POST)[1]["assets"]["nir08"]["raster:bands"][0]["spatial_resolution"] == 20


def test_footprint_and_transform_follow_the_mgrs_rule(archive):
    tile = parse_tile("47PPR")
    assert (tile.ulx, tile.uly) == (600000.0, 1600020.0)
    d, item = _item(archive, POST)
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
def test_dn_encoding_reverses_to_rendered_reflectance_with_the_product_xml(archive, spec):
    from steps.sentinel2.metadata import parse_product_metadata

    arrays = synth.render_scene(spec, SIZE, seed=3)
    for level, src, bands in (("L2A", arrays.boa, ("B04", "B08", "B11", "B01")),
                              ("L1C", arrays.toa, ("B02", "B10", "B12"))):
        d, _ = _item(archive, spec, level)
        pm = parse_product_metadata((d / "product_metadata.xml").read_bytes())
        for b in bands:
            with rasterio.open(d / f"{b}.tif") as ds:
                dn = ds.read(1)
            rho = np.where(dn == 0, np.nan, (dn + pm.add_offsets.get(b, 0.0)) / pm.quantification)
            ref = src[b]
            assert np.array_equal(np.isnan(rho), np.isnan(ref)), b
            ok = ~np.isnan(ref)
            assert np.max(np.abs(rho[ok] - ref[ok])) <= 0.5e-4 + 1e-7, b
            # DN = round(ρ·10000) + 1000 from 04.00, round(ρ·10000) before (clipped to ≥ 1)
            expect = np.clip(np.rint(ref[ok].astype(np.float64) * 1e4) + (1000 if spec.has_offsets else 0), 1, None)
            assert np.array_equal(dn[ok], expect.astype(np.uint16)), b
    if spec.has_offsets:
        with rasterio.open(_item(archive, spec)[0] / "B08.tif") as ds:
            assert ds.read(1)[ds.read(1) > 0].min() > 1000  # offset +1000 DN encoded


def test_catalog_passes_core_stac_schemas_offline(archive):
    import pystac
    from pystac import STACObjectType
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    v = JsonSchemaSTACValidator()  # core STAC 1.1.0 schemas ship with pystac: no network needed
    kinds = {"Feature": STACObjectType.ITEM, "Collection": STACObjectType.COLLECTION,
             "Catalog": STACObjectType.CATALOG}
    paths = [p for p in sorted(archive.rglob("*.json")) if p.name != "tileinfo_metadata.json"]
    assert len(paths) == 4 + 2 + 1  # items, collections, root
    for p in paths:
        d = json.loads(p.read_text())
        v.validate_core(d, kinds[d["type"]], d["stac_version"], str(p))
    cat = pystac.Catalog.from_file(str(archive / "catalog.json"))
    assert len(list(cat.get_items(recursive=True))) == 4


def test_stac_validator_passes_offline_with_vendored_schemas(archive):
    # Only the extensions Earth Search items declare but steps/data/stac-schemas does not vendor
    # (projection v1.1.0 for proj:epsg, sentinel-2 v1.0.0) may be reported, and only as "not vendored".
    from steps.products.stacvalidate import validate_stac

    errors = validate_stac(archive / "catalog.json")
    tolerated = ("https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json",
                 "https://stac-extensions.github.io/projection/v1.1.0/schema.json")
    assert [e for e in errors if not (any(u in e for u in tolerated) and "not vendored" in e)] == []


# ------------------------------------------------------------------------------------------ SAFE
def _tree_paths() -> set[str]:
    out = set()
    for line in (REAL / "safe-layout-T29UNU" / "TREE.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].startswith("S2A_MSIL2A_"):
            out.add(parts[2].rstrip("/"))
    return out


def test_safe_layout_maps_onto_the_real_tree(safes):
    safe = safes["L2A"]
    names = product_names(POST, "L2A")
    assert safe.name == names.product_uri
    assert re.fullmatch(r"S2A_MSIL2A_20240113T034724_N0510_R\d{3}_T47PPR_\d{8}T\d{6}\.SAFE", safe.name)
    assert re.fullmatch(r"L2A_T47PPR_A\d{6}_\d{8}T\d{6}", names.granule_dir)
    real = {  # our identifiers -> the real product's, so every path we write must be in TREE.txt
        names.product_uri: "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE",
        names.granule_dir: "L2A_T29UNU_A038058_20221005T115407",
        names.file_stem: "T29UNU_20221005T115411",
    }
    tree = _tree_paths()
    ours = list(safe.rglob("*"))
    mapped = set()
    for p in ours:
        rel = f"{safe.name}/{p.relative_to(safe).as_posix()}"
        for a, b in real.items():
            rel = rel.replace(a, b)
        mapped.add(rel)
    assert mapped - tree == set()
    img = {p for p in mapped if p.endswith(".jp2")}
    assert len(img) == 4 + 11 + 12  # every band file of R10m/R20m/R60m incl. SCL_20m and SCL_60m
    assert {p for p in tree if p.endswith(".jp2") and "/IMG_DATA/" in p and re.search(r"_(B..|SCL)_\d\dm", p)} == img


def test_safe_jp2_are_lossless_without_nodata_and_equal_the_cogs(safes, archive):
    from steps.sentinel2.safe import open_safe, verify_manifest

    prod = open_safe(safes["L2A"])
    assert (prod.level, prod.product_id) == ("L2A", product_names(POST, "L2A").product_id)
    assert prod.missing_files() == [] and verify_manifest(prod) == []
    assert prod.resolutions("B04") == [10, 20, 60] and prod.resolutions("SCL") == [20, 60]
    d, _ = _item(archive, POST)
    for band, res in (("B04", 10), ("B8A", 20), ("B09", 60), ("SCL", 20)):
        with rasterio.open(prod.href(band, res)) as jp2, rasterio.open(d / f"{band}.tif") as cog:
            assert jp2.driver == "JP2OpenJPEG" and jp2.nodata is None
            assert jp2.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION_REVERSIBILITY") == "LOSSLESS"
            assert jp2.crs.to_epsg() == 32647 and jp2.transform == cog.transform
            assert np.array_equal(jp2.read(1), cog.read(1)), band
    with rasterio.open(prod.href("B04", 20)) as b20, rasterio.open(prod.href("SCL", 60)) as s60:
        assert b20.shape == (SIZE // 2,) * 2 and s60.shape == (SIZE // 6,) * 2
    l1c = open_safe(safes["L1C"])
    assert l1c.level == "L1C" and l1c.missing_files() == []
    with rasterio.open(l1c.href("B10")) as b10, rasterio.open(_item(archive, POST, "L1C")[0] / "B10.tif") as cog:
        assert np.array_equal(b10.read(1), cog.read(1))


def test_safe_zip_holds_one_top_level_safe_folder_like_a_cdse_download(safes):
    from steps.sentinel2.safe import open_safe

    z = safes["zip"]
    assert z.name == product_names(POST, "L2A").product_id + ".zip" and z.is_file()
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {product_names(POST, "L2A").product_uri}
    files = {n.split("/", 1)[1] for n in names if not n.endswith("/")}
    assert files == {p.relative_to(safes["L2A"]).as_posix() for p in safes["L2A"].rglob("*") if p.is_file()}
    prod = open_safe(z)
    with rasterio.open(prod.href("B04", 10)) as ds, rasterio.open(open_safe(safes["L2A"]).href("B04", 10)) as ref:
        assert np.array_equal(ds.read(1), ref.read(1))


def test_fill_safe_skeleton_uses_the_real_xml_and_its_grid(tmp_path):
    from steps.sentinel2.safe import open_safe

    safe = synth.fill_safe_skeleton(T46RER / "MTD_MSIL1C.xml", T46RER / "MTD_TL.xml", tmp_path,
                                    resolutions=(60,), seed=1)
    assert safe.name == "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248.SAFE"
    assert (safe / "MTD_MSIL1C.xml").read_bytes() == (T46RER / "MTD_MSIL1C.xml").read_bytes()
    assert (safe / "GRANULE/L1C_T46RER_A032448_20210908T043714/MTD_TL.xml").read_bytes() == (
        T46RER / "MTD_TL.xml").read_bytes()
    prod = open_safe(safe)
    assert prod.level == "L1C" and len(prod.missing_files()) == 11  # only B01, B09, B10 are 60 m (no TCI)
    with rasterio.open(prod.href("B09")) as ds:
        assert ds.shape == (1830, 1830) and ds.crs.to_epsg() == 32646 and ds.nodata is None
        # the Geoposition of the real MTD_TL.xml
        assert (ds.transform.c, ds.transform.f, ds.transform.a) == (499980.0, 3100020.0, 60.0)
        dn = ds.read(1)
    assert dn.dtype == np.uint16 and 0 < np.median(dn) < 6000  # PB 03.01: no offset in the DN
    sevens = {(b, 60): np.full((1830, 1830), 7, np.uint16) for b in ("B01", "B09", "B10")}
    given = synth.fill_safe_skeleton(T46RER / "MTD_MSIL1C.xml", T46RER / "MTD_TL.xml", tmp_path / "given",
                                     resolutions=(60,), arrays=sevens)
    with rasterio.open(open_safe(given).href("B10")) as ds:
        assert int(ds.read(1).max()) == 7
    with pytest.raises(ValueError, match="Size"):
        synth.fill_safe_skeleton(T46RER / "MTD_MSIL1C.xml", T46RER / "MTD_TL.xml", tmp_path / "bad",
                                 resolutions=(60,), arrays={(b, 60): np.zeros((5, 5), np.uint16)
                                                            for b in ("B01", "B09", "B10")})


@pytest.mark.slow
def test_fill_safe_skeleton_t29unu_at_60m_zip_and_dir(tmp_path):
    from steps.sentinel2.safe import open_safe

    z = synth.fill_safe_skeleton(T29UNU / "MTD_MSIL2A.xml", T29UNU_TL, tmp_path, resolutions=(60,), zip=True)
    prod = open_safe(z)
    assert prod.level == "L2A" and prod.resolutions("B04") == [10, 20, 60]
    with rasterio.open(prod.href("B04", 60)) as ds, rasterio.open(prod.href("SCL", 60)) as scl:
        dn, classes = ds.read(1), scl.read(1)
        assert ds.shape == (1830, 1830) and (ds.transform.c, ds.transform.f) == (499980.0, 5900040.0)
    assert dn.min() > 1000  # PB 04.00: BOA_ADD_OFFSET −1000 encoded, as in the real product
    assert set(np.unique(classes)) <= {3, 4, 5, 6, 8, 9, 10}


# ------------------------------------------------------------------------------------------ CLI plugin
def test_synth_cli_writes_archive_and_safes(tmp_path):
    from click.testing import CliRunner

    from synthesizer.cli import synth as synth_cmd

    res = CliRunner().invoke(synth_cmd, ["--out", str(tmp_path / "a"), "--tiles", "47PPR", "--start", "2024-01-01",
                                         "--end", "2024-01-01", "--size", "12", "--safe", str(tmp_path / "s"),
                                         "--zip"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "catalog.json").exists()
    assert len(list((tmp_path / "s").glob("S2?_MSIL2A_*.zip"))) == 1
    assert len(list((tmp_path / "s").glob("S2?_MSIL1C_*.zip"))) == 1
    # through the raw2ready group (the plugin as installed): a usage error, one line, nothing written
    from r2r_helpers import invoke_cli

    bad = invoke_cli("synth", "--out", str(tmp_path / "b"), "--size", "10")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.strip() == "raw2ready: usage error: --size 10: must be a multiple of 6 between 6 and 10980"
    assert not (tmp_path / "b").exists()


def test_synth_and_demo_are_registered_as_plugin_commands():
    import tomllib

    eps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["entry-points"]
    assert eps["raw2ready.commands"]["synth"] == "synthesizer.cli:synth"
    assert eps["raw2ready.commands"]["demo"] == "synthesizer.cli:demo"
    import steps.cli

    assert "synth" not in steps.cli.main.commands and "demo" not in steps.cli.main.commands


# ------------------------------------------------------------------------------------------ scene model
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
        assert np.isnan(arr).sum() == a.nodata[BANDS[b].resolution].sum(), b
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
    with pytest.raises(ValueError, match="baseline"):
        SceneSpec("47PPR", T, processing_baseline="5.1")


def test_s2cloudless_agrees_with_truth_on_l1c_toa():
    from s2cloudless import S2PixelCloudDetector

    from steps.sentinel2.bands import S2CLOUDLESS_BANDS

    a = synth.render_scene(replace(POST, cirrus=0.0), 600, seed=4)

    def at60(b: str) -> np.ndarray:
        arr = a.toa[b]
        f = 60 // BANDS[b].resolution
        n = arr.shape[0] // f
        return arr.reshape(n, f, n, f).mean(axis=(1, 3))

    x = np.nan_to_num(np.stack([at60(b) for b in S2CLOUDLESS_BANDS], axis=-1))[None]
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


def test_item_geometry_excludes_the_no_data_beyond_the_swath_edge(archive):
    _, item = _item(archive, POST)
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 4 + 1  # the edge crosses the top and bottom sides
    full = synth.data_footprint_lonlat(replace(POST, swath_edge=False), SIZE)
    assert max(p[0] for p in ring) < max(p[0] for p in full)
    assert item["bbox"][2] == pytest.approx(max(p[0] for p in ring))
    # ring is counter-clockwise (positive shoelace area)
    area = sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(ring))
    assert area > 0


def test_stac_archive_and_safe_of_the_same_scene_give_identical_products(archive, safes, tmp_path):
    # the demo, the tests and real data run the same pipeline: the scene read from the Earth Search–shaped
    # STAC archive (COGs) and from its SAFE products (JP2, L2A + L1C) must give the same pixels
    from click.testing import CliRunner

    from steps.cli import main

    outs = {}
    for name, source in (("stac", archive / "catalog.json"), ("safe", safes["L2A"].parent)):
        outs[name] = tmp_path / name
        res = CliRunner().invoke(main, ["-q", "run", "--source", str(source), "--tiles", "47PPR", "--start",
                                        "2024-01-13", "--end", "2024-01-13", "--out", str(outs[name]),
                                        "--workers", "1"])
        assert res.exit_code == 0, res.output
    scene = f"S2A_47PPR_{POST.datetime:%Y%m%dT%H%M%S}"
    for product in ("ndvi.tif", "lai.tif", "cloud_mask.tif"):
        a, b = (next(outs[n].rglob(f"{scene}/{product}")) for n in ("stac", "safe"))
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert x.transform == y.transform and np.array_equal(x.read(1), y.read(1)), product
