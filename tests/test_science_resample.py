"""No-data-aware block means equal GDAL's ``average`` on a file tagged nodata=0, and never average DN 0 in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from steps.science.resample import block_mean_dn


@pytest.mark.parametrize("factor", [2, 3, 6])
def test_block_mean_equals_gdal_average_with_a_nodata_tag(tmp_path: Path, factor: int) -> None:
    rng = np.random.default_rng(factor)
    dn = rng.integers(1, 12000, (360, 360)).astype(np.uint16)
    dn[rng.random(dn.shape) < 0.3] = 0  # scattered no data
    dn[:, :50] = 0  # and a swath edge
    path = tmp_path / "b.tif"
    with rasterio.open(path, "w", driver="GTiff", width=360, height=360, count=1, dtype="uint16",
                       crs="EPSG:32647", transform=from_origin(600000, 1600020, 10, 10), nodata=0) as dst:
        dst.write(dn, 1)
    with rasterio.open(path) as src:
        gdal = src.read(1, out_shape=(360 // factor, 360 // factor), resampling=Resampling.average)
    assert np.array_equal(block_mean_dn(dn, factor), gdal)


def test_no_data_is_never_averaged_in_and_halves_round_up() -> None:
    dn = np.array([[0, 0, 7, 8, 1, 2],
                   [0, 0, 0, 0, 0, 0]], dtype=np.uint16)
    # blocks of 2×2: all no data → 0; (7 + 8)/2 = 7.5 → 8; (1 + 2)/2 = 1.5 → 2
    assert block_mean_dn(dn, 2).tolist() == [[0, 8, 2]]
    big = np.full((2, 2), 65535, dtype=np.uint16)
    assert block_mean_dn(big, 2).tolist() == [[65535]]  # no overflow


def test_bad_factor_or_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple"):
        block_mean_dn(np.zeros((5, 6), dtype=np.uint16), 2)
    with pytest.raises(ValueError, match="factor"):
        block_mean_dn(np.zeros((32, 32), dtype=np.uint16), 16)
