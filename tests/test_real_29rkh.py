"""A real Earth Search v1 item with its real (decimated) COGs through ``raw2ready run``.

Fixture: ``tests/data/real/rio-tiler-pds/S2A_29RKH_20200219_0_L2A`` (see ``tests/data/real/PROVENANCE.md``):
the item as Earth Search v1 publishes it (PB 02.14, ``raster:bands`` scale 0.0001 offset 0,
``earthsearch:boa_offset_applied: false``) and the band COGs of that scene decimated ×10 by rio-tiler-pds
(10 m bands at 100 m, 20 m bands at 200 m). The item's hrefs point at AWS; the test points each asset at the
local file of the same name and drops the assets that have no local copy (granule/tileinfo metadata,
thumbnail, JP2 twins), exactly what a user with a partial local mirror would feed in.

Checks: the run exits 0 and writes valid COGs and a valid STAC catalog; the radiometry decision and its source
are recorded; the output grids are the files' (100 m NDVI, 200 m LAI/mask); the SCL-derived cloud cover is
within 0.1 percentage point of the item's ``eo:cloud_cover``; NDVI and LAI equal values computed by hand from
the band files with rasterio/numpy and the SNAP network (independent of the pipeline's readers).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

DATA = Path(__file__).parent / "data" / "real" / "rio-tiler-pds" / "S2A_29RKH_20200219_0_L2A"
ITEM_ID = "S2A_29RKH_20200219_0_L2A"


def local_mirror(dest: Path) -> Path:
    """Copy the item and its band files to ``dest`` as a static catalog; hrefs point at the local files."""
    dest.mkdir(parents=True, exist_ok=True)
    item = json.loads((DATA / f"{ITEM_ID}.json").read_text())
    local = {p.name for p in DATA.glob("*.tif")}
    assets = {}
    for key, asset in item["assets"].items():
        name = asset["href"].rsplit("/", 1)[-1]
        if name in local and not key.endswith("-jp2"):
            shutil.copyfile(DATA / name, dest / name)
            assets[key] = {**asset, "href": f"./{name}"}
    item["assets"] = assets
    item["links"] = [{"rel": "collection", "href": "./collection.json"}, {"rel": "root", "href": "./catalog.json"},
                     {"rel": "parent", "href": "./collection.json"}]
    (dest / f"{ITEM_ID}.json").write_text(json.dumps(item))
    (dest / "collection.json").write_text(json.dumps({
        "type": "Collection", "stac_version": "1.0.0", "id": "sentinel-2-l2a", "description": "local mirror",
        "license": "proprietary", "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                             "temporal": {"interval": [[None, None]]}},
        "links": [{"rel": "item", "href": f"./{ITEM_ID}.json"}, {"rel": "root", "href": "./catalog.json"}]}))
    (dest / "catalog.json").write_text(json.dumps({
        "type": "Catalog", "stac_version": "1.0.0", "id": "mirror", "description": "local mirror",
        "links": [{"rel": "child", "href": "./collection.json"}]}))
    return dest


@pytest.fixture(scope="module")
def run_29rkh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """The 29RKH scene processed once by ``raw2ready run`` (in-process)."""
    from steps.cli import main

    src = local_mirror(tmp_path_factory.mktemp("mirror"))
    out = tmp_path_factory.mktemp("out")
    res = CliRunner().invoke(main, ["-q", "run", "--source", str(src), "--tiles", "29RKH", "--start", "2020-02-19",
                                    "--end", "2020-02-19", "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    items = list(out.rglob("S2A_29RKH_20200219T113425.json"))
    assert len(items) == 1, sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    return out, json.loads(items[0].read_text()), items[0].parent


def test_real_item_runs_into_valid_cogs_and_catalog(run_29rkh: tuple[Path, dict, Path]) -> None:
    from steps.cli import main

    out, item, _ = run_29rkh
    assert set(item["assets"]) == {"ndvi", "lai", "lai_flags", "cloud_mask"}
    res = CliRunner().invoke(main, ["validate", str(out / "catalog.json"), "--cogs"])
    assert res.exit_code == 0, res.output


def test_radiometry_decision_and_grids_are_recorded(run_29rkh: tuple[Path, dict, Path]) -> None:
    _, item, _ = run_29rkh
    props = item["properties"]
    assert props["raw2ready:radiometry_source"] == "item raster:bands (earthsearch:boa_offset_applied=false)"
    assert props["raw2ready:source_processing_baseline"] == "02.14"
    assert set(props["raw2ready:offsets_applied"].values()) == {0.0}  # PB 02.14: no offset
    expr = props["processing:expression"]["expression"]
    assert expr["grids_m"] == {"10": 100.0, "20": 200.0}
    assert expr["source_format"] == "stac-item:earth-search-v1"
    assert "no granule metadata" in expr["angles"]
    assert item["assets"]["ndvi"]["proj:transform"][:3] == [100.0, 0.0, 199980.0]
    assert item["assets"]["lai"]["proj:transform"][:3] == [200.0, 0.0, 199980.0]
    assert item["assets"]["ndvi"]["proj:shape"] == [1098, 1098]


def test_scl_cloud_cover_matches_the_items_eo_cloud_cover(run_29rkh: tuple[Path, dict, Path]) -> None:
    _, item, _ = run_29rkh
    props = item["properties"]
    assert props["raw2ready:source_cloud_cover"] == pytest.approx(4.051854)
    assert abs(props["raw2ready:scl_cloud_cover"] - 4.051854) <= 0.1
    # and independently of the pipeline, from the SCL file itself
    with rasterio.open(DATA / "SCL.tif") as s:
        scl = s.read(1)
    by_hand = 100.0 * np.isin(scl, (8, 9, 10)).sum() / (scl != 0).sum()
    assert props["raw2ready:scl_cloud_cover"] == pytest.approx(by_hand, abs=1e-4)


def _read(name: str) -> np.ndarray:
    with rasterio.open(DATA / f"{name}.tif") as s:
        return s.read(1)


def test_ndvi_equals_hand_computed_pixels(run_29rkh: tuple[Path, dict, Path]) -> None:
    _, _item, folder = run_29rkh
    with rasterio.open(folder / "ndvi.tif") as s:
        stored = s.read(1)
        assert s.nodata == -32768 and s.scales[0] == pytest.approx(1e-4)
    with rasterio.open(folder / "cloud_mask.tif") as s:
        mask = s.read(1)
    red, nir = _read("B04").astype(np.float64) / 10000, _read("B08").astype(np.float64) / 10000
    clear = np.repeat(np.repeat(mask == 0, 2, axis=0), 2, axis=1)
    rows, cols = np.nonzero(clear & (red > 0) & (nir > 0))
    assert rows.size > 500_000  # the scene is ~96 % clear desert
    pick = np.random.default_rng(7).choice(rows.size, 200, replace=False)
    for r, c in zip(rows[pick], cols[pick], strict=True):
        want = round((nir[r, c] - red[r, c]) / (nir[r, c] + red[r, c]) / 1e-4)
        assert stored[r, c] == want, (r, c)
    # a masked (cloudy) pixel is no data
    cloudy = np.argwhere(~clear)
    assert stored[tuple(cloudy[0])] == -32768


def test_lai_equals_the_snap_network_on_hand_read_inputs(run_29rkh: tuple[Path, dict, Path]) -> None:
    from steps.science.angles import lai_angle_cosines
    from steps.science.lai import BAND_ORDER, compute_lai, load_network

    _, item, folder = run_29rkh
    with rasterio.open(folder / "lai.tif") as s:
        lai = s.read(1, masked=True).astype(np.float64) * s.scales[0]
    with rasterio.open(folder / "cloud_mask.tif") as s:
        mask = s.read(1)
    refl = []
    for b in BAND_ORDER:  # B03, B04 at 100 m: mean of 2×2 valid DNs by hand; the others are at 200 m already
        dn = _read(b).astype(np.float64)
        if dn.shape[0] == 1098:
            blk = dn.reshape(549, 2, 549, 2)
            cnt = (blk > 0).sum(axis=(1, 3))
            dn = np.floor(blk.sum(axis=(1, 3)) / np.maximum(cnt, 1) + 0.5)
        refl.append(dn / 10000)
    stack = np.stack(refl)
    props = json.loads((DATA / f"{ITEM_ID}.json").read_text())["properties"]
    sz, saz = 90 - props["view:sun_elevation"], props["view:sun_azimuth"]
    rows, cols = np.nonzero((mask == 0) & (stack > 0).all(axis=0))
    pick = np.random.default_rng(3).choice(rows.size, 300, replace=False)
    x = stack[:, rows[pick], cols[pick]].astype(np.float32)
    cos_vz, cos_sz, cos_raa = lai_angle_cosines(np.float64(sz), np.float64(saz), np.float64(0.0), np.float64(0.0))
    want, _flags = compute_lai(x, cos_vz, cos_sz, cos_raa, load_network("3_0", "sentinel-2a"), mode="clean")
    got = lai[rows[pick], cols[pick]]
    ok = np.isfinite(want)
    assert ok.sum() > 100
    # one storage quantum (0.001) of slack: the pipeline converts DN in float32, this test in float64
    np.testing.assert_allclose(got[ok].filled(np.nan), want[ok], atol=1e-3 + 1e-9)
    assert item["properties"]["processing:expression"]["expression"]["lai"]["network"].startswith("3_0")


def test_the_real_scene_enters_the_time_series_store_with_the_cogs_values(
        run_29rkh: tuple[Path, dict, Path]) -> None:
    """The real scene's store (written by the run's catalog step) holds every product's stored integers,
    read with zarr and compared with rasterio; the server's direct reader agrees on a window."""
    import numpy as np
    import rasterio
    import zarr
    import zarr.storage

    from steps.products.cube import SHARD_INDEXES, CubeReader, check_shard_indexes
    from steps.storage import open_storage

    out, item, folder = run_29rkh
    man = json.loads((out / "cube" / "29RKH" / "manifest.json").read_text())
    (seg,) = man["segments"]
    assert [e["item"] for e in seg["entries"]] == [item["id"]]
    store = zarr.storage.LocalStore(out / "cube" / "29RKH" / "segments" / seg["name"], read_only=True)
    reader = CubeReader(open_storage(str(out)))
    sums = {k: a["file:checksum"] for k, a in item["assets"].items()}
    for key in ("ndvi", "lai", "lai_flags", "cloud_mask"):
        with rasterio.open(folder / item["assets"][key]["href"].removeprefix("./")) as ds:
            cog = ds.read(1)
        held = np.asarray(zarr.open_array(store, path=key, mode="r")[0])
        np.testing.assert_array_equal(held, cog, err_msg=key)
        where = reader.held("29RKH", {item["id"]: sums}, key)
        np.testing.assert_array_equal(reader.read("29RKH", key, where, 30, 40, 50, 60)[item["id"]],
                                      cog[30:80, 40:100], err_msg=key)
        # the one-object index of every shard, which the reader used above, equals the shards' own indexes
        assert (out / "cube" / "29RKH" / "segments" / seg["name"] / key / SHARD_INDEXES).is_file(), key
        check_shard_indexes(open_storage(str(out)), "29RKH", seg["name"], key)
