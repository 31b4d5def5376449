"""Cloud masking: s2cloudless probabilities (exact), a fast s2cloudless-equivalent mask, SCL combination.

Conventions (all functions)
---------------------------
* ``toa``: L1C top-of-atmosphere reflectance, unitless (0.0-1.0+, *after* the PB >= 04.00
  RADIO_ADD_OFFSET correction), float32 array of shape (H, W, 10) in :data:`S2CLOUDLESS_BANDS` order, all
  bands on one grid (typically 60 m or 160 m).
* ``valid``: bool (H, W), True where the pixel has data. Default: all ten bands finite and not all zero
  (DN 0 = no data in the L1C product). No-data pixels are never evaluated.
* Probabilities are float32 in [0, 1]; NaN where not evaluated (no data, or skipped by the fast path).
* Masks are bool (H, W), True = cloud; no-data pixels are always False in a returned mask (the
  ``cloud_mask`` product marks them 255 = nodata, see :mod:`steps.science.scl`).

No-data in the spatial averaging
--------------------------------
s2cloudless averages the probability with a normalised disk kernel. Here a no-data pixel enters that
average with probability **0** (as if clear sky). It therefore can only pull the average of a valid
neighbour down, never turn a valid pixel cloudy; the price is that clouds touching a swath edge are
averaged with "clear" and their outermost pixels may be dropped, a conservative choice that is
compensated by the dilation step. The reference it is tested against is s2cloudless's own
``get_mask_from_prob`` applied to s2cloudless's probabilities with no-data pixels set to 0.

The model file
--------------
The LightGBM model ships inside the ``s2cloudless`` wheel; it is found with ``importlib.util.find_spec``
(no import of ``s2cloudless``, which would pull in ``sentinelhub``) and parsed here into flat arrays.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from steps.science._trees import TreeEnsemble, parse_lightgbm_model, predict_proba, predict_raw
from steps.science.scl import (
    MASK_BUFFER,
    MASK_CIRRUS,
    MASK_CLEAR,
    MASK_CLOUD,
    MASK_NODATA,
    MASK_SHADOW,
    scl_to_mask,
)

logger = logging.getLogger(__name__)

#: Input band order of the s2cloudless model (its ``MODEL_BAND_IDS`` of the 13 L1C bands).
S2CLOUDLESS_BANDS: tuple[str, ...] = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
#: File name of the LightGBM model inside the s2cloudless package (``<pkg>/models/``).
S2CLOUDLESS_MODEL_FILENAME = "pixel_s2_cloud_detector_lightGBM_v0.1.txt"

#: Sen2Cor's thin-cirrus threshold on L1C B10 TOA reflectance (GIPP ``T1_B10``).
SEN2COR_T1_B10 = 0.012

Engine = Literal["auto", "lightgbm", "numpy"]


# --------------------------------------------------------------------------------------------- model
@dataclass
class S2CloudlessModel:
    """The s2cloudless LightGBM model: flat tree arrays (own exact evaluator) plus the file path.

    ``booster()`` lazily loads the same file with LightGBM (its multithreaded predictor is the fastest
    exact evaluator available here); both evaluators give identical probabilities.
    """

    trees: TreeEnsemble
    path: Path
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def booster(self) -> Any:
        """The model as a ``lightgbm.Booster`` (loaded once, cached)."""
        if "booster" not in self._cache:
            import lightgbm  # local import: only the fast path needs it

            self._cache["booster"] = lightgbm.Booster(model_file=str(self.path))
        return self._cache["booster"]


def s2cloudless_model_path() -> Path:
    """Path of the model file inside the installed ``s2cloudless`` package (not imported)."""
    spec = importlib.util.find_spec("s2cloudless")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the s2cloudless package is not installed; it ships the cloud model file")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / S2CLOUDLESS_MODEL_FILENAME


def load_s2cloudless_model(path: str | Path | None = None) -> S2CloudlessModel:
    """Parse the s2cloudless LightGBM text model (170 trees, 10 features) into flat numpy arrays.

    ``path`` defaults to the file shipped in the installed s2cloudless wheel.
    """
    model_path = Path(path) if path is not None else s2cloudless_model_path()
    trees = parse_lightgbm_model(model_path)
    if trees.n_features != len(S2CLOUDLESS_BANDS):
        raise ValueError(f"expected a {len(S2CLOUDLESS_BANDS)}-feature model, got {trees.n_features}")
    return S2CloudlessModel(trees=trees, path=model_path)


def _check_toa(toa: np.ndarray) -> np.ndarray:
    toa = np.asarray(toa)
    if toa.ndim != 3 or toa.shape[-1] != len(S2CLOUDLESS_BANDS):
        raise ValueError(f"toa must have shape (H, W, {len(S2CLOUDLESS_BANDS)}), got {toa.shape}")
    if toa.dtype != np.float32:
        toa = toa.astype(np.float32)
    return toa


def default_valid(toa: np.ndarray) -> np.ndarray:
    """Valid-data mask (bool, H x W) for a TOA stack: all bands finite and not all bands exactly 0."""
    toa = _check_toa(toa)
    return np.all(np.isfinite(toa), axis=-1) & np.any(toa != 0, axis=-1)


def _evaluate(model: S2CloudlessModel, X: np.ndarray, engine: Engine) -> np.ndarray:
    """Cloud probability (float64) for rows of X (n, 10) float32."""
    if X.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    if engine == "numpy":
        return predict_proba(model.trees, X)
    try:
        booster = model.booster()
    except ImportError:
        if engine == "lightgbm":
            raise
        return predict_proba(model.trees, X)
    return np.asarray(booster.predict(np.ascontiguousarray(X, dtype=np.float32)), dtype=np.float64)


def cloud_probability(
    model: S2CloudlessModel,
    toa: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    engine: Engine = "numpy",
) -> np.ndarray:
    """Exact s2cloudless cloud probability per pixel.

    Args:
        model: from :func:`load_s2cloudless_model`.
        toa: float32 (H, W, 10) L1C TOA reflectance (offset-corrected), :data:`S2CLOUDLESS_BANDS` order.
        valid: bool (H, W); default :func:`default_valid`.
        engine: ``"numpy"`` (default) = this module's own tree evaluator; ``"lightgbm"`` = LightGBM's
            predictor on the same file (faster, identical results); ``"auto"`` = LightGBM if importable.

    Returns:
        float32 (H, W): probability in [0, 1] (sigmoid of the summed leaf values, as LightGBM's binary
        objective does) on valid pixels, NaN elsewhere. Equals
        ``S2PixelCloudDetector().get_cloud_probability_maps`` on valid pixels.
    """
    toa = _check_toa(toa)
    valid = default_valid(toa) if valid is None else np.asarray(valid, dtype=bool)
    out = np.full(toa.shape[:2], np.nan, dtype=np.float32)
    idx = np.flatnonzero(valid)
    if idx.size:
        X = toa.reshape(-1, toa.shape[-1])[idx]
        out.flat[idx] = _evaluate(model, X, engine).astype(np.float32)
    return out


# ----------------------------------------------------------------------------------- post-processing
def disk(radius: int) -> np.ndarray:
    """Disk structuring element (uint8, (2r+1)^2) rasterised like s2cloudless's (filled ``cv2.circle``)."""
    r = int(radius)
    img = np.zeros((2 * r + 1, 2 * r + 1), dtype=np.uint8)
    return cv2.circle(img, (r, r), r, color=1, thickness=-1)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class CloudMaskParams:
    """s2cloudless post-processing settings, in pixels of the grid the model is run on.

    ``threshold``: strict ``>`` on the disk-averaged probability. ``average_over``: disk radius of the
    normalised averaging kernel (0 = none). ``dilation_size``: disk radius of the final dilation (0 =
    none). ``resolution_m``: pixel size the values were chosen for (documentation only).
    Fast-path knobs (see :func:`cloud_mask_fast`): ``surrogate_trees`` (trees in the cheap estimate),
    ``calibration_stride`` (px between exactly evaluated lattice pixels), ``margin`` (probability units
    around the threshold that trigger refinement), ``refine_band_px``, ``max_rounds``, ``margin_decay``,
    ``band_growth``, ``residual_correction``.
    """

    threshold: float = 0.4
    average_over: int = 11
    dilation_size: int = 5
    resolution_m: float = 60.0
    surrogate_trees: int = 10
    calibration_stride: int = 4
    margin: float = 0.03
    refine_band_px: int = 2
    max_rounds: int = 3
    margin_decay: float = 1.0
    band_growth: float = 1.0
    residual_correction: bool = True


def params_for_resolution(resolution_m: float, threshold: float = 0.4) -> CloudMaskParams:
    """Scale the common 160 m settings (average_over=4, dilation_size=2 px) to another pixel size.

    Radii keep their ground distance (640 m averaging, 320 m dilation) and are rounded half-up to whole
    pixels, at least 1: 160 m -> 4/2, 60 m -> 11/5 (10.67, 5.33), 20 m -> 32/16, 10 m -> 64/32.
    """
    if resolution_m <= 0:
        raise ValueError("resolution_m must be positive")
    avg = max(1, _round_half_up(4 * 160.0 / resolution_m))
    dil = max(1, _round_half_up(2 * 160.0 / resolution_m))
    return CloudMaskParams(threshold=threshold, average_over=avg, dilation_size=dil, resolution_m=float(resolution_m))


def _average(prob0: np.ndarray, params: CloudMaskParams) -> np.ndarray:
    """Disk-average (float32) like s2cloudless: cv2.filter2D, normalised disk, BORDER_REFLECT."""
    if not params.average_over:
        return prob0
    k = disk(params.average_over)
    kernel = k / np.sum(k)
    return cv2.filter2D(prob0, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _threshold_dilate(avg: np.ndarray, params: CloudMaskParams) -> np.ndarray:
    m: np.ndarray = (avg > params.threshold).astype(np.uint8)
    if params.dilation_size:
        m = cv2.dilate(m, disk(params.dilation_size))
    return m.astype(bool)


def mask_from_probability(prob: np.ndarray, valid: np.ndarray, params: CloudMaskParams) -> np.ndarray:
    """s2cloudless post-processing of a full probability map (float32 H x W, NaN allowed at no-data).

    No-data pixels enter the average as 0 (see module docstring); the returned bool mask is False there.
    """
    valid = np.asarray(valid, dtype=bool)
    p0 = np.where(valid, np.nan_to_num(prob, nan=0.0), 0.0).astype(np.float32)
    return _threshold_dilate(_average(p0, params), params) & valid


@dataclass
class CloudMaskResult:
    """Result of :func:`cloud_mask_fast`.

    ``mask``: bool (H, W), True = cloud, False on no-data. ``probability``: float32 (H, W), exact
    s2cloudless probability where evaluated, NaN elsewhere. ``n_evaluated``: pixels run through the
    model; ``n_valid``: valid pixels. ``timings``: seconds per phase.
    """

    mask: np.ndarray
    probability: np.ndarray
    n_evaluated: int
    n_valid: int
    timings: dict[str, float] = field(default_factory=dict)
    average: np.ndarray | None = None  # float32 disk-averaged (estimated) probability, for diagnostics

    @property
    def evaluated_fraction(self) -> float:
        """Share of valid pixels that were evaluated (0..1); 0.0 without valid pixels."""
        return self.n_evaluated / self.n_valid if self.n_valid else 0.0


def _evaluate_raw_partial(model: S2CloudlessModel, X: np.ndarray, n_trees: int, engine: Engine) -> np.ndarray:
    """Raw score of the first ``n_trees`` trees (float64) for rows of X (n, 10)."""
    if X.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    if engine != "numpy":
        try:
            booster = model.booster()
        except ImportError:
            if engine == "lightgbm":
                raise
        else:
            out = booster.predict(np.ascontiguousarray(X), raw_score=True, num_iteration=n_trees)
            return np.asarray(out, dtype=np.float64)
    return predict_raw(model.trees, X, n_trees=n_trees)


def _calibrate(raw_k: np.ndarray, p: np.ndarray, n_bins: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Monotone-in-bins map partial raw score -> mean exact probability (bin means, for np.interp)."""
    order = np.argsort(raw_k, kind="stable")
    rk, pk = raw_k[order], p[order]
    n_bins = max(1, min(n_bins, rk.size // 20))
    splits = np.array_split(np.arange(rk.size), n_bins)
    xs = np.array([rk[i].mean() for i in splits])
    ys = np.array([pk[i].mean() for i in splits])
    return xs, ys


def cloud_mask_fast(
    model: S2CloudlessModel,
    toa: np.ndarray,
    valid: np.ndarray | None = None,
    params: CloudMaskParams | None = None,
    *,
    engine: Engine = "auto",
) -> CloudMaskResult:
    """s2cloudless cloud mask, evaluating the full model only where the decision needs it.

    The mask is defined exactly as s2cloudless's ``get_cloud_masks`` (threshold of the disk-averaged
    probability, then disk dilation; no-data enters the average as 0). The expensive part is the
    170-tree model per pixel; the mask only depends on the *average* of the probability over a disk of
    hundreds of pixels, which is insensitive to small independent per-pixel errors. Hence:

    1. **surrogate**: the first ``surrogate_trees`` trees (10 of 170, ~6 % of the cost) on every valid
       pixel - boosting puts most of the signal in the first trees;
    2. **calibration**: the full model on a lattice of stride ``calibration_stride`` (1/16 of the
       pixels at stride 4); partial raw score -> probability is calibrated on those pixels (binned means,
       piecewise linear), giving a per-pixel estimate with ~0.05 residual std;
       A spatially smoothed residual measured on the lattice is added (the calibration error is
       spatially correlated, e.g. one surface type under thin cloud);
    3. the disk average of (exact where known, estimate elsewhere) is computed; pixels within
       ``margin`` of the threshold whose disk still contains estimates get the full model in a band of
       ``refine_band_px`` around them; repeated up to ``max_rounds`` times (the band grows by
       ``band_growth`` and the margin shrinks by ``margin_decay`` per round).

    With the defaults (band 2 px, margin 0.03, 3 rounds) the mask agrees with s2cloudless on 99.6-99.9 %
    of valid pixels while 10-25 % of them are evaluated (margin 0.05 evaluated ~15 % more pixels for
    +0.05 % agreement on a full 60 m tile); the disagreements are pixels whose true average is within
    ~0.005 of the threshold. Evaluated pixels are fed to the model sorted by their surrogate score, so
    neighbouring rows take the same paths through the trees (~30 % faster than spatial order).
    ``band_growth=2, margin_decay=0.5, max_rounds=6`` makes
    persistently borderline pixels end up with a fully evaluated disk (100 % agreement in tests) at
    roughly 2.5x the evaluations.

    Clear land and cloud interiors are decided on the estimate; only a thin band along the threshold
    contour is evaluated exactly. Evaluation uses LightGBM's predictor on the gathered pixels
    (``engine="auto"``) or this module's own evaluator (``"numpy"``); both are exact.

    Args:
        model: from :func:`load_s2cloudless_model`.
        toa: float32 (H, W, 10) L1C TOA reflectance, :data:`S2CLOUDLESS_BANDS` order.
        valid: bool (H, W); default :func:`default_valid`.
        params: post-processing settings in pixels (default :class:`CloudMaskParams`, i.e. 60 m).
        engine: evaluator, see :func:`cloud_probability`.

    Returns:
        :class:`CloudMaskResult`: ``probability`` is exact where evaluated and NaN elsewhere (estimates
        are not returned); ``n_evaluated`` counts full-model evaluations.
    """
    t_start = time.perf_counter()
    params = params or CloudMaskParams()
    toa = _check_toa(toa)
    valid = default_valid(toa) if valid is None else np.asarray(valid, dtype=bool)
    h, w = valid.shape
    n_valid = int(np.count_nonzero(valid))
    flat_toa = toa.reshape(-1, toa.shape[-1])
    prob = np.full((h, w), np.nan, dtype=np.float32)
    timings: dict[str, float] = {"model": 0.0}
    if n_valid == 0:
        return CloudMaskResult(np.zeros((h, w), bool), prob, 0, 0, timings)
    known = ~valid  # no-data is "known" with p = 0
    estimate = np.zeros((h, w), dtype=np.float32)  # exact where known, surrogate elsewhere, 0 on no-data
    n_eval = 0

    def evaluate(select: np.ndarray) -> np.ndarray:
        nonlocal n_eval
        idx = np.flatnonzero(select & ~known)
        if idx.size:
            t0 = time.perf_counter()
            # Pixels in order of their surrogate score take similar paths through the trees one after
            # the other (branch prediction, node cache): ~30 % less time per pixel than spatial order.
            # The probabilities do not depend on the order.
            idx = idx[np.argsort(raw_full[idx], kind="stable")]
            p = _evaluate(model, flat_toa[idx], engine).astype(np.float32)
            timings["model"] += time.perf_counter() - t0
            prob.flat[idx] = p
            estimate.flat[idx] = p
            known.flat[idx] = True
            n_eval += idx.size
        return idx

    # 1. surrogate on all valid pixels
    t0 = time.perf_counter()
    vidx = np.flatnonzero(valid)
    raw_k = _evaluate_raw_partial(model, flat_toa[vidx], params.surrogate_trees, engine)
    raw_full = np.full(h * w, np.nan)
    raw_full[vidx] = raw_k
    timings["surrogate"] = time.perf_counter() - t0
    # 2. exact lattice + calibration
    t0 = time.perf_counter()
    lattice = np.zeros((h, w), dtype=bool)
    cs = max(1, int(params.calibration_stride))
    lattice[cs // 2 :: cs, cs // 2 :: cs] = True
    evaluate(lattice & valid)
    cal = np.flatnonzero(known.ravel() & valid.ravel())
    if cal.size >= 20:
        xs, ys = _calibrate(raw_full[cal], estimate.ravel()[cal])
        est_vals = np.interp(raw_k, xs, ys)
    else:  # too few exact samples: the partial score's own sigmoid
        est_vals = 1.0 / (1.0 + np.exp(-model.trees.sigmoid * raw_k))
    est_cal = np.zeros((h, w), dtype=np.float32)  # calibrated surrogate, valid pixels
    est_cal.flat[vidx] = est_vals
    sigma = float(cs)

    if params.residual_correction and cal.size >= 20:
        # The calibration is global while its error is spatially correlated (one surface type under
        # thin cloud, say): add the residual measured on the lattice, spread by normalised Gaussian
        # smoothing (sigma = lattice stride). Only the unbiased lattice sample is used: residuals of the
        # refinement bands (cloud edges) do not represent their surroundings and made results worse.
        on_lattice = np.zeros((h, w), dtype=bool)
        on_lattice.flat[cal] = True
        resid = np.where(on_lattice, estimate - est_cal, 0.0).astype(np.float32)
        num = cv2.GaussianBlur(resid, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        den = cv2.GaussianBlur(on_lattice.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        corr = num / np.maximum(den, 1e-3)
        corr[den <= 1e-3] = 0.0
        est_cal = np.clip(est_cal + corr, 0.0, 1.0).astype(np.float32)
    unknown0 = valid & ~known
    estimate[unknown0] = est_cal[unknown0]
    timings["calibration"] = time.perf_counter() - t0
    # 3. refine around the threshold contour
    t0 = time.perf_counter()
    r = int(params.average_over)
    sup = disk(r).astype(np.float32) if r else np.ones((1, 1), np.float32)
    avg = _average(estimate, params)
    band_px = max(1, int(params.refine_band_px))
    margin = params.margin
    for _ in range(params.max_rounds):
        unknown_in_disk = cv2.filter2D((~known).astype(np.float32), -1, sup, borderType=cv2.BORDER_REFLECT)
        uncertain = valid & (np.abs(avg - params.threshold) < margin) & (unknown_in_disk > 0.5)
        margin *= params.margin_decay
        if not uncertain.any():
            break
        # Band around the still-uncertain pixels, growing by ``band_growth`` each round (a factor 2
        # converges to whole exactly-evaluated disks for pixels that stay borderline).
        region = cv2.dilate(uncertain.astype(np.uint8), disk(min(band_px, max(r, 1)))).astype(bool)
        band_px = max(band_px, round(band_px * params.band_growth))
        if evaluate(region).size == 0:
            if params.band_growth <= 1.0:
                break  # the same band again would add nothing
            continue
        avg = _average(estimate, params)
    timings["refine"] = time.perf_counter() - t0
    mask = _threshold_dilate(avg, params) & valid
    timings["total"] = time.perf_counter() - t_start
    logger.debug(
        "cloud_mask_fast: %d/%d valid pixels evaluated (%.1f %%), %.2f s",
        n_eval,
        n_valid,
        100.0 * n_eval / n_valid,
        timings["total"],
    )
    return CloudMaskResult(
        mask=mask, probability=prob, n_evaluated=n_eval, n_valid=n_valid, timings=timings, average=avg
    )


def cloud_mask_exact(
    model: S2CloudlessModel,
    toa: np.ndarray,
    valid: np.ndarray | None = None,
    params: CloudMaskParams | None = None,
    *,
    engine: Engine = "auto",
) -> CloudMaskResult:
    """Reference path: evaluate every valid pixel, then :func:`mask_from_probability` (same conventions)."""
    params = params or CloudMaskParams()
    toa = _check_toa(toa)
    valid = default_valid(toa) if valid is None else np.asarray(valid, dtype=bool)
    prob = cloud_probability(model, toa, valid, engine=engine)
    n = int(np.count_nonzero(valid))
    return CloudMaskResult(mask_from_probability(prob, valid, params), prob, n, n)


# ------------------------------------------------------------------------------- final combination
def upsample_nearest(mask: np.ndarray, factor: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Nearest-neighbour upsampling of a 2-D array by an integer ``factor`` (each pixel -> factor^2).

    Grids are assumed to share their upper-left corner (true for S2 60/20/10 m bands of one tile).
    ``shape`` crops (or edge-pads) the result to an exact target shape.
    """
    if factor < 1:
        raise ValueError("factor must be >= 1")
    out = np.repeat(np.repeat(np.asarray(mask), factor, axis=0), factor, axis=1)
    if shape is not None:
        pad = ((0, max(0, shape[0] - out.shape[0])), (0, max(0, shape[1] - out.shape[1])))
        if any(p[1] for p in pad):
            out = np.pad(out, pad, mode="edge")
        out = out[: shape[0], : shape[1]]
    return out


def mask_20m_to_10m(codes_20m: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Bring a 20 m ``cloud_mask`` code array to the 10 m grid (nearest neighbour, factor 2)."""
    return upsample_nearest(codes_20m, 2, shape)


def build_cloud_mask(
    scl: np.ndarray,
    *,
    s2c_cloud: np.ndarray | None = None,
    b10_toa: np.ndarray | None = None,
    scl_dilation_px: int = 5,
    cloud_dilation_px: int = 2,
    cirrus_threshold: float = SEN2COR_T1_B10,
) -> np.ndarray:
    """Combine SCL, an s2cloudless mask and a B10 cirrus test into ``cloud_mask`` codes on the 20 m grid.

    Args:
        scl: uint8 (H, W) Sen2Cor scene classification (20 m).
        s2c_cloud: optional bool (H, W), s2cloudless cloud mask already upsampled to 20 m (e.g.
            :func:`upsample_nearest` of a 60 m mask by 3). None = SCL-only fallback (no L1C).
        b10_toa: optional float (H, W) L1C B10 TOA reflectance on the 20 m grid (offset-corrected);
            NaN ignored.
        scl_dilation_px: disk radius (20 m px) by which SCL cloud (8, 9) and shadow (3) are grown into
            clear pixels as ``buffer``; default 5 px = 100 m (SCL under-detects cloud edges).
        cloud_dilation_px: disk radius for the s2cloudless cloud; default 2 px = 40 m (its mask is
            already dilated by s2cloudless post-processing; this absorbs the 60 m stair-steps).
        cirrus_threshold: B10 TOA above which a pixel is cirrus (Sen2Cor T1_B10 = 0.012).

    Returns:
        uint8 (H, W) codes of :mod:`steps.science.scl`. Precedence (highest first): nodata(255) >
        cloud(1) > shadow(3) > cirrus(2) > snow(4) > invalid(5) > buffer(6) > clear(0). Rationale: no-data
        is absolute; an opaque cloud hides whatever SCL saw below it (incl. SCL snow, which s2cloudless
        may also call cloud - masking it either way); shadow before cirrus because it is the darker,
        more damaging contamination for NDVI/LAI; buffer only ever replaces clear.
    """
    scl = np.asarray(scl, dtype=np.uint8)
    base = scl_to_mask(scl)
    nodata = base == MASK_NODATA
    cloud = base == MASK_CLOUD
    shadow = base == MASK_SHADOW
    cirrus = base == MASK_CIRRUS
    scl_dirty = (cloud | shadow).astype(np.uint8)
    grown = cv2.dilate(scl_dirty, disk(scl_dilation_px)) if scl_dilation_px > 0 else scl_dirty
    grown = grown.astype(bool)
    if s2c_cloud is not None:
        s2c = np.asarray(s2c_cloud, dtype=bool)
        if s2c.shape != scl.shape:
            raise ValueError(f"s2c_cloud shape {s2c.shape} != scl shape {scl.shape}")
        cloud |= s2c
        if cloud_dilation_px > 0:
            grown |= cv2.dilate(s2c.astype(np.uint8), disk(cloud_dilation_px)).astype(bool)
        else:
            grown |= s2c
    if b10_toa is not None:
        b10 = np.asarray(b10_toa, dtype=np.float32)
        if b10.shape != scl.shape:
            raise ValueError(f"b10_toa shape {b10.shape} != scl shape {scl.shape}")
        with np.errstate(invalid="ignore"):
            cirrus |= b10 > cirrus_threshold  # NaN compares False
    out = base.copy()  # snow(4), invalid(5), clear(0), nodata(255) from SCL
    out[grown & (base == MASK_CLEAR)] = MASK_BUFFER
    out[cirrus] = MASK_CIRRUS
    out[shadow] = MASK_SHADOW
    out[cloud] = MASK_CLOUD
    out[nodata] = MASK_NODATA
    return out
