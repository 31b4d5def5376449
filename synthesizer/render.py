"""The synthetic scene model: seeded, deterministic Sentinel-2 reflectance, SCL, truth and angles (pure numpy).

:func:`render_scene` renders one scene's L2A BOA and L1C TOA reflectance, SCL, truth classes, no-data
masks and angle grids for the top-left ``size``×``size`` (10 m pixels) window of an MGRS tile. No I/O here:
:mod:`synthesizer.earthsearch` and :mod:`synthesizer.safe` encode and write it in the real formats.

The scene model (all structure is generated at 20 m from low-resolution noise upsampled with a smooth
kernel, so a full 10980² tile is cheap; 10 m bands repeat the 20 m structure plus 10 m sensor noise; 60 m
bands are 3×3 means):

* land cover (constant per tile and seed, the same on every date): dense vegetation (rice/forest,
  NDVI ≈ 0.85), sparse vegetation (≈ 0.5), bare soil (≈ 0.15), water (< 0), built-up (≈ 0.1);
* thick clouds (bright, spectrally flat; SCL 9 in cores, 8 at edges), thin cirrus (L1C B10 TOA
  0.015–0.04, slight brightening, SCL 10), cloud shadows (clouds displaced away from the sun by a 1.5 km
  cloud-top height and the mean sun angles, ground darkened, SCL 3), no-data beyond a swath edge (a
  straight edge tilted like a descending orbit; NaN in arrays, DN 0 and SCL 0 in files);
* TOA = P_b + T_b·ρ_surface mixed with cloud/cirrus; P_b is a Rayleigh-like path reflectance (blue
  highest) and T_b a transmittance with water-vapour absorption darkening B09; BOA is the exact inverse,
  so clouds are bright in L2A as they are in Sen2Cor output.

Truth classes (``SceneArrays.truth``, uint8 at 20 m; precedence nodata > cloud > shadow > cirrus > land):

=====  =================  ==================
code   class              SCL written
=====  =================  ==================
0      no data            0
1      dense vegetation   4
2      sparse vegetation  4
3      bare soil          5
4      water              6
5      built-up           5
6      thick cloud        9 (core) / 8 (edge)
7      cloud shadow       3
8      thin cirrus        10
=====  =================  ==================
"""


from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from steps.errors import InvalidInputError
from steps.science.angles import circular_mean_deg, nan_mean
from steps.sentinel2.bands import BANDS, L1C_BANDS
from steps.sentinel2.grid import footprint_polygon_lonlat, parse_tile
from steps.sentinel2.metadata import OFFSET_BASELINE, baseline_key

logger = logging.getLogger(__name__)

TRUTH_NODATA = 0
TRUTH_DENSE_VEG = 1
TRUTH_SPARSE_VEG = 2
TRUTH_SOIL = 3
TRUTH_WATER = 4
TRUTH_BUILT = 5
TRUTH_CLOUD = 6
TRUTH_SHADOW = 7
TRUTH_CIRRUS = 8

TRUTH_CLASSES = {
    TRUTH_NODATA: "nodata", TRUTH_DENSE_VEG: "dense_vegetation", TRUTH_SPARSE_VEG: "sparse_vegetation",
    TRUTH_SOIL: "bare_soil", TRUTH_WATER: "water", TRUTH_BUILT: "built_up", TRUTH_CLOUD: "thick_cloud",
    TRUTH_SHADOW: "cloud_shadow", TRUTH_CIRRUS: "thin_cirrus",
}

L2A_COLLECTION = "sentinel-2-c1-l2a"
L1C_COLLECTION = "sentinel-2-l1c"

QUANTIFICATION = 10000.0
"""ESA's quantification value (``BOA_QUANTIFICATION_VALUE`` / ``QUANTIFICATION_VALUE``)."""
OFFSET_DN = -1000.0
"""ESA's add-offset (``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET``) written from processing baseline 04.00 on."""
CLOUD_TOP_HEIGHT_M = 1500.0
ANGLE_GRID_SIZE = 23
"""Nodes per side of ESA's angle grids (5 km steps over a 110 km tile, as in every real MTD_TL.xml)."""
ANGLE_GRID_STEP_M = 5000.0
PLATFORM_NAMES = {"sentinel-2a": "Sentinel-2A", "sentinel-2b": "Sentinel-2B", "sentinel-2c": "Sentinel-2C"}
"""STAC ``platform`` → ESA ``SPACECRAFT_NAME``."""


def baseline_has_offsets(baseline: str) -> bool:
    """True when ESA products of processing baseline ``baseline`` ("05.10") carry the add-offset lists (≥ 04.00).

    Raises ``ValueError`` for a malformed baseline. Synthetic bookkeeping only: readers decide by metadata.
    """
    try:
        return baseline_key(baseline) >= baseline_key(OFFSET_BASELINE)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None

# Surface reflectance spectra per land cover, ESA band order B01..B12 (B10 unused: NaN).
_NAN = math.nan
_SPECTRA = {
    #              B01    B02    B03    B04    B05    B06    B07    B08    B8A    B09  B10   B11    B12
    TRUTH_DENSE_VEG: (0.030, 0.035, 0.070, 0.035, 0.110, 0.300, 0.380, 0.420, 0.430, 0.430, _NAN, 0.220,
                      0.110),
    TRUTH_SPARSE_VEG: (0.050, 0.060, 0.090, 0.090, 0.140, 0.210, 0.240, 0.270, 0.280, 0.280, _NAN, 0.280,
                       0.190),
    TRUTH_SOIL: (0.090, 0.110, 0.150, 0.200, 0.230, 0.250, 0.270, 0.280, 0.290, 0.290, _NAN, 0.360, 0.300),
    TRUTH_WATER: (0.060, 0.060, 0.050, 0.030, 0.025, 0.015, 0.012, 0.010, 0.009, 0.008, _NAN, 0.005, 0.003),
    TRUTH_BUILT: (0.120, 0.130, 0.140, 0.150, 0.160, 0.170, 0.180, 0.190, 0.200, 0.200, _NAN, 0.220, 0.200),
}
#                    B01    B02    B03    B04    B05    B06    B07    B08    B8A    B09    B10    B11    B12
_PATH = np.array((0.100, 0.075, 0.045, 0.025, 0.020, 0.015, 0.012, 0.010, 0.010, 0.008, 0.000, 0.003, 0.002))
_TRANS = np.array((0.80, 0.83, 0.88, 0.91, 0.92, 0.93, 0.94, 0.94, 0.95, 0.42, 0.00, 0.95, 0.93))
_CLOUD = np.array((0.50, 0.48, 0.47, 0.47, 0.48, 0.48, 0.48, 0.48, 0.47, 0.30, 0.09, 0.33, 0.22))
_CIRRUS = np.array((0.035, 0.032, 0.028, 0.025, 0.024, 0.023, 0.022, 0.022, 0.021, 0.012, 0.0, 0.015, 0.010))
_DIFFUSE = np.array((0.45, 0.40, 0.30, 0.25, 0.22, 0.20, 0.18, 0.15, 0.15, 0.15, 0.0, 0.10, 0.10))
_NIR_LIKE = {"B06", "B07", "B08", "B8A", "B09"}
_NOISE_SIGMA = 0.0015  # reflectance units, per pixel at native resolution


@dataclass(frozen=True)
class SceneSpec:
    """One synthetic acquisition (an L2A item, plus an L1C item when ``has_l1c``).

    ``datetime`` is UTC; ``processing_baseline`` decides the offsets ("03.01" none, ≥ "04.00" −1000 DN);
    ``sequence`` is Earth Search's reprocessing counter in the item id; ``cloud_cover`` and ``cirrus`` are
    target fractions (0–1) of the scene; ``swath_edge`` puts a no-data region (beyond the swath) in it.
    """

    tile: str
    datetime: datetime
    platform: str = "sentinel-2a"
    processing_baseline: str = "05.10"
    sequence: int = 0
    cloud_cover: float = 0.2
    cirrus: float = 0.05
    swath_edge: bool = False
    has_l1c: bool = True

    def __post_init__(self) -> None:
        if self.datetime.tzinfo is None:
            raise ValueError("SceneSpec.datetime must be timezone-aware (UTC)")
        if self.platform not in PLATFORM_NAMES:
            raise ValueError(f"unknown platform {self.platform!r}")
        if not (0.0 <= self.cloud_cover <= 1.0 and 0.0 <= self.cirrus <= 1.0):
            raise ValueError("cloud_cover and cirrus must be fractions in [0, 1]")
        baseline_has_offsets(self.processing_baseline)  # validates the format

    @property
    def has_offsets(self) -> bool:
        """Whether products of this baseline carry the −1000 DN add-offset."""
        return baseline_has_offsets(self.processing_baseline)

    def item_id(self, level: str = "L2A") -> str:
        """Earth Search style id, e.g. ``S2B_47PPR_20240115_0_L2A``."""
        unit = self.platform[-1].upper()
        return f"S2{unit}_{parse_tile(self.tile).id}_{self.datetime:%Y%m%d}_{self.sequence}_{level}"


class _ToaView(Mapping[str, np.ndarray]):
    """Lazy TOA reflectance: P_b + T_b·BOA_b per band on access (not cached, to bound memory); B10 stored."""

    def __init__(self, boa: dict[str, np.ndarray], b10: np.ndarray) -> None:
        self._boa = boa
        self._b10 = b10

    def __getitem__(self, band: str) -> np.ndarray:
        if band == "B10":
            return self._b10
        i = BANDS[band].band_id
        return (np.float32(_PATH[i]) + np.float32(_TRANS[i]) * self._boa[band]).astype(np.float32, copy=False)

    def __iter__(self) -> Iterator[str]:
        return iter(L1C_BANDS)

    def __len__(self) -> int:
        return len(L1C_BANDS)


@dataclass
class SceneArrays:
    """Rendered scene: float32 reflectances (unitless), NaN where no data; 2-D arrays at native resolution.

    ``boa``: 12 L2A bands; ``toa``: 13 L1C bands (lazy view, computed per access); ``scl``/``truth``/
    ``landcover``: uint8 at 20 m; ``nodata``: bool masks keyed by resolution (10, 20, 60); angle grids are
    23×23 float64 degrees on the 5 km tile grid (node (i, j) at ULX + 5000 j, ULY − 5000 i).
    """

    spec: SceneSpec
    size: int
    boa: dict[str, np.ndarray]
    toa: Mapping[str, np.ndarray]
    scl: np.ndarray
    truth: np.ndarray
    landcover: np.ndarray
    nodata: dict[int, np.ndarray]
    sun_zenith: np.ndarray
    sun_azimuth: np.ndarray
    view_zenith: np.ndarray
    view_azimuth: np.ndarray
    view_grids: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def transform(self, resolution: int) -> tuple[float, float, float, float, float, float]:
        """GDAL-order affine (a, b, c, d, e, f) of the ``resolution`` m grid in the tile CRS."""
        t = parse_tile(self.spec.tile)
        return (float(resolution), 0.0, t.ulx, 0.0, -float(resolution), t.uly)


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------


def _rng(*keys: object) -> np.random.Generator:
    """A generator seeded from a stable hash of ``keys`` (Python's ``hash`` is salted per process)."""
    h = hashlib.sha256(repr(keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:16], "little"))


def _upsample_smooth(g: np.ndarray, n: int) -> np.ndarray:
    """Upsample a (c+1)² lattice to n² with separable smoothstep interpolation (C¹, float32)."""
    c = g.shape[0] - 1
    x = (np.arange(n, dtype=np.float64) + 0.5) * (c / n)
    i0 = np.clip(np.floor(x).astype(np.intp), 0, c - 1)
    w = x - i0
    w = (w * w * (3.0 - 2.0 * w)).astype(np.float32)
    g = g.astype(np.float32)
    tmp = g[:, i0] * (1.0 - w) + g[:, i0 + 1] * w  # (c+1, n)
    out = tmp[i0, :]
    out *= (1.0 - w)[:, None]
    out += tmp[i0 + 1, :] * w[:, None]
    return out


def _field(rng: np.random.Generator, n: int, extent_m: float, scales_m: tuple[float, ...],
           amps: tuple[float, ...]) -> np.ndarray:
    """Smooth random field (n², float32, ≈ zero mean, unit std) as a sum of octaves of given scales (m)."""
    out = np.zeros((n, n), dtype=np.float32)
    for scale, amp in zip(scales_m, amps, strict=True):
        cells = int(np.clip(round(extent_m / scale), 2, max(2, n // 3)))
        out += np.float32(amp) * _upsample_smooth(rng.standard_normal((cells + 1, cells + 1)), n)
    sub = out[:: max(1, n // 400), :: max(1, n // 400)]
    out -= np.float32(sub.mean())
    out /= np.float32(max(float(sub.std()), 1e-6))
    return out


def _quantile(f: np.ndarray, q: float) -> float:
    n = f.shape[0]
    return float(np.quantile(f[:: max(1, n // 400), :: max(1, n // 400)], q))


def _solar_angles(lon: np.ndarray, lat: np.ndarray, t: datetime) -> tuple[np.ndarray, np.ndarray]:
    """Sun zenith and azimuth (degrees, azimuth clockwise from north) by the NOAA low-precision formulas."""
    t = t.astimezone(UTC)
    doy = t.timetuple().tm_yday
    hour = t.hour + t.minute / 60 + t.second / 3600
    g = 2 * math.pi / 365 * (doy - 1 + (hour - 12) / 24)
    decl = (0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
            + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g))
    eqt = 229.18 * (0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
                    - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g))
    tst = hour * 60 + eqt + 4 * lon
    ha = np.deg2rad(tst / 4 - 180)
    phi = np.deg2rad(lat)
    cosz = np.sin(phi) * math.sin(decl) + np.cos(phi) * math.cos(decl) * np.cos(ha)
    zen = np.rad2deg(np.arccos(np.clip(cosz, -1, 1)))
    az = np.rad2deg(np.arctan2(np.sin(ha), np.cos(ha) * np.sin(phi) - math.tan(decl) * np.cos(phi))) + 180
    return zen, az % 360


_TRACK_TILT = math.tan(math.radians(12.0))  # descending ground track heads ≈ 192°: x drifts west going south
_SWATH_HALF_M = 145_000.0
_N_DETECTORS = 12
_ORBIT_ALT_M = 786_000.0


def _nadir_x0(spec: SceneSpec, size: int) -> float:
    """x of the nadir track at the tile's top edge (metres, tile CRS)."""
    t = parse_tile(spec.tile)
    if spec.swath_edge:  # the east swath edge crosses the window top at 75 % of its width
        return t.ulx + 0.75 * size * 10.0 - _SWATH_HALF_M / math.cos(math.atan(_TRACK_TILT))
    return t.ulx + 54_900.0 + _TRACK_TILT * 54_900.0  # track through the tile centre


def _across_track(spec: SceneSpec, size: int, x: np.ndarray | np.float64, y: np.ndarray | np.float64) -> Any:
    t = parse_tile(spec.tile)
    xn = _nadir_x0(spec, size) - _TRACK_TILT * (t.uly - y)
    return (x - xn) * math.cos(math.atan(_TRACK_TILT))


def _angle_grids(spec: SceneSpec, size: int) -> tuple[np.ndarray, np.ndarray,
                                                       dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]]:
    from pyproj import Transformer

    t = parse_tile(spec.tile)
    n = ANGLE_GRID_SIZE
    step = ANGLE_GRID_STEP_M
    jj, ii = np.meshgrid(np.arange(n), np.arange(n))
    x = t.ulx + jj * step
    y = t.uly - ii * step
    lon, lat = Transformer.from_crs(f"EPSG:{t.epsg}", "EPSG:4326", always_xy=True).transform(x, y)
    sz, sa = _solar_angles(np.asarray(lon), np.asarray(lat), spec.datetime)
    s = _across_track(spec, size, x, y)
    width = 2 * _SWATH_HALF_M / _N_DETECTORS
    det_lo = -_SWATH_HALF_M + width * np.arange(_N_DETECTORS)
    heading_perp = 282.0  # direction from a point east of the track towards the satellite
    grids: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    for d in range(_N_DETECTORS):
        inside = (s >= det_lo[d] - 3000.0) & (s <= det_lo[d] + width + 3000.0) & (np.abs(s) <= _SWATH_HALF_M)
        if not inside.any():
            continue
        for b in BANDS.values():
            # small per-band/detector parallax: odd/even detectors look slightly forward/backward
            dz = 0.02 * (b.band_id - 6) * (1 if d % 2 else -1)
            z = np.rad2deg(np.arctan(np.abs(s) / _ORBIT_ALT_M)) + 0.15 + dz
            a = np.where(s >= 0, heading_perp, heading_perp - 180.0) + 0.1 * (b.band_id - 6)
            grids[(b.name, d + 1)] = (np.where(inside, np.round(z, 6), np.nan),
                                      np.where(inside, np.round(a % 360, 6), np.nan))
    return np.round(sz, 6), np.round(sa, 6), grids


def _resample(a20: np.ndarray, res: int) -> np.ndarray:
    if res == 20:
        return a20
    if res == 10:
        return np.repeat(np.repeat(a20, 2, axis=0), 2, axis=1)
    n = a20.shape[0] // 3
    return a20.reshape(n, 3, n, 3).mean(axis=(1, 3), dtype=np.float32)


def _add_noise(a: np.ndarray, rng: np.random.Generator, sigma: float) -> None:
    """Add N(0, sigma²) noise in place, in row blocks to bound temporary memory (deterministic order)."""
    step = max(1, (1 << 22) // max(1, a.shape[1]))
    for r in range(0, a.shape[0], step):
        blk = rng.standard_normal(a[r:r + step].shape, dtype=np.float32)
        blk *= np.float32(sigma)
        a[r:r + step] += blk


def render_scene(spec: SceneSpec, size: int, seed: int = 0) -> SceneArrays:
    """Render one scene (pure numpy, no I/O); deterministic in (spec, size, seed).

    ``size``: side in 10 m pixels (multiple of 6, 6..10980); the scene is the top-left size×size window
    of the tile. Land cover depends on (tile, seed) only; clouds, cirrus and noise also on the date.
    Reflectances are clamped to what the product can encode (≥ 0.0001 before baseline 04.00, ≥ −0.0999
    from it). See the module docstring for the model and the truth classes.
    """
    if size % 6 or not 6 <= size <= 10980:
        raise ValueError(f"size must be a multiple of 6 in 6..10980, got {size}")
    tile = parse_tile(spec.tile)
    n = size // 2  # 20 m grid
    ext = size * 10.0

    # --- land cover (same for every date of this tile) ---------------------------------------------
    rl = _rng("land", seed, tile.id)
    f_water = _field(rl, n, ext, (25_000.0, 6_000.0, 1_500.0), (1.0, 0.6, 0.3))
    f_lc = _field(rl, n, ext, (15_000.0, 4_000.0, 800.0), (1.0, 0.6, 0.35))
    f_urban = _field(rl, n, ext, (12_000.0, 3_000.0, 600.0), (1.0, 0.5, 0.3))
    tex = _field(rl, n, ext, (2_000.0, 400.0), (1.0, 0.7))
    vig = _field(rl, n, ext, (3_000.0, 600.0), (1.0, 0.5))
    lc = np.full((n, n), TRUTH_DENSE_VEG, dtype=np.uint8)
    q = [_quantile(f_lc, p) for p in (0.50, 0.78)]
    lc[f_lc > q[0]] = TRUTH_SPARSE_VEG
    lc[f_lc > q[1]] = TRUTH_SOIL
    lc[f_urban > _quantile(f_urban, 0.90)] = TRUTH_BUILT
    lc[f_water < _quantile(f_water, 0.10)] = TRUTH_WATER
    del f_water, f_lc, f_urban
    tex *= np.float32(0.05)
    tex += np.float32(1.0)  # multiplicative brightness texture, ≈ ±5 %
    veg = (lc == TRUTH_DENSE_VEG) | (lc == TRUTH_SPARSE_VEG)
    vig = np.where(veg, np.float32(1.0) + np.float32(0.07) * vig, np.float32(1.0)).astype(np.float32)

    # --- no data beyond the swath edge (decided at 60 m so all resolutions agree) --------------------
    n60 = size // 6
    c60 = (np.arange(n60) + 0.5) * 60.0
    x60 = tile.ulx + c60[None, :]
    y60 = tile.uly - c60[:, None]
    nod60 = _across_track(spec, size, x60, y60) > _SWATH_HALF_M
    nod20 = np.repeat(np.repeat(nod60, 3, axis=0), 3, axis=1)

    # --- angles --------------------------------------------------------------------------------------
    sun_z, sun_a, view_grids = _angle_grids(spec, size)
    view_z, view_a = mean_view_angles(list(view_grids.values()))
    msz, msa = float(np.mean(sun_z)), float(np.mean(sun_a))

    # --- clouds, shadows, cirrus (depend on the acquisition) -----------------------------------------
    rs = _rng("scene", seed, tile.id, spec.datetime.isoformat())
    alpha = np.zeros((n, n), dtype=np.float32)
    if spec.cloud_cover > 0:
        fc = _field(rs, n, ext, (20_000.0, 5_000.0, 1_200.0), (1.0, 0.6, 0.35))
        if spec.cloud_cover >= 1.0:
            alpha = np.clip(np.float32(0.9) + np.float32(0.1) * fc, 0.8, 1.0).astype(np.float32)
        else:
            thr = _quantile(fc, 1.0 - spec.cloud_cover)
            alpha = np.where(fc > thr, np.clip(0.55 + (fc - thr) * 0.9, 0.0, 1.0), 0.0).astype(np.float32)
        del fc
    cloud = alpha > 0
    # shadow: the cloud field displaced away from the sun by h·tan(sza)
    d = CLOUD_TOP_HEIGHT_M * math.tan(math.radians(msz)) / 20.0
    dcol = round(-d * math.sin(math.radians(msa)))
    drow = round(d * math.cos(math.radians(msa)))
    shade = np.zeros((n, n), dtype=np.float32)
    if cloud.any() and spec.cloud_cover < 1.0 and abs(drow) < n and abs(dcol) < n:
        src_r = slice(max(0, -drow), n - max(0, drow))
        dst_r = slice(max(0, drow), n - max(0, -drow))
        src_c = slice(max(0, -dcol), n - max(0, dcol))
        dst_c = slice(max(0, dcol), n - max(0, -dcol))
        shade[dst_r, dst_c] = alpha[src_r, src_c]
        shade[cloud] = 0.0
        shade *= np.float32(0.75)
    shadow = shade > 0
    cir = np.zeros((n, n), dtype=np.float32)
    if spec.cirrus > 0:
        fi = _field(rs, n, ext, (10_000.0, 2_500.0), (1.0, 0.5))
        thr = _quantile(fi, 1.0 - spec.cirrus) if spec.cirrus < 1 else -np.inf
        cir = np.where(fi > thr, np.clip(0.3 + (fi - thr) * 0.5, 0.1, 1.0), 0.0).astype(np.float32)
        del fi
    cirrus = (cir > 0) & ~cloud

    # --- classes -------------------------------------------------------------------------------------
    truth = lc.copy()
    truth[cirrus] = TRUTH_CIRRUS
    truth[shadow & ~cloud] = TRUTH_SHADOW
    truth[cloud] = TRUTH_CLOUD
    truth[nod20] = TRUTH_NODATA
    scl_lut = np.array([0, 4, 4, 5, 6, 5, 9, 3, 10], dtype=np.uint8)
    scl = scl_lut[truth]
    scl[(truth == TRUTH_CLOUD) & (alpha < 0.8)] = 8
    landcover = np.where(nod20, TRUTH_NODATA, lc).astype(np.uint8)

    # --- reflectance ---------------------------------------------------------------------------------
    lo = 0.0001 if not spec.has_offsets else -0.0999
    rn = _rng("noise", seed, tile.id, spec.datetime.isoformat())
    nod = {10: np.repeat(np.repeat(nod20, 2, axis=0), 2, axis=1), 20: nod20, 60: nod60}
    boa: dict[str, np.ndarray] = {}
    b10 = None
    one_minus_alpha = np.float32(1.0) - alpha
    for b in BANDS.values():
        i = b.band_id
        if b.name == "B10":
            # surface barely visible through the water-vapour column; cirrus and high cloud tops dominate
            t10 = np.float32(0.0015) + np.float32(0.004) * np.asarray(_SPECTRA_LUT[11], np.float32)[lc]
            t10 = t10 * one_minus_alpha + np.float32(_CLOUD[i]) * alpha
            t10 += np.where(cir > 0, np.float32(0.012) + np.float32(0.028) * cir, np.float32(0.0))
            t60 = _resample(t10.astype(np.float32), 60)
            _add_noise(t60, rn, 0.0005)
            np.clip(t60, lo, None, out=t60)
            t60[nod60] = np.nan
            b10 = t60
            continue
        surf = _SPECTRA_LUT[i][lc]
        surf *= tex
        if b.name in _NIR_LIKE:
            surf *= vig
        elif b.name == "B04":
            surf *= np.float32(2.0) - vig
        surf *= np.float32(1.0) - shade * np.float32(1.0 - _DIFFUSE[i])
        toa = np.float32(_PATH[i]) + np.float32(_TRANS[i]) * surf
        toa *= one_minus_alpha
        toa += np.float32(_CLOUD[i]) * alpha
        toa += np.float32(_CIRRUS[i]) * cir
        del surf
        rho = (toa - np.float32(_PATH[i])) / np.float32(_TRANS[i])
        del toa
        rho = _resample(rho, b.resolution)
        _add_noise(rho, rn, _NOISE_SIGMA)
        np.clip(rho, lo, None, out=rho)
        rho[nod[b.resolution]] = np.nan
        boa[b.name] = rho
    assert b10 is not None
    return SceneArrays(
        spec=spec, size=size, boa=boa, toa=_ToaView(boa, b10), scl=scl, truth=truth, landcover=landcover,
        nodata=nod, sun_zenith=sun_z, sun_azimuth=sun_a, view_zenith=view_z, view_azimuth=view_a,
        view_grids=view_grids,
    )


_SPECTRA_LUT = [
    np.array([0.0, *(_SPECTRA[c][i] for c in range(1, 6))], dtype=np.float32) for i in range(13)
]



def mean_view_angles(grids: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware per-node mean of (zenith, azimuth) grids in degrees over bands/detectors.

    Zenith: arithmetic mean of the finite values; azimuth: direction of the mean unit vector, in [0, 360).
    Nodes no grid covers are NaN.
    """
    zen = np.stack([np.asarray(z, dtype=np.float64) for z, _ in grids])
    azi = np.stack([np.asarray(a, dtype=np.float64) for _, a in grids])
    return nan_mean(zen, 0), circular_mean_deg(azi, 0)


def scene_mean_angles(zen: np.ndarray, azi: np.ndarray) -> tuple[float, float]:
    """Scene mean (zenith, azimuth) in degrees over the finite nodes; azimuth as a unit-vector mean (NaN if empty)."""
    return float(nan_mean(zen)), float(circular_mean_deg(azi))


def data_footprint_utm(spec: SceneSpec, size: int) -> list[tuple[float, float]]:
    """Closed ring (tile CRS metres, counter-clockwise) of the scene's valid data: the window, cut by the swath
    edge when there is one."""
    tile = parse_tile(spec.tile)
    xmin, ymin, xmax, ymax = tile.window_bounds(size)
    corners = [(xmin, ymax), (xmax, ymax), (xmax, ymin), (xmin, ymin)]  # clockwise from NW

    def inside(p: tuple[float, float]) -> bool:
        return float(_across_track(spec, size, np.float64(p[0]), np.float64(p[1]))) <= _SWATH_HALF_M

    def cut(p: tuple[float, float], q: tuple[float, float]) -> tuple[float, float]:
        sp = float(_across_track(spec, size, np.float64(p[0]), np.float64(p[1]))) - _SWATH_HALF_M
        sq = float(_across_track(spec, size, np.float64(q[0]), np.float64(q[1]))) - _SWATH_HALF_M
        t = sp / (sp - sq)
        return (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))

    poly: list[tuple[float, float]] = []
    for k, p in enumerate(corners):  # Sutherland-Hodgman against the one swath-edge half-plane
        q = corners[(k + 1) % len(corners)]
        if not spec.swath_edge or inside(p):
            poly.append(p)
            if spec.swath_edge and not inside(q):
                poly.append(cut(p, q))
        elif inside(q):
            poly.append(cut(p, q))
    poly = poly[::-1]  # counter-clockwise for GeoJSON (RFC 7946)
    poly.append(poly[0])
    return poly


def data_footprint_lonlat(spec: SceneSpec, size: int) -> list[list[float]]:
    """Closed WGS84 ring [[lon, lat], …] of the scene's valid data: the window (densified edges), cut by the
    swath edge when there is one."""
    from pyproj import Transformer

    tile = parse_tile(spec.tile)
    if not spec.swath_edge:
        return footprint_polygon_lonlat(tile.epsg, tile.window_bounds(size))
    poly = data_footprint_utm(spec, size)
    tr = Transformer.from_crs(f"EPSG:{tile.epsg}", "EPSG:4326", always_xy=True)
    lon, lat = tr.transform([p[0] for p in poly], [p[1] for p in poly])
    return [[round(a, 7), round(b, 7)] for a, b in zip(lon, lat, strict=True)]
