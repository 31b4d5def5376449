"""The naive baseline: the straightforward per-scene pipeline a team would write first.

Same inputs and the same four products (``ndvi``, ``lai``, ``lai_flags``, ``cloud_mask`` COGs) as the real
pipeline, written the obvious way:

* every band is read whole (single-threaded GDAL decoding) into a float64 array; no chunking, no threads;
* cloud mask: s2cloudless's own ``S2PixelCloudDetector`` on every valid L1C pixel at 60 m with the same
  threshold, averaging and dilation radii as ``steps.science.cloudmask.params_for_resolution(60)``,
  combined with SCL and the B10 cirrus test by ``steps.science.cloudmask.build_cloud_mask`` exactly as
  ``steps/pipeline/mask.py`` combines them (or SCL alone, ``--mask scl``, what the mask step does without L1C);
* NDVI and LAI in plain float64 numpy over whole arrays (LAI: the SNAP network numbers from
  ``steps.science.lai.load_network``, evaluated here in one float64 expression; SNAP's flag rules from the
  float64 reference helpers ``input_out_of_range`` / ``apply_output_range``);
* products written as plain GeoTIFFs, then ``rio_cogeo.cog_translate`` with its default ``deflate``
  profile; checksums by re-reading each COG.

Run it alone: ``python bench/naive_pipeline.py --source <catalog.json> --out <dir> [--mask scl|s2cloudless]``.
It prints a JSON line with per-step wall times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from steps.pipeline.scene import Scene  # noqa: E402
from steps.products.definitions import CLOUD_MASK, LAI, LAI_FLAGS, NDVI, Product  # noqa: E402

MASK_METHODS = ("scl", "s2cloudless")


def read_float64(scene: Scene, band: str, res: int, level: str = "L2A") -> np.ndarray:
    """A whole band as float64 reflectance (NaN = no data) on the ``res`` grid: ρ = DN·scale + offset."""
    info = (scene.l1c_bands if level == "L1C" else scene.bands)[band]
    g = scene.grid(res)
    with rasterio.open(info.href) as src:
        if (src.height, src.width) == g.shape:
            dn = src.read(1).astype(np.float64)
        else:
            rs = Resampling.nearest if res <= info.resolution else Resampling.average
            dn = src.read(1, out_shape=g.shape, resampling=rs).astype(np.float64)
    refl = dn * info.scale + info.offset
    refl[dn == 0] = np.nan
    return refl


def read_raw(href: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Band 1 as stored (optionally nearest-resampled to ``shape``)."""
    with rasterio.open(href) as src:
        if shape is None or (src.height, src.width) == shape:
            return src.read(1)
        return src.read(1, out_shape=shape, resampling=Resampling.nearest)


# ---------------------------------------------------------------------------------------------- mask
def naive_mask(scene: Scene, method: str) -> np.ndarray:
    """``cloud_mask`` codes on the 20 m grid (uint8, 255 = no data), the rules of ``steps/pipeline/mask.py``.

    ``s2cloudless``: s2cloudless's ``S2PixelCloudDetector`` evaluates *every* valid 60 m pixel (LightGBM),
    no-data enters the disk average as 0, the 60 m mask is repeated 3×3 onto the 20 m grid and combined
    with SCL (dilated) and the B10 cirrus test by ``build_cloud_mask``. ``scl``: SCL classes (dilated)
    only. Either way a pixel whose B05 or B8A is no data is no data.
    """
    from steps.science.cloudmask import build_cloud_mask
    from steps.science.scl import MASK_NODATA

    g20 = scene.grid(20)
    scl = read_raw(scene.scl.href, g20.shape)
    if method == "s2cloudless" and scene.l1c_bands:
        from s2cloudless import S2PixelCloudDetector

        from steps.science.cloudmask import S2CLOUDLESS_BANDS, SEN2COR_T1_B10, params_for_resolution

        p = params_for_resolution(60)
        toa = np.stack([read_float64(scene, b, 60, "L1C") for b in S2CLOUDLESS_BANDS], axis=-1)
        valid = np.isfinite(toa).all(axis=-1)
        det = S2PixelCloudDetector(threshold=p.threshold, average_over=p.average_over,
                                   dilation_size=p.dilation_size, all_bands=False)
        prob = det.get_cloud_probability_maps(np.nan_to_num(toa, nan=0.0)[None].astype(np.float32))[0]
        prob[~valid] = 0.0  # no data enters the disk average as clear sky (the project's convention)
        cloud60 = det.get_mask_from_prob(prob[None])[0].astype(bool) & valid
        cloud20 = np.kron(cloud60, np.ones((3, 3), dtype=bool))[: g20.shape[0], : g20.shape[1]]
        b10 = read_float64(scene, "B10", 20, "L1C")
        mask = build_cloud_mask(scl, s2c_cloud=cloud20, b10_toa=b10, scl_dilation_px=5, cloud_dilation_px=2,
                                cirrus_threshold=SEN2COR_T1_B10)
    else:
        mask = build_cloud_mask(scl, scl_dilation_px=5)
    for band in ("B05", "B8A"):
        mask[read_raw(scene.bands[band].href, g20.shape) == 0] = MASK_NODATA
    return mask


# ---------------------------------------------------------------------------------------------- ndvi
def naive_ndvi(scene: Scene, mask20: np.ndarray) -> np.ndarray:
    """NDVI (float64, NaN = no data) at 10 m, clear pixels (code 0) with both reflectances ≥ 0 only."""
    red = read_float64(scene, "B04", 10)
    nir = read_float64(scene, scene.ndvi_nir_band, 10)
    total = nir + red
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (nir - red) / total
    clear = np.kron(mask20 == 0, np.ones((2, 2), dtype=bool))
    out[~(total > 0) | ~clear | (red < 0) | (nir < 0)] = np.nan  # negative reflectance is invalid input
    return out


# ----------------------------------------------------------------------------------------------- lai
def naive_lai(scene: Scene, mask20: np.ndarray, network_set: str = "3_0") -> tuple[np.ndarray, np.ndarray]:
    """LAI (float64, NaN = no data) and SNAP flags (uint8, 255 = no data) at 20 m, clear pixels only."""
    from steps.pipeline.lai import LAI_BANDS, LAI_MODE, pixel_angles
    from steps.science.lai import FLAGS_NODATA, apply_output_range, input_out_of_range, load_network

    net = load_network(network_set, scene.platform or "sentinel-2a")
    g20 = scene.grid(20)
    refl = np.stack([read_float64(scene, b, 20) for b in LAI_BANDS])
    angles, _ = pixel_angles(scene, g20.shape, 20)
    a = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), g20.shape) for k, v in angles.items()}
    d2r = np.pi / 180.0
    x = np.concatenate([refl, np.stack([np.cos(a["view_zenith"] * d2r), np.cos(a["sun_zenith"] * d2r),
                                        np.cos((a["sun_azimuth"] - a["view_azimuth"]) * d2r)])])
    # the SNAP network in one float64 expression: normalise, 5 tanh neurons, linear output, denormalise
    lo, hi = net.norm_min[:, None, None], net.norm_max[:, None, None]
    xn = 2.0 * (x - lo) / (hi - lo) - 1.0
    h = np.tanh(np.einsum("ji,ihw->jhw", net.w1, xn) + net.b1[:, None, None])
    y = np.einsum("j,jhw->hw", net.w2, h) + net.b2
    y = 0.5 * (y + 1.0) * (net.y_max - net.y_min) + net.y_min
    value, flags = apply_output_range(y, net, mode=LAI_MODE)
    flags[input_out_of_range(refl, net)] |= 1
    ok = np.isfinite(x).all(axis=0) & (mask20 == 0) & ~(refl < 0).any(axis=0)  # negative input: no LAI
    value[~ok] = np.nan
    flags[~ok] = FLAGS_NODATA
    return value, flags


# -------------------------------------------------------------------------------------------- output
def encode_plain(values: np.ndarray, product: Product) -> np.ndarray:
    """Physical float values → stored integers (round half away from zero), NaN → nodata."""
    info = np.iinfo(np.dtype(product.dtype))
    lo = info.min + 1 if product.nodata == info.min else info.min
    hi = info.max - 1 if product.nodata == info.max else info.max
    scaled = np.clip(np.round((values - product.offset) / product.scale), lo, hi)
    out = np.full(values.shape, product.nodata, dtype=product.dtype)
    ok = np.isfinite(scaled)
    out[ok] = scaled[ok].astype(product.dtype)
    return out


def write_cog(path: Path, data: np.ndarray, scene: Scene, product: Product) -> None:
    """Plain GeoTIFF, then ``cog_translate`` with rio-cogeo's default ``deflate`` profile."""
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    g = scene.grid(product.resolution_m)
    tmp = path.with_suffix(".plain.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=g.shape[1], height=g.shape[0], count=1,
                       dtype=product.dtype, crs=g.crs, transform=g.transform, nodata=product.nodata) as dst:
        dst.write(data, 1)
        dst.scales = (product.scale,)
        dst.offsets = (product.offset,)
    cog_translate(str(tmp), str(path), cog_profiles.get("deflate"), quiet=True)
    tmp.unlink()


def run_naive(l2a_href: str, l1c_href: str, scene_id: str, out: Path, mask_method: str = "s2cloudless",
              lai_network: str = "3_0") -> dict[str, Any]:
    """Run the naive chain for one scene into ``out``; returns ``{"timings": {step: s}, "products": {...}}``."""
    from steps.pipeline.ingest import INGEST
    from steps.pipeline.scene import load_scene
    from steps.settings import get_settings

    if mask_method not in MASK_METHODS:
        raise ValueError(f"mask_method must be one of {MASK_METHODS}")
    out.mkdir(parents=True, exist_ok=True)
    t: dict[str, float] = {}
    t0 = time.monotonic()
    res = INGEST.run(INGEST.Inputs(scene_id=scene_id, l2a_href=l2a_href, l1c_href=l1c_href, out=str(out)),
                     get_settings())
    scene = load_scene(res.scene)
    t["ingest"] = time.monotonic() - t0
    t0 = time.monotonic()
    mask20 = naive_mask(scene, mask_method)
    t["mask"] = time.monotonic() - t0
    t0 = time.monotonic()
    ndvi = encode_plain(naive_ndvi(scene, mask20), NDVI)
    t["ndvi"] = time.monotonic() - t0
    t0 = time.monotonic()
    lai, flags = naive_lai(scene, mask20, lai_network)
    lai_stored = encode_plain(lai, LAI)
    del lai
    t["lai"] = time.monotonic() - t0
    t0 = time.monotonic()
    folder = out / "naive" / scene.scene_id
    folder.mkdir(parents=True, exist_ok=True)
    products = {"ndvi": (ndvi, NDVI), "lai": (lai_stored, LAI), "lai_flags": (flags, LAI_FLAGS),
                "cloud_mask": (mask20, CLOUD_MASK)}
    paths = {}
    for key, (data, product) in products.items():
        paths[key] = folder / f"{key}.tif"
        write_cog(paths[key], data, scene, product)
    t["cog"] = time.monotonic() - t0
    t0 = time.monotonic()
    checksums = {k: "1220" + hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}
    t["stac"] = time.monotonic() - t0
    return {"timings": t, "products": {k: str(p) for k, p in paths.items()}, "checksums": checksums,
            "mask_method": mask_method}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="catalog.json of a (synthetic) archive")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--mask", default="s2cloudless", choices=MASK_METHODS)
    args = ap.parse_args()
    from steps.sentinel2.source import find_scenes

    scene = find_scenes(args.source, ["47PPR"], "2015-01-01", "2030-12-31")[0]
    t0 = time.monotonic()
    res = run_naive(scene.l2a_href, scene.l1c_href, scene.scene_id, args.out, args.mask)
    res["total"] = time.monotonic() - t0
    print(json.dumps(res))


if __name__ == "__main__":
    main()
