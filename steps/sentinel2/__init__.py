"""Sentinel-2 MSI constants and granule (tile) metadata: band table, asset keys, radiometric offsets, angles.

Radiometry (see ``shared/reference/SCIENCE_NOTES.md`` §7): reflectance = (DN + ADD_OFFSET_b) / QUANTIFICATION,
DN 0 = no data. Whether an offset applies is decided **by the metadata** (the offset list is present, which
ESA does from processing baseline 04.00 on, also for reprocessed old acquisitions), never by date.
:func:`reflectance_params` returns that rule as ``(scale, offset)`` so that ``ρ = DN·scale + offset``.

Granule metadata XML
--------------------
raw2ready reads a single XML file per
granule modelled on the tile metadata ``MTD_TL.xml`` of the SAFE format. Because Earth Search serves only
the tile file as ``granule_metadata``, this single-file form also carries the product-level items the
pipeline needs (baseline, spacecraft, quantification and offsets):

* root ``Level-2A_Tile_ID`` or ``Level-1C_Tile_ID`` (namespaces are ignored when reading);
* ``General_Info``: ``TILE_ID`` (granule id ending ``_T47PPR_N05.10``), ``SENSING_TIME`` (UTC, ``Z``),
  ``PROCESSING_BASELINE`` ("05.10"), ``SPACECRAFT_NAME`` ("Sentinel-2B"), ``Product_Image_Characteristics``
  with, for L2A, ``QUANTIFICATION_VALUES_LIST/BOA_QUANTIFICATION_VALUE`` and (baseline ≥ 04.00 only)
  ``BOA_ADD_OFFSET_VALUES_LIST/BOA_ADD_OFFSET band_id="0..12"``; for L1C ``QUANTIFICATION_VALUE`` and
  ``Radiometric_Offset_List/RADIO_ADD_OFFSET band_id=…``;
* ``Geometric_Info/Tile_Geocoding``: ``HORIZONTAL_CS_CODE`` ("EPSG:32647"), ``Size resolution=10|20|60``
  (``NROWS``/``NCOLS``), ``Geoposition resolution=…`` (``ULX``/``ULY``/``XDIM``/``YDIM``);
* ``Geometric_Info/Tile_Angles``: ``Sun_Angles_Grid/{Zenith,Azimuth}`` (``COL_STEP``/``ROW_STEP`` in m,
  ``Values_List/VALUES`` rows of space-separated degrees), ``Mean_Sun_Angle``,
  ``Viewing_Incidence_Angles_Grids bandId=… detectorId=…`` (NaN outside each detector's strip, as in real
  data) and ``Mean_Viewing_Incidence_Angle_List``.

Angle grid node (i, j) lies at (ULX + j·COL_STEP, ULY − i·ROW_STEP) in the tile CRS (metres).
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from steps.errors import InvalidInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Band:
    """One MSI band: ESA name, Earth Search v1 asset key, native resolution (m), centre/FWHM (µm)."""

    name: str
    asset_key: str
    resolution: int
    center_wavelength: float
    fwhm: float
    common_name: str
    band_id: int  # ESA index 0..12, used by the metadata's band_id/bandId attributes


BANDS: dict[str, Band] = {
    b.name: b
    for b in (
        Band("B01", "coastal", 60, 0.443, 0.027, "coastal", 0),
        Band("B02", "blue", 10, 0.490, 0.098, "blue", 1),
        Band("B03", "green", 10, 0.560, 0.045, "green", 2),
        Band("B04", "red", 10, 0.665, 0.038, "red", 3),
        Band("B05", "rededge1", 20, 0.704, 0.019, "rededge", 4),
        Band("B06", "rededge2", 20, 0.740, 0.018, "rededge", 5),
        Band("B07", "rededge3", 20, 0.783, 0.028, "rededge", 6),
        Band("B08", "nir", 10, 0.842, 0.145, "nir", 7),
        Band("B8A", "nir08", 20, 0.865, 0.033, "nir08", 8),
        Band("B09", "nir09", 60, 0.945, 0.026, "nir09", 9),
        Band("B10", "cirrus", 60, 1.3735, 0.075, "cirrus", 10),
        Band("B11", "swir16", 20, 1.610, 0.143, "swir16", 11),
        Band("B12", "swir22", 20, 2.190, 0.242, "swir22", 12),
    )
}
"""The 13 MSI bands in ESA order (B01 … B8A … B12)."""

BAND_NAMES: tuple[str, ...] = tuple(BANDS)
L2A_BANDS: tuple[str, ...] = tuple(b for b in BANDS if b != "B10")  # B10 carries no BOA information
L1C_BANDS: tuple[str, ...] = BAND_NAMES
BAND_BY_ID: dict[int, str] = {b.band_id: b.name for b in BANDS.values()}
BAND_BY_ASSET_KEY: dict[str, str] = {b.asset_key: b.name for b in BANDS.values()}

L2A_ASSET_KEYS: tuple[str, ...] = (*(BANDS[b].asset_key for b in L2A_BANDS), "scl", "granule_metadata")
L1C_ASSET_KEYS: tuple[str, ...] = (*(BANDS[b].asset_key for b in L1C_BANDS), "granule_metadata")

S2CLOUDLESS_BANDS: tuple[str, ...] = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
"""Band order of the s2cloudless model's 10 features (L1C TOA reflectance)."""

OFFSET_BASELINE = "04.00"
"""First processing baseline whose products carry the −1000 DN offset lists."""

ANGLE_GRID_SIZE = 23
ANGLE_GRID_STEP_M = 5000.0

PLATFORM_NAMES = {"sentinel-2a": "Sentinel-2A", "sentinel-2b": "Sentinel-2B", "sentinel-2c": "Sentinel-2C"}


def baseline_has_offsets(baseline: str) -> bool:
    """True when ESA products of this processing baseline ("05.10") carry add-offset lists (≥ 04.00).

    Used only to *write* synthetic metadata; readers must look at the metadata itself.
    """
    return _baseline_key(baseline) >= _baseline_key(OFFSET_BASELINE)


def _baseline_key(baseline: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,2})\.(\d{2})", baseline.strip())
    if not m:
        raise InvalidInputError(f"malformed processing baseline {baseline!r}: expected e.g. '05.10'")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True, eq=False)
class GranuleMetadata:
    """Parsed granule metadata (angles in degrees, float64; positions in metres of ``epsg``).

    ``view_zenith``/``view_azimuth`` are the mean over bands and detectors (NaN where no detector sees the
    node, e.g. beyond the swath edge); azimuths are averaged as unit vectors. ``add_offsets`` is empty when
    the metadata lists no offsets (processing baseline < 04.00).
    """

    level: str  # "L2A" or "L1C"
    tile_id: str  # MGRS tile, e.g. "47PPR"
    granule_id: str  # full TILE_ID string
    platform: str | None  # "sentinel-2b" (None when SPACECRAFT_NAME is absent)
    epsg: int
    ulx: float
    uly: float
    sizes: dict[int, tuple[int, int]]  # resolution (m) -> (rows, cols)
    sensing_time: datetime
    processing_baseline: str
    quantification: float
    add_offsets: dict[str, float]
    sun_zenith: np.ndarray
    sun_azimuth: np.ndarray
    view_zenith: np.ndarray
    view_azimuth: np.ndarray
    angle_step: float
    mean_sun_zenith: float
    mean_sun_azimuth: float
    mean_view_zenith: float
    mean_view_azimuth: float
    view_grids: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Per (band, detector) (zenith, azimuth) grids as listed in the file."""


def reflectance_params(meta: GranuleMetadata, band: str) -> tuple[float, float]:
    """``(scale, offset)`` such that reflectance = DN·scale + offset (DN 0 is no data; mask it first).

    scale = 1/QUANTIFICATION; offset = ADD_OFFSET_band/QUANTIFICATION when the metadata lists offsets,
    else 0. For baseline ≥ 04.00 this is (0.0001, −0.1).
    """
    if band not in BANDS:
        raise InvalidInputError(f"unknown Sentinel-2 band {band!r}")
    q = meta.quantification
    if meta.add_offsets:
        if band not in meta.add_offsets:
            raise InvalidInputError(f"granule metadata lists add-offsets but none for band {band}")
        return 1.0 / q, meta.add_offsets[band] / q
    return 1.0 / q, 0.0


def mean_view_angles(
    grids: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware mean of (zenith, azimuth) grids (degrees) over bands/detectors.

    Zenith: arithmetic mean of the non-NaN values. Azimuth: direction of the mean unit vector of the
    non-NaN values, in [0, 360). Nodes no grid covers are NaN. Emits no warnings for empty nodes.
    """
    if not grids:
        raise InvalidInputError("granule metadata has no Viewing_Incidence_Angles_Grids")
    zen = np.stack([np.asarray(z, dtype=np.float64) for z, _ in grids])
    azi = np.stack([np.asarray(a, dtype=np.float64) for _, a in grids])
    ok = ~np.isnan(zen) & ~np.isnan(azi)
    n = ok.sum(axis=0)
    zsum = np.where(ok, zen, 0.0).sum(axis=0)
    rad = np.deg2rad(np.where(ok, azi, 0.0))
    s = np.where(ok, np.sin(rad), 0.0).sum(axis=0)
    c = np.where(ok, np.cos(rad), 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        zmean = np.where(n > 0, zsum / np.maximum(n, 1), np.nan)
    amean = np.where(n > 0, np.rad2deg(np.arctan2(s, c)) % 360.0, np.nan)
    return zmean, amean


def scene_mean_angles(zen: np.ndarray, azi: np.ndarray) -> tuple[float, float]:
    """Scene mean (zenith, azimuth) in degrees, ignoring NaN; azimuth as a unit-vector mean."""
    ok = ~np.isnan(zen) & ~np.isnan(azi)
    if not ok.any():
        return math.nan, math.nan
    rad = np.deg2rad(azi[ok])
    a = math.degrees(math.atan2(float(np.sin(rad).sum()), float(np.cos(rad).sum()))) % 360.0
    return float(zen[ok].mean()), a


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str, what: str) -> ET.Element:
    for c in el:
        if _local(c.tag) == name:
            return c
    raise InvalidInputError(f"granule metadata: missing {what}/{name}")


def _opt_child(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _text(el: ET.Element, name: str, what: str) -> str:
    t = (_child(el, name, what).text or "").strip()
    if not t:
        raise InvalidInputError(f"granule metadata: empty {what}/{name}")
    return t


def _float(s: str, what: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise InvalidInputError(f"granule metadata: {what} is not a number: {s!r}") from None


def _parse_grid(el: ET.Element, what: str) -> tuple[np.ndarray, float]:
    step = _float(_text(el, "COL_STEP", what), f"{what}/COL_STEP")
    rstep = _float(_text(el, "ROW_STEP", what), f"{what}/ROW_STEP")
    if step <= 0 or step != rstep:
        raise InvalidInputError(f"granule metadata: {what} has unequal or non-positive steps {step}/{rstep}")
    rows = []
    for v in _child(el, "Values_List", what):
        if _local(v.tag) != "VALUES":
            continue
        try:
            rows.append(np.array((v.text or "").split(), dtype=np.float64))
        except ValueError:
            raise InvalidInputError(f"granule metadata: non-numeric value in {what}/VALUES") from None
    if not rows or len({r.size for r in rows}) != 1 or rows[0].size == 0:
        raise InvalidInputError(f"granule metadata: {what}/Values_List is empty or ragged")
    return np.vstack(rows), step


def _parse_offsets(parent: ET.Element | None, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if parent is None:
        return out
    for o in parent:
        if _local(o.tag) != name:
            continue
        bid = o.get("band_id")
        if bid is None or not bid.strip().isdigit() or int(bid) not in BAND_BY_ID:
            raise InvalidInputError(f"granule metadata: {name} has bad band_id {bid!r}")
        out[BAND_BY_ID[int(bid)]] = _float((o.text or "").strip(), f"{name} band_id={bid}")
    if not out:
        raise InvalidInputError(f"granule metadata: empty offset list ({name})")
    return out


def parse_granule_metadata(xml: bytes) -> GranuleMetadata:
    """Parse granule metadata XML (the format in the module docstring) into :class:`GranuleMetadata`.

    Raises ``InvalidInputError`` (one line naming the problem) for unparsable XML, an unknown root, or a
    missing/malformed element. Angles are degrees; positions metres in the tile CRS.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InvalidInputError(f"granule metadata is not well-formed XML: {exc}") from None
    rname = _local(root.tag)
    level = {"Level-2A_Tile_ID": "L2A", "Level-1C_Tile_ID": "L1C"}.get(rname)
    if level is None:
        raise InvalidInputError(f"granule metadata: unknown root element {rname!r}")

    gi = _child(root, "General_Info", rname)
    gid = _text(gi, "TILE_ID", "General_Info")
    m = re.search(r"_T(\d{2}[C-X][A-Z]{2})(?:_|$)", gid)
    if not m:
        raise InvalidInputError(f"granule metadata: TILE_ID {gid!r} names no MGRS tile (_Tzzbss_)")
    tile = m.group(1)
    st = _text(gi, "SENSING_TIME", "General_Info")
    try:
        sensing = datetime.fromisoformat(st.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"granule metadata: SENSING_TIME {st!r} is not ISO 8601") from None
    if sensing.tzinfo is None:
        sensing = sensing.replace(tzinfo=UTC)
    sensing = sensing.astimezone(UTC)
    baseline = _text(gi, "PROCESSING_BASELINE", "General_Info")
    _baseline_key(baseline)
    sc = _opt_child(gi, "SPACECRAFT_NAME")
    platform = (sc.text or "").strip().lower() if sc is not None and sc.text else None

    pic = _child(gi, "Product_Image_Characteristics", "General_Info")
    if level == "L2A":
        ql = _child(pic, "QUANTIFICATION_VALUES_LIST", "Product_Image_Characteristics")
        q = _float(_text(ql, "BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUES_LIST"),
                   "BOA_QUANTIFICATION_VALUE")
        offsets = _parse_offsets(_opt_child(pic, "BOA_ADD_OFFSET_VALUES_LIST"), "BOA_ADD_OFFSET")
    else:
        q = _float(_text(pic, "QUANTIFICATION_VALUE", "Product_Image_Characteristics"),
                   "QUANTIFICATION_VALUE")
        offsets = _parse_offsets(_opt_child(pic, "Radiometric_Offset_List"), "RADIO_ADD_OFFSET")
    if not q > 0:
        raise InvalidInputError(f"granule metadata: quantification value must be > 0, got {q}")
    if not offsets and baseline_has_offsets(baseline):
        logger.warning("granule %s: baseline %s but no add-offset list; using offset 0", gid, baseline)

    geo = _child(root, "Geometric_Info", rname)
    tg = _child(geo, "Tile_Geocoding", "Geometric_Info")
    cs = _text(tg, "HORIZONTAL_CS_CODE", "Tile_Geocoding")
    m = re.fullmatch(r"EPSG:(\d{4,5})", cs)
    if not m:
        raise InvalidInputError(f"granule metadata: HORIZONTAL_CS_CODE {cs!r} is not EPSG:nnnnn")
    epsg = int(m.group(1))
    sizes: dict[int, tuple[int, int]] = {}
    ulxy: dict[int, tuple[float, float]] = {}
    for el in tg:
        name = _local(el.tag)
        if name not in ("Size", "Geoposition"):
            continue
        res_s = el.get("resolution", "")
        if not res_s.isdigit():
            raise InvalidInputError(f"granule metadata: {name} has bad resolution {res_s!r}")
        res = int(res_s)
        if name == "Size":
            try:
                sizes[res] = (int(_text(el, "NROWS", "Size")), int(_text(el, "NCOLS", "Size")))
            except ValueError:
                raise InvalidInputError(f"granule metadata: Size resolution={res} is not integer") from None
        else:
            ulxy[res] = (_float(_text(el, "ULX", "Geoposition"), "ULX"),
                         _float(_text(el, "ULY", "Geoposition"), "ULY"))
    if not sizes or not ulxy:
        raise InvalidInputError("granule metadata: Tile_Geocoding lacks Size or Geoposition")
    if len(set(ulxy.values())) != 1:
        raise InvalidInputError("granule metadata: Geoposition ULX/ULY differ between resolutions")
    ulx, uly = next(iter(ulxy.values()))

    ta = _child(geo, "Tile_Angles", "Geometric_Info")
    sg = _child(ta, "Sun_Angles_Grid", "Tile_Angles")
    sun_z, step = _parse_grid(_child(sg, "Zenith", "Sun_Angles_Grid"), "Sun_Angles_Grid/Zenith")
    sun_a, step_a = _parse_grid(_child(sg, "Azimuth", "Sun_Angles_Grid"), "Sun_Angles_Grid/Azimuth")
    if sun_z.shape != sun_a.shape or step != step_a:
        raise InvalidInputError("granule metadata: sun zenith and azimuth grids differ in shape or step")
    ms = _child(ta, "Mean_Sun_Angle", "Tile_Angles")
    msz = _float(_text(ms, "ZENITH_ANGLE", "Mean_Sun_Angle"), "Mean_Sun_Angle/ZENITH_ANGLE")
    msa = _float(_text(ms, "AZIMUTH_ANGLE", "Mean_Sun_Angle"), "Mean_Sun_Angle/AZIMUTH_ANGLE")

    view_grids: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    for el in ta:
        if _local(el.tag) != "Viewing_Incidence_Angles_Grids":
            continue
        bid, did = el.get("bandId", ""), el.get("detectorId", "")
        if not bid.isdigit() or int(bid) not in BAND_BY_ID or not did.isdigit():
            raise InvalidInputError(
                f"granule metadata: bad Viewing_Incidence_Angles_Grids ids {bid!r}/{did!r}")
        what = f"Viewing_Incidence_Angles_Grids[{bid},{did}]"
        z, zs = _parse_grid(_child(el, "Zenith", what), what + "/Zenith")
        a, as_ = _parse_grid(_child(el, "Azimuth", what), what + "/Azimuth")
        if z.shape != sun_z.shape or a.shape != sun_z.shape or zs != step or as_ != step:
            raise InvalidInputError(f"granule metadata: {what} does not match the sun grid shape/step")
        view_grids[(BAND_BY_ID[int(bid)], int(did))] = (z, a)
    vz, va = mean_view_angles(list(view_grids.values()))

    ml = _child(ta, "Mean_Viewing_Incidence_Angle_List", "Tile_Angles")
    zs_list, as_list = [], []
    for el in ml:
        if _local(el.tag) != "Mean_Viewing_Incidence_Angle":
            continue
        zs_list.append(_float(_text(el, "ZENITH_ANGLE", "Mean_Viewing_Incidence_Angle"), "mean view zenith"))
        as_list.append(_float(_text(el, "AZIMUTH_ANGLE", "Mean_Viewing_Incidence_Angle"),
                              "mean view azimuth"))
    if not zs_list:
        raise InvalidInputError("granule metadata: Mean_Viewing_Incidence_Angle_List is empty")
    mvz, mva = scene_mean_angles(np.array(zs_list), np.array(as_list))

    return GranuleMetadata(
        level=level, tile_id=tile, granule_id=gid, platform=platform, epsg=epsg, ulx=ulx, uly=uly,
        sizes=sizes, sensing_time=sensing, processing_baseline=baseline, quantification=q,
        add_offsets=offsets, sun_zenith=sun_z, sun_azimuth=sun_a, view_zenith=vz, view_azimuth=va,
        angle_step=step, mean_sun_zenith=msz, mean_sun_azimuth=msa, mean_view_zenith=mvz,
        mean_view_azimuth=mva, view_grids=view_grids,
    )
