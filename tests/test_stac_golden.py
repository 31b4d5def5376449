"""The derived STAC JSON is pinned byte for byte: item sidecars (``build_item``) and the catalog tree and index
(``rebuild_catalog``) must equal the goldens in ``tests/data/stac-golden`` (see the README there).

The scenes are plain test objects carrying only what an item is built from, so the goldens do not depend on
ingest, the rasters or the synthesizer. Regenerate (only for an intended change of the products, and say so
in the commit): ``R2R_REGEN_STAC_GOLDEN=1 .venv/bin/pytest -p no:xdist -q tests/test_stac_golden.py``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystac
import pytest
from affine import Affine
from pystac.extensions.file import FileExtension
from pystac.extensions.grid import GridExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension

import steps
from steps.products.catalog import dumps, item_key, rebuild_catalog, record_skip
from steps.products.items import build_item
from steps.products.raster import Grid
from steps.products.stacext import ProcessingExtension, stac_dict
from steps.products.stacvalidate import schema_map
from steps.storage import LocalStorage
from steps.times import parse_datetime

GOLDEN = Path(__file__).parent / "data" / "stac-golden"
REGEN = os.environ.get("R2R_REGEN_STAC_GOLDEN") == "1"


@dataclass(frozen=True)
class _Band:
    scale: float
    offset: float


@dataclass(frozen=True)
class _Radiometry:
    source: str
    detail: str = ""
    l1c_source: str = ""


@dataclass(frozen=True)
class _Angles:
    source: str


@dataclass
class _Scene:
    """What an item is built from (the fields of the pipeline's scene manifest that ``build_item`` reads)."""

    scene_id: str
    tile: str
    datetime: str
    platform: str
    processing_baseline: str
    l2a_id: str
    l2a_href: str
    epsg: int
    ulx: float
    uly: float
    extent_m: tuple[float, float]
    grid_res: dict[int, float]
    source_format: str
    bands: dict[str, _Band]
    radiometry: _Radiometry
    angles: _Angles
    l1c_id: str = ""
    l1c_href: str = ""
    l1c_bands: dict[str, _Band] = field(default_factory=dict)
    ndvi_nir_band: str = "B08"
    cloud_cover: float | None = None

    def __post_init__(self) -> None:
        # the cases spell times as the manifests do; the scene holds an aware datetime, like SceneRef
        self.datetime = parse_datetime(self.datetime)

    def grid(self, res: int) -> Grid:
        size = float(self.grid_res.get(res, res))
        return Grid(f"EPSG:{self.epsg}", Affine(size, 0.0, self.ulx, 0.0, -size, self.uly),
                    (round(self.extent_m[0] / size), round(self.extent_m[1] / size)))


def _assets(keys: list[str], seed: int) -> dict[str, dict[str, Any]]:
    return {k: {"href": f"./{k}.tif", "checksum": "1220" + f"{seed:02x}{i:02x}" * 16, "size": 1000 * seed + i}
            for i, k in enumerate(keys)}


_MASK_PROV: dict[str, Any] = {
    "method": "s2cloudless+scl+b10", "b10_cirrus_threshold": 0.012,
    "s2cloudless": {"model": "pixel_s2_cloud_detector_lightGBM_v0.1.txt", "resolution_m": 60, "threshold": 0.4},
    "scl_classes": {"cloud": [8, 9], "shadow": [3]}, "scl_cloud_cover_pct": 18.7786,
    "software": {"lightgbm": "4.7.0", "s2cloudless": "1.7.3"},
}
_LAI_PROV: dict[str, Any] = {
    "network": "3_0/S2A", "negative_reflectance_px": 159, "platform": "sentinel-2a",
    "software": {"snap-biophysical-networks": "3_0/S2A (opttbx-biophysical auxdata)"},
}


def _cases() -> list[tuple[_Scene, dict[str, dict[str, Any]], float, dict[str, Any], dict[str, Any],
                           dict[str, Any] | None]]:
    """(scene, assets, clear_fraction, mask_prov, lai_prov, ndvi_prov) of each pinned item."""
    offsets = {b: _Band(0.0001, -0.1) for b in ("B08", "B04", "B03", "B8A", "B11")}
    full = _Scene(
        scene_id="S2A_47PQR_20240113T034720", tile="47PQR", datetime="2024-01-13T03:47:20.024000Z",
        platform="sentinel-2a", processing_baseline="05.10", l2a_id="S2A_47PQR_20240113_0_L2A",
        l2a_href="s3://archive/sentinel-2-c1-l2a/S2A_47PQR_20240113_0_L2A/S2A_47PQR_20240113_0_L2A.json",
        epsg=32647, ulx=699960.0, uly=1600020.0, extent_m=(6000.0, 6000.0), grid_res={10: 10.0, 20: 20.0, 60: 60.0},
        source_format="stac-item:earth-search-c1", bands=offsets,
        radiometry=_Radiometry("item raster:bands (earthsearch:boa_offset_applied=false)", "raw DN",
                               "item raster:bands (earthsearch:boa_offset_applied=absent)"),
        angles=_Angles("granule metadata MTD_TL.xml"), l1c_id="S2A_47PQR_20240113_0_L1C",
        l1c_href="s3://archive/sentinel-2-l1c/S2A_47PQR_20240113_0_L1C/S2A_47PQR_20240113_0_L1C.json",
        l1c_bands={b: _Band(0.0001, -0.1) for b in ("B10", "B01")}, cloud_cover=18.778589)
    same_month = _Scene(
        scene_id="S2A_47PPR_20240113T034720", tile="47PPR", datetime="2024-01-13T03:47:20.024000Z",
        platform="sentinel-2a", processing_baseline="05.10", l2a_id="S2A_47PPR_20240113_0_L2A",
        l2a_href="../archive/S2A_47PPR_20240113_0_L2A.json", epsg=32647, ulx=600000.0, uly=1600020.0,
        extent_m=(6000.0, 6000.0), grid_res={10: 10.0, 20: 20.0}, source_format="safe", bands=offsets,
        radiometry=_Radiometry("product metadata BOA_ADD_OFFSET"), angles=_Angles("MTD_TL.xml"),
        l1c_id="S2A_47PPR_20240113_0_L1C", l1c_href="../archive/S2A_47PPR_20240113_0_L1C.json", cloud_cover=0.0)
    # before PB 04.00 (no offsets), no L1C, B8A as NIR, no stated cloud cover, whole-second time, 20 m only
    old = _Scene(
        scene_id="S2B_47PPR_20211209T034720", tile="47PPR", datetime="2021-12-09T03:47:20Z",
        platform="sentinel-2b", processing_baseline="03.01", l2a_id="S2B_47PPR_20211209_0_L2A",
        l2a_href="/archive/S2B_47PPR_20211209_0_L2A.json", epsg=32647, ulx=600000.0, uly=1600020.0,
        extent_m=(6000.0, 6000.0), grid_res={10: 20.0, 20: 20.0}, source_format="stac-item:earth-search-v1",
        bands={b: _Band(0.0001, 0.0) for b in ("B8A", "B04")}, radiometry=_Radiometry("processing baseline"),
        angles=_Angles("scene means from the item"), ndvi_nir_band="B8A")
    # a non-integer pixel size, southern hemisphere, another quarter, NDVI only
    odd = _Scene(
        scene_id="S2C_33HXX_20230704T090601", tile="33HXX", datetime="2023-07-04T09:06:01.500000Z",
        platform="sentinel-2c", processing_baseline="05.09", l2a_id="S2C_33HXX_20230704_0_L2A",
        l2a_href="https://example.com/S2C_33HXX_20230704_0_L2A.json", epsg=32733, ulx=600000.0, uly=6200020.0,
        extent_m=(1000.0, 1000.0), grid_res={10: 12.5, 20: 25.0}, source_format="stac-item:earth-search-c1",
        bands={"B08": _Band(0.0001, -0.1), "B04": _Band(0.0001, -0.1)}, radiometry=_Radiometry("item"),
        angles=_Angles("none"), cloud_cover=55.5)
    four = ["cloud_mask", "lai", "lai_flags", "ndvi"]
    return [
        (full, _assets(four, 1), 0.627794, _MASK_PROV, _LAI_PROV,
         {"negative_reflectance_px": 0}),
        (same_month, _assets(four, 2), 1.0, _MASK_PROV, _LAI_PROV, None),
        (old, _assets(["ndvi", "cloud_mask"], 3), 0.25, {"method": "scl"}, {}, {"negative_reflectance_px": 7}),
        (odd, _assets(["ndvi"], 4), 0.5, {}, {}, {}),
    ]


@pytest.fixture(autouse=True)
def _fixed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """``processing:software`` names the package version: pin it, so a release does not change the goldens."""
    monkeypatch.setattr(steps, "__version__", "0.1.0")


def _check(tree: dict[str, bytes], golden: Path) -> None:
    """``tree`` (relative key → bytes) equals the files below ``golden`` (or rewrites them when regenerating)."""
    if REGEN:
        for key, data in tree.items():
            (golden / key).parent.mkdir(parents=True, exist_ok=True)
            (golden / key).write_bytes(data)
    on_disk = {p.relative_to(golden).as_posix(): p.read_bytes() for p in sorted(golden.rglob("*.json"))}
    assert sorted(tree) == sorted(on_disk)
    for key in sorted(tree):
        assert tree[key] == on_disk[key], f"{key} differs from its golden in {golden}"


def _published(tmp_path: Path) -> LocalStorage:
    storage = LocalStorage(tmp_path / "out")
    for scene, assets, clear, mask, lai, ndvi in _cases():
        item = build_item(scene, assets, clear, mask, lai, ndvi)
        storage.write_bytes(item_key(scene.datetime, scene.scene_id), dumps(item))
    skipped = {"scene_id": "S2B_47PPR_20220123T034720", "tile": "47PPR", "datetime": "2022-01-23T03:47:20.024000Z",
               "l2a_id": "S2B_47PPR_20220123_0_L2A", "l1c_id": "S2B_47PPR_20220123_0_L1C"}
    record_skip(storage, skipped, "fully clouded: no clear pixel", {"mask_method": "s2cloudless+scl+b10"})
    return storage


def _files(storage: LocalStorage) -> dict[str, bytes]:
    return {key: storage.read_bytes(key) for key in storage.list("") if key.endswith(".json")}


def test_items_and_catalog_tree_equal_the_goldens(tmp_path: Path) -> None:
    """Every item sidecar, skip record, catalog node, the collection and the index, byte for byte."""
    storage = _published(tmp_path)
    res = rebuild_catalog(storage)
    assert (res.items, res.skipped) == (4, 1)
    _check(_files(storage), GOLDEN / "tree")


def test_empty_catalog_equals_the_golden(tmp_path: Path) -> None:
    """With no item yet: root catalog, a collection with the whole-world extent and no assets, an empty index."""
    storage = LocalStorage(tmp_path / "empty")
    rebuild_catalog(storage)
    _check(_files(storage), GOLDEN / "empty")


def test_rebuild_is_a_fixed_point(tmp_path: Path) -> None:
    """A second rebuild writes nothing: the bytes derive from the sidecars alone."""
    storage = _published(tmp_path)
    rebuild_catalog(storage)
    before = _files(storage)
    res = rebuild_catalog(storage)
    assert res.written == 0 and res.removed == 0
    assert _files(storage) == before


@pytest.mark.parametrize("index", range(4))
def test_build_item_is_pure(index: int) -> None:
    """The same scene and assets give the same bytes (no wall-clock time, no hidden state)."""
    case = _cases()[index]
    first = dumps(build_item(*case))
    assert dumps(build_item(*_cases()[index])) == first


def test_pystac_reads_and_writes_back_the_same_bytes() -> None:
    """A reader using pystac gets the products' objects unchanged: read → :func:`stac_dict` → same bytes."""
    checked = 0
    for path in sorted((GOLDEN / "tree").rglob("*.json")):
        if path.name.endswith(".skipped.json") or path.name == "index.json":
            continue
        obj = pystac.read_dict(json.loads(path.read_bytes()))
        assert isinstance(obj, pystac.Item | pystac.Catalog)
        assert dumps(stac_dict(obj)) == path.read_bytes(), path
        checked += 1
    assert checked == 15


def test_every_declared_extension_is_vendored_for_offline_validation() -> None:
    """The schema URLs the products declare (pystac's extension classes and our processing class) are vendored,
    so a pystac upgrade that moves an extension to another version fails here, not at ``raw2ready validate``."""
    declared = {cls.get_schema_uri() for cls in (FileExtension, GridExtension, ProjectionExtension,
                                                  RasterExtension, ProcessingExtension)}
    written = set()
    for path in (GOLDEN / "tree").rglob("*.json"):
        written |= set(json.loads(path.read_bytes()).get("stac_extensions", []))
    assert written == declared
    assert declared <= set(schema_map())
