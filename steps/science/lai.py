"""Leaf area index from Sentinel-2 L2A reflectance: a numpy port of SNAP's Biophysical Processor (LAI).

The network is INRA's (Weiss & Baret) 11-5-1 perceptron shipped with SNAP (``opttbx-biophysical``
auxdata, copied byte-identically into ``steps/data/snap_biophysical``; see the ``PROVENANCE.md`` there).
Equations (``shared/reference/SCIENCE_NOTES.md`` §1.3–1.5)::

    x̃ᵢ = 2·(xᵢ − mᵢ)/(Mᵢ − mᵢ) − 1            11 inputs, (mᵢ, Mᵢ) from LAI_Normalisation
    hⱼ = tanh(bⱼ + Σᵢ Wⱼᵢ x̃ᵢ)                 5 hidden neurons
    ỹ  = c + Σⱼ vⱼ hⱼ                          linear output neuron
    y  = ½(Y_max − Y_min)·ỹ + ½(Y_max − Y_min) + Y_min

Inputs, in this order: BOA reflectance (0–1, offset-corrected) of B3, B4, B5, B6, B7, B8A, B11, B12, then
cos(view zenith), cos(sun zenith), cos(sun azimuth − view azimuth).

Flags (uint8, SNAP's ``lai_flags`` bits, bit-exact with SNAP's rules):

* ``FLAG_INPUT_OUT_OF_RANGE`` (1): a reflectance is outside the definition-domain min/max (bounds
  inclusive) or its 8-band bin combination ``floor(10·(x−p)/(P−p) + 1)`` is not a row of the
  definition-domain grid. SNAP still outputs the network value for these pixels, and so do we.
* ``FLAG_THRESHOLDED_TO_MIN`` (2) / ``FLAG_THRESHOLDED_TO_MAX`` (4): raw output strictly inside
  (min − tol, min) / (max, max + tol); the value is clamped to min / max.
* ``FLAG_OUTPUT_TOO_LOW`` (8) / ``FLAG_OUTPUT_TOO_HIGH`` (16): raw output strictly below min − tol /
  strictly above max + tol. ``mode="snap"`` keeps the raw value (SNAP), ``mode="clean"`` sets NaN (INRA's
  convention in its own test cases).
* Values exactly on one of the four boundaries are left unchanged and unflagged (SNAP uses strict
  comparisons throughout).
* ``FLAGS_NODATA`` (255): the pixel had a non-finite input or was marked invalid by the caller; its LAI is
  NaN. 255 is not a valid combination of the five bits (at most one output bit is ever set).

Numerics: the hidden layer runs in float32 on inputs centred in float64, which keeps the result within
about 3e-6 of a float64 evaluation (measured on the INRA inputs and on random inputs 10 % beyond the
training ranges, float32 output rounding included). Pixels whose output lands within ``_REFINE_MARGIN``
of one of the four flag boundaries are re-evaluated in float64, so the flags agree with a float64
evaluation. The definition-domain check is always done in float64, exactly as SNAP does it. Measured
cost (2-core VM, shared): 7.5–11 Mpx per CPU-second with float32 (a 20 m tile, 30 Mpx, in ~3–4 CPU-s),
~5.7 with ``precision="float64"``; extra memory ~35 MB per worker at the default chunk size.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "BAND_ORDER",
    "FLAGS_NODATA",
    "FLAG_INPUT_OUT_OF_RANGE",
    "FLAG_OUTPUT_TOO_HIGH",
    "FLAG_OUTPUT_TOO_LOW",
    "FLAG_THRESHOLDED_TO_MAX",
    "FLAG_THRESHOLDED_TO_MIN",
    "LaiNetwork",
    "apply_output_range",
    "compute_lai",
    "evaluate_network",
    "grid_rows_to_keys",
    "input_out_of_range",
    "load_network",
]

FLAG_INPUT_OUT_OF_RANGE = 1
FLAG_THRESHOLDED_TO_MIN = 2
FLAG_THRESHOLDED_TO_MAX = 4
FLAG_OUTPUT_TOO_LOW = 8
FLAG_OUTPUT_TOO_HIGH = 16
FLAGS_NODATA = 255

#: Reflectance band order expected in ``refl`` (the first 8 network inputs).
BAND_ORDER = ("B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12")

Mode = Literal["clean", "snap"]
Precision = Literal["float32", "float64"]

_N_IN = 11
_N_BANDS = 8
_N_HIDDEN = 5
_KEY_BASE = 12  # bins are 1..11 inside the bounds, so base 12 makes the key of a bin tuple unique
_DEFAULT_CHUNK_PX = 1 << 18
# float32 hidden-layer error is ~3e-6 (measured); 1e-3 leaves a wide margin.
_REFINE_MARGIN = 1e-3

_DATA_ROOT = ("data", "snap_biophysical")
_VERSIONS = {"3_0": "3_0", "3.0": "3_0", "30": "3_0", "2_1": "2_1", "2.1": "2_1", "21": "2_1"}
_PLATFORM_RE = re.compile(r"^\s*(?:sentinel[-_ ]?2|s2)[-_ ]?([abc])\s*$", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class LaiNetwork:
    """Coefficients of one SNAP LAI network (one auxdata folder), read-only numpy arrays, float64.

    Attributes:
        id: network set, e.g. ``"3_0/S2A"``, ``"3_0/S2B"``, ``"3_0/S2C"`` or ``"2_1"``.
        grid: ``"snap"`` (upstream grid file, what SNAP uses) or ``"full"`` (the untruncated 3_0/S2A grid).
        norm_min, norm_max: (11,) input normalisation bounds (reflectance 0–1 or cosine).
        w1: (5, 11) hidden-layer weights, row j = neuron j. b1: (5,) hidden-layer biases.
        w2: (5,) output weights. b2: output bias.
        y_min, y_max: denormalisation bounds (LAI, m²/m²).
        tolerance: absolute output tolerance (SNAP applies ``abs()`` to the stored value).
        out_min, out_max: valid output range (LAI, m²/m²), normally 0 and 8.
        domain_min, domain_max: (8,) reflectance bounds of the definition domain (inclusive).
        grid_keys: sorted unique int64 base-12 keys of the definition-domain grid rows
            (``Σₖ gₖ·12^(7−k)`` over the 8 band bins).
    """

    id: str
    grid: str
    norm_min: np.ndarray
    norm_max: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float
    y_min: float
    y_max: float
    tolerance: float
    out_min: float
    out_max: float
    domain_min: np.ndarray
    domain_max: np.ndarray
    grid_keys: np.ndarray

    @property
    def label(self) -> str:
        """Human/metadata label: ``id`` plus ``+fullgrid`` when the derived full grid is used."""
        return self.id if self.grid == "snap" else f"{self.id}+{self.grid}grid"


# --------------------------------------------------------------------------------------------------
# loading


def _read_csv(*parts: str) -> np.ndarray:
    res = importlib.resources.files("steps").joinpath(*_DATA_ROOT, *parts)
    text = res.read_text(encoding="ascii")
    return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=2)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def grid_rows_to_keys(rows: np.ndarray) -> np.ndarray:
    """Encode definition-domain bin rows (N, 8) of small ints as sorted unique int64 base-12 keys.

    Bins inside the domain bounds are 1..11 (11 only for a reflectance exactly at the upper bound), so the
    base-12 encoding is injective; it plays the role of SNAP's concatenated-digit strings.
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != _N_BANDS:
        raise ValueError(f"grid rows must have shape (N, {_N_BANDS}), got {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= _KEY_BASE):
        raise ValueError(f"grid bins must be in 0..{_KEY_BASE - 1}")
    ints = rows.astype(np.int64)
    keys = np.zeros(ints.shape[0], dtype=np.int64)
    for k in range(_N_BANDS):
        keys = keys * _KEY_BASE + ints[:, k]
    return np.unique(keys)


def _normalise_version(version: str) -> str:
    key = str(version).strip().lower().lstrip("v")
    if key not in _VERSIONS:
        raise ValueError(f"unknown LAI network version {version!r}; expected '3_0' or '2_1'")
    return _VERSIONS[key]


def _normalise_platform(platform: str) -> str:
    m = _PLATFORM_RE.match(str(platform))
    if m is None:
        raise ValueError(
            f"unknown Sentinel-2 platform {platform!r}; expected e.g. 'sentinel-2a', 'S2B', 's2c'"
        )
    return f"S2{m.group(1).upper()}"


def load_network(version: str = "3_0", platform: str = "sentinel-2a", grid: str = "snap") -> LaiNetwork:
    """Load (cached) the SNAP LAI network for a version and platform from package data.

    Args:
        version: ``"3_0"`` (SNAP ≥ 8, per-platform networks; default) or ``"2_1"`` (SNAP ≤ 7, one network
            for all platforms; ``platform`` is then ignored). ``"3.0"``/``"2.1"`` are accepted too.
        platform: ``"sentinel-2a"``, ``"S2B"``, ``"s2c"``, … (case-insensitive). S2C uses SNAP's S2C
            folder, which is a byte copy of S2B.
        grid: ``"snap"`` — the upstream definition-domain grid, i.e. exactly what SNAP checks (for 3_0/S2A
            this file is truncated to 2 930 of 5 355 rows); ``"full"`` — for 3_0/S2A the full grid
            extracted from INRA's workbook, for every other set the same as ``"snap"``.

    Returns:
        A frozen :class:`LaiNetwork` (shared between calls; its arrays are read-only).

    Raises:
        ValueError: unknown version, platform or grid.
    """
    v = _normalise_version(version)
    p = "" if v == "2_1" else _normalise_platform(platform)
    if grid not in ("snap", "full"):
        raise ValueError(f"unknown definition-domain grid {grid!r}; expected 'snap' or 'full'")
    g = "full" if (v == "3_0" and p == "S2A" and grid == "full") else "snap"
    return _load_cached(v, p, g)


@functools.cache
def _load_cached(version: str, platform: str, grid: str) -> LaiNetwork:
    net_id = version if version == "2_1" else f"{version}/{platform}"
    folder = (version, "LAI") if version == "2_1" else (version, platform, "LAI")

    def read(name: str) -> np.ndarray:
        return _read_csv(*folder, f"LAI_{name}")

    norm = read("Normalisation")
    w1 = read("Weights_Layer1_Neurons")
    b1 = read("Weights_Layer1_Bias").ravel()
    w2 = read("Weights_Layer2_Neurons").ravel()
    b2 = read("Weights_Layer2_Bias").ravel()
    denorm = read("Denormalisation").ravel()
    extreme = read("ExtremeCases").ravel()
    minmax = read("DefinitionDomain_MinMax")
    if grid == "full":
        rows = _read_csv(version, platform, "LAI_derived", "LAI_DefinitionDomain_Grid_full_from_xlsx")
    else:
        rows = read("DefinitionDomain_Grid")

    shapes = {
        "Normalisation": (norm.shape, (_N_IN, 2)),
        "Weights_Layer1_Neurons": (w1.shape, (_N_HIDDEN, _N_IN)),
        "Weights_Layer1_Bias": (b1.shape, (_N_HIDDEN,)),
        "Weights_Layer2_Neurons": (w2.shape, (_N_HIDDEN,)),
        "Weights_Layer2_Bias": (b2.shape, (1,)),
        "Denormalisation": (denorm.shape, (2,)),
        "ExtremeCases": (extreme.shape, (3,)),
        "DefinitionDomain_MinMax": (minmax.shape, (2, _N_BANDS)),
    }
    for name, (got, want) in shapes.items():
        if got != want:
            raise ValueError(f"{net_id}: LAI_{name} has shape {got}, expected {want}")

    net = LaiNetwork(
        id=net_id,
        grid=grid,
        norm_min=_frozen(norm[:, 0]),
        norm_max=_frozen(norm[:, 1]),
        w1=_frozen(w1),
        b1=_frozen(b1),
        w2=_frozen(w2),
        b2=float(b2[0]),
        y_min=float(denorm[0]),
        y_max=float(denorm[1]),
        tolerance=abs(float(extreme[0])),
        out_min=float(extreme[1]),
        out_max=float(extreme[2]),
        domain_min=_frozen(minmax[0]),
        domain_max=_frozen(minmax[1]),
        grid_keys=_frozen(grid_rows_to_keys(rows)),
    )
    logger.debug("loaded LAI network %s (grid=%s, %d grid rows)", net_id, grid, net.grid_keys.size)
    return net


# --------------------------------------------------------------------------------------------------
# building blocks (float64, SNAP semantics)


def evaluate_network(inputs: np.ndarray, network: LaiNetwork) -> np.ndarray:
    """Raw network output (LAI, m²/m², float64) in float64, without any range check or flag.

    Args:
        inputs: (11, ...) network inputs: reflectance (0–1) of B3, B4, B5, B6, B7, B8A, B11, B12, then
            cos(view zenith), cos(sun zenith), cos(sun azimuth − view azimuth).
        network: coefficients from :func:`load_network`.

    Returns:
        float64 array of shape ``inputs.shape[1:]``. Non-finite inputs give NaN (no nodata sentinel).
        Computed like SNAP's JnnNet (input scale/bias, tanh, output scale/bias), so results match SNAP to
        float64 rounding. Used as the reference and for near-boundary refinement in :func:`compute_lai`.
    """
    x = np.asarray(inputs, dtype=np.float64)
    if x.shape[:1] != (_N_IN,):
        raise ValueError(f"inputs must have shape (11, ...), got {x.shape}")
    flat = x.reshape(_N_IN, -1)
    span = network.norm_max - network.norm_min
    in_scale = 2.0 / span
    in_bias = -2.0 * network.norm_min / span - 1.0
    xn = flat * in_scale[:, None] + in_bias[:, None]
    with np.errstate(invalid="ignore"):
        h = np.tanh(network.w1 @ xn + network.b1[:, None])
        y_norm = network.w2 @ h + network.b2
    out_scale = 0.5 * (network.y_max - network.y_min)
    out_bias = 0.5 * (network.y_max - network.y_min) + network.y_min
    return (y_norm * out_scale + out_bias).reshape(x.shape[1:])


def input_out_of_range(refl: np.ndarray, network: LaiNetwork) -> np.ndarray:
    """SNAP's definition-domain test (INPUT_OUT_OF_RANGE), evaluated in float64.

    Args:
        refl: (8, ...) BOA reflectance (0–1) of B3, B4, B5, B6, B7, B8A, B11, B12.
        network: coefficients from :func:`load_network` (its ``grid`` decides snap vs full grid).

    Returns:
        bool array of shape ``refl.shape[1:]``: True where a band is outside ``[domain_min, domain_max]``
        or the bin tuple ``floor(10·(x−p)/(P−p)+1)`` is not a grid row. Non-finite reflectance → True
        (as in SNAP, where NaN projects to bin 0).
    """
    r = np.asarray(refl)
    if r.shape[:1] != (_N_BANDS,):
        raise ValueError(f"refl must have shape (8, ...), got {r.shape}")
    flat = r.reshape(_N_BANDS, -1)
    return _out_of_domain_flat(flat, network).reshape(r.shape[1:])


def _out_of_domain_flat(refl: np.ndarray, network: LaiNetwork) -> np.ndarray:
    """(8, n) reflectance → (n,) bool out-of-domain, SNAP arithmetic in float64."""
    n = refl.shape[1]
    inside = np.ones(n, dtype=bool)
    key = np.zeros(n, dtype=np.float64)  # exact: 12**8 < 2**53
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(_N_BANDS):
            x = refl[k].astype(np.float64, copy=False)
            p = network.domain_min[k]
            big_p = network.domain_max[k]
            inside &= x >= p
            inside &= x <= big_p
            # same operation order as SNAP: floor(10 * (x - p) / (P - p) + 1)
            g = np.floor(10.0 * (x - p) / (big_p - p) + 1.0)
            key *= _KEY_BASE
            key += g
    ikey = np.where(inside, key, -1.0).astype(np.int64)
    grid = network.grid_keys
    if grid.size == 0:
        return np.ones(n, dtype=bool)
    pos = np.searchsorted(grid, ikey)
    np.minimum(pos, grid.size - 1, out=pos)
    found = grid[pos] == ikey
    return ~(inside & found)


def apply_output_range(
    y: np.ndarray, network: LaiNetwork, *, mode: Mode = "clean"
) -> tuple[np.ndarray, np.ndarray]:
    """SNAP's extreme-case handling of the raw network output.

    Args:
        y: raw network output (LAI, m²/m²), any shape, float64 recommended (comparisons are exact).
        network: supplies ``tolerance``, ``out_min``, ``out_max`` (LAI: 0.2, 0, 8).
        mode: ``"clean"`` (NaN beyond tolerance) or ``"snap"`` (raw value kept beyond tolerance).

    Returns:
        ``(value float64, flags uint8)`` of ``y``'s shape. Strictly inside (min − tol, min) → min with
        FLAG_THRESHOLDED_TO_MIN; strictly inside (max, max + tol) → max with FLAG_THRESHOLDED_TO_MAX;
        strictly below min − tol → FLAG_OUTPUT_TOO_LOW; strictly above max + tol → FLAG_OUTPUT_TOO_HIGH.
        Exact boundary values are unchanged and unflagged. NaN y → NaN value, flags 0 (no nodata
        sentinel here; :func:`compute_lai` assigns FLAGS_NODATA).
    """
    if mode not in ("clean", "snap"):
        raise ValueError(f"mode must be 'clean' or 'snap', got {mode!r}")
    v = np.array(y, dtype=np.float64, copy=True)
    lo, hi, tol = network.out_min, network.out_max, network.tolerance
    # the same strict comparisons as SNAP's processOutputOutOfRange (NaN compares False everywhere)
    too_low = v < lo - tol
    to_min = (lo - tol < v) & (v < lo)
    to_max = (hi < v) & (v < hi + tol)
    too_high = hi + tol < v
    # the four conditions are mutually exclusive, so the bits can simply be summed
    flags = too_low.view(np.uint8) * np.uint8(FLAG_OUTPUT_TOO_LOW)
    flags += to_min.view(np.uint8) * np.uint8(FLAG_THRESHOLDED_TO_MIN)
    flags += to_max.view(np.uint8) * np.uint8(FLAG_THRESHOLDED_TO_MAX)
    flags += too_high.view(np.uint8) * np.uint8(FLAG_OUTPUT_TOO_HIGH)
    np.putmask(v, to_min, lo)
    np.putmask(v, to_max, hi)
    if mode == "clean":
        np.putmask(v, too_low | too_high, np.nan)
    return v, np.asarray(flags, dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# fast path


@dataclass(frozen=True, eq=False)
class _Fast:
    """float32 coefficients with inputs centred in float64 (see module docstring)."""

    centre: np.ndarray  # (11,) float64
    w1: np.ndarray  # (5, 11) float32: W·scale
    b1: np.ndarray  # (5, 1) float32
    w2: np.ndarray  # (5,) float32
    b2: float
    out_scale: float
    out_bias: float
    boundaries: np.ndarray  # (4,) float64


@functools.lru_cache(maxsize=32)
def _fast(network: LaiNetwork) -> _Fast:
    span = network.norm_max - network.norm_min
    scale = 2.0 / span
    # centre each input on a float32-representable value near the middle of its training range, so the
    # float32 products stay small (cos(view zenith) spans only 0.98–1: uncentred it loses ~1e-5)
    centre = (0.5 * (network.norm_min + network.norm_max)).astype(np.float32).astype(np.float64)
    # x̃ = scale·(x − centre) + [scale·(centre − m) − 1]
    offset = scale * (centre - network.norm_min) - 1.0
    w1 = network.w1 * scale[None, :]
    b1 = network.b1 + network.w1 @ offset
    out_scale = 0.5 * (network.y_max - network.y_min)
    lo, hi, tol = network.out_min, network.out_max, network.tolerance
    return _Fast(
        centre=centre,
        w1=w1.astype(np.float32),
        b1=b1.astype(np.float32)[:, None],
        w2=network.w2.astype(np.float32),
        b2=network.b2,
        out_scale=out_scale,
        out_bias=out_scale + network.y_min,
        boundaries=np.array([lo - tol, lo, hi, hi + tol]),
    )


def compute_lai(
    refl: np.ndarray,
    cos_vz: np.ndarray | float,
    cos_sz: np.ndarray | float,
    cos_raa: np.ndarray | float,
    network: LaiNetwork,
    *,
    mode: Mode = "clean",
    valid: np.ndarray | None = None,
    chunk_px: int = _DEFAULT_CHUNK_PX,
    workers: int = 1,
    precision: Precision = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """LAI and SNAP flags for a block of pixels.

    Args:
        refl: (8, ...) BOA reflectance, 0–1 (offset-corrected, not clipped), bands B3, B4, B5, B6, B7,
            B8A, B11, B12 (see ``BAND_ORDER``); float32 or float64. NaN marks no-data.
        cos_vz, cos_sz, cos_raa: cos(view zenith), cos(sun zenith), cos(sun azimuth − view azimuth),
            dimensionless, broadcastable to ``refl.shape[1:]`` (scalars allowed). The relative azimuth is
            the plain difference as SNAP uses it, e.g. from :func:`steps.science.angles.lai_angle_cosines`.
        network: coefficients from :func:`load_network`.
        mode: ``"clean"`` (default): outputs beyond min − tol / max + tol become NaN (flag kept);
            ``"snap"``: the raw value is kept, as SNAP does. Clamping inside the tolerance happens in both.
        valid: optional bool mask broadcastable to ``refl.shape[1:]``; False → no-data.
        chunk_px: pixels processed per chunk (rounded to whole rows of the first spatial axis); bounds the
            working memory to roughly 150 bytes × chunk_px (×workers).
        workers: threads working on chunks concurrently (numpy releases the GIL; results are identical
            for any value). Default 1, as the pipeline already runs scenes in parallel.
        precision: ``"float32"`` (default): fast hidden layer, within ~3e-6 of float64, flags as float64;
            ``"float64"``: the whole network in float64 like SNAP (about 30 % slower), for parity checks.

    Returns:
        ``(lai, flags)``: LAI (m²/m², float32, NaN = no-data or rejected) and flags (uint8, SNAP bits,
        ``FLAGS_NODATA`` = 255 where any input is non-finite or ``valid`` is False), both of shape
        ``refl.shape[1:]``.
    """
    if mode not in ("clean", "snap"):
        raise ValueError(f"mode must be 'clean' or 'snap', got {mode!r}")
    refl = np.asarray(refl)
    if refl.ndim < 1 or refl.shape[0] != _N_BANDS:
        raise ValueError(f"refl must have shape (8, ...) in band order {BAND_ORDER}, got {refl.shape}")
    if not np.issubdtype(refl.dtype, np.floating):
        refl = refl.astype(np.float64)
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    if chunk_px < 1 or workers < 1:
        raise ValueError("chunk_px and workers must be positive")
    out_shape = refl.shape[1:]
    # work on (8, S0, rest) so that chunks are whole leading rows (views when refl is contiguous)
    shape3 = (out_shape[0], int(np.prod(out_shape[1:], dtype=np.int64))) if out_shape else (1, 1)
    r3 = refl.reshape((_N_BANDS, *shape3))
    angles = [_row_reader(a, out_shape, shape3, "cosine") for a in (cos_vz, cos_sz, cos_raa)]
    valid_rows = None if valid is None else _row_reader(valid, out_shape, shape3, "valid", dtype=bool)

    lai = np.empty(shape3, dtype=np.float32)
    flags = np.empty(shape3, dtype=np.uint8)
    fast = _fast(network)
    rows_per_chunk = max(1, chunk_px // max(shape3[1], 1))

    def run(r0: int) -> None:
        r1 = min(r0 + rows_per_chunk, shape3[0])
        n = (r1 - r0) * shape3[1]
        ang = [rows(r0, r1) for rows in angles]
        v = None if valid_rows is None else valid_rows(r0, r1)
        block = r3[:, r0:r1].reshape(_N_BANDS, n)
        lai_c, flags_c = _compute_flat(block, ang, v, network, fast, mode, precision)
        lai[r0:r1] = lai_c.reshape(r1 - r0, shape3[1])
        flags[r0:r1] = flags_c.reshape(r1 - r0, shape3[1])

    starts = range(0, shape3[0], rows_per_chunk)
    if workers == 1 or len(starts) < 2:
        for r0 in starts:
            run(r0)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # list() re-raises the first exception from a worker
            list(pool.map(run, starts))
    return lai.reshape(out_shape), flags.reshape(out_shape)


def _row_reader(
    a: np.ndarray | float,
    out_shape: tuple[int, ...],
    shape3: tuple[int, int],
    what: str,
    dtype: type | None = None,
) -> Callable[[int, int], np.ndarray]:
    """Return ``f(r0, r1)`` giving rows r0:r1 of ``a`` broadcast to out_shape, flattened to 1-D.

    The broadcast itself is a view; only one chunk is ever materialised (e.g. a scalar cosine).
    """
    arr = np.asarray(a, dtype=dtype)
    try:
        b = np.broadcast_to(arr, out_shape)
    except ValueError as exc:
        raise ValueError(f"{what} of shape {arr.shape} does not broadcast to {out_shape}") from exc
    if not out_shape:
        flat = b.reshape(1)
        return lambda r0, r1: flat
    return lambda r0, r1: np.reshape(b[r0:r1], -1)


def _compute_flat(
    refl: np.ndarray,
    angles: list[np.ndarray],
    valid: np.ndarray | None,
    network: LaiNetwork,
    fast: _Fast,
    mode: Mode,
    precision: Precision,
) -> tuple[np.ndarray, np.ndarray]:
    """Core on (8, n) reflectance and three (n,) cosines; returns (lai float32, flags uint8)."""
    n = refl.shape[1]
    x = np.empty((_N_IN, n), dtype=np.float32)  # centred inputs; also used to find non-finite pixels
    with np.errstate(over="ignore", invalid="ignore"):  # |x| > 3e38 becomes inf → treated as no-data
        for i in range(_N_IN):
            src = refl[i] if i < _N_BANDS else angles[i - _N_BANDS]
            # subtraction happens in float64 (a float64 scalar promotes), rounding only the centred value
            np.subtract(src, fast.centre[i], out=x[i], casting="same_kind")
    ok = np.isfinite(x).all(axis=0)
    if valid is not None:
        ok &= valid
    all_ok = bool(ok.all())
    if not all_ok:
        x[:, ~ok] = 0.0

    if precision == "float64":
        y = evaluate_network(_stack_float64(refl, angles, None if all_ok else ok), network)
    else:
        y = _fast_output(x, fast)
        # near a flag boundary the float32 error could flip a strict comparison: redo those in float64
        near = np.abs(y - fast.boundaries[0]) < _REFINE_MARGIN
        for b in fast.boundaries[1:]:
            near |= np.abs(y - b) < _REFINE_MARGIN
        if not all_ok:
            near &= ok
        if near.any():
            idx = np.flatnonzero(near)
            y[idx] = evaluate_network(_stack_float64(refl, angles, idx), network)

    value, flags = apply_output_range(y, network, mode=mode)
    flags[_out_of_domain_flat(refl, network)] |= FLAG_INPUT_OUT_OF_RANGE
    lai = value.astype(np.float32)
    if not all_ok:
        lai[~ok] = np.nan
        flags[~ok] = FLAGS_NODATA
    return lai, flags


def _dot_rows(w: np.ndarray, x: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """``out[j] = sum_i w[j, i] * x[i]`` in float32, one elementwise multiply and add per term, in i order.

    Not ``w @ x``: BLAS's sgemm picks kernels by matrix size and CPU (OpenBLAS on AMD Zen rounds the edge
    columns of a block differently), so a pixel's value would depend on the chunk it falls in. Separate
    IEEE multiplies and adds give every pixel the same value whatever the chunking, window or CPU, at
    ~3.5x sgemm's time for this 5 x 11 layer (~40 ms per million pixels).
    """
    for j in range(w.shape[0]):
        np.multiply(x[0], w[j, 0], out=out[j])
        for i in range(1, w.shape[1]):
            np.multiply(x[i], w[j, i], out=tmp)
            out[j] += tmp


def _fast_output(x: np.ndarray, fast: _Fast) -> np.ndarray:
    """Raw network output (float64) from centred float32 inputs (11, n)."""
    n = x.shape[1]
    tmp = np.empty(n, dtype=np.float32)
    h = np.empty((fast.w1.shape[0], n), dtype=np.float32)
    _dot_rows(fast.w1, x, h, tmp)
    h += fast.b1
    np.tanh(h, out=h)
    y32 = np.empty((1, n), dtype=np.float32)
    _dot_rows(fast.w2.reshape(1, -1), h, y32, tmp)
    y = y32[0].astype(np.float64)
    y += fast.b2
    y *= fast.out_scale
    y += fast.out_bias
    return y


def _stack_float64(refl: np.ndarray, angles: list[np.ndarray], select: np.ndarray | None) -> np.ndarray:
    """(11, m) float64 network inputs for the selected pixels (indices or bool mask; None = all).

    Unselected pixels of a bool mask are set to 0 so that they evaluate quietly (they are no-data).
    """
    n = refl.shape[1]
    if select is not None and select.dtype != bool:
        out = np.empty((_N_IN, select.size), dtype=np.float64)
        out[:_N_BANDS] = refl[:, select]
        for i in range(3):
            out[_N_BANDS + i] = angles[i][select]
        return out
    out = np.empty((_N_IN, n), dtype=np.float64)
    out[:_N_BANDS] = refl
    for i in range(3):
        out[_N_BANDS + i] = angles[i]
    if select is not None:
        out[:, ~select] = 0.0
    return out
