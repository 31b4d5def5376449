"""End-to-end behaviour of the local pipeline on the synthetic demo archive."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from r2r_helpers import SMALL, invoke_cli, tree_bytes


def _items(out: Path) -> list[dict]:
    cat = out / "raw2ready-s2-vegetation"
    return [json.loads(p.read_text()) for p in sorted(cat.rglob("S2*.json")) if not p.name.endswith("skipped.json")]


def _source_item(archive: Path, item: dict, level: str) -> tuple[dict, Path]:
    link = next(lk for lk in item["links"] if lk["rel"] == "derived_from" and level in lk["title"])
    p = Path(link["href"])
    assert p.is_file() and str(p).startswith(str(archive.parent))
    return json.loads(p.read_text()), p


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_ndvi_equals_independent_computation_for_both_baselines(processed: Path, demo_archive: Path) -> None:
    """NDVI recomputed here from the raw DN files and the baseline rule matches the product pixel by pixel."""
    baselines = set()
    checked = 0
    for item in _items(processed):
        src, src_path = _source_item(demo_archive, item, "L2A")
        baseline = src["properties"]["s2:processing_baseline"]
        # independent radiometry: ESA's rule, PB >= 04.00 carries a -1000 DN offset, DN 0 is no data
        offset = -1000 if tuple(int(x) for x in baseline.split(".")) >= (4, 0) else 0
        red_dn = _read(src_path.parent / "B04.tif").astype(np.float64)
        nir_dn = _read(src_path.parent / "B08.tif").astype(np.float64)
        red = (red_dn + offset) / 10000.0
        nir = (nir_dn + offset) / 10000.0
        folder = processed / "raw2ready-s2-vegetation"
        # which pixels are clear is the mask's business (tested against the truth and s2cloudless elsewhere);
        # here the product's own cloud_mask (code 0) decides, and NDVI must be exact on exactly those pixels
        mask20 = _read(next(folder.rglob(f"{item['id']}/cloud_mask.tif")))
        clear = np.kron(mask20 == 0, np.ones((2, 2), dtype=bool)).astype(bool)
        ok = clear & (red_dn > 0) & (nir_dn > 0) & ((red + nir) > 0)
        expected = np.where(ok, (nir - red) / np.where(ok, red + nir, 1.0), np.nan)
        prod = next(folder.rglob(f"{item['id']}/ndvi.tif"))
        with rasterio.open(prod) as ds:
            stored = ds.read(1)
            assert ds.scales == (0.0001,) and ds.nodata == -32768
        got = np.where(stored == -32768, np.nan, stored * 0.0001)
        assert np.array_equal(np.isnan(got), np.isnan(expected)), item["id"]
        diff = np.nanmax(np.abs(got - expected))
        assert diff <= 0.5e-4 + 1e-6, (item["id"], diff)
        assert np.isfinite(got).sum() > 0.1 * got.size  # the comparison covered real pixels
        baselines.add(offset)
        checked += 1
    assert baselines == {0, -1000}, "both radiometric conventions must be exercised"
    assert checked >= 8


def test_forgetting_the_offset_would_be_caught(processed: Path, demo_archive: Path) -> None:
    """Guard the guard: on a post-04.00 scene, ignoring the offset changes NDVI far beyond the tolerance."""
    item = next(it for it in _items(processed) if it["properties"]["raw2ready:source_processing_baseline"] >= "04.00")
    _src, src_path = _source_item(demo_archive, item, "L2A")
    red = _read(src_path.parent / "B04.tif").astype(np.float64) / 10000
    nir = _read(src_path.parent / "B08.tif").astype(np.float64) / 10000
    naive = (nir - red) / (nir + red)
    prod = next((processed / "raw2ready-s2-vegetation").rglob(f"{item['id']}/ndvi.tif"))
    stored = _read(prod)
    got = np.where(stored == -32768, np.nan, stored * 0.0001)
    assert np.nanmax(np.abs(got - naive)) > 0.05


def test_dedupe_keeps_the_newest_baseline_and_pairs_l1c(processed: Path) -> None:
    items = {it["id"]: it for it in _items(processed)}
    # the 2021-12-04 47PPR scene exists as _0_ (03.01) and _1_ (05.00 reprocessing)
    it = items["S2A_47PPR_20211204T034720"]
    assert it["properties"]["raw2ready:source_processing_baseline"] == "05.00"
    assert "S2A_47PPR_20211204_1_L2A" in it["properties"]["processing:lineage"]
    assert it["properties"]["raw2ready:offsets_applied"]["B04"] == pytest.approx(-0.1)
    pre = items["S2B_47PPR_20211209T034720"]
    assert pre["properties"]["raw2ready:offsets_applied"]["B04"] == 0.0
    # L2A without L1C: processed, with a single derived_from link
    no_l1c = items["S2B_47PQR_20230118T034720"]
    assert [lk["title"].split()[1] for lk in no_l1c["links"] if lk["rel"] == "derived_from"] == ["L2A"]
    with_l1c = items["S2A_47PPR_20240113T034720"]
    assert sorted(lk["title"].split()[1] for lk in with_l1c["links"] if lk["rel"] == "derived_from") == ["L1C", "L2A"]


def test_fully_clouded_scene_is_skipped_and_recorded(processed: Path) -> None:
    records = sorted((processed / "raw2ready-s2-vegetation").rglob("*.skipped.json"))
    assert {json.loads(p.read_text())["reason"] for p in records} == {"fully clouded: no clear pixel"}
    assert {p.name.split("_")[1] for p in records} == {"47PPR", "47PQR"}
    for p in records:
        assert not any(p.parent.glob("*.tif"))
    assert not list((processed / "work").rglob("*")), "work folders must be cleaned up"


def test_catalog_is_valid_stac_and_assets_are_valid_cogs(processed: Path) -> None:
    from steps.products.validate import validate_products

    assert validate_products(str(processed / "catalog.json")) == []
    items = _items(processed)
    for it in items:
        for key, asset in it["assets"].items():
            path = next((processed / "raw2ready-s2-vegetation").rglob(f"{it['id']}/{key}.tif"))
            import hashlib

            assert asset["file:checksum"] == "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
            assert asset["file:size"] == path.stat().st_size


def test_catalog_tree_is_year_quarter_month(processed: Path) -> None:
    root = json.loads((processed / "catalog.json").read_text())
    coll = json.loads((processed / "raw2ready-s2-vegetation" / "collection.json").read_text())
    years = [lk["href"] for lk in coll["links"] if lk["rel"] == "child"]
    assert years == ["./2021/catalog.json", "./2022/catalog.json", "./2023/catalog.json", "./2024/catalog.json"]
    month = json.loads((processed / "raw2ready-s2-vegetation/2022/Q1/02/catalog.json").read_text())
    assert [lk["href"] for lk in month["links"] if lk["rel"] == "item"] == [
        "./S2A_47PPR_20220202T034720/S2A_47PPR_20220202T034720.json",
        "./S2A_47PQR_20220202T034720/S2A_47PQR_20220202T034720.json",
    ]
    assert root["links"][1]["href"] == "./raw2ready-s2-vegetation/collection.json"
    idx = json.loads((processed / "raw2ready-s2-vegetation/index.json").read_text())
    assert len(idx["items"]) == len(_items(processed))


def test_second_run_does_no_work_and_changes_no_byte(processed: Path, demo_archive: Path,
                                                     demo_range: tuple[list[str], str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(processed, out, copy_function=shutil.copy2)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    tiles, start, end = demo_range
    res = invoke_cli("run", "--source", str(demo_archive), "--tiles", ",".join(tiles), "--start", start, "--end",
                     end, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "0 done, 0 skipped, 12 already complete, 0 failed" in res.stdout  # 12 scenes after dedupe
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_run_killed_midway_then_rerun_equals_uninterrupted_run(processed: Path, demo_archive: Path,
                                                               demo_range: tuple[list[str], str, str],
                                                               tmp_path: Path) -> None:
    tiles, start, end = demo_range
    out = tmp_path / "out"
    exe = str(Path(sys.executable).parent / "raw2ready")
    proc = subprocess.Popen([exe, "-q", "run", "--source", str(demo_archive), "--tiles", ",".join(tiles),
                             "--start", start, "--end", end, "--out", str(out), "--workers", "1"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # kill as soon as a couple of scenes are published: mid-run, with work in flight
    while time.monotonic() < deadline:
        n = len(list(out.rglob("S2*T*.json"))) if out.exists() else 0
        if n >= 3:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = [p for p in out.rglob("*") if p.is_file()]
    assert not (out / "catalog.json").exists() or len(partial) < len(list(processed.rglob("*")))
    # nothing half-written is visible under a final name
    for p in partial:
        if p.suffix == ".tif" and not p.name.startswith("."):
            with rasterio.open(p) as ds:
                ds.read(1)
    # the rerun in-process, one scene at a time (the process boundary and the parallelism are not the point here)
    res = invoke_cli("-q", "run", "--source", str(demo_archive), "--tiles", ",".join(tiles), "--start", start,
                     "--end", end, "--out", str(out), "--workers", "1")
    assert res.returncode == 0, res.stderr
    m = re.search(r"scenes: (\d+) done, (\d+) skipped, (\d+) already complete, 0 failed", res.stdout)
    assert m and int(m[3]) >= 1 and int(m[1]) + int(m[2]) >= 1, res.stdout  # resumed: some done before, some now

    def visible(root: Path) -> dict[str, bytes]:
        return {k: v for k, v in tree_bytes(root).items() if not k.startswith("work/") and "/." not in k}

    assert visible(out) == visible(processed)


# --- the non-default settings: the pipeline runs with them and the product says so ----------------------------
SCENE = "S2A_47PPR_20240113T034720"  # clouded in part, with an L1C pair: the s2cloudless path
SIZE_20M = SMALL // 2


def _one_scene(demo_archive: Path, out: Path, env: dict[str, str]) -> tuple[dict, Path]:
    res = invoke_cli("-q", "run", "--source", str(demo_archive), "--tiles", "47PPR", "--start", "2024-01-13",
                     "--end", "2024-01-13", "--out", str(out), "--workers", "1", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 done, 0 skipped, 0 already complete, 0 failed" in res.stdout
    (item_path,) = out.rglob(f"{SCENE}.json")
    return json.loads(item_path.read_text()), item_path.parent


def _default_scene(processed: Path) -> tuple[dict, Path]:
    (item_path,) = processed.rglob(f"{SCENE}.json")
    return json.loads(item_path.read_text()), item_path.parent


def test_lai_network_2_1_is_used_and_recorded(demo_archive: Path, processed: Path, tmp_path: Path) -> None:
    """RAW2READY_LAI_NETWORK=2_1 (SNAP ≤ 7's single network): the LAI comes from that set and the item says so;
    NDVI and the cloud mask do not depend on it."""
    item, folder = _one_scene(demo_archive, tmp_path / "out", {"RAW2READY_LAI_NETWORK": "2_1"})
    ref, ref_folder = _default_scene(processed)
    lai_prov = item["properties"]["processing:expression"]["expression"]["lai"]
    assert ref["properties"]["processing:expression"]["expression"]["lai"]["network"] == "3_0/S2A"
    assert lai_prov["network"].startswith("2_1"), lai_prov["network"]
    assert item["properties"]["processing:software"]["snap-biophysical-networks"].startswith("2_1")
    assert f"LAI: SNAP biophysical network {lai_prov['network']}" in item["properties"]["processing:lineage"]
    for key in ("ndvi", "cloud_mask"):
        assert (folder / f"{key}.tif").read_bytes() == (ref_folder / f"{key}.tif").read_bytes(), key
    lai, ref_lai = _read(folder / "lai.tif"), _read(ref_folder / "lai.tif")
    valid = ref_lai != -32768
    assert np.array_equal(lai != -32768, valid)  # the same clear pixels get a value …
    assert valid.sum() > 1000
    assert np.count_nonzero(lai[valid] != ref_lai[valid]) > 0.5 * valid.sum()  # … from another network
    assert lai[valid].min() >= 0 and lai[valid].max() * 0.001 <= 8.0  # LAI in m²/m², within SNAP's range


def test_cloud_resolution_20m_is_used_and_recorded(demo_archive: Path, processed: Path, tmp_path: Path) -> None:
    """RAW2READY_CLOUD_RESOLUTION_M=20: s2cloudless runs on the 20 m grid, its radii scaled (160 m: 4/2 px →
    20 m: 32/16 px), and the item records it; the mask stays on the 20 m product grid."""
    item, folder = _one_scene(demo_archive, tmp_path / "out", {"RAW2READY_CLOUD_RESOLUTION_M": "20"})
    ref, ref_folder = _default_scene(processed)
    s2c = item["properties"]["processing:expression"]["expression"]["cloud_mask"]["s2cloudless"]
    ref_s2c = ref["properties"]["processing:expression"]["expression"]["cloud_mask"]["s2cloudless"]
    assert (ref_s2c["resolution_m"], ref_s2c["average_over_px"], ref_s2c["dilation_px"]) == (60, 11, 5)
    assert (s2c["resolution_m"], s2c["average_over_px"], s2c["dilation_px"]) == (20, 32, 16)
    # every valid 60 m pixel is 3×3 valid 20 m pixels (the swath edge is decided at 60 m)
    assert s2c["evaluated_px"] == 9 * ref_s2c["evaluated_px"] > 0
    mask, ref_mask = _read(folder / "cloud_mask.tif"), _read(ref_folder / "cloud_mask.tif")
    assert mask.shape == ref_mask.shape == (SIZE_20M, SIZE_20M)  # the product grid stays 20 m
    assert np.array_equal(mask == 255, ref_mask == 255)  # no data does not depend on it
    assert (mask == 1).any() and (mask == 0).any()


@pytest.mark.parametrize("how", ["env", "option"])
def test_cloud_resolution_160m_is_refused_at_start(demo_archive: Path, tmp_path: Path, how: str) -> None:
    """160 m does not divide the 109.8 km tile (686.25 px): one clear error before any scene, not a dead scene."""
    args = ["-q", "run", "--source", str(demo_archive), "--tiles", "47PPR", "--start", "2024-01-13", "--end",
            "2024-01-13", "--out", str(tmp_path / "out"), "--workers", "1"]
    if how == "env":
        res = invoke_cli(*args, env={"RAW2READY_CLOUD_RESOLUTION_M": "160"})
    else:
        res = invoke_cli(*args, "--cloud-resolution", "160")
    assert res.returncode in (2, 3), res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(("raw2ready:", "Error:"))]
    assert len(lines) == 1 and "160" in lines[0], res.stderr
    assert "scenes:" not in res.stdout and not (tmp_path / "out" / "raw2ready-s2-vegetation").exists()
