"""Tests for steps.science.angles — S2 angle-grid interpolation and LAI angle cosines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steps.science import angles as ang

STEP = 5000.0


@pytest.fixture
def grid() -> np.ndarray:
    rng = np.random.default_rng(3)
    return 20.0 + 40.0 * rng.random((23, 23))


def test_pixels_centred_on_odd_nodes_reproduce_node_values(grid):
    # res 10 km: pixel c has its centre at (c + 0.5)·10 km = node 2c + 1
    out = ang.interpolate_grid(grid, out_shape=(11, 11), res_m=2 * STEP)
    np.testing.assert_array_equal(out, grid[1::2, 1::2].astype(np.float32))


def test_pixels_centred_on_nodes_2_mod_4_reproduce_node_values_including_last_node(grid):
    # res 20 km: centre (c + 0.5)·20 km = node 4c + 2 → 2, 6, …, 22 (the last node)
    out = ang.interpolate_grid(grid, out_shape=(6, 6), res_m=4 * STEP)
    np.testing.assert_array_equal(out, grid[2::4, 2::4].astype(np.float32))


def _by_hand(grid: np.ndarray, i: float, j: float) -> float:
    """Bilinear value at node coordinates (i, j), written out from the four surrounding nodes."""
    i0, j0 = int(i), int(j)
    ti, tj = i - i0, j - j0
    return float((1 - ti) * (1 - tj) * grid[i0, j0] + (1 - ti) * tj * grid[i0, j0 + 1]
                 + ti * (1 - tj) * grid[i0 + 1, j0] + ti * tj * grid[i0 + 1, j0 + 1])


def test_bilinear_value_between_nodes_matches_hand_computation(grid):
    # 20 m pixel (r, c) = (10, 137): centre x = 137.5·20 = 2750 m, y = 10.5·20 = 210 m below the corner
    # → node coordinates j = 0.55, i = 0.042 between nodes (0, 0), (0, 1), (1, 0), (1, 1)
    out = ang.interpolate_grid(grid, out_shape=(20, 200), res_m=20.0)
    assert out[10, 137] == pytest.approx(_by_hand(grid, 0.042, 0.55), abs=1e-4)
    # a pixel deep inside: 20 m pixel (3001, 4444): y = 60030 m → i = 12.006; x = 88890 m → j = 17.778
    out2 = ang.interpolate_grid(grid, out_shape=(2, 2), res_m=20.0, row_off=3000, col_off=4443)
    assert out2[1, 1] == pytest.approx(_by_hand(grid, 12.006, 17.778), abs=1e-4)


def test_linear_field_is_reproduced_exactly_at_any_pixel():
    i, j = np.mgrid[0:23, 0:23]
    grid = 10.0 + 0.5 * i + 0.25 * j  # degrees
    out = ang.interpolate_grid(grid, out_shape=(549, 549), res_m=200.0)
    r, c = np.mgrid[0:549, 0:549]
    want = 10.0 + 0.5 * (r + 0.5) * 200 / STEP + 0.25 * (c + 0.5) * 200 / STEP
    np.testing.assert_allclose(out, want, atol=2e-5)


def test_window_offsets_equal_slicing_the_full_raster(grid):
    full = ang.interpolate_grid(grid, out_shape=(300, 400), res_m=60.0)
    win = ang.interpolate_grid(grid, out_shape=(50, 70), res_m=60.0, row_off=120, col_off=300)
    np.testing.assert_array_equal(win, full[120:170, 300:370])


def test_output_is_float32_of_requested_shape(grid):
    out = ang.interpolate_grid(grid, out_shape=(7, 9), res_m=20.0)
    assert out.dtype == np.float32 and out.shape == (7, 9)


def test_nan_nodes_are_filled_from_nearest_valid_node():
    grid = np.full((23, 23), np.nan)
    grid[:, 15:] = 8.0  # valid only on the right (a detector footprint edge)
    grid[0, 15] = 5.0
    filled = ang.fill_nan_nearest(grid)
    assert np.isfinite(filled).all()
    assert filled[0, 0] == 5.0  # nearest valid node of (0, 0) is (0, 15)
    assert filled[10, 3] == 8.0
    # at a pixel centred on node (1, 1) the interpolated value is the filled node value
    out = ang.interpolate_grid(grid, out_shape=(11, 11), res_m=2 * STEP)
    assert out[0, 0] == 8.0  # node (1, 1): nearest valid is (1, 15) → 8
    assert np.isfinite(out).all()


def test_all_nan_grid_raises():
    with pytest.raises(ValueError, match="NaN"):
        ang.interpolate_grid(np.full((23, 23), np.nan), out_shape=(5, 5), res_m=20.0)
    with pytest.raises(ValueError, match="NaN"):
        ang.interpolate_azimuth_grid(np.full((23, 23), np.nan), out_shape=(5, 5), res_m=20.0)


def test_azimuth_wraps_around_north():
    grid = np.empty((23, 23))
    grid[:, 0::2] = 359.0
    grid[:, 1::2] = 1.0
    # pixel centred between nodes 0 and 1 along x (res 10 km, col c=0 → x = 5 km = node 1; use res 5 km):
    # res 5 km: centre (c + 0.5)·5 km → node c + 0.5 (midway between c and c + 1)
    out = ang.interpolate_azimuth_grid(grid, out_shape=(4, 4), res_m=STEP)
    d = np.minimum(out, 360.0 - out)  # angular distance to 0°
    assert (d < 1e-4).all()
    assert ((out >= 0.0) & (out < 360.0)).all()
    # a naive scalar interpolation would give 180°
    assert np.all(np.abs(ang.interpolate_grid(grid, out_shape=(4, 4), res_m=STEP) - 180.0) < 1e-4)


def test_azimuth_quarter_point_across_north():
    grid = np.empty((23, 23))
    grid[:, 0::2] = 350.0
    grid[:, 1::2] = 10.0
    # 20 m pixels along row 0: x = (c + 0.5)·20; c = 62 → x = 1250 m → j = 0.25 (one quarter from 350°)
    out = ang.interpolate_azimuth_grid(grid, out_shape=(1, 63), res_m=20.0)
    s = 0.75 * math.sin(math.radians(350)) + 0.25 * math.sin(math.radians(10))
    c = 0.75 * math.cos(math.radians(350)) + 0.25 * math.cos(math.radians(10))
    want = math.degrees(math.atan2(s, c)) % 360.0
    assert out[0, 62] == pytest.approx(want, abs=1e-4)
    assert 354.0 < out[0, 62] < 356.0


def test_azimuth_equal_to_plain_interpolation_away_from_north(grid):
    az = 100.0 + grid  # 120–160°, no wrap
    out = ang.interpolate_azimuth_grid(az, out_shape=(11, 11), res_m=2 * STEP)
    np.testing.assert_allclose(out, az[1::2, 1::2], atol=1e-4)


def test_azimuth_just_below_north_stays_below_360():
    grid = np.full((23, 23), 360.0 - 1e-6)
    out = ang.interpolate_azimuth_grid(grid, out_shape=(3, 3), res_m=20.0)
    assert ((out >= 0.0) & (out < 360.0)).all()


def test_lai_angle_cosines_snap_definition():
    cos_vz, cos_sz, cos_raa = ang.lai_angle_cosines(60.0, 10.0, 0.0, 350.0)
    assert cos_vz == pytest.approx(1.0)
    assert cos_sz == pytest.approx(0.5)
    # plain difference 10 − 350 = −340°: cos(−340°) = cos(20°) (no folding)
    assert cos_raa == pytest.approx(math.cos(math.radians(20.0)))
    _, _, opposite = ang.lai_angle_cosines(30.0, 150.0, 5.0, 330.0)
    assert opposite == pytest.approx(-1.0)


def test_lai_angle_cosines_dtype_follows_inputs_and_nan_propagates():
    sz = np.array([30.0, np.nan], dtype=np.float32)
    out = ang.lai_angle_cosines(sz, sz, sz, sz)
    assert all(o.dtype == np.float32 for o in out)
    assert np.isnan(out[1][1]) and np.isnan(out[0][1])
    assert out[1][0] == pytest.approx(math.cos(math.radians(30.0)), abs=1e-6)
    out64 = ang.lai_angle_cosines(np.array([30.0]), 0.0, 0.0, 0.0)
    assert all(o.dtype == np.float64 for o in out64)


def test_bad_arguments_raise(grid):
    with pytest.raises(ValueError):
        ang.interpolate_grid(grid, out_shape=(5, 5), res_m=0.0)
    with pytest.raises(ValueError):
        ang.interpolate_grid(grid[0], out_shape=(5, 5), res_m=20.0)


@pytest.mark.slow
def test_full_tile_at_20m_equals_the_same_window_of_a_small_grid(grid):
    # A full 5490² 20 m grid (the LAI step's case; speed is measured in bench/, not here) is the same
    # interpolation as any window of it: its top-left corner equals a small raster of the same grid.
    out = ang.interpolate_grid(grid, out_shape=(5490, 5490), res_m=20.0)
    az = ang.interpolate_azimuth_grid(grid, out_shape=(5490, 5490), res_m=20.0)
    assert out.shape == az.shape == (5490, 5490) and out.dtype == np.float32
    assert np.isfinite(out).all() and ((az >= 0) & (az < 360)).all()
    np.testing.assert_array_equal(out[:300, :300], ang.interpolate_grid(grid, out_shape=(300, 300), res_m=20.0))
