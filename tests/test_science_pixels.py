"""Hand computation at chosen pixels of a synthetic scene: NDVI and LAI (angles included) from raw inputs.

Nothing here calls raw2ready's science code: reflectance comes from the DN files and the ESA offset rule,
angles from a bilinear interpolation written out below, the network from the CSV weight files with
explicit loops over neurons — then the values must be found in the pipeline's products.
"""

from __future__ import annotations

import json
import math
from importlib.resources import files
from pathlib import Path

import numpy as np
import rasterio

from steps.sentinel2.metadata import parse_tile_metadata

LAI_BANDS = ("B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12")


def _csv(*parts: str) -> list[list[float]]:
    text = files("steps").joinpath("data", "snap_biophysical", *parts).read_text()
    return [[float(v) for v in line.split(",")] for line in text.strip().splitlines()]


def _network(platform: str) -> dict[str, list[list[float]]]:
    folder = ("3_0", {"sentinel-2a": "S2A", "sentinel-2b": "S2B", "sentinel-2c": "S2C"}[platform], "LAI")
    names = ("Normalisation", "Denormalisation", "Weights_Layer1_Neurons", "Weights_Layer1_Bias",
             "Weights_Layer2_Neurons", "Weights_Layer2_Bias", "ExtremeCases")
    return {n: _csv(*folder, f"LAI_{n}") for n in names}


def _snap_lai(x: list[float], net: dict[str, list[list[float]]]) -> float:
    norm = net["Normalisation"]
    xn = [2 * (x[i] - norm[i][0]) / (norm[i][1] - norm[i][0]) - 1 for i in range(11)]
    w1, b1 = net["Weights_Layer1_Neurons"], net["Weights_Layer1_Bias"]
    b1 = b1[0] if len(b1) == 1 else [r[0] for r in b1]
    hidden = []
    for j in range(5):
        a = b1[j] + sum(w1[j][i] * xn[i] for i in range(11))
        hidden.append(2 / (1 + math.exp(-2 * a)) - 1)
    w2 = net["Weights_Layer2_Neurons"][0] if len(net["Weights_Layer2_Neurons"]) == 1 else [
        r[0] for r in net["Weights_Layer2_Neurons"]]
    y_n = net["Weights_Layer2_Bias"][0][0] + sum(w2[j] * hidden[j] for j in range(5))
    lo, hi = net["Denormalisation"][0]
    y = 0.5 * (y_n + 1) * (hi - lo) + lo
    tol, ymin, ymax = net["ExtremeCases"][0]
    tol = abs(tol)
    if ymin - tol < y < ymin:
        return ymin
    if ymax < y < ymax + tol:
        return ymax
    return y


def _bilinear(grid: np.ndarray, r: int, c: int, res: float, step: float = 5000.0) -> float:
    py, px = (r + 0.5) * res / step, (c + 0.5) * res / step
    i0, j0 = math.floor(py), math.floor(px)
    fy, fx = py - i0, px - j0
    g = grid
    return float((1 - fy) * ((1 - fx) * g[i0, j0] + fx * g[i0, j0 + 1])
                 + fy * ((1 - fx) * g[i0 + 1, j0] + fx * g[i0 + 1, j0 + 1]))


def _bilinear_azimuth(grid: np.ndarray, r: int, c: int, res: float) -> float:
    s = _bilinear(np.sin(np.radians(grid)), r, c, res)
    co = _bilinear(np.cos(np.radians(grid)), r, c, res)
    return math.degrees(math.atan2(s, co)) % 360


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_lai_and_ndvi_at_chosen_pixels_match_a_hand_computation(processed: Path, demo_archive: Path) -> None:
    products = processed / "raw2ready-s2-vegetation"
    checked_lai = checked_ndvi = 0
    for item_path in sorted(products.rglob("S2*T*.json")):
        if item_path.name.endswith("skipped.json"):
            continue
        item = json.loads(item_path.read_text())
        src_href = next(lk["href"] for lk in item["links"] if lk["rel"] == "derived_from" and "L2A" in lk["title"])
        src_dir = Path(src_href).parent
        src = json.loads(Path(src_href).read_text())
        meta = parse_tile_metadata((src_dir / "granule_metadata.xml").read_bytes())
        offset = -1000.0 if tuple(int(v) for v in src["properties"]["s2:processing_baseline"].split(".")) >= (4, 0) \
            else 0.0
        mask = _read(item_path.parent / "cloud_mask.tif")
        lai = _read(item_path.parent / "lai.tif")
        ndvi = _read(item_path.parent / "ndvi.tif")
        dn = {b: _read(src_dir / f"{b}.tif").astype(np.float64) for b in (*LAI_BANDS, "B08")}
        net = _network(item["properties"]["platform"])
        rng = np.random.default_rng(sum(map(ord, item["id"])))
        clear = np.argwhere((mask == 0) & (lai != -32768))
        if len(clear) == 0:
            continue
        for r, c in clear[rng.choice(len(clear), size=min(4, len(clear)), replace=False)]:
            refl = []
            for b in LAI_BANDS:
                if b in ("B03", "B04"):  # 10 m → 20 m mean of the 2×2 block, like SNAP's resampler
                    block = dn[b][2 * r:2 * r + 2, 2 * c:2 * c + 2]
                    refl.append(float(np.mean((block + offset) / 10000.0)))
                else:
                    refl.append((dn[b][r, c] + offset) / 10000.0)
            sz = _bilinear(meta.sun_zenith, r, c, 20)
            sa = _bilinear_azimuth(meta.sun_azimuth, r, c, 20)
            vz = _bilinear(meta.view_zenith, r, c, 20)
            va = _bilinear_azimuth(meta.view_azimuth, r, c, 20)
            if not all(map(math.isfinite, (sz, sa, vz, va))):
                continue  # a view-grid node beyond the swath: covered by the NaN-filling unit tests
            x = [*refl, math.cos(math.radians(vz)), math.cos(math.radians(sz)), math.cos(math.radians(sa - va))]
            expected = _snap_lai(x, net)
            if not 0 <= expected <= 8:
                continue  # beyond tolerance the clean product is no data (unit-tested separately)
            assert abs(lai[r, c] * 0.001 - expected) <= 1e-3, (item["id"], r, c, lai[r, c] * 0.001, expected)
            checked_lai += 1
            # NDVI at the four 10 m pixels of this clear 20 m pixel
            for rr in (2 * r, 2 * r + 1):
                for cc in (2 * c, 2 * c + 1):
                    red = (dn["B04"][rr, cc] + offset) / 10000.0
                    nir = (dn["B08"][rr, cc] + offset) / 10000.0
                    assert abs(ndvi[rr, cc] * 0.0001 - (nir - red) / (nir + red)) <= 0.6e-4
                    checked_ndvi += 1
    assert checked_lai >= 20 and checked_ndvi >= 80


def test_clouds_cirrus_and_shadows_are_masked_and_clear_vegetation_is_not(processed: Path, demo_archive: Path) -> None:
    """Against the synthetic truth: masked where the generator put cloud/cirrus/shadow, clear on clear vegetation."""
    from synthesizer import TRUTH_CIRRUS, TRUTH_CLOUD, TRUTH_DENSE_VEG, TRUTH_SHADOW, demo_specs, render_scene

    from r2r_helpers import SMALL

    products = processed / "raw2ready-s2-vegetation"
    totals = {"cloud": [0, 0], "cirrus": [0, 0], "shadow": [0, 0], "veg": [0, 0]}
    for spec in demo_specs():
        scene_dirs = list(products.rglob(f"S2{spec.platform[-1].upper()}_{spec.tile}_{spec.datetime:%Y%m%dT%H%M%S}"))
        if not scene_dirs or not (scene_dirs[0] / "cloud_mask.tif").exists() or spec.sequence:
            continue
        truth = render_scene(spec, SMALL, 0).truth
        mask = _read(scene_dirs[0] / "cloud_mask.tif")
        for name, code in (("cloud", TRUTH_CLOUD), ("cirrus", TRUTH_CIRRUS), ("shadow", TRUTH_SHADOW)):
            sel = truth == code
            totals[name][0] += int(np.count_nonzero(mask[sel] != 0))
            totals[name][1] += int(sel.sum())
        sel = (truth == TRUTH_DENSE_VEG) & (mask != 255)
        totals["veg"][0] += int(np.count_nonzero(mask[sel] == 0))
        totals["veg"][1] += int(sel.sum())
    for name in ("cloud", "cirrus", "shadow"):
        masked, n = totals[name]
        assert n > 100, name
        assert masked / n >= 0.98, (name, masked / n)
    clear, n = totals["veg"]
    assert n > 1000 and clear / n >= 0.6, clear / max(n, 1)
