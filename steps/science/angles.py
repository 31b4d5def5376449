"""Sun/view angle grids of Sentinel-2 granule metadata, interpolated to raster pixels, and LAI cosines.

``MTD_TL.xml`` carries 23×23 angle grids (sun zenith/azimuth; per band and detector view zenith/azimuth)
with a 5000 m step. Node (i, j) sits at map coordinates ``(ulx + j·step, uly − i·step)``: node (0, 0) is the
tile's upper-left corner. A pixel (r, c) of a raster with resolution ``res`` and the same upper-left corner
has its centre at ``(ulx + (c + 0.5)·res, uly − (r + 0.5)·res)``; ``row_off``/``col_off`` shift the pixel
indices for windows. All angles are in degrees.

Interpolation is bilinear and separable: per output row and per output column there are two nodes and two
weights, so a 5490×5490 output costs one small (rows × 23) blend plus one (rows × 23)·(23 × cols) matrix
product. Pixel centres beyond the outermost nodes take the edge value (constant extrapolation). NaN nodes
(view grids are NaN outside a detector's footprint) are first filled from the nearest valid node.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["circular_mean_deg", "fill_nan_nearest", "interpolate_azimuth_grid", "interpolate_grid", "lai_angle_cosines",
           "nan_mean"]

S2_ANGLE_STEP_M = 5000.0
_ROW_BLOCK = 512  # output rows per block for the azimuth path (bounds temporaries to a few MB per row)


def nan_mean(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Arithmetic mean of the finite values along ``axis`` (all axes if None); NaN where none is finite.

    Emits no warning for empty slices (angle grids are NaN outside a detector's footprint).
    """
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a)
    n = ok.sum(axis=axis)
    total = np.where(ok, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def circular_mean_deg(az: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Direction of the mean unit vector of the finite azimuths (degrees) along ``axis``, in [0, 360).

    NaN where no value is finite. (The arithmetic mean of 350° and 10° is 180°; this gives 0°.)
    """
    rad = np.deg2rad(np.asarray(az, dtype=np.float64))
    ok = np.isfinite(rad)
    s = np.where(ok, np.sin(rad), 0.0).sum(axis=axis)
    c = np.where(ok, np.cos(rad), 0.0).sum(axis=axis)
    out = np.degrees(np.arctan2(s, c)) % 360.0
    return np.where(ok.any(axis=axis), out, np.nan)


def fill_nan_nearest(grid: np.ndarray) -> np.ndarray:
    """Replace non-finite nodes by the value of the nearest finite node (Euclidean, in node units).

    Args:
        grid: 2-D angle grid (degrees); NaN marks missing nodes.

    Returns:
        float64 copy without NaN.

    Raises:
        ValueError: the grid is not 2-D or has no finite node.
    """
    g = np.array(grid, dtype=np.float64)
    if g.ndim != 2:
        raise ValueError(f"angle grid must be 2-D, got shape {g.shape}")
    missing = ~np.isfinite(g)
    if missing.all():
        raise ValueError("angle grid has no finite node (all NaN)")
    if missing.any():
        # indices of the nearest zero (= finite node) of the mask, per node
        from scipy import ndimage  # here, not at module level: scipy.ndimage costs every process ~0.3 s to import

        idx = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
        g = g[tuple(idx)]
    return g


def _axis_weights(n_out: int, offset: int, res_m: float, step_m: float, n_nodes: int):
    """Lower node index (int) and weight of the upper node (float64) for each output pixel along one axis."""
    pos = (np.arange(n_out, dtype=np.float64) + offset + 0.5) * res_m / step_m
    lower = np.clip(np.floor(pos), 0, n_nodes - 2).astype(np.intp)
    frac = np.clip(pos - lower, 0.0, 1.0)
    return lower, frac


def _check(out_shape: tuple[int, int], res_m: float, step_m: float) -> tuple[int, int]:
    if len(out_shape) != 2:
        raise ValueError(f"out_shape must be (rows, cols), got {out_shape}")
    if not (res_m > 0 and step_m > 0):
        raise ValueError("res_m and step_m must be positive")
    rows, cols = (int(v) for v in out_shape)
    if rows < 0 or cols < 0:
        raise ValueError(f"out_shape must be non-negative, got {out_shape}")
    return rows, cols


def _separable(
    grids: list[np.ndarray],
    out_shape: tuple[int, int],
    res_m: float,
    step_m: float,
    row_off: int,
    col_off: int,
) -> tuple[list[np.ndarray], ColumnWeights]:
    """Row-blend each grid (→ rows × nx, float32) and the column weights (see :func:`_apply_columns`)."""
    rows, cols = out_shape
    g0 = grids[0]
    if g0.shape[0] == 1 or g0.shape[1] == 1:  # a single node along an axis: duplicate it
        pad = ((0, int(g0.shape[0] == 1)), (0, int(g0.shape[1] == 1)))
        grids = [np.pad(g, pad, mode="edge") for g in grids]
    ny, nx = grids[0].shape
    r_lo, r_t = _axis_weights(rows, row_off, res_m, step_m, ny)
    c_lo, c_t = _axis_weights(cols, col_off, res_m, step_m, nx)
    blended = [
        (g[r_lo] * (1.0 - r_t)[:, None] + g[r_lo + 1] * r_t[:, None]).astype(np.float32) for g in grids
    ]
    return blended, (c_lo, (1.0 - c_t).astype(np.float32), c_t.astype(np.float32))


#: Per output column: the left node index and the two float32 weights of the bilinear blend.
ColumnWeights = tuple[np.ndarray, np.ndarray, np.ndarray]


def _apply_columns(blended: np.ndarray, weights: ColumnWeights) -> np.ndarray:
    """Column blend of row-blended nodes: ``b[:, lo] * w_lo + b[:, lo + 1] * w_hi`` (float32).

    Not a matmul with a dense weight matrix: BLAS's sgemm rounds differently by matrix size and CPU
    (OpenBLAS's AMD Zen kernels), so a window would not equal the same pixels of the full raster. Two
    IEEE multiplies and one add per pixel give the same value for any window, size or CPU.
    """
    lo, w_lo, w_hi = weights
    out = blended[:, lo] * w_lo
    out += blended[:, lo + 1] * w_hi
    return out


def interpolate_grid(grid: np.ndarray, *, step_m: float = S2_ANGLE_STEP_M, out_shape: tuple[int, int], res_m: float,
                     row_off: int = 0, col_off: int = 0) -> np.ndarray:
    """Bilinear interpolation of a (zenith) angle grid at raster pixel centres.

    Args:
        grid: 2-D node grid (degrees), node (i, j) at ``(ulx + j·step_m, uly − i·step_m)``; NaN = missing.
        step_m: node spacing in metres (5000 for Sentinel-2).
        out_shape: (rows, cols) of the output raster (or window).
        res_m: output pixel size in metres (e.g. 20).
        row_off, col_off: pixel offset of the window's first row/column in the full raster.

    Returns:
        float32 array (degrees) of ``out_shape``; no NaN (missing nodes are filled from the nearest valid
        node; beyond the outer nodes the edge value is held).

    Raises:
        ValueError: all nodes are NaN, or bad shapes/resolutions.
    """
    rows, cols = _check(out_shape, res_m, step_m)
    g = fill_nan_nearest(grid)
    (blended,), weights = _separable([g], (rows, cols), res_m, step_m, row_off, col_off)
    return _apply_columns(blended, weights)


def interpolate_azimuth_grid(grid: np.ndarray, *, step_m: float = S2_ANGLE_STEP_M, out_shape: tuple[int, int],
                             res_m: float, row_off: int = 0, col_off: int = 0) -> np.ndarray:
    """Bilinear interpolation of an azimuth grid via unit vectors, so 359° and 1° average to 0°.

    Same geometry and arguments as :func:`interpolate_grid`. Missing (NaN) nodes are filled from the
    nearest valid node before the (sin, cos) components are interpolated; the result is
    ``atan2(sin, cos)`` in degrees.

    Returns:
        float32 array (degrees, in [0, 360)) of ``out_shape``. Where the interpolated vector vanishes
        (exactly opposite neighbours) the result is 0.

    Raises:
        ValueError: all nodes are NaN, or bad shapes/resolutions.
    """
    rows, cols = _check(out_shape, res_m, step_m)
    rad = np.radians(fill_nan_nearest(grid))
    (b_sin, b_cos), weights = _separable(
        [np.sin(rad), np.cos(rad)], (rows, cols), res_m, step_m, row_off, col_off
    )
    out = np.empty((rows, cols), dtype=np.float32)
    for r0 in range(0, rows, _ROW_BLOCK):
        r1 = min(r0 + _ROW_BLOCK, rows)
        s = _apply_columns(b_sin[r0:r1], weights)
        c = _apply_columns(b_cos[r0:r1], weights)
        az = np.arctan2(s, c)
        az *= np.float32(180.0 / np.pi)
        np.add(az, np.float32(360.0), out=az, where=az < 0)
        # −tiny + 360 rounds to exactly 360 in float32; keep the documented [0, 360) range
        out[r0:r1] = np.where(az >= np.float32(360.0), np.float32(0.0), az)
    return out


def lai_angle_cosines(
    sun_zenith: np.ndarray | float,
    sun_azimuth: np.ndarray | float,
    view_zenith: np.ndarray | float,
    view_azimuth: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three angular inputs of SNAP's LAI network, as SNAP's ``BiophysicalOp`` computes them.

    Args:
        sun_zenith, sun_azimuth, view_zenith, view_azimuth: degrees, broadcastable arrays or scalars
            (view angles = mean over bands, as SNAP's ``view_*_mean``).

    Returns:
        ``(cos_vz, cos_sz, cos_raa)`` = cos(view zenith), cos(sun zenith), cos(sun azimuth − view azimuth)
        with the plain difference (no folding into [0, 180]; cos is even, so its sign is irrelevant).
        Computed in the inputs' precision: float32 if all inputs are float32, else float64. NaN in →
        NaN out (no-data propagates).
    """
    arrs = [np.asarray(a) for a in (sun_zenith, sun_azimuth, view_zenith, view_azimuth)]
    dtype = np.result_type(np.float32, *(a.dtype for a in arrs))
    sz, saz, vz, vaz = (a.astype(dtype, copy=False) for a in arrs)
    dtor = dtype.type(np.pi / 180.0)
    cos_vz = np.cos(vz * dtor)
    cos_sz = np.cos(sz * dtor)
    cos_raa = np.cos((saz - vaz) * dtor)
    return cos_vz, cos_sz, cos_raa
