"""``--resolution``: products on a coarser grid, averaged without no data, and refused finer than the source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner


def _run(args: list[str]) -> tuple[int, str]:
    from steps.cli import main

    res = CliRunner().invoke(main, ["-q", "run", *args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def at20(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("res20")
    code, text = _run(["--source", str(demo_archive), "--tiles", "47PPR", "--start", "2024-01-13", "--end",
                       "2024-01-13", "--out", str(out), "--workers", "1", "--resolution", "20"])
    assert code == 0, text
    return out


def test_resolution_20_puts_ndvi_on_the_20m_grid_and_records_it(at20: Path, processed: Path) -> None:
    (item_path,) = at20.rglob("S2A_47PPR_20240113T034720.json")
    item = json.loads(item_path.read_text())
    (ref_path,) = processed.rglob("S2A_47PPR_20240113T034720.json")
    ref = json.loads(ref_path.read_text())
    assert item["properties"]["processing:expression"]["expression"]["grids_m"] == {"10": 20.0, "20": 20.0}
    assert item["assets"]["ndvi"]["proj:transform"][0] == 20.0
    assert item["assets"]["ndvi"]["raster:bands"][0]["spatial_resolution"] == 20
    assert item["assets"]["ndvi"]["proj:shape"] == [s // 2 for s in ref["assets"]["ndvi"]["proj:shape"]]
    # LAI and the mask do not change with --resolution 20 (they are 20 m anyway)
    for key in ("lai", "cloud_mask"):
        assert (item_path.parent / f"{key}.tif").read_bytes() == (ref_path.parent / f"{key}.tif").read_bytes()


def test_resolution_20_ndvi_uses_valid_dn_block_means(at20: Path, demo_archive: Path) -> None:
    """Each 20 m NDVI pixel = NDVI of the 2×2 means of the valid 10 m DNs (rounded half up), by hand."""
    (item_path,) = at20.rglob("S2A_47PPR_20240113T034720.json")
    item = json.loads(item_path.read_text())
    src = next(lk["href"] for lk in item["links"] if lk["rel"] == "derived_from" and "L2A" in lk["title"])
    folder = Path(src).parent
    with rasterio.open(folder / "B04.tif") as s:
        red = s.read(1).astype(np.int64)
    with rasterio.open(folder / "B08.tif") as s:
        nir = s.read(1).astype(np.int64)
    with rasterio.open(item_path.parent / "ndvi.tif") as s:
        stored = s.read(1)
    with rasterio.open(item_path.parent / "cloud_mask.tif") as s:
        mask = s.read(1)

    def block_mean(dn: np.ndarray) -> np.ndarray:
        b = dn.reshape(dn.shape[0] // 2, 2, dn.shape[1] // 2, 2)
        n = (b > 0).sum(axis=(1, 3))
        return np.where(n > 0, (b.sum(axis=(1, 3)) + n // 2) // np.maximum(n, 1), 0)

    offset = item["properties"]["raw2ready:offsets_applied"]["B04"] * 10000  # −1000 from baseline 04.00
    r, n = (block_mean(red) + offset) / 10000, (block_mean(nir) + offset) / 10000
    ok = (mask == 0) & (r > 0) & (n > 0)
    assert ok.sum() > 1000
    want = np.round((n - r) / (n + r) / 1e-4)
    assert np.abs(stored[ok].astype(np.int64) - want[ok]).max() <= 1


def test_a_resolution_finer_than_the_source_is_refused(tmp_path: Path) -> None:
    from test_real_29rkh import local_mirror

    src = local_mirror(tmp_path / "mirror")  # the real 29RKH COGs, decimated to 100 m
    code, text = _run(["--source", str(src), "--tiles", "29RKH", "--start", "2020-02-19", "--end", "2020-02-19",
                       "--out", str(tmp_path / "out"), "--resolution", "20"])
    assert code == 3
    assert "resolution 20 m asked, but its finest B04/B08 files are 100 m" in text


def test_cloud_mask_at_10m_same_in_both_cloud_modes(demo_archive: Path, tmp_path: Path) -> None:
    """``--cloud-resolution 10`` runs s2cloudless on the 10 m grid; fast and exact modes give the same mask."""
    masks, provs = {}, {}
    for mode in ("fast", "exact"):
        out = tmp_path / mode
        code, text = _run(["--source", str(demo_archive), "--tiles", "47PPR", "--start", "2024-01-13", "--end",
                           "2024-01-13", "--out", str(out), "--workers", "1", "--cloud-resolution", "10",
                           "--cloud-mode", mode])
        assert code == 0, text
        (item_path,) = out.rglob("S2A_47PPR_20240113T034720.json")
        provs[mode] = json.loads(item_path.read_text())["properties"]["processing:expression"]["expression"]
        masks[mode] = (item_path.parent / "cloud_mask.tif").read_bytes()
    assert masks["fast"] == masks["exact"]
    s2c = {m: p["cloud_mask"]["s2cloudless"] for m, p in provs.items()}
    assert s2c["fast"]["resolution_m"] == 10 and s2c["fast"]["average_over_px"] == 64
    assert s2c["fast"]["dilation_px"] == 32
    assert (s2c["fast"]["mode"], s2c["fast"]["evaluator"]) == ("fast", "compiled")
    assert (s2c["exact"]["mode"], s2c["exact"]["evaluator"]) == ("exact", "lightgbm")
    assert s2c["fast"]["evaluated_px"] == s2c["exact"]["evaluated_px"] > 0


def test_bad_cloud_resolution_is_refused_before_any_scene(demo_archive: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from steps.settings import get_settings

    monkeypatch.setenv("RAW2READY_CLOUD_RESOLUTION_M", "30")
    get_settings.cache_clear()
    code, text = _run(["--source", str(demo_archive), "--tiles", "47PPR", "--start", "2024-01-13", "--end",
                       "2024-01-13", "--out", str(tmp_path / "o"), "--workers", "1"])
    get_settings.cache_clear()
    assert code == 3, text
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.tif"))
