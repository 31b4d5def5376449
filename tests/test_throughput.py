"""The optimized pipeline produces what the naive reference (``bench/naive_pipeline.py``) produces.

The optimized steps (threaded band reads, striped NDVI, LAI on the clear pixels only, work rasters written
directly as COGs, publish by validate+copy) must not change a product. Tolerances (``docs/BENCHMARKS.md``):

* NDVI and LAI: at most 1 stored unit (1e-4 NDVI, 1e-3 m²/m² LAI) — the reference computes in float64, the
  pipeline in float32; the two roundings meet on a tie for ~0.02 % of the pixels;
* LAI flags: identical;
* cloud mask: identical, on the SCL path (scene without L1C) and with L1C, where the pipeline's s2cloudless
  evaluator (the compiled model, proven equal) gives the same mask as s2cloudless's own detector.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

ROOT = Path(__file__).resolve().parents[1]
SIZE = 600  # 10 m pixels (multiple of 6): 6 km square, big enough for clouds, swath edge and dilations


def _naive():
    spec = importlib.util.spec_from_file_location("r2r_naive_pipeline", ROOT / "bench" / "naive_pipeline.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cloudy scene with an L1C pair (s2cloudless path) and one without (SCL path), baseline 05.10."""
    from synthesizer import SceneSpec, synthesize_archive

    root = tmp_path_factory.mktemp("tp_archive")
    specs = [
        SceneSpec(tile="47PPR", datetime=datetime(2024, 1, 13, 3, 47, 20, tzinfo=UTC), cloud_cover=0.25,
                  cirrus=0.08, swath_edge=True),
        SceneSpec(tile="47PPR", datetime=datetime(2024, 1, 18, 3, 47, 20, tzinfo=UTC), platform="sentinel-2b",
                  cloud_cover=0.3, cirrus=0.05, has_l1c=False),
    ]
    return synthesize_archive(root, specs, size=SIZE, seed=3)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _products(out: Path, scene_id: str) -> dict[str, np.ndarray]:
    folder = next((out / "raw2ready-s2-vegetation").rglob(scene_id))
    return {k: _read(folder / f"{k}.tif") for k in ("ndvi", "lai", "lai_flags", "cloud_mask")}


def _run_both(archive: Path, tmp_path: Path, which: int) -> tuple[object, dict[str, np.ndarray], object, object]:
    from steps.pipeline.runner import run_scene
    from steps.pipeline.scene import load_scene
    from steps.sentinel2.source import find_scenes
    from steps.settings import get_settings

    naive = _naive()
    scene_ref = find_scenes(str(archive), ["47PPR"], "2024-01-01", "2024-01-31")[which]
    res = run_scene(scene_ref, str(tmp_path / "ours"), get_settings())
    assert res.status == "done", res.error
    ours = _products(tmp_path / "ours", scene_ref.scene_id)
    ref = naive.run_naive(scene_ref.l2a_href, scene_ref.l1c_href, scene_ref.scene_id, tmp_path / "naive",
                          "s2cloudless" if scene_ref.l1c_href else "scl")
    ref_products = {k: _read(Path(p)) for k, p in ref["products"].items()}
    scene = load_scene(str(tmp_path / "naive" / "work" / scene_ref.scene_id / "scene.json"))
    return scene, ours, ref_products, naive


def _assert_close(ours: dict[str, np.ndarray], ndvi: np.ndarray, lai: np.ndarray, flags: np.ndarray) -> None:
    for key, ref, nodata in (("ndvi", ndvi, -32768), ("lai", lai, -32768)):
        got = ours[key]
        assert np.array_equal(got == nodata, ref == nodata), f"{key}: no-data pixels differ"
        diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
        assert diff.max() <= 1, f"{key}: max difference {diff.max()} stored units"
        assert np.count_nonzero(diff) <= 1e-3 * diff.size, f"{key}: {np.count_nonzero(diff)} pixels differ"
        assert np.count_nonzero(got != nodata) > 0.05 * got.size  # the comparison covered real pixels
    assert np.array_equal(ours["lai_flags"], flags)


def test_products_equal_the_naive_reference_on_the_scl_path(archive: Path, tmp_path: Path) -> None:
    """Without L1C (SCL mask): cloud mask and flags identical, NDVI/LAI within one stored unit."""
    _scene, ours, ref, _ = _run_both(archive, tmp_path, which=1)
    assert np.array_equal(ours["cloud_mask"], ref["cloud_mask"])
    _assert_close(ours, ref["ndvi"], ref["lai"], ref["lai_flags"])


def test_products_equal_the_naive_reference_with_s2cloudless(archive: Path, tmp_path: Path) -> None:
    """With L1C: the mask equals the one made with s2cloudless's own detector, and NDVI/LAI/flags equal the
    float64 reference within one stored unit."""
    from steps.products.definitions import LAI, NDVI

    scene, ours, ref, naive = _run_both(archive, tmp_path, which=0)
    valid = ref["cloud_mask"] != 255
    assert valid.any() and (ref["cloud_mask"][valid] == 1).any()  # s2cloudless found cloud here
    disagree = np.count_nonzero(ours["cloud_mask"] != ref["cloud_mask"])
    assert disagree == 0, f"cloud mask differs on {disagree} pixels"
    mask20 = ours["cloud_mask"]
    ndvi = naive.encode_plain(naive.naive_ndvi(scene, mask20), NDVI)
    lai, flags = naive.naive_lai(scene, mask20)
    _assert_close(ours, ndvi, naive.encode_plain(lai, LAI), flags)


def test_cog_temp_file_compression_changes_no_byte(tmp_path: Path) -> None:
    """``COG_TMP_ENV`` (ZSTD level 1 for the COG driver's temporary overview file) is a speed setting only:
    the written COG equals, byte for byte, the one GDAL writes with its default temporary file."""
    import steps.products.raster as raster
    from steps.products.definitions import LAI, NDVI
    from steps.products.raster import Grid
    from steps.storage import LocalStorage

    rng = np.random.default_rng(7)
    size = 1536  # > 512² blocks, so the file has internal overviews
    grid = Grid("EPSG:32647", rasterio.Affine(10, 0, 600000, 0, -10, 1600020), (size, size))
    smooth = np.cumsum(rng.normal(0, 30, (size, size)), axis=1)
    data = np.clip(smooth, -30000, 30000).astype(np.int16)
    data[:, : size // 5] = NDVI.nodata  # a swath edge
    out: dict[str, bytes] = {}
    for label, env in (("fast", dict(raster.COG_TMP_ENV)), ("default", {})):
        storage = LocalStorage(tmp_path / label)
        original = dict(raster.COG_TMP_ENV)
        raster.COG_TMP_ENV.clear()
        raster.COG_TMP_ENV.update(env)
        try:
            for product in (NDVI, LAI):
                raster.write_gtiff(storage, f"{product.key}.tif", data, grid, product)
                out[f"{label}-{product.key}"] = (tmp_path / label / f"{product.key}.tif").read_bytes()
        finally:
            raster.COG_TMP_ENV.clear()
            raster.COG_TMP_ENV.update(original)
    with rasterio.open(tmp_path / "fast" / "ndvi.tif") as src:
        assert src.overviews(1), "the test image must have overviews"
    for product in (NDVI, LAI):
        assert out[f"fast-{product.key}"] == out[f"default-{product.key}"], product.key
