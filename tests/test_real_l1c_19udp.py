"""Real L1C bands (19UDP, AWS ``sentinel-s2-l1c`` tile layout) through the pipeline's readers and exact s2cloudless.

Fixture ``tests/data/real/rio-tiler-pds/S2A_19UDP_20170729_L1C`` (see ``tests/data/real/PROVENANCE.md``): all 13
bands (122×122 at 900 m, no nodata tag; 37.5 % of the pixels are DN 0 in every band) and the oracle
``derived/s2cloudless_1.7.3_expected.npz`` written by s2cloudless itself:
``S2PixelCloudDetector(threshold=0.4, average_over=4, dilation_size=2, all_bands=True)`` on DN/10000, no-data
pixels included. The radiometry comes from the rule (baseline 02.05 from the product name in ``tileInfo.json``:
no offset), the bands from :func:`steps.products.raster.read_bands`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

DATA = Path(__file__).parent / "data" / "real" / "rio-tiler-pds" / "S2A_19UDP_20170729_L1C"


@pytest.fixture(scope="module")
def toa() -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 10) float32 TOA reflectance in s2cloudless order (0 at no data, as the oracle had it) and no-data."""
    from steps.products.raster import BandRead, read_bands
    from steps.science.cloudmask import S2CLOUDLESS_BANDS
    from steps.science.radiometry import dn_to_reflectance
    from steps.sentinel2.items import parse_tileinfo
    from steps.sentinel2.metadata import baseline_from_product_id
    from steps.sentinel2.radiometry import resolve_radiometry

    info = parse_tileinfo(json.loads((DATA / "tileInfo.json").read_text()))
    assert info.product_name is not None
    baseline = baseline_from_product_id(info.product_name)
    assert baseline == "02.05"
    radio = resolve_radiometry(S2CLOUDLESS_BANDS, level="L1C", item_scale_offset=None, boa_offset_applied=None,
                               product=None, baseline=baseline, what=info.product_name)
    assert radio.source.startswith("processing baseline 02.05")
    dns = read_bands([BandRead(str(DATA / f"{b}.jp2"), what=b) for b in S2CLOUDLESS_BANDS])
    stack = np.stack([dn_to_reflectance(dn, radio.scale[b], radio.offset[b])
                      for b, dn in zip(S2CLOUDLESS_BANDS, dns, strict=True)], axis=-1)
    nodata = np.all(np.stack(dns) == 0, axis=0)
    return np.nan_to_num(stack, nan=0.0).astype(np.float32), nodata


@pytest.fixture(scope="module")
def oracle() -> dict[str, np.ndarray]:
    with np.load(DATA / "derived" / "s2cloudless_1.7.3_expected.npz") as z:
        return {k: z[k] for k in z.files}


def test_reader_sees_the_real_no_data(toa: tuple[np.ndarray, np.ndarray], oracle: dict[str, np.ndarray]) -> None:
    _, nodata = toa
    assert np.array_equal(nodata, oracle["nodata"])
    assert nodata.mean() == pytest.approx(0.375, abs=0.001)


def test_exact_probabilities_equal_s2cloudless(toa: tuple[np.ndarray, np.ndarray],
                                               oracle: dict[str, np.ndarray]) -> None:
    from steps.science.cloudmask import cloud_probability, load_s2cloudless_model

    stack, _ = toa
    everywhere = np.ones(stack.shape[:2], dtype=bool)  # the oracle evaluated no-data pixels too
    prob = cloud_probability(load_s2cloudless_model(), stack, everywhere, engine="numpy")
    assert float(np.max(np.abs(prob - oracle["prob"]))) <= 1e-6


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_mask_equals_s2cloudless(toa: tuple[np.ndarray, np.ndarray], oracle: dict[str, np.ndarray],
                                 mode: str) -> None:
    from steps.science.cloudmask import CloudMaskParams, cloud_mask, load_s2cloudless_model

    stack, nodata = toa
    params = CloudMaskParams(threshold=0.4, average_over=4, dilation_size=2, resolution_m=900.0)
    model = load_s2cloudless_model()
    # the oracle's convention (no-data evaluated like any pixel): bit-identical mask
    same = cloud_mask(model, stack, np.ones(stack.shape[:2], dtype=bool), params, mode=mode)
    assert same.engine == {"fast": "compiled", "exact": "lightgbm"}[mode]
    assert np.array_equal(same.mask, oracle["mask_default"])
    assert np.array_equal(same.probability, oracle["prob"].astype(np.float32))
    # the pipeline's convention (no-data enters the average as 0, never cloud): identical on valid pixels,
    # since s2cloudless gives all-zero input a probability of only 1.1e-4
    ours = cloud_mask(model, stack, ~nodata, params, mode=mode)
    assert not ours.mask[nodata].any()
    assert np.array_equal(ours.mask[~nodata], oracle["mask_default"][~nodata])
    cloud_fraction = ours.mask[~nodata].mean()
    assert cloud_fraction == pytest.approx(0.3924, abs=0.0005)  # README: 0.3924 over valid pixels
    # the pixels next to no data are where a different no-data convention would show
    edge = ndimage.binary_dilation(nodata, iterations=6) & ~nodata
    assert edge.sum() > 100
