"""Cloud masking: s2cloudless probabilities and mask (proven equal to s2cloudless's), SCL combination.

Conventions (all functions)
---------------------------
* ``toa``: L1C top-of-atmosphere reflectance, unitless (0.0-1.0+, *after* the PB >= 04.00
  RADIO_ADD_OFFSET correction), float32 array of shape (H, W, 10) in :data:`S2CLOUDLESS_BANDS` order, all
  bands on one grid (typically 60 m or 160 m).
* ``valid``: bool (H, W), True where the pixel has data. The one no-data rule, for these functions and
  the pipeline alike (:func:`default_valid`): a pixel is valid when all ten bands are finite. Callers
  mark no data as NaN; the pipeline's reader turns the L1C no-data DN 0 of any band into NaN. A TOA of
  exactly 0.0 is valid data (DN 1000 with the PB >= 04.00 offset). No-data pixels are never evaluated.
* Probabilities are float32 in [0, 1]; NaN on no-data pixels.
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

# cv2 is imported inside the functions that use it: most processes that load this module (help, the
# worker, the ndvi and stac steps) never call them, and the import costs each ~0.1 s.
import numpy as np

from steps.science import _compiled
from steps.science._trees import TreeEnsemble, parse_lightgbm_model, predict_proba
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

Engine = Literal["auto", "compiled", "lightgbm", "numpy"]


# --------------------------------------------------------------------------------------------- model
@dataclass
class S2CloudlessModel:
    """The s2cloudless LightGBM model: flat tree arrays (own exact evaluator) plus the file path.

    ``booster()`` lazily loads the same file with LightGBM (the evaluator s2cloudless itself uses);
    ``compiled()`` the machine-code version of :mod:`steps.science._compiled`. All give the same
    float32 probabilities.
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

    def lightgbm_proba(self, X: np.ndarray) -> np.ndarray:
        """LightGBM's probability (float64) for rows of ``X`` (n, 10) float32."""
        return np.asarray(self.booster().predict(np.ascontiguousarray(X, dtype=np.float32)), dtype=np.float64)

    def compiled(self) -> _compiled.CompiledForest:
        """The compiled model (compiled once per machine and cached; checked against LightGBM on load).

        Raises :class:`~steps.science._compiled.CompiledModelUnavailableError` when it cannot be used; the
        failure is remembered for this process.
        """
        if "compiled" not in self._cache:
            try:
                self._cache["compiled"] = _compiled.load_compiled(self.path, self.trees, self.lightgbm_proba)
            except (_compiled.CompiledModelUnavailableError, OSError) as exc:
                self._cache["compiled"] = exc
        got = self._cache["compiled"]
        if isinstance(got, BaseException):
            raise _compiled.CompiledModelUnavailableError(str(got)) from got
        return got


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
    """Valid-data mask (bool, H x W) for a TOA stack: all ten bands finite (no data is marked NaN)."""
    toa = _check_toa(toa)
    return np.all(np.isfinite(toa), axis=-1)


def _evaluate(model: S2CloudlessModel, X: np.ndarray, engine: Engine) -> tuple[np.ndarray, str, int]:
    """float32 probabilities for rows of X (n, 10) float32: (values, engine used, rows re-checked)."""
    if X.shape[0] == 0:
        return np.empty(0, dtype=np.float32), engine, 0
    if engine == "numpy":
        return predict_proba(model.trees, X).astype(np.float32), "numpy", 0
    if engine in ("compiled", "auto"):
        try:
            forest = model.compiled()
        except (_compiled.CompiledModelUnavailableError, ImportError) as exc:
            if engine == "compiled":
                logger.warning("compiled cloud model unavailable (%s): using LightGBM's predictor (same mask, "
                               "5-6x slower)", exc)
        else:
            values, n_rechecked = forest.predict_float32(X, model.lightgbm_proba)
            return values, "compiled", n_rechecked
    try:
        return model.lightgbm_proba(X).astype(np.float32), "lightgbm", 0
    except ImportError:
        if engine == "lightgbm":
            raise
        return predict_proba(model.trees, X).astype(np.float32), "numpy", 0


def _probability(model: S2CloudlessModel, toa: np.ndarray, valid: np.ndarray, engine: Engine
                 ) -> tuple[np.ndarray, str, int]:
    out = np.full(toa.shape[:2], np.nan, dtype=np.float32)
    idx = np.flatnonzero(valid)
    used: str = engine
    n_rechecked = 0
    if idx.size:
        X = toa.reshape(-1, toa.shape[-1])[idx]
        values, used, n_rechecked = _evaluate(model, X, engine)
        out.flat[idx] = values
    return out, used, n_rechecked


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
            predictor on the same file; ``"compiled"`` = the compiled model with its float32 proof
            (falls back to LightGBM); ``"auto"`` = compiled, else LightGBM, else numpy.

    Returns:
        float32 (H, W): probability in [0, 1] (sigmoid of the summed leaf values, as LightGBM's binary
        objective does) on valid pixels, NaN elsewhere. Equals
        ``S2PixelCloudDetector().get_cloud_probability_maps`` on valid pixels.
    """
    toa = _check_toa(toa)
    valid = default_valid(toa) if valid is None else np.asarray(valid, dtype=bool)
    return _probability(model, toa, valid, engine)[0]


# ----------------------------------------------------------------------------------- post-processing
def disk(radius: int) -> np.ndarray:
    """Disk structuring element (uint8, (2r+1)^2) rasterised like s2cloudless's (filled ``cv2.circle``)."""
    import cv2

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
    """

    threshold: float = 0.4
    average_over: int = 11
    dilation_size: int = 5
    resolution_m: float = 60.0


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
    import cv2

    if not params.average_over:
        return prob0
    k = disk(params.average_over)
    kernel = k / np.sum(k)
    return cv2.filter2D(prob0, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _threshold_dilate(avg: np.ndarray, params: CloudMaskParams) -> np.ndarray:
    import cv2

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
    """Result of :func:`cloud_mask`.

    ``mask``: bool (H, W), True = cloud, False on no-data. ``probability``: float32 (H, W), the
    s2cloudless probability (bit-identical to ``S2PixelCloudDetector``'s float32 maps) on valid pixels,
    NaN elsewhere. ``n_evaluated``: pixels run through the model; ``n_valid``: valid pixels;
    ``n_rechecked``: pixels the compiled evaluator handed to LightGBM because the error bound could not
    decide their float32 value; ``engine``: the evaluator that ran; ``timings``: seconds per phase.
    """

    mask: np.ndarray
    probability: np.ndarray
    n_evaluated: int
    n_valid: int
    engine: str = "numpy"
    n_rechecked: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def evaluated_fraction(self) -> float:
        """Share of valid pixels that were evaluated (0..1); 0.0 without valid pixels."""
        return self.n_evaluated / self.n_valid if self.n_valid else 0.0


#: ``--cloud-mode`` -> evaluator. Both give the same mask; see :func:`cloud_mask`.
MODE_ENGINES: dict[str, Engine] = {"fast": "compiled", "exact": "lightgbm"}


def cloud_mask(
    model: S2CloudlessModel,
    toa: np.ndarray,
    valid: np.ndarray | None = None,
    params: CloudMaskParams | None = None,
    *,
    mode: str = "fast",
) -> CloudMaskResult:
    """s2cloudless cloud mask: every valid pixel evaluated, then :func:`mask_from_probability`.

    ``mode="fast"`` (default) evaluates with the compiled model (:mod:`steps.science._compiled`): its
    float32 probabilities are proven bit-identical to LightGBM's (pixels the error bound cannot decide
    are re-evaluated by LightGBM), so the mask equals s2cloudless's. Falls back to LightGBM, with a
    warning, when the compiled model is unavailable. ``mode="exact"`` runs LightGBM's own predictor (the
    evaluator s2cloudless uses) on every pixel: no compile step, 5-6x slower.

    No pixel is skipped. An earlier mode decided most pixels from the first 10 trees; on real scenes it
    missed 1.7-2.4 % of the cloud pixels, and no useful bound backs such a skip (the remaining trees'
    leaf ranges add up to the whole 0-1 probability range), see ``docs/BENCHMARKS.md``.
    """
    if mode not in MODE_ENGINES:
        raise ValueError(f"cloud mode {mode!r}: choose one of {sorted(MODE_ENGINES)}")
    params = params or CloudMaskParams()
    toa = _check_toa(toa)
    valid = default_valid(toa) if valid is None else np.asarray(valid, dtype=bool)
    t0 = time.perf_counter()
    prob, engine, n_rechecked = _probability(model, toa, valid, MODE_ENGINES[mode])
    t1 = time.perf_counter()
    mask = mask_from_probability(prob, valid, params)
    n = int(np.count_nonzero(valid))
    return CloudMaskResult(mask, prob, n, n, engine=engine, n_rechecked=n_rechecked,
                           timings={"model": t1 - t0, "post": time.perf_counter() - t1})


def cloud_mask_exact(
    model: S2CloudlessModel,
    toa: np.ndarray,
    valid: np.ndarray | None = None,
    params: CloudMaskParams | None = None,
) -> CloudMaskResult:
    """Reference path: LightGBM's predictor on every valid pixel (``cloud_mask(..., mode="exact")``)."""
    return cloud_mask(model, toa, valid, params, mode="exact")


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
    import cv2

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
