"""Readers for ESA's real Sentinel-2 metadata files: the tile file ``MTD_TL.xml`` and the product file.

Where each fact lives (PSD 14.x, SAFE_COMPACT; checked on real L2A files of baselines 02.12, 04.00, 05.09
and an L1C file of baseline 03.01):

* **Product metadata** ``MTD_MSIL2A.xml`` (root ``Level-2A_User_Product``) / ``MTD_MSIL1C.xml`` (root
  ``Level-1C_User_Product``), ``General_Info``:

  - ``Product_Info``: ``PRODUCT_START_TIME``, ``GENERATION_TIME``, ``PRODUCT_URI`` (``…SAFE``),
    ``PRODUCT_TYPE`` (``S2MSI2A``/``S2MSI1C``), ``PROCESSING_BASELINE`` ("05.09"),
    ``Datatake/@datatakeIdentifier`` with ``SPACECRAFT_NAME``, ``SENSING_ORBIT_NUMBER``,
    ``SENSING_ORBIT_DIRECTION``; ``Product_Organisation/Granule_List/Granule/IMAGE_FILE`` = band file
    paths relative to the SAFE root **without** the ``.jp2`` extension;
  - ``Product_Image_Characteristics``: ``Special_Values`` (NODATA 0, SATURATED 65535), L2A
    ``QUANTIFICATION_VALUES_LIST/BOA_QUANTIFICATION_VALUE`` and (baseline ≥ 04.00)
    ``BOA_ADD_OFFSET_VALUES_LIST/BOA_ADD_OFFSET band_id=…``; L1C ``QUANTIFICATION_VALUE`` and (≥ 04.00)
    ``Radiometric_Offset_List/RADIO_ADD_OFFSET band_id=…``; ``Reflectance_Conversion/U``;
    ``Spectral_Information_List/Spectral_Information bandId=… physicalBand="B1"`` (band_id → band);
  - ``Quality_Indicators_Info/Cloud_Coverage_Assessment`` (percent).

* **Tile metadata** ``GRANULE/<granule>/MTD_TL.xml`` (root ``Level-2A_Tile_ID``/``Level-1C_Tile_ID``):
  ``General_Info`` (``TILE_ID`` ending ``_T29UNU_N04.00``, ``DATASTRIP_ID``, ``SENSING_TIME``),
  ``Geometric_Info/Tile_Geocoding`` (``HORIZONTAL_CS_CODE`` "EPSG:32629", ``Size`` and ``Geoposition`` per
  resolution 10/20/60), ``Geometric_Info/Tile_Angles`` (``Sun_Angles_Grid``, ``Mean_Sun_Angle``,
  ``Viewing_Incidence_Angles_Grids bandId detectorId`` with NaN outside each detector's footprint,
  ``Mean_Viewing_Incidence_Angle_List``) and ``Quality_Indicators_Info/Image_Content_QI/
  CLOUDY_PIXEL_PERCENTAGE``. It holds **no** baseline, spacecraft, quantification or offsets (the
  baseline only as the ``N04.00`` suffix of ``TILE_ID``).

Angle grids: node (i, j) lies at map position ``(ulx + j·step, uly − i·step)`` in the tile CRS (metres);
all angles are degrees. XML namespaces are ignored. Every failure is an
:class:`~steps.errors.InvalidInputError` naming the file (``source``) and the element.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from steps.errors import InvalidInputError
from steps.science.angles import circular_mean_deg, nan_mean
from steps.sentinel2.bands import BAND_BY_ID, BANDS, normalise_band_name

logger = logging.getLogger(__name__)

__all__ = [
    "OFFSET_BASELINE",
    "ProductMetadata",
    "TileMetadata",
    "baseline_from_product_id",
    "baseline_key",
    "parse_product_metadata",
    "parse_tile_metadata",
]

OFFSET_BASELINE = "04.00"
"""First processing baseline whose products carry the add-offset lists (−1000 DN so far)."""

_PLACEHOLDER_BASELINES = frozenset({"00.00", "99.99"})
"""``N0000``/``N9999`` appear in non-operational (test/dummy) product names: they name no real baseline."""

_TILE_LEVELS = {"Level-2A_Tile_ID": "L2A", "Level-1C_Tile_ID": "L1C"}
_PRODUCT_LEVELS = {"Level-2A_User_Product": "L2A", "Level-1C_User_Product": "L1C"}


# --------------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------------


def baseline_key(baseline: str) -> tuple[int, int]:
    """Sortable key of a processing baseline: ``"05.09"`` → ``(5, 9)``.

    Raises:
        InvalidInputError: not of the form ``NN.NN`` (one or two digits before the dot, two after).
    """
    m = re.fullmatch(r"(\d{1,2})\.(\d{2})", str(baseline).strip())
    if not m:
        raise InvalidInputError(f"malformed processing baseline {baseline!r}: expected e.g. '05.09'")
    return int(m.group(1)), int(m.group(2))


def baseline_from_product_id(name: str) -> str | None:
    """Processing baseline from an ESA product, granule or datastrip name, or None.

    ``S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_…`` → ``"05.09"``; granule/datastrip ids ending
    ``_N05.09`` → ``"05.09"``. The placeholders ``N0000`` and ``N9999`` (used in non-operational test
    products) carry no baseline and give None, as does a name without an ``_Nxxxx`` field; the caller must
    then decide from other metadata.
    """
    m = re.search(r"_N(\d{2})\.?(\d{2})(?=[_.]|$)", name)
    if not m:
        return None
    pb = f"{m.group(1)}.{m.group(2)}"
    if pb in _PLACEHOLDER_BASELINES:
        logger.info("%s: baseline field N%s is a placeholder, not a baseline", name, pb.replace(".", ""))
        return None
    return pb


# --------------------------------------------------------------------------------------------------
# XML helpers (namespaces ignored)
# --------------------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


class _Doc:
    """An element tree plus the file name for error messages."""

    def __init__(self, xml: bytes, source: str, kind: str) -> None:
        self.source = source or kind
        try:
            self.root = ET.fromstring(xml)
        except ET.ParseError as exc:
            raise InvalidInputError(f"{self.source}: not well-formed XML ({exc})") from None

    def fail(self, msg: str) -> InvalidInputError:
        return InvalidInputError(f"{self.source}: {msg}")

    def child(self, el: ET.Element, name: str, path: str) -> ET.Element:
        c = self.opt_child(el, name)
        if c is None:
            raise self.fail(f"missing element {path}/{name}")
        return c

    @staticmethod
    def opt_child(el: ET.Element | None, name: str) -> ET.Element | None:
        if el is None:
            return None
        for c in el:
            if _local(c.tag) == name:
                return c
        return None

    @staticmethod
    def children(el: ET.Element | None, name: str) -> Iterator[ET.Element]:
        if el is None:
            return
        for c in el:
            if _local(c.tag) == name:
                yield c

    @staticmethod
    def descendants(el: ET.Element | None, name: str) -> Iterator[ET.Element]:
        if el is None:
            return
        for c in el.iter():
            if _local(c.tag) == name:
                yield c

    def text(self, el: ET.Element, name: str, path: str) -> str:
        t = (self.child(el, name, path).text or "").strip()
        if not t:
            raise self.fail(f"empty element {path}/{name}")
        return t

    def opt_text(self, el: ET.Element | None, name: str) -> str | None:
        c = self.opt_child(el, name)
        if c is None:
            return None
        t = (c.text or "").strip()
        return t or None

    def number(self, s: str, path: str) -> float:
        try:
            return float(s)
        except ValueError:
            raise self.fail(f"{path} is not a number: {s!r}") from None

    def time(self, s: str, path: str) -> datetime:
        txt = s.strip()
        if txt.endswith("Z"):
            txt = txt[:-1] + "+00:00"
        try:
            t = datetime.fromisoformat(txt)
        except ValueError:
            raise self.fail(f"{path} is not an ISO time: {s!r}") from None
        if t.tzinfo is None:  # ESA writes UTC with "Z"; a bare time is UTC by the format's definition
            t = t.replace(tzinfo=UTC)
        return t.astimezone(UTC)


def _open(xml: bytes, source: str, kind: str, what: str, levels: dict[str, str]) -> tuple[_Doc, str, str, ET.Element]:
    """The parsed file, its root element's name, its level (``levels``: root name → level) and its
    ``General_Info``; a root not in ``levels`` is refused as no Sentinel-2 ``what`` root."""
    doc = _Doc(xml, source, kind)
    rname = _local(doc.root.tag)
    level = levels.get(rname)
    if level is None:
        raise doc.fail(f"root element {rname!r} is not a Sentinel-2 {what} root {sorted(levels)}")
    return doc, rname, level, doc.child(doc.root, "General_Info", rname)


# --------------------------------------------------------------------------------------------------
# tile metadata (MTD_TL.xml)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TileMetadata:
    """Parsed ``MTD_TL.xml`` of one granule (L2A or L1C).

    Positions are metres in ``EPSG:epsg`` (UTM); ``ulx``/``uly`` is the upper-left corner of the tile (the
    same for every resolution). Angle grids are float64 degrees, node (i, j) at
    ``(ulx + j·angle_step, uly − i·angle_step)``. ``view_grids[(band, detector)] = (zenith, azimuth)``
    keep NaN outside each detector's footprint; ``view_zenith``/``view_azimuth`` are per node the mean
    over detectors (NaN-aware) and then over bands (azimuth as a mean unit vector), NaN where no detector
    of any band sees the node. ``mean_*`` are ESA's own mean angles from the same file
    (``mean_view_*`` = mean over the bands of ``Mean_Viewing_Incidence_Angle_List``; per band in
    ``mean_view_by_band``). ``cloud_coverage`` is ``CLOUDY_PIXEL_PERCENTAGE`` (percent) or None.
    """

    level: str
    tile_id: str
    granule_id: str
    datastrip_id: str | None
    sensing_time: datetime
    baseline_hint: str | None
    epsg: int
    ulx: float
    uly: float
    sizes: dict[int, tuple[int, int]]
    angle_step: float
    sun_zenith: np.ndarray
    sun_azimuth: np.ndarray
    view_grids: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]
    view_zenith: np.ndarray
    view_azimuth: np.ndarray
    mean_sun_zenith: float
    mean_sun_azimuth: float
    mean_view_zenith: float | None
    mean_view_azimuth: float | None
    mean_view_by_band: dict[str, tuple[float, float]] = field(default_factory=dict)
    cloud_coverage: float | None = None
    source: str = ""

    def shape(self, resolution: int) -> tuple[int, int]:
        """(rows, cols) of the tile raster at ``resolution`` metres.

        Raises:
            InvalidInputError: the metadata has no ``Size`` for that resolution.
        """
        if resolution not in self.sizes:
            raise InvalidInputError(
                f"{self.source or 'MTD_TL.xml'}: no Size for resolution {resolution} m (has {sorted(self.sizes)})"
            )
        return self.sizes[resolution]


def _parse_grid(doc: _Doc, el: ET.Element, path: str) -> tuple[np.ndarray, float]:
    step = doc.number(doc.text(el, "COL_STEP", path), f"{path}/COL_STEP")
    rstep = doc.number(doc.text(el, "ROW_STEP", path), f"{path}/ROW_STEP")
    if not step > 0 or step != rstep:
        raise doc.fail(f"{path} has unequal or non-positive COL_STEP/ROW_STEP {step}/{rstep}")
    rows = []
    for v in doc.children(doc.child(el, "Values_List", path), "VALUES"):
        try:
            rows.append(np.array((v.text or "").split(), dtype=np.float64))
        except ValueError:
            raise doc.fail(f"non-numeric value in {path}/Values_List/VALUES") from None
    if not rows or len({r.size for r in rows}) != 1 or rows[0].size == 0:
        raise doc.fail(f"{path}/Values_List is empty or ragged")
    return np.vstack(rows), step


def _band_from_id(doc: _Doc, bid: str | None, path: str) -> str:
    if bid is None or not bid.strip().isdigit() or int(bid) not in BAND_BY_ID:
        raise doc.fail(f"{path} has a bad bandId {bid!r}")
    return BAND_BY_ID[int(bid)]


def _combine_view_grids(
    grids: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Per node: mean over a band's detectors, then over bands (zenith arithmetic, azimuth circular)."""
    by_band: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for (band, _det), za in grids.items():
        by_band.setdefault(band, []).append(za)
    if not by_band:
        nan = np.full(shape, np.nan)
        return nan, nan.copy()
    zen_b = []
    azi_b = []
    for band in sorted(by_band, key=lambda b: BANDS[b].band_id):
        zs = np.stack([z for z, _ in by_band[band]])
        az = np.stack([a for _, a in by_band[band]])
        zen_b.append(nan_mean(zs, 0))
        azi_b.append(circular_mean_deg(az, 0))
    return nan_mean(np.stack(zen_b), 0), circular_mean_deg(np.stack(azi_b), 0)


def parse_tile_metadata(xml: bytes, *, source: str = "") -> TileMetadata:
    """Parse the bytes of a real ESA tile metadata file ``MTD_TL.xml`` (L2A or L1C) into :class:`TileMetadata`.

    ``source`` (file name or URL) names the file in the :class:`~steps.errors.InvalidInputError` raised for
    bytes that are not XML, an unknown root, or a missing or malformed element (named too).
    """
    doc, rname, level, gi = _open(xml, source, "MTD_TL.xml", "tile metadata", _TILE_LEVELS)
    granule_id = doc.text(gi, "TILE_ID", "General_Info")
    m = re.search(r"_T(\d{2}[A-Z]{3})(?:_|$)", granule_id)
    if not m:
        raise doc.fail(f"General_Info/TILE_ID {granule_id!r} names no tile (_Tzzbbb_)")
    tile_id = m.group(1)
    datastrip_id = doc.opt_text(gi, "DATASTRIP_ID")
    sensing_time = doc.time(doc.text(gi, "SENSING_TIME", "General_Info"), "General_Info/SENSING_TIME")
    baseline_hint = baseline_from_product_id(granule_id)

    geo = doc.child(doc.root, "Geometric_Info", rname)
    tg = doc.child(geo, "Tile_Geocoding", "Geometric_Info")
    cs = doc.text(tg, "HORIZONTAL_CS_CODE", "Geometric_Info/Tile_Geocoding")
    mcs = re.fullmatch(r"EPSG:(\d{4,5})", cs)
    if not mcs:
        raise doc.fail(f"Tile_Geocoding/HORIZONTAL_CS_CODE {cs!r} is not 'EPSG:<code>'")
    epsg = int(mcs.group(1))

    sizes: dict[int, tuple[int, int]] = {}
    for s in doc.children(tg, "Size"):
        res = s.get("resolution", "")
        p = f"Tile_Geocoding/Size[@resolution={res}]"
        if not res.isdigit():
            raise doc.fail(f"{p} has a bad resolution attribute")
        nr = doc.number(doc.text(s, "NROWS", p), f"{p}/NROWS")
        nc = doc.number(doc.text(s, "NCOLS", p), f"{p}/NCOLS")
        if nr <= 0 or nc <= 0 or nr != int(nr) or nc != int(nc):
            raise doc.fail(f"{p} has a bad size {nr}×{nc}")
        sizes[int(res)] = (int(nr), int(nc))
    if not sizes:
        raise doc.fail("missing element Geometric_Info/Tile_Geocoding/Size")

    uls: set[tuple[float, float]] = set()
    for gp in doc.children(tg, "Geoposition"):
        res = gp.get("resolution", "")
        p = f"Tile_Geocoding/Geoposition[@resolution={res}]"
        ulx = doc.number(doc.text(gp, "ULX", p), f"{p}/ULX")
        uly = doc.number(doc.text(gp, "ULY", p), f"{p}/ULY")
        xdim = doc.opt_text(gp, "XDIM")
        ydim = doc.opt_text(gp, "YDIM")
        if res.isdigit() and xdim is not None and ydim is not None and (
            doc.number(xdim, f"{p}/XDIM") != int(res) or doc.number(ydim, f"{p}/YDIM") != -int(res)
        ):
            raise doc.fail(f"{p}: XDIM/YDIM {xdim}/{ydim} do not match the resolution")
        uls.add((ulx, uly))
    if not uls:
        raise doc.fail("missing element Geometric_Info/Tile_Geocoding/Geoposition")
    if len(uls) != 1:
        raise doc.fail(f"Tile_Geocoding/Geoposition elements disagree on the upper-left corner: {sorted(uls)}")
    ulx, uly = uls.pop()

    ta = doc.child(geo, "Tile_Angles", "Geometric_Info")
    sg = doc.child(ta, "Sun_Angles_Grid", "Tile_Angles")
    sun_zenith, step = _parse_grid(doc, doc.child(sg, "Zenith", "Sun_Angles_Grid"), "Sun_Angles_Grid/Zenith")
    sun_azimuth, astep = _parse_grid(doc, doc.child(sg, "Azimuth", "Sun_Angles_Grid"), "Sun_Angles_Grid/Azimuth")
    if astep != step or sun_azimuth.shape != sun_zenith.shape:
        raise doc.fail("Sun_Angles_Grid zenith and azimuth grids differ in step or shape")
    msa = doc.child(ta, "Mean_Sun_Angle", "Tile_Angles")
    mean_sun_zenith = doc.number(doc.text(msa, "ZENITH_ANGLE", "Mean_Sun_Angle"), "Mean_Sun_Angle/ZENITH_ANGLE")
    mean_sun_azimuth = doc.number(doc.text(msa, "AZIMUTH_ANGLE", "Mean_Sun_Angle"), "Mean_Sun_Angle/AZIMUTH_ANGLE")

    view_grids: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    for vg in doc.children(ta, "Viewing_Incidence_Angles_Grids"):
        bid, did = vg.get("bandId"), vg.get("detectorId", "")
        p = f"Viewing_Incidence_Angles_Grids[@bandId={bid} @detectorId={did}]"
        band = _band_from_id(doc, bid, p)
        if not did.strip().isdigit():
            raise doc.fail(f"{p} has a bad detectorId")
        z, zs = _parse_grid(doc, doc.child(vg, "Zenith", p), f"{p}/Zenith")
        a, as_ = _parse_grid(doc, doc.child(vg, "Azimuth", p), f"{p}/Azimuth")
        if zs != step or as_ != step or z.shape != sun_zenith.shape or a.shape != sun_zenith.shape:
            raise doc.fail(f"{p} differs from the sun grid in step or shape")
        key = (band, int(did))
        if key in view_grids:
            raise doc.fail(f"{p} appears twice")
        view_grids[key] = (z, a)
    view_zenith, view_azimuth = _combine_view_grids(view_grids, sun_zenith.shape)

    mean_view_by_band: dict[str, tuple[float, float]] = {}
    for mv in doc.descendants(ta, "Mean_Viewing_Incidence_Angle"):
        p = f"Mean_Viewing_Incidence_Angle[@bandId={mv.get('bandId')}]"
        band = _band_from_id(doc, mv.get("bandId"), p)
        mean_view_by_band[band] = (
            doc.number(doc.text(mv, "ZENITH_ANGLE", p), f"{p}/ZENITH_ANGLE"),
            doc.number(doc.text(mv, "AZIMUTH_ANGLE", p), f"{p}/AZIMUTH_ANGLE"),
        )
    if mean_view_by_band:
        vals = np.array(list(mean_view_by_band.values()), dtype=np.float64)
        mean_view_zenith: float | None = float(vals[:, 0].mean())
        mean_view_azimuth: float | None = float(circular_mean_deg(vals[:, 1], 0))
    else:
        mean_view_zenith = mean_view_azimuth = None

    cloud: float | None = None
    qi = doc.opt_child(doc.root, "Quality_Indicators_Info")
    for el in doc.descendants(qi, "CLOUDY_PIXEL_PERCENTAGE"):
        cloud = doc.number((el.text or "").strip(), "Quality_Indicators_Info/.../CLOUDY_PIXEL_PERCENTAGE")
        break

    return TileMetadata(level=level, tile_id=tile_id, granule_id=granule_id, datastrip_id=datastrip_id,
                        sensing_time=sensing_time, baseline_hint=baseline_hint, epsg=epsg, ulx=ulx, uly=uly,
                        sizes=sizes, angle_step=step, sun_zenith=sun_zenith, sun_azimuth=sun_azimuth,
                        view_grids=view_grids, view_zenith=view_zenith, view_azimuth=view_azimuth,
                        mean_sun_zenith=mean_sun_zenith, mean_sun_azimuth=mean_sun_azimuth,
                        mean_view_zenith=mean_view_zenith, mean_view_azimuth=mean_view_azimuth,
                        mean_view_by_band=mean_view_by_band, cloud_coverage=cloud, source=doc.source)


# --------------------------------------------------------------------------------------------------
# product metadata (MTD_MSIL2A.xml / MTD_MSIL1C.xml)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ProductMetadata:
    """Parsed product metadata ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml``.

    Radiometry: reflectance = (DN + ``add_offsets[band]``) / ``quantification``, DN ``nodata_value`` (0)
    = no data; ``add_offsets`` is empty when the file lists no offsets (baselines before 04.00).
    ``image_files`` are the ``IMAGE_FILE`` paths relative to the SAFE root, **without** extension (ESA
    appends ``.jp2``). ``platform`` is the STAC spelling (``sentinel-2a``). Times are UTC.
    """

    level: str
    product_uri: str
    product_type: str
    processing_baseline: str
    platform: str
    datatake_id: str | None
    sensing_start: datetime
    generation_time: datetime | None
    quantification: float
    add_offsets: dict[str, float]
    nodata_value: int | None
    saturated_value: int | None
    reflectance_u: float | None
    cloud_coverage: float | None
    image_files: tuple[str, ...]
    tile_ids: tuple[str, ...]
    relative_orbit: int | None = None
    orbit_direction: str | None = None
    offset_tag: str = ""
    source: str = ""

    @property
    def product_id(self) -> str:
        """``PRODUCT_URI`` without the ``.SAFE`` suffix."""
        return self.product_uri.removesuffix(".SAFE")


def _band_id_map(doc: _Doc, pic: ET.Element | None) -> dict[int, str]:
    """band_id → ESA band name from ``Spectral_Information``; the fixed 0..12 order where absent."""
    out = dict(BAND_BY_ID)
    for si in doc.descendants(pic, "Spectral_Information"):
        bid, phys = si.get("bandId"), si.get("physicalBand")
        if bid is None or phys is None:
            continue
        name = normalise_band_name(phys)
        if not bid.strip().isdigit() or name is None:
            raise doc.fail(f"Spectral_Information[@bandId={bid}] has an unknown physicalBand {phys!r}")
        out[int(bid)] = name
    return out


def parse_product_metadata(xml: bytes, *, source: str = "") -> ProductMetadata:
    """Parse a real ESA product metadata file (``MTD_MSIL2A.xml`` or ``MTD_MSIL1C.xml``); errors as
    :func:`parse_tile_metadata`'s."""
    doc, _, level, gi = _open(xml, source, "product metadata", "product metadata", _PRODUCT_LEVELS)
    pi = doc.child(gi, "Product_Info", "General_Info")
    pp = "General_Info/Product_Info"
    sensing_start = doc.time(doc.text(pi, "PRODUCT_START_TIME", pp), f"{pp}/PRODUCT_START_TIME")
    gen = doc.opt_text(pi, "GENERATION_TIME")
    generation_time = doc.time(gen, f"{pp}/GENERATION_TIME") if gen else None
    product_uri = doc.text(pi, "PRODUCT_URI", pp)
    product_type = doc.text(pi, "PRODUCT_TYPE", pp)
    pb = doc.text(pi, "PROCESSING_BASELINE", pp)
    try:
        baseline_key(pb)
    except InvalidInputError:
        raise doc.fail(f"{pp}/PROCESSING_BASELINE {pb!r} is not of the form NN.NN") from None
    dt = doc.child(pi, "Datatake", pp)
    datatake_id = dt.get("datatakeIdentifier")
    sc = doc.text(dt, "SPACECRAFT_NAME", f"{pp}/Datatake")
    if not re.fullmatch(r"Sentinel-2[A-Z]", sc):
        raise doc.fail(f"{pp}/Datatake/SPACECRAFT_NAME {sc!r} is not a Sentinel-2 spacecraft")
    platform = sc.lower()
    orbit_txt = doc.opt_text(dt, "SENSING_ORBIT_NUMBER")
    relative_orbit = int(doc.number(orbit_txt, f"{pp}/Datatake/SENSING_ORBIT_NUMBER")) if orbit_txt else None
    orbit_direction = doc.opt_text(dt, "SENSING_ORBIT_DIRECTION")

    image_files: list[str] = []
    for el in doc.descendants(doc.opt_child(pi, "Product_Organisation"), "IMAGE_FILE"):
        t = (el.text or "").strip()
        if t:
            image_files.append(t)
    tile_ids = sorted({m.group(1) for f in image_files if (m := re.search(r"/T(\d{2}[A-Z]{3})_", f))})

    pic = doc.child(gi, "Product_Image_Characteristics", "General_Info")
    pip = "General_Info/Product_Image_Characteristics"
    nodata = saturated = None
    for sv in doc.children(pic, "Special_Values"):
        name = doc.opt_text(sv, "SPECIAL_VALUE_TEXT")
        idx = doc.opt_text(sv, "SPECIAL_VALUE_INDEX")
        if idx is None:
            continue
        val = int(doc.number(idx, f"{pip}/Special_Values/SPECIAL_VALUE_INDEX"))
        if name == "NODATA":
            nodata = val
        elif name == "SATURATED":
            saturated = val

    qtag, otag = ("BOA_QUANTIFICATION_VALUE", "BOA_ADD_OFFSET") if level == "L2A" else (
        "QUANTIFICATION_VALUE", "RADIO_ADD_OFFSET")
    qel = next(doc.descendants(pic, qtag), None)
    if qel is None or not (qel.text or "").strip():
        raise doc.fail(f"missing element {pip}/.../{qtag}")
    quantification = doc.number((qel.text or "").strip(), f"{pip}/.../{qtag}")
    if not quantification > 0:
        raise doc.fail(f"{pip}/.../{qtag} must be positive, got {quantification}")

    id_map = _band_id_map(doc, pic)
    add_offsets: dict[str, float] = {}
    for o in doc.descendants(pic, otag):
        bid = o.get("band_id")
        if bid is None or not bid.strip().isdigit() or int(bid) not in id_map:
            raise doc.fail(f"{pip}/.../{otag} has a bad band_id {bid!r}")
        band = id_map[int(bid)]
        if band in add_offsets:
            raise doc.fail(f"{pip}/.../{otag} lists band_id {bid} twice")
        add_offsets[band] = doc.number((o.text or "").strip(), f"{otag}[@band_id={bid}]")

    u_el = next(doc.descendants(pic, "U"), None)
    reflectance_u = (
        doc.number((u_el.text or "").strip(), f"{pip}/Reflectance_Conversion/U") if u_el is not None else None
    )

    cloud: float | None = None
    qi = doc.opt_child(doc.root, "Quality_Indicators_Info")
    cc = doc.opt_text(qi, "Cloud_Coverage_Assessment")
    if cc is not None:
        cloud = doc.number(cc, "Quality_Indicators_Info/Cloud_Coverage_Assessment")

    return ProductMetadata(level=level, product_uri=product_uri, product_type=product_type, processing_baseline=pb,
                           platform=platform, datatake_id=datatake_id, sensing_start=sensing_start,
                           generation_time=generation_time, quantification=quantification, add_offsets=add_offsets,
                           nodata_value=nodata, saturated_value=saturated, reflectance_u=reflectance_u,
                           cloud_coverage=cloud, image_files=tuple(image_files), tile_ids=tuple(tile_ids),
                           relative_orbit=relative_orbit, orbit_direction=orbit_direction, offset_tag=otag,
                           source=doc.source)

