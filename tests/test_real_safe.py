"""A ``.SAFE`` directory and its CDSE-style ``.zip`` as ``run --source``: same products, right values.

The product is built in the test from the REAL metadata of S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU
(``tests/data/real/safe-layout-T29UNU``: MTD_MSIL2A.xml with PB 04.00 and ``BOA_ADD_OFFSET`` −1000, MTD_TL.xml
with the tile's geocoding and angle grids) copied byte for byte into the real SAFE layout of its ``TREE.txt``,
plus synthetic JPEG 2000 rasters for the files the real fixture held: the 60 m bands and SCL
(``synthesizer.safe.fill_safe_skeleton``). So the products are 60 m (the finest the source has) and the NDVI's
NIR band is B8A (an L2A SAFE has no 60 m B08).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

REAL = Path(__file__).parent / "data" / "real" / "safe-layout-T29UNU"
SAFE_NAME = "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
GRANULE = "GRANULE/L2A_T29UNU_A038058_20221005T115407"
SCENE = "S2A_29UNU_20221005T115649"  # platform + tile + the granule's SENSING_TIME (MTD_TL.xml)


@pytest.fixture(scope="module")
def safe_dir_and_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from synthesizer.safe import fill_safe_skeleton, zip_safe

    root = tmp_path_factory.mktemp("safe")
    safe = fill_safe_skeleton(REAL / SAFE_NAME / "MTD_MSIL2A.xml", REAL / SAFE_NAME / GRANULE / "MTD_TL.xml",
                              root / "dir", resolutions=(60,), seed=0)
    (root / "zip").mkdir()
    copy = root / "zip" / safe.name
    shutil.copytree(safe, copy)
    z = zip_safe(copy, root / "zip" / (safe.name.removesuffix(".SAFE") + ".zip"))
    assert z.is_file() and z.suffix == ".zip"
    return safe, z


def _run(source: Path, out: Path) -> dict:
    from steps.cli import main

    res = CliRunner().invoke(main, ["-q", "run", "--source", str(source), "--tiles", "29UNU", "--start",
                                    "2022-10-05", "--end", "2022-10-05", "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    (item_path,) = out.rglob(f"{SCENE}.json")
    return json.loads(item_path.read_text())


@pytest.fixture(scope="module")
def runs(safe_dir_and_zip: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    safe, z = safe_dir_and_zip
    out = {}
    for name, src in (("dir", safe), ("zip", z), ("folder", z.parent)):
        o = tmp_path_factory.mktemp(f"out-{name}")
        out[name] = (o, _run(src, o))
    return out


def test_safe_zip_and_folder_give_the_same_products(runs: dict[str, tuple[Path, dict]]) -> None:
    (d_out, d_item), (z_out, z_item), (_f_out, f_item) = runs["dir"], runs["zip"], runs["folder"]

    def strip(item: dict) -> dict:  # the derived_from link names the source path, which differs by design
        return {**item, "links": [lk for lk in item["links"] if lk["rel"] != "derived_from"]}

    assert strip(d_item) == strip(z_item) == strip(f_item)
    for key in ("ndvi", "lai", "lai_flags", "cloud_mask"):
        (a,) = d_out.rglob(f"{SCENE}/{key}.tif")
        (b,) = z_out.rglob(f"{SCENE}/{key}.tif")
        assert a.read_bytes() == b.read_bytes(), key
    assert next(lk["href"] for lk in z_item["links"] if lk["rel"] == "derived_from").endswith(".zip")


def test_safe_products_record_real_metadata_decisions(runs: dict[str, tuple[Path, dict]]) -> None:
    _, item = runs["dir"]
    props = item["properties"]
    expr = props["processing:expression"]["expression"]
    assert props["raw2ready:radiometry_source"] == "product metadata BOA_ADD_OFFSET"
    assert props["raw2ready:source_processing_baseline"] == "04.00"
    assert set(props["raw2ready:offsets_applied"].values()) == {-0.1}
    assert props["raw2ready:source_cloud_cover"] == pytest.approx(59.769726)  # Cloud_Coverage_Assessment
    assert expr["source_format"] == "safe"
    assert expr["grids_m"] == {"10": 60.0, "20": 60.0}
    assert expr["angles"].startswith("granule metadata MTD_TL.xml")
    assert expr["ndvi"].startswith("(B8A - B04)")
    assert item["assets"]["ndvi"]["proj:shape"] == [1830, 1830]
    assert item["assets"]["ndvi"]["proj:transform"][:6] == [60.0, 0.0, 499980.0, 0.0, -60.0, 5900040.0]
    assert item["properties"]["proj:code"] == "EPSG:32629"


def test_safe_ndvi_equals_hand_computed_pixels_with_the_offset(runs: dict[str, tuple[Path, dict]],
                                                               safe_dir_and_zip: tuple[Path, Path]) -> None:
    out, _ = runs["dir"]
    safe, _ = safe_dir_and_zip
    img = safe / GRANULE / "IMG_DATA" / "R60m"
    with rasterio.open(next(img.glob("*_B04_60m.jp2"))) as s:
        red = s.read(1).astype(np.float64)
        assert s.nodata is None  # like ESA's JPEG 2000: DN 0 is no data by the product metadata only
    with rasterio.open(next(img.glob("*_B8A_60m.jp2"))) as s:
        nir = s.read(1).astype(np.float64)
    (ndvi_path,) = out.rglob(f"{SCENE}/ndvi.tif")
    (mask_path,) = out.rglob(f"{SCENE}/cloud_mask.tif")
    with rasterio.open(ndvi_path) as s:
        stored = s.read(1)
    with rasterio.open(mask_path) as s:
        mask = s.read(1)
    rho_r, rho_n = (red - 1000) / 10000, (nir - 1000) / 10000  # BOA_ADD_OFFSET −1000, quantification 10000
    ok = (mask == 0) & (red > 0) & (nir > 0) & (rho_r >= 0) & (rho_n >= 0) & (rho_r + rho_n > 0)
    rows, cols = np.nonzero(ok)
    assert rows.size > 10_000
    pick = np.random.default_rng(11).choice(rows.size, 300, replace=False)
    for r, c in zip(rows[pick], cols[pick], strict=True):
        want = round((rho_n[r, c] - rho_r[r, c]) / (rho_n[r, c] + rho_r[r, c]) / 1e-4)
        assert abs(int(stored[r, c]) - want) <= 1, (r, c)  # float32 in the pipeline, float64 here
    assert (stored[(red == 0) | (nir == 0)] == -32768).all()
