"""Seeded, deterministic synthetic Sentinel-2 archive shaped like Earth Search v1 (static STAC + COGs).

Two layers:

* :func:`render_scene` — pure numpy: renders one scene's L2A BOA and L1C TOA reflectance, SCL, truth classes,
  no-data masks and angle grids for the top-left ``size``×``size`` (10 m pixels) window of an MGRS tile.
* :func:`write_scene` / :func:`synthesize_archive` — encode DNs exactly like ESA/Earth Search
  (DN = round(ρ·10000) − ADD_OFFSET, i.e. +1000 from baseline 04.00; DN 0 = no data), write uint16 COGs, the
  granule metadata XML and a static, self-contained STAC catalog with collections ``sentinel-2-c1-l2a`` and
  ``sentinel-2-l1c``.

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
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from steps import sentinel2 as s2
from steps.grid import footprint_lonlat, footprint_polygon_lonlat, parse_tile

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
OFFSET_DN = -1000.0  # ADD_OFFSET written from baseline 04.00 on
CLOUD_TOP_HEIGHT_M = 1500.0
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_VERSION = "1.1.0"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json",
]

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
        if self.platform not in s2.PLATFORM_NAMES:
            raise ValueError(f"unknown platform {self.platform!r}")
        if not (0.0 <= self.cloud_cover <= 1.0 and 0.0 <= self.cirrus <= 1.0):
            raise ValueError("cloud_cover and cirrus must be fractions in [0, 1]")
        s2.baseline_has_offsets(self.processing_baseline)  # validates the format

    @property
    def has_offsets(self) -> bool:
        """Whether products of this baseline carry the −1000 DN add-offset."""
        return s2.baseline_has_offsets(self.processing_baseline)

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
        i = s2.BANDS[band].band_id
        return (np.float32(_PATH[i]) + np.float32(_TRANS[i]) * self._boa[band]).astype(np.float32, copy=False)

    def __iter__(self) -> Iterator[str]:
        return iter(s2.L1C_BANDS)

    def __len__(self) -> int:
        return len(s2.L1C_BANDS)


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
    n = s2.ANGLE_GRID_SIZE
    step = s2.ANGLE_GRID_STEP_M
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
        for b in s2.BANDS.values():
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
    view_z, view_a = s2.mean_view_angles(list(view_grids.values()))
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
    for b in s2.BANDS.values():
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


# --------------------------------------------------------------------------------------------------
# metadata and encoding
# --------------------------------------------------------------------------------------------------


def scene_metadata(spec: SceneSpec, arrays: SceneArrays, level: str) -> s2.GranuleMetadata:
    """The :class:`~steps.sentinel2.GranuleMetadata` describing a rendered scene at ``level`` (L2A/L1C)."""
    tile = parse_tile(spec.tile)
    size = arrays.size
    bands = s2.L2A_BANDS if level == "L2A" else s2.L1C_BANDS
    offsets = dict.fromkeys(s2.BAND_NAMES, OFFSET_DN) if spec.has_offsets else {}
    grids = {k: v for k, v in arrays.view_grids.items() if k[0] in bands}
    vz, va = s2.mean_view_angles(list(grids.values()))
    mvz, mva = s2.scene_mean_angles(vz, va)
    msz, msa = s2.scene_mean_angles(arrays.sun_zenith, arrays.sun_azimuth)
    return s2.GranuleMetadata(
        level=level, tile_id=tile.id,
        granule_id=s2.granule_id(level, spec.platform, tile.id, spec.datetime, spec.processing_baseline),
        platform=spec.platform, epsg=tile.epsg, ulx=tile.ulx, uly=tile.uly,
        sizes={r: (size * 10 // r, size * 10 // r) for r in (10, 20, 60)},
        sensing_time=spec.datetime, processing_baseline=spec.processing_baseline,
        quantification=QUANTIFICATION, add_offsets=offsets, sun_zenith=arrays.sun_zenith,
        sun_azimuth=arrays.sun_azimuth, view_zenith=vz, view_azimuth=va,
        angle_step=s2.ANGLE_GRID_STEP_M, mean_sun_zenith=round(msz, 6), mean_sun_azimuth=round(msa, 6),
        mean_view_zenith=mvz, mean_view_azimuth=mva, view_grids=grids,
    )


def encode_dn(rho: np.ndarray, add_offset: float, quantification: float = QUANTIFICATION) -> np.ndarray:
    """Reflectance → uint16 DN: round(ρ·q) − add_offset clipped to [1, 65535]; NaN (no data) → 0.

    Works in row blocks so a full 10980² band needs no float64 copy of the whole array.
    """
    rho = np.asarray(rho)
    out = np.empty(rho.shape, dtype=np.uint16)
    flat_r = rho.reshape(rho.shape[0], -1) if rho.ndim > 1 else rho.reshape(1, -1)
    flat_o = out.reshape(flat_r.shape)
    step = max(1, (1 << 21) // max(1, flat_r.shape[1]))
    for r in range(0, flat_r.shape[0], step):
        dn = np.rint(flat_r[r:r + step].astype(np.float64) * quantification) - add_offset
        nan = np.isnan(dn)
        np.clip(dn, 1, 65535, out=dn)
        dn[nan] = 0
        flat_o[r:r + step] = dn
    return out


def _write_cog(path: Path, data: np.ndarray, res: int, tile_epsg: int, ulx: float, uly: float, *,
               resampling: str, scale: float | None = None, offset: float | None = None) -> None:
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine

    profile = {
        "driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
        "dtype": data.dtype.name, "crs": f"EPSG:{tile_epsg}", "nodata": 0,
        "transform": Affine(res, 0.0, ulx, 0.0, -res, uly),
    }
    with MemoryFile() as mem, mem.open(**profile) as tmp:
        tmp.write(data, 1)
        if scale is not None:
            tmp.scales = (scale,)
            tmp.offsets = (offset or 0.0,)
        rasterio.shutil.copy(tmp, str(path), driver="COG", compress="DEFLATE", predictor=2,
                             blocksize=512, overview_resampling=resampling, resampling=resampling,
                             num_threads=1)


def data_footprint_lonlat(spec: SceneSpec, size: int) -> list[list[float]]:
    """Closed WGS84 ring of the scene's valid data: the window, cut by the swath edge when there is one."""
    from pyproj import Transformer

    tile = parse_tile(spec.tile)
    xmin, ymin, xmax, ymax = tile.window_bounds(size)
    if not spec.swath_edge:
        return footprint_polygon_lonlat(tile.epsg, (xmin, ymin, xmax, ymax))
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
        if inside(p):
            poly.append(p)
            if not inside(q):
                poly.append(cut(p, q))
        elif inside(q):
            poly.append(cut(p, q))
    poly = poly[::-1]  # counter-clockwise for GeoJSON (RFC 7946)
    poly.append(poly[0])
    tr = Transformer.from_crs(f"EPSG:{tile.epsg}", "EPSG:4326", always_xy=True)
    lon, lat = tr.transform([p[0] for p in poly], [p[1] for p in poly])
    return [[round(a, 7), round(b, 7)] for a, b in zip(lon, lat, strict=True)]


def _dt_str(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _band_asset(b: s2.Band, spec: SceneSpec, size: int, tile_ulx: float, tile_uly: float) -> dict:
    n = size * 10 // b.resolution
    offset = -0.1 if spec.has_offsets else 0.0
    return {
        "href": f"./{b.name}.tif",
        "type": COG_MEDIA_TYPE,
        "title": f"{b.common_name.capitalize()} ({b.name}) - {b.resolution}m",
        "roles": ["data", "reflectance"],
        "eo:bands": [{"name": b.name, "common_name": b.common_name, "center_wavelength": b.center_wavelength,
                      "full_width_half_max": b.fwhm}],
        "raster:bands": [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                          "spatial_resolution": b.resolution, "scale": 0.0001, "offset": offset}],
        "proj:shape": [n, n],
        "proj:transform": [b.resolution, 0, tile_ulx, 0, -b.resolution, tile_uly],
        "gsd": b.resolution,
    }


def _item_dict(spec: SceneSpec, arrays: SceneArrays, level: str, meta: s2.GranuleMetadata) -> dict:
    tile = parse_tile(spec.tile)
    size = arrays.size
    bounds = tile.window_bounds(size)
    ring = data_footprint_lonlat(spec, size)
    bbox = [round(min(p[0] for p in ring), 7), round(min(p[1] for p in ring), 7),
            round(max(p[0] for p in ring), 7), round(max(p[1] for p in ring), 7)]
    if not spec.swath_edge:  # a full window: densified edges give the tighter geodesic bbox
        bbox = [round(v, 7) for v in footprint_lonlat(tile.epsg, bounds)]
    item_id = spec.item_id(level)
    unit = spec.platform[-1].upper()
    t = spec.datetime.astimezone(UTC)
    gen = t + timedelta(hours=3)
    orbit = s2.absolute_orbit(spec.platform, t)
    rel_orbit = (orbit - 1) % 143 + 1
    product = "MSIL2A" if level == "L2A" else "MSIL1C"
    product_uri = (f"S2{unit}_{product}_{t:%Y%m%dT%H%M%S}_N{spec.processing_baseline.replace('.', '')}"
                   f"_R{rel_orbit:03d}_T{tile.id}_{gen:%Y%m%dT%H%M%S}.SAFE")
    scl = arrays.scl
    valid = scl != 0
    nvalid = max(int(valid.sum()), 1)

    def pct(mask: np.ndarray) -> float:
        return round(100.0 * float(np.count_nonzero(mask & valid)) / nvalid, 4)

    cloudy = pct((scl == 8) | (scl == 9) | (scl == 10))
    props: dict = {
        "datetime": _dt_str(t),
        "platform": spec.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "gsd": 10,
        "eo:cloud_cover": cloudy,
        "proj:code": f"EPSG:{tile.epsg}",
        "mgrs:utm_zone": tile.zone,
        "mgrs:latitude_band": tile.band,
        "mgrs:grid_square": tile.square,
        "grid:code": f"MGRS-{tile.id}",
        "view:sun_azimuth": round(meta.mean_sun_azimuth, 6),
        "view:sun_elevation": round(90.0 - meta.mean_sun_zenith, 6),
        "view:incidence_angle": round(meta.mean_view_zenith, 6),
        "view:azimuth": round(meta.mean_view_azimuth, 6),
        "s2:tile_id": meta.granule_id,
        "s2:product_type": "S2MSI2A" if level == "L2A" else "S2MSI1C",
        "s2:processing_baseline": spec.processing_baseline,
        "s2:product_uri": product_uri,
        "s2:generation_time": _dt_str(gen),
        "s2:datatake_id": f"GS2{unit}_{t:%Y%m%dT%H%M%S}_{orbit:06d}_N{spec.processing_baseline}",
        "s2:datatake_type": "INS-NOBS",
        "s2:mean_solar_zenith": round(meta.mean_sun_zenith, 6),
        "s2:mean_solar_azimuth": round(meta.mean_sun_azimuth, 6),
        "s2:nodata_pixel_percentage": round(100.0 * float(np.count_nonzero(~valid)) / scl.size, 4),
    }
    if level == "L2A":
        props.update({
            "s2:cloud_shadow_percentage": pct(scl == 3),
            "s2:vegetation_percentage": pct(scl == 4),
            "s2:not_vegetated_percentage": pct(scl == 5),
            "s2:water_percentage": pct(scl == 6),
            "s2:medium_proba_clouds_percentage": pct(scl == 8),
            "s2:high_proba_clouds_percentage": pct(scl == 9),
            "s2:thin_cirrus_percentage": pct(scl == 10),
        })
    bands = s2.L2A_BANDS if level == "L2A" else s2.L1C_BANDS
    assets: dict = {}
    for name in bands:
        b = s2.BANDS[name]
        assets[b.asset_key] = _band_asset(b, spec, size, tile.ulx, tile.uly)
    if level == "L2A":
        n20 = size // 2
        assets["scl"] = {
            "href": "./SCL.tif", "type": COG_MEDIA_TYPE, "title": "Scene classification map (SCL)",
            "roles": ["data"],
            "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
            "proj:shape": [n20, n20], "proj:transform": [20, 0, tile.ulx, 0, -20, tile.uly],
        }
    assets["granule_metadata"] = {"href": "./granule_metadata.xml", "type": "application/xml",
                                  "roles": ["metadata"]}
    collection = L2A_COLLECTION if level == "L2A" else L1C_COLLECTION
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": STAC_EXTENSIONS,
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": bbox,
        "properties": props,
        "links": [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        ],
        "assets": assets,
        "collection": collection,
    }


def _dump(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_scene(root: Path, spec: SceneSpec, arrays: SceneArrays) -> list[Path]:
    """Write the scene's L2A item (and L1C item when ``spec.has_l1c``) under the archive ``root``.

    Layout: ``root/<collection>/<item_id>/<item_id>.json`` with COG assets (uint16, DN = round(ρ·10000) −
    ADD_OFFSET clipped to [1, 65535], 0 = no data; DEFLATE + predictor 2, internal overviews; tile UTM CRS at
    native 10/20/60 m) and ``granule_metadata.xml`` next to it; each item JSON is written after its assets.
    Returns every path written (item JSONs first).
    Collections and the root catalog are written by :func:`synthesize_archive`.
    """
    tile = parse_tile(spec.tile)
    written: list[Path] = []
    levels = ["L2A", "L1C"] if spec.has_l1c else ["L2A"]
    for level in levels:
        meta = scene_metadata(spec, arrays, level)
        collection = L2A_COLLECTION if level == "L2A" else L1C_COLLECTION
        item_id = spec.item_id(level)
        d = root / collection / item_id
        d.mkdir(parents=True, exist_ok=True)
        xml_path = d / "granule_metadata.xml"
        xml_path.write_bytes(s2.build_granule_metadata_xml(meta))
        written.append(xml_path)
        src = arrays.boa if level == "L2A" else arrays.toa
        bands = s2.L2A_BANDS if level == "L2A" else s2.L1C_BANDS
        add = OFFSET_DN if spec.has_offsets else 0.0
        for name in bands:
            b = s2.BANDS[name]
            p = d / f"{name}.tif"
            _write_cog(p, encode_dn(src[name], add), b.resolution, tile.epsg, tile.ulx, tile.uly,
                       resampling="AVERAGE", scale=1.0 / QUANTIFICATION, offset=add / QUANTIFICATION)
            written.append(p)
        if level == "L2A":
            p = d / "SCL.tif"
            _write_cog(p, arrays.scl, 20, tile.epsg, tile.ulx, tile.uly, resampling="NEAREST")
            written.append(p)
        # the item last, so an item on disk always has all its assets
        item_path = d / f"{item_id}.json"
        _dump(item_path, _item_dict(spec, arrays, level, meta))
        written.append(item_path)
    return sorted(written, key=lambda p: p.suffix != ".json")


def _collection_dict(cid: str, items: list[dict]) -> dict:
    xs = [it["bbox"] for it in items]
    bbox = [min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs)]
    times = sorted(it["properties"]["datetime"] for it in items)
    level = "L2A" if cid == L2A_COLLECTION else "L1C"
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": cid,
        "title": f"Synthetic Sentinel-2 {level} (raw2ready test archive)",
        "description": (f"Synthetic Sentinel-2 {level} scenes shaped like Earth Search v1 '{cid}', made by "
                        "raw2ready's seeded generator (steps/synth.py). Not real data."),
        "license": "CC0-1.0",
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[times[0], times[-1]]]}},
        "links": [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
            *({"rel": "item", "href": f"./{it['id']}/{it['id']}.json", "type": "application/geo+json"}
              for it in sorted(items, key=lambda i: i["id"])),
        ],
    }


def synthesize_archive(out: Path, specs: list[SceneSpec], size: int, seed: int = 0,
                       progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Render and write ``specs`` as a static STAC archive under ``out``; return ``out/catalog.json``.

    Deterministic: the same specs, size and seed give byte-identical files. ``progress(done, total,
    item_id)`` is called after each scene. Duplicate item ids raise ``ValueError``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = [s.item_id() for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate scene ids in specs (same platform, tile, date and sequence)")
    items: dict[str, list[dict]] = {L2A_COLLECTION: [], L1C_COLLECTION: []}
    for k, spec in enumerate(sorted(specs, key=lambda s: (s.datetime, s.tile, s.sequence, s.platform))):
        arrays = render_scene(spec, size, seed)
        paths = write_scene(out, spec, arrays)
        for p in paths:
            if p.suffix == ".json":
                items[p.parent.parent.name].append(json.loads(p.read_text(encoding="utf-8")))
        del arrays
        logger.info("wrote %s", spec.item_id())
        if progress is not None:
            progress(k + 1, len(specs), spec.item_id())
    children = [cid for cid in (L2A_COLLECTION, L1C_COLLECTION) if items[cid]]
    for cid in children:
        _dump(out / cid / "collection.json", _collection_dict(cid, items[cid]))
    catalog = {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": "raw2ready-synthetic",
        "title": "raw2ready synthetic Sentinel-2 archive",
        "description": f"Synthetic Sentinel-2 L2A/L1C scenes (size {size} px at 10 m, seed {seed}).",
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            *({"rel": "child", "href": f"./{cid}/collection.json", "type": "application/json"}
              for cid in children),
        ],
    }
    _dump(out / "catalog.json", catalog)
    return out / "catalog.json"


# --------------------------------------------------------------------------------------------------
# scene lists
# --------------------------------------------------------------------------------------------------

_BASELINES = (  # (first operational date, baseline)
    (date(2015, 6, 23), "02.01"),
    (date(2021, 3, 30), "03.00"),
    (date(2021, 6, 30), "03.01"),
    (date(2022, 1, 25), "04.00"),
    (date(2022, 12, 6), "05.09"),
    (date(2023, 12, 13), "05.10"),
    (date(2024, 7, 23), "05.11"),
)


def baseline_for_date(d: date) -> str:
    """The operational processing baseline on a date (synthetic bookkeeping only; readers use metadata)."""
    out = _BASELINES[0][1]
    for start, b in _BASELINES:
        if d >= start:
            out = b
    return out


def _overpass(tile: str, d: date) -> datetime:
    """Synthetic overpass time: ≈ 03:47 UTC over Thailand, shifted by the tile's longitude offset."""
    t = parse_tile(tile)
    secs = (t.zone - 47) * -1440 + 3 * 3600 + 47 * 60 + (ord(t.square[1]) % 7) * 4
    return datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(seconds=secs, milliseconds=24)


def demo_specs() -> list[SceneSpec]:
    """A small, varied archive: 47PPR (Bangkok) and its east neighbour 47PQR, dates spanning the 04.00 switch.

    Contains pre-04.00 scenes (no offsets), post-04.00 scenes, one duplicate (same tile and datetime,
    sequence 1, reprocessed at baseline 05.00, so it needs offsets although it is from 2021), one fully
    clouded scene, one scene with a swath edge, one L2A without L1C, platforms S2A/S2B mixed.
    """
    rows = [  # date, platform, baseline, cloud, cirrus, swath edge
        (date(2021, 12, 4), "sentinel-2a", "03.01", 0.10, 0.05, False),
        (date(2021, 12, 9), "sentinel-2b", "03.01", 0.35, 0.10, True),
        (date(2022, 1, 23), "sentinel-2b", "03.01", 1.00, 0.00, False),
        (date(2022, 2, 2), "sentinel-2a", "04.00", 0.05, 0.02, False),
        (date(2023, 1, 18), "sentinel-2b", "05.09", 0.25, 0.15, False),
        (date(2024, 1, 13), "sentinel-2a", "05.10", 0.15, 0.05, True),
    ]
    specs: list[SceneSpec] = []
    for tile in ("47PPR", "47PQR"):
        for d, plat, base, cc, ci, edge in rows:
            specs.append(SceneSpec(tile=tile, datetime=_overpass(tile, d), platform=plat,
                                   processing_baseline=base, cloud_cover=cc, cirrus=ci, swath_edge=edge,
                                   has_l1c=not (tile == "47PQR" and d.year == 2023)))
    first = specs[0]
    specs.append(replace(first, sequence=1, processing_baseline="05.00"))  # Collection-1 reprocessing
    return specs


def specs_for_range(tiles: list[str], start: date, end: date, revisit_days: int = 5,
                    seed: int = 0) -> list[SceneSpec]:
    """Scenes every ``revisit_days`` from ``start`` to ``end`` (inclusive) for each tile.

    Platforms alternate (S2A/S2B; S2C replaces S2A from 2025-01-21); the baseline is the operational one
    of the date; cloud cover and cirrus are drawn from ``seed`` with a tropical season (wetter May–Oct).
    """
    if revisit_days < 1:
        raise ValueError("revisit_days must be ≥ 1")
    specs: list[SceneSpec] = []
    n_steps = (end - start).days // revisit_days + 1
    for tile in sorted({parse_tile(t).id for t in tiles}):
        for k in range(max(0, n_steps)):
            d = start + timedelta(days=k * revisit_days)
            rng = _rng("spec", seed, tile, d.isoformat())
            first = "sentinel-2c" if d >= date(2025, 1, 21) else "sentinel-2a"
            plat = first if k % 2 == 0 else "sentinel-2b"
            wet = 5 <= d.month <= 10
            cc = float(rng.beta(2.0, 2.0) if wet else rng.beta(0.7, 4.0))
            if rng.random() < (0.12 if wet else 0.03):
                cc = 1.0
            specs.append(SceneSpec(tile=tile, datetime=_overpass(tile, d), platform=plat,
                                   processing_baseline=baseline_for_date(d), cloud_cover=round(cc, 3),
                                   cirrus=round(float(rng.uniform(0.0, 0.2)), 3)))
    return specs
