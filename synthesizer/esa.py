"""ESA's Sentinel-2 names and metadata files for a synthetic scene, in the real SAFE_COMPACT layout.

Writes the tile metadata ``MTD_TL.xml`` (roots ``Level-2A_Tile_ID`` / ``Level-1C_Tile_ID``) and the product
metadata ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` (roots ``Level-2A_User_Product`` /
``Level-1C_User_Product``) with the element names, nesting, attributes, namespaces and order of the real
files in ``shared/real/safe-layout-T29UNU`` and ``shared/real/real-metadata`` (PSD 14.x). Values are
synthetic but consistent with each other and with the rasters: every element written exists in a real file
of the same kind with the same meaning (``tests/test_synth.py`` checks the element paths), elements the
synthesizer has nothing to say about (GIPP lists, QI mask file names, spectral responses) are left out.

Where each fact lives, as in real products:

* product XML: ``PRODUCT_URI``, ``PROCESSING_BASELINE``, ``GENERATION_TIME``, ``Datatake`` (spacecraft,
  orbit), ``Granule_List/Granule/IMAGE_FILE`` (band files relative to the SAFE root, no extension),
  ``Special_Values`` (NODATA 0, SATURATED 65535), quantification (L2A ``QUANTIFICATION_VALUES_LIST/
  BOA_QUANTIFICATION_VALUE``, L1C ``QUANTIFICATION_VALUE``), offsets **only from baseline 04.00** (L2A
  ``BOA_ADD_OFFSET_VALUES_LIST/BOA_ADD_OFFSET band_id``, L1C ``Radiometric_Offset_List/RADIO_ADD_OFFSET
  band_id``, −1000), ``Reflectance_Conversion/U``, ``Spectral_Information_List`` (bandId ↔ physicalBand),
  ``Quality_Indicators_Info/Cloud_Coverage_Assessment``;
* tile XML: ``TILE_ID``, ``DATASTRIP_ID``, ``SENSING_TIME``, ``Tile_Geocoding`` (``Size`` and ``Geoposition``
  per resolution), ``Tile_Angles`` (23×23 sun grid at 5 km, per band and detector viewing grids with NaN
  outside each detector's strip, mean angles) and ``Quality_Indicators_Info/Image_Content_QI``.

``L1C`` with a baseline ≥ 04.00 writes ``Radiometric_Offset_List`` after ``QUANTIFICATION_VALUE`` as ESA's
L1C products of those baselines do (PSD 14.9; no L1C file of that baseline is in ``shared/real``).
Output is deterministic: no "now" anywhere; generation times derive from the sensing time.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from steps.sentinel2.bands import BANDS, L1C_BANDS, L2A_BANDS
from steps.sentinel2.grid import parse_tile
from synthesizer.render import (
    ANGLE_GRID_STEP_M,
    OFFSET_DN,
    PLATFORM_NAMES,
    QUANTIFICATION,
    SceneArrays,
    SceneSpec,
    data_footprint_lonlat,
    mean_view_angles,
    scene_mean_angles,
)

logger = logging.getLogger(__name__)

__all__ = [
    "L2A_SAFE_BANDS",
    "ProductNames",
    "absolute_orbit",
    "bands_of",
    "product_metadata_xml",
    "product_names",
    "reflectance_conversion_u",
    "scl_statistics",
    "tile_metadata_xml",
]

_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_PSD = "https://psd-14.sentinel2.eo.esa.int/PSD/"
_TILE_NS = {"L2A": _PSD + "S2_PDI_Level-2A_Tile_Metadata.xsd", "L1C": _PSD + "S2_PDI_Level-1C_Tile_Metadata.xsd"}
_TILE_ROOT = {"L2A": "Level-2A_Tile_ID", "L1C": "Level-1C_Tile_ID"}
_PRODUCT_NS = {"L2A": _PSD + "User_Product_Level-2A.xsd", "L1C": _PSD + "User_Product_Level-1C.xsd"}
_PRODUCT_ROOT = {"L2A": "Level-2A_User_Product", "L1C": "Level-1C_User_Product"}

L2A_SAFE_BANDS: dict[int, tuple[str, ...]] = {
    10: ("B02", "B03", "B04", "B08"),
    20: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12", "SCL"),
    60: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12", "SCL"),
}
"""Band files of an L2A SAFE per ``IMG_DATA/R<res>m`` folder, in the order of the real ``IMAGE_FILE`` list
(``TCI``, ``AOT`` and ``WVP`` are not synthesized)."""

_LAUNCH_ORBIT_EPOCH = {
    "sentinel-2a": datetime(2015, 6, 23, tzinfo=UTC),
    "sentinel-2b": datetime(2017, 3, 7, tzinfo=UTC),
    "sentinel-2c": datetime(2024, 9, 5, tzinfo=UTC),
}
_L1C_DELAY = timedelta(hours=2)  # generation time after sensing (L1C processed before L2A)
_L2A_DELAY = timedelta(hours=3)
_DATASTRIP_LEAD = timedelta(seconds=4)  # a datastrip starts a few seconds before the product's first line


def absolute_orbit(platform: str, t: datetime) -> int:
    """Approximate absolute orbit number of ``platform`` at ``t`` (143 orbits per 10 days since launch)."""
    epoch = _LAUNCH_ORBIT_EPOCH.get(platform, _LAUNCH_ORBIT_EPOCH["sentinel-2a"])
    return max(1, int((t - epoch).total_seconds() / (10 * 86400 / 143)) + 1)


def _esa_time(t: datetime, digits: int = 3) -> str:
    """UTC ISO time with ``digits`` fractional digits and ``Z`` (ESA writes 3 or 6)."""
    s = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return s[: len(s) - (6 - digits)] + "Z"


@dataclass(frozen=True)
class ProductNames:
    """Every ESA identifier of one synthetic product, derived from its :class:`SceneSpec` (all UTC).

    ``product_uri`` ends in ``.SAFE``; ``granule_dir`` is the folder under ``GRANULE/``; ``file_stem`` prefixes
    the band files (``T47PPR_20240113T034724``); ``sensing_start`` is ``PRODUCT_START_TIME`` (= the scene's
    datetime), ``sensing_time`` the tile's ``SENSING_TIME`` (the same instant here).
    """

    level: str
    tile: str
    spacecraft: str
    product_uri: str
    granule_dir: str
    tile_id: str
    l1c_tile_id: str
    datastrip_id: str
    datatake_id: str
    file_stem: str
    sensing_start: datetime
    sensing_time: datetime
    datastrip_start: datetime
    generation_time: datetime
    absolute_orbit: int
    relative_orbit: int

    @property
    def product_id(self) -> str:
        """``PRODUCT_URI`` without ``.SAFE``."""
        return self.product_uri.removesuffix(".SAFE")

    def image_file(self, band: str, resolution: int | None = None) -> str:
        """A band file relative to the SAFE root **without** extension, as ``IMAGE_FILE`` lists it.

        L2A: ``GRANULE/<granule>/IMG_DATA/R20m/T47PPR_<start>_B05_20m``; L1C: ``GRANULE/<granule>/IMG_DATA/
        T47PPR_<start>_B05`` (``resolution`` ignored).
        """
        if self.level == "L1C":
            return f"GRANULE/{self.granule_dir}/IMG_DATA/{self.file_stem}_{band}"
        if resolution is None:
            raise ValueError("an L2A image file needs its resolution")
        return f"GRANULE/{self.granule_dir}/IMG_DATA/R{resolution}m/{self.file_stem}_{band}_{resolution}m"

    def image_files(self) -> list[str]:
        """All band files of the product in the real ``IMAGE_FILE`` order."""
        if self.level == "L1C":
            return [self.image_file(b) for b in L1C_BANDS]
        return [self.image_file(b, r) for r, bands in L2A_SAFE_BANDS.items() for b in bands]


def product_names(spec: SceneSpec, level: str) -> ProductNames:
    """ESA names of the ``level`` ("L2A"/"L1C") product of ``spec``, deterministic in the spec.

    Generation time = sensing + 2 h (L1C) / + 3 h (L2A); the datastrip starts 4 s before the product; the
    absolute orbit comes from :func:`absolute_orbit`, the relative orbit from it (143 per cycle).
    """
    if level not in _TILE_ROOT:
        raise ValueError(f"unknown product level {level!r}")
    tile = parse_tile(spec.tile).id
    unit = spec.platform[-1].upper()
    t = spec.datetime.astimezone(UTC)
    orbit = absolute_orbit(spec.platform, t)
    rel = (orbit - 1) % 143 + 1
    pb = spec.processing_baseline
    gen_l1c = (t + _L1C_DELAY).replace(microsecond=0)
    gen = (t + (_L2A_DELAY if level == "L2A" else _L1C_DELAY)).replace(microsecond=0)
    ds = (t - _DATASTRIP_LEAD).replace(microsecond=0)
    centre = f"2{unit}PS"
    kind = "MSIL2A" if level == "L2A" else "MSIL1C"
    return ProductNames(
        level=level,
        tile=tile,
        spacecraft=PLATFORM_NAMES[spec.platform],
        product_uri=(f"S2{unit}_{kind}_{t:%Y%m%dT%H%M%S}_N{pb.replace('.', '')}_R{rel:03d}_T{tile}"
                     f"_{gen:%Y%m%dT%H%M%S}.SAFE"),
        granule_dir=f"{level}_T{tile}_A{orbit:06d}_{ds:%Y%m%dT%H%M%S}",
        tile_id=f"S2{unit}_OPER_MSI_{level}_TL_{centre}_{gen:%Y%m%dT%H%M%S}_A{orbit:06d}_T{tile}_N{pb}",
        l1c_tile_id=f"S2{unit}_OPER_MSI_L1C_TL_{centre}_{gen_l1c:%Y%m%dT%H%M%S}_A{orbit:06d}_T{tile}_N{pb}",
        datastrip_id=f"S2{unit}_OPER_MSI_{level}_DS_{centre}_{gen:%Y%m%dT%H%M%S}_S{ds:%Y%m%dT%H%M%S}_N{pb}",
        datatake_id=f"GS2{unit}_{t:%Y%m%dT%H%M%S}_{orbit:06d}_N{pb}",
        file_stem=f"T{tile}_{t:%Y%m%dT%H%M%S}",
        sensing_start=t,
        sensing_time=t,
        datastrip_start=ds,
        generation_time=gen,
        absolute_orbit=orbit,
        relative_orbit=rel,
    )


def scl_statistics(arrays: SceneArrays) -> dict[str, float]:
    """Sen2Cor's ``Image_Content_QI`` percentages from the scene's SCL (20 m): element name → percent.

    ``NODATA_PIXEL_PERCENTAGE`` is over all pixels, every other value over the valid (SCL ≠ 0) pixels;
    ``CLOUDY_PIXEL_PERCENTAGE`` = medium + high cloud probability + thin cirrus (SCL 8, 9, 10).
    """
    scl = arrays.scl
    valid = scl != 0
    nvalid = max(int(valid.sum()), 1)

    def pct(*classes: int) -> float:
        return round(100.0 * float(np.count_nonzero(np.isin(scl, classes) & valid)) / nvalid, 6)

    return {
        "CLOUDY_PIXEL_PERCENTAGE": pct(8, 9, 10),
        "NODATA_PIXEL_PERCENTAGE": round(100.0 * float(np.count_nonzero(~valid)) / scl.size, 6),
        "SATURATED_DEFECTIVE_PIXEL_PERCENTAGE": pct(1),
        "DARK_FEATURES_PERCENTAGE": pct(2),
        "CLOUD_SHADOW_PERCENTAGE": pct(3),
        "VEGETATION_PERCENTAGE": pct(4),
        "NOT_VEGETATED_PERCENTAGE": pct(5),
        "WATER_PERCENTAGE": pct(6),
        "UNCLASSIFIED_PERCENTAGE": pct(7),
        "MEDIUM_PROBA_CLOUDS_PERCENTAGE": pct(8),
        "HIGH_PROBA_CLOUDS_PERCENTAGE": pct(9),
        "THIN_CIRRUS_PERCENTAGE": pct(10),
        "SNOW_ICE_PERCENTAGE": pct(11),
    }


def reflectance_conversion_u(t: datetime) -> float:
    """Earth–sun distance correction ``U`` (``Reflectance_Conversion/U``) for day of year of ``t``.

    The usual approximation 1 / (1 − 0.01673·cos(0.0172·(doy − 4)))²; real files hold values 0.967–1.034.
    """
    doy = t.astimezone(UTC).timetuple().tm_yday
    return 1.0 / (1.0 - 0.01673 * math.cos(0.0172 * (doy - 4))) ** 2


# --------------------------------------------------------------------------------------------------
# XML helpers
# --------------------------------------------------------------------------------------------------


L2A_IMAGE_CONTENT_QI = ("NODATA_PIXEL_PERCENTAGE", "SATURATED_DEFECTIVE_PIXEL_PERCENTAGE", "DARK_FEATURES_PERCENTAGE",
                        "CLOUD_SHADOW_PERCENTAGE", "VEGETATION_PERCENTAGE", "NOT_VEGETATED_PERCENTAGE",
                        "WATER_PERCENTAGE", "UNCLASSIFIED_PERCENTAGE", "MEDIUM_PROBA_CLOUDS_PERCENTAGE",
                        "HIGH_PROBA_CLOUDS_PERCENTAGE", "THIN_CIRRUS_PERCENTAGE", "SNOW_ICE_PERCENTAGE")
"""Scene-class percentages of an L2A ``Image_Content_QI`` (MTD_TL.xml and MTD_MSIL2A.xml), in ESA's order."""


def _fmt(v: float) -> str:
    return "NaN" if math.isnan(v) else f"{v:.6g}"


def _pct(v: float) -> str:
    return f"{v:.6f}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _root(ns: str, name: str) -> ET.Element:
    ET.register_namespace("n1", ns)
    ET.register_namespace("xsi", _XSI)
    return ET.Element(f"{{{ns}}}{name}", {f"{{{_XSI}}}schemaLocation": ns})


def _serialise(root: ET.Element) -> bytes:
    ET.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def _grid(parent: ET.Element, tag: str, grid: np.ndarray, step: float) -> None:
    el = _sub(parent, tag)
    _sub(el, "COL_STEP", _fmt(step), unit="m")
    _sub(el, "ROW_STEP", _fmt(step), unit="m")
    vl = _sub(el, "Values_List")
    for row in np.asarray(grid, dtype=np.float64):
        _sub(vl, "VALUES", " ".join(_fmt(float(v)) for v in row))


def _int_or_fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else _fmt(v)


# --------------------------------------------------------------------------------------------------
# MTD_TL.xml
# --------------------------------------------------------------------------------------------------


def tile_metadata_xml(spec: SceneSpec, arrays: SceneArrays, level: str) -> bytes:
    """``MTD_TL.xml`` of the ``level`` granule of a rendered scene (bytes, UTF-8, deterministic).

    ``Size`` per resolution = the scene window (``arrays.size`` 10 m pixels); ``Geoposition`` = the tile's
    upper-left corner for 10/20/60 m; angle grids in degrees on the 5 km grid, one
    ``Viewing_Incidence_Angles_Grids`` per (band, detector) seeing the tile, NaN outside the detector's strip.
    """
    if level not in _TILE_ROOT:
        raise ValueError(f"unknown product level {level!r}")
    names = product_names(spec, level)
    tile = parse_tile(spec.tile)
    ns = _TILE_NS[level]
    root = _root(ns, _TILE_ROOT[level])

    gi = _sub(root, f"{{{ns}}}General_Info")
    if level == "L2A":
        _sub(gi, "L1C_TILE_ID", names.l1c_tile_id, metadataLevel="Brief")
    _sub(gi, "TILE_ID", names.tile_id, metadataLevel="Brief")
    _sub(gi, "DATASTRIP_ID", names.datastrip_id, metadataLevel="Standard")
    _sub(gi, "DOWNLINK_PRIORITY", "NOMINAL", metadataLevel="Standard")
    _sub(gi, "SENSING_TIME", _esa_time(names.sensing_time, 6), metadataLevel="Standard")
    ai = _sub(gi, "Archiving_Info", metadataLevel="Expertise")
    _sub(ai, "ARCHIVING_CENTRE", names.tile_id.split("_")[5])
    _sub(ai, "ARCHIVING_TIME", _esa_time(names.generation_time + timedelta(minutes=30), 6))

    geo = _sub(root, f"{{{ns}}}Geometric_Info")
    tg = _sub(geo, "Tile_Geocoding", metadataLevel="Brief")
    hemi = "N" if tile.epsg // 100 == 326 else "S"
    _sub(tg, "HORIZONTAL_CS_NAME", f"WGS84 / UTM zone {tile.zone}{hemi}")
    _sub(tg, "HORIZONTAL_CS_CODE", f"EPSG:{tile.epsg}")
    for res in (10, 20, 60):
        n = arrays.size * 10 // res
        sz = _sub(tg, "Size", resolution=str(res))
        _sub(sz, "NROWS", str(n))
        _sub(sz, "NCOLS", str(n))
    for res in (10, 20, 60):
        gp = _sub(tg, "Geoposition", resolution=str(res))
        _sub(gp, "ULX", _int_or_fmt(tile.ulx))
        _sub(gp, "ULY", _int_or_fmt(tile.uly))
        _sub(gp, "XDIM", str(res))
        _sub(gp, "YDIM", str(-res))

    ta = _sub(geo, "Tile_Angles", metadataLevel="Standard")
    sg = _sub(ta, "Sun_Angles_Grid")
    _grid(sg, "Zenith", arrays.sun_zenith, ANGLE_GRID_STEP_M)
    _grid(sg, "Azimuth", arrays.sun_azimuth, ANGLE_GRID_STEP_M)
    msz, msa = scene_mean_angles(arrays.sun_zenith, arrays.sun_azimuth)
    ms = _sub(ta, "Mean_Sun_Angle")
    _sub(ms, "ZENITH_ANGLE", repr(round(msz, 10)), unit="deg")
    _sub(ms, "AZIMUTH_ANGLE", repr(round(msa, 10)), unit="deg")
    # every band of the product, L2A included (real L2A tiles list all 13 bands, B10 too)
    grids = sorted(arrays.view_grids.items(), key=lambda kv: (BANDS[kv[0][0]].band_id, kv[0][1]))
    for (band, det), (z, a) in grids:
        vg = _sub(ta, "Viewing_Incidence_Angles_Grids", bandId=str(BANDS[band].band_id), detectorId=str(det))
        _grid(vg, "Zenith", z, ANGLE_GRID_STEP_M)
        _grid(vg, "Azimuth", a, ANGLE_GRID_STEP_M)
    ml = _sub(ta, "Mean_Viewing_Incidence_Angle_List")
    per_band: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for (band, _det), za in grids:
        per_band.setdefault(band, []).append(za)
    for band in sorted(per_band, key=lambda b: BANDS[b].band_id):
        zm, am = scene_mean_angles(*mean_view_angles(per_band[band]))
        mv = _sub(ml, "Mean_Viewing_Incidence_Angle", bandId=str(BANDS[band].band_id))
        _sub(mv, "ZENITH_ANGLE", repr(round(zm, 10)), unit="deg")
        _sub(mv, "AZIMUTH_ANGLE", repr(round(am, 10)), unit="deg")

    stats = scl_statistics(arrays)
    qi = _sub(root, f"{{{ns}}}Quality_Indicators_Info", metadataLevel="Standard")
    ic = _sub(qi, "Image_Content_QI")
    _sub(ic, "CLOUDY_PIXEL_PERCENTAGE", _pct(stats["CLOUDY_PIXEL_PERCENTAGE"]))
    if level == "L1C":
        _sub(ic, "DEGRADED_MSI_DATA_PERCENTAGE", "0")
    else:
        _sub(ic, "DEGRADED_MSI_DATA_PERCENTAGE", _pct(0.0))
        for key in L2A_IMAGE_CONTENT_QI:
            _sub(ic, key, _pct(stats[key]))
    return _serialise(root)


# --------------------------------------------------------------------------------------------------
# MTD_MSIL2A.xml / MTD_MSIL1C.xml
# --------------------------------------------------------------------------------------------------


def product_metadata_xml(spec: SceneSpec, arrays: SceneArrays, level: str,
                         image_files: list[str] | None = None) -> bytes:
    """``MTD_MSIL2A.xml`` (``level`` "L2A") or ``MTD_MSIL1C.xml`` ("L1C") of a rendered scene (bytes, UTF-8).

    ``image_files`` (relative to the SAFE root, no extension) default to every band file of the product
    (:meth:`ProductNames.image_files`). Quantification 10000; offsets −1000 for all 13 band ids only when the
    spec's baseline is ≥ 04.00 (``spec.has_offsets``), as ESA does.
    """
    if level not in _PRODUCT_ROOT:
        raise ValueError(f"unknown product level {level!r}")
    names = product_names(spec, level)
    ns = _PRODUCT_NS[level]
    root = _root(ns, _PRODUCT_ROOT[level])

    gi = _sub(root, f"{{{ns}}}General_Info")
    pi = _sub(gi, "Product_Info")
    _sub(pi, "PRODUCT_START_TIME", _esa_time(names.sensing_start))
    _sub(pi, "PRODUCT_STOP_TIME", _esa_time(names.sensing_start))
    _sub(pi, "PRODUCT_URI", names.product_uri)
    _sub(pi, "PROCESSING_LEVEL", "Level-2A" if level == "L2A" else "Level-1C")
    _sub(pi, "PRODUCT_TYPE", "S2MSI2A" if level == "L2A" else "S2MSI1C")
    _sub(pi, "PROCESSING_BASELINE", spec.processing_baseline)
    _sub(pi, "GENERATION_TIME", _esa_time(names.generation_time, 6))
    _sub(pi, "PREVIEW_IMAGE_URL", "Not applicable")
    _sub(pi, "PREVIEW_GEO_INFO", "Not applicable")
    dt = _sub(pi, "Datatake", datatakeIdentifier=names.datatake_id)
    _sub(dt, "SPACECRAFT_NAME", names.spacecraft)
    _sub(dt, "DATATAKE_TYPE", "INS-NOBS")
    _sub(dt, "DATATAKE_SENSING_START", _esa_time(names.sensing_start))
    _sub(dt, "SENSING_ORBIT_NUMBER", str(names.relative_orbit))
    _sub(dt, "SENSING_ORBIT_DIRECTION", "DESCENDING")
    qo = _sub(pi, "Query_Options", completeSingleTile="true")
    _sub(qo, "PRODUCT_FORMAT", "SAFE_COMPACT")
    po = _sub(pi, "Product_Organisation")
    gl = _sub(po, "Granule_List")
    gr = _sub(gl, "Granule", datastripIdentifier=names.datastrip_id, granuleIdentifier=names.tile_id,
              imageFormat="JPEG2000")
    for f in names.image_files() if image_files is None else image_files:
        _sub(gr, "IMAGE_FILE", f)

    pic = _sub(gi, "Product_Image_Characteristics")
    for text, index in (("NODATA", "0"), ("SATURATED", "65535")):
        sv = _sub(pic, "Special_Values")
        _sub(sv, "SPECIAL_VALUE_TEXT", text)
        _sub(sv, "SPECIAL_VALUE_INDEX", index)
    ido = _sub(pic, "Image_Display_Order")
    _sub(ido, "RED_CHANNEL", "3")
    _sub(ido, "GREEN_CHANNEL", "2")
    _sub(ido, "BLUE_CHANNEL", "1")
    q = _int_or_fmt(QUANTIFICATION)
    off = _int_or_fmt(OFFSET_DN)
    if level == "L2A":
        ql = _sub(pic, "QUANTIFICATION_VALUES_LIST")
        _sub(ql, "BOA_QUANTIFICATION_VALUE", q, unit="none")
        _sub(ql, "AOT_QUANTIFICATION_VALUE", "1000.0", unit="none")
        _sub(ql, "WVP_QUANTIFICATION_VALUE", "1000.0", unit="cm")
        if spec.has_offsets:
            ol = _sub(pic, "BOA_ADD_OFFSET_VALUES_LIST")
            for b in BANDS.values():
                _sub(ol, "BOA_ADD_OFFSET", off, band_id=str(b.band_id))
    else:
        _sub(pic, "QUANTIFICATION_VALUE", q, unit="none")
        if spec.has_offsets:
            ol = _sub(pic, "Radiometric_Offset_List")
            for b in BANDS.values():
                _sub(ol, "RADIO_ADD_OFFSET", off, band_id=str(b.band_id))
    rc = _sub(pic, "Reflectance_Conversion")
    _sub(rc, "U", repr(reflectance_conversion_u(names.sensing_start)))
    sil = _sub(pic, "Spectral_Information_List")
    for b in BANDS.values():
        si = _sub(sil, "Spectral_Information", bandId=str(b.band_id), physicalBand=_physical_band(b.name))
        _sub(si, "RESOLUTION", str(b.resolution))
        wl = _sub(si, "Wavelength")
        c, w = b.center_wavelength * 1000.0, b.fwhm * 1000.0
        _sub(wl, "MIN", _fmt(round(c - w / 2)), unit="nm")
        _sub(wl, "MAX", _fmt(round(c + w / 2)), unit="nm")
        _sub(wl, "CENTRAL", _fmt(round(c, 1)), unit="nm")

    geo = _sub(root, f"{{{ns}}}Geometric_Info")
    pf = _sub(geo, "Product_Footprint")
    pf2 = _sub(pf, "Product_Footprint")
    gf = _sub(pf2, "Global_Footprint")
    ring = data_footprint_lonlat(spec, arrays.size)
    _sub(gf, "EXT_POS_LIST", " ".join(f"{lat!r} {lon!r}" for lon, lat in ring) + " ")
    _sub(pf, "RASTER_CS_TYPE", "POINT")
    _sub(pf, "PIXEL_ORIGIN", "1")
    crs = _sub(geo, "Coordinate_Reference_System")
    _sub(crs, "GEO_TABLES", "EPSG", version="1")
    _sub(crs, "HORIZONTAL_CS_TYPE", "GEOGRAPHIC")

    stats = scl_statistics(arrays)
    qi = _sub(root, f"{{{ns}}}Quality_Indicators_Info")
    _sub(qi, "Cloud_Coverage_Assessment", _pct(stats["CLOUDY_PIXEL_PERCENTAGE"]))
    tq = _sub(qi, "Technical_Quality_Assessment")
    _sub(tq, "DEGRADED_ANC_DATA_PERCENTAGE", "0.0")
    _sub(tq, "DEGRADED_MSI_DATA_PERCENTAGE", "0")
    qc = _sub(qi, "Quality_Control_Checks")
    qin = _sub(qc, "Quality_Inspections")
    checks = ["FORMAT_CORRECTNESS", "GENERAL_QUALITY", "GEOMETRIC_QUALITY"]
    checks += ["L2A_QUALITY"] if level == "L2A" else []
    for check in (*checks, "RADIOMETRIC_QUALITY", "SENSOR_QUALITY"):
        _sub(qin, "quality_check", "PASSED", checkType=check)
    _sub(qc, "Failed_Inspections")
    if level == "L2A":
        ic = _sub(qi, "Image_Content_QI")
        for key in L2A_IMAGE_CONTENT_QI:
            _sub(ic, key, _pct(stats[key]))
    return _serialise(root)


def _physical_band(name: str) -> str:
    """ESA's ``physicalBand`` spelling: ``B1`` … ``B8``, ``B8A``, ``B9`` … ``B12``."""
    return name if name == "B8A" else f"B{int(name[1:])}"


def bands_of(level: str) -> tuple[str, ...]:
    """The band names of a product level (L2A: 12, no B10; L1C: 13)."""
    return L2A_BANDS if level == "L2A" else L1C_BANDS
