"""Synthetic Sentinel-2 products as ESA SAFE folders (and CDSE-style zips), in the real SAFE_COMPACT layout.

Layout (as ``shared/real/safe-layout-T29UNU/TREE.txt``)::

    S2B_MSIL2A_<start>_N0510_R<rel orbit>_T<tile>_<generation>.SAFE/
      MTD_MSIL2A.xml                      product metadata (synthesizer.esa)
      manifest.safe                       XFDU dataObjectSection: size + SHA3-256 of every file (L2A only)
      GRANULE/L2A_T<tile>_A<abs orbit>_<datastrip start>/
        MTD_TL.xml                        tile metadata
        IMG_DATA/R10m/T<tile>_<start>_B02_10m.jp2 …   B02 B03 B04 B08
        IMG_DATA/R20m/T<tile>_<start>_B01_20m.jp2 …   B01-B07 B8A B11 B12 SCL
        IMG_DATA/R60m/T<tile>_<start>_B01_60m.jp2 …   B01-B07 B8A B09 B11 B12 SCL

An L1C product has ``MTD_MSIL1C.xml`` and ``GRANULE/L1C_…/IMG_DATA/T<tile>_<start>_B01.jp2`` … (13 bands,
native resolutions, as ``IMAGE_FILE`` lists them in the real T46RER product) and no manifest (no real
L1C manifest to copy the shape from). ``TCI``, ``AOT``, ``WVP``, ``QI_DATA``, ``AUX_DATA``, ``DATASTRIP``,
``HTML`` and ``rep_info`` are not synthesized; ``IMAGE_FILE`` lists exactly the band files written.

Rasters are JPEG 2000 like ESA's (GDAL driver JP2OpenJPEG, lossless/reversible, uint16 DN, SCL uint8), with
the tile CRS and geotransform and **no nodata tag** (ESA's JP2s have none: DN 0 is no data by the
product metadata's ``Special_Values``). Bands at a resolution other than their native one are derived as ESA
does: NaN-aware block means when coarser, pixel repetition when finer; SCL at 60 m takes the centre 20 m
pixel of each 3×3 block. ``zip=True`` packs the product like a Copernicus Data Space download: one zip
holding one top-level ``<name>.SAFE/`` folder.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from steps.sentinel2.bands import BANDS, normalise_band_name
from steps.sentinel2.grid import parse_tile
from synthesizer.earthsearch import encode_dn
from synthesizer.esa import (
    L2A_SAFE_BANDS,
    ProductNames,
    product_metadata_xml,
    product_names,
    tile_metadata_xml,
)
from synthesizer.render import OFFSET_DN, PLATFORM_NAMES, SceneArrays, SceneSpec, render_scene

logger = logging.getLogger(__name__)

__all__ = ["fill_safe_skeleton", "write_jp2", "write_safe", "zip_safe"]

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed zip entry times: same inputs, same bytes


def write_jp2(path: Path, data: np.ndarray, res: float, epsg: int, ulx: float, uly: float) -> None:
    """One-band lossless JPEG 2000 (JP2OpenJPEG, reversible 5/3 wavelet), tile CRS, no nodata tag."""
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine

    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": data.dtype.name, "crs": f"EPSG:{epsg}",
               "transform": Affine(res, 0.0, ulx, 0.0, -res, uly)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), MemoryFile() as mem, mem.open(**profile) as tmp:
        tmp.write(data, 1)
        rasterio.shutil.copy(tmp, str(path), driver="JP2OpenJPEG", QUALITY="100", REVERSIBLE="YES",
                             YCBCR420="NO")


def _to_resolution(a: np.ndarray, native: int, res: int) -> np.ndarray:
    """Reflectance (NaN = no data) from its ``native`` grid to ``res`` m: block mean or repetition."""
    if res == native:
        return a
    if res > native:
        f = res // native
        n0, n1 = a.shape[0] // f, a.shape[1] // f
        blocks = a[: n0 * f, : n1 * f].reshape(n0, f, n1, f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN (no data)
            return np.nanmean(blocks, axis=(1, 3)).astype(np.float32)
    f = native // res
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1)


def _scl_at(scl20: np.ndarray, res: int) -> np.ndarray:
    if res == 20:
        return scl20
    if res == 60:
        return scl20[1::3, 1::3]
    raise ValueError(f"ESA writes SCL at 20 and 60 m only, not {res} m")


def _manifest(names: ProductNames, safe: Path, files: Iterable[Path]) -> bytes:
    """A ``manifest.safe`` with the real file's root and ``dataObjectSection`` (size + SHA3-256 per file)."""
    xfdu = "urn:ccsds:schema:xfdu:1"
    ET.register_namespace("xfdu", xfdu)
    root = ET.Element(f"{{{xfdu}}}XFDU", {"version": "esa/safe/sentinel/1.1/sentinel-2/msi/archive_l2a_user_product"})
    section = ET.SubElement(root, "dataObjectSection")
    for f in files:
        rel = f.relative_to(safe).as_posix()
        if rel == "MTD_MSIL2A.xml":
            oid, mime = "S2_Level-2A_Product_Metadata", "text/xml"
        elif rel.endswith("/MTD_TL.xml"):
            oid, mime = "S2_Level-2A_Tile1_Metadata", "application/xml"
        else:
            band, res = f.stem.split("_")[-2:]
            oid, mime = f"IMG_DATA_Band_{band}_{res}_Tile1_Data", "application/octet-stream"
        obj = ET.SubElement(section, "dataObject", {"ID": oid})
        bs = ET.SubElement(obj, "byteStream", {"mimeType": mime, "size": str(f.stat().st_size)})
        ET.SubElement(bs, "fileLocation", {"href": f"./{rel}", "locatorType": "URL"})
        ck = ET.SubElement(bs, "checksum", {"checksumName": "SHA3-256"})
        ck.text = hashlib.sha3_256(f.read_bytes()).hexdigest()
    ET.indent(root, space="    ")
    return b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def zip_safe(safe: Path, dest: Path | None = None, *, remove: bool = True) -> Path:
    """Pack a ``.SAFE`` folder like a Copernicus Data Space download and return the zip path.

    The zip (default ``<name>.SAFE.zip`` beside the folder… CDSE names it ``<name>.zip``, which is used
    here) holds one top-level ``<name>.SAFE/`` folder with its directory entries; entries are sorted and
    time-stamped 1980-01-01, so the bytes are deterministic. ``remove`` deletes the folder afterwards.
    """
    safe = Path(safe)
    dest = Path(dest) if dest is not None else safe.with_name(safe.name.removesuffix(".SAFE") + ".zip")
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo(f"{safe.name}/", date_time=_ZIP_TIME), b"")
        for p in sorted(safe.rglob("*")):
            arc = f"{safe.name}/{p.relative_to(safe).as_posix()}"
            if p.is_dir():
                zf.writestr(zipfile.ZipInfo(arc + "/", date_time=_ZIP_TIME), b"")
            else:
                info = zipfile.ZipInfo(arc, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, p.read_bytes())
    if remove:
        shutil.rmtree(safe)
    return dest


def write_safe(root: Path, spec: SceneSpec, arrays: SceneArrays, *, level: str = "L2A",
               resolutions: Iterable[int] = (10, 20, 60), zip: bool = False) -> Path:
    """Write the scene as an ESA ``.SAFE`` product under ``root``; return the ``.SAFE`` folder (or the zip).

    ``level`` "L2A" (BOA bands at each of ``resolutions`` the real product has, SCL at 20/60 m) or "L1C"
    (13 TOA bands at native resolution; ``resolutions`` filters by native resolution). DN encoding as ESA:
    round(ρ·10000) + 1000 from baseline 04.00, round(ρ·10000) before; 0 = no data. The metadata
    (``MTD_MSIL2A.xml``/``MTD_MSIL1C.xml``, ``MTD_TL.xml``) is the same as the STAC archive's
    ``product_metadata``/``granule_metadata`` except that ``IMAGE_FILE`` lists exactly the files written.
    With ``zip=True`` the folder is packed by :func:`zip_safe` (one top-level ``<name>.SAFE/``) and removed.
    """
    res_set = sorted(set(resolutions))
    bad = [r for r in res_set if r not in (10, 20, 60)]
    if bad or not res_set:
        raise ValueError(f"resolutions must be among 10, 20, 60, got {list(resolutions)}")
    names = product_names(spec, level)
    tile = parse_tile(spec.tile)
    safe = Path(root) / names.product_uri
    if safe.exists():
        shutil.rmtree(safe)
    add = OFFSET_DN if spec.has_offsets else 0.0
    files: list[str] = []
    if level == "L2A":
        for res in res_set:
            for band in L2A_SAFE_BANDS[res]:
                rel = names.image_file(band, res)
                if band == "SCL":
                    data = _scl_at(arrays.scl, res)
                else:
                    data = encode_dn(_to_resolution(arrays.boa[band], BANDS[band].resolution, res), add)
                write_jp2(safe / f"{rel}.jp2", data, res, tile.epsg, tile.ulx, tile.uly)
                files.append(rel)
    elif level == "L1C":
        for band in BANDS:
            b = BANDS[band]
            if b.resolution not in res_set:
                continue
            rel = names.image_file(band)
            write_jp2(safe / f"{rel}.jp2", encode_dn(arrays.toa[band], add), b.resolution, tile.epsg,
                       tile.ulx, tile.uly)
            files.append(rel)
    else:
        raise ValueError(f"unknown product level {level!r}")
    if not files:
        raise ValueError(f"no {level} band file at resolutions {res_set}")
    product_xml = safe / ("MTD_MSIL2A.xml" if level == "L2A" else "MTD_MSIL1C.xml")
    product_xml.write_bytes(product_metadata_xml(spec, arrays, level, image_files=files))
    tile_xml = safe / "GRANULE" / names.granule_dir / "MTD_TL.xml"
    tile_xml.write_bytes(tile_metadata_xml(spec, arrays, level))
    if level == "L2A":
        listed = [product_xml, *(safe / f"{f}.jp2" for f in files), tile_xml]
        (safe / "manifest.safe").write_bytes(_manifest(names, safe, listed))
    logger.info("wrote %s (%d band files)", safe, len(files))
    return zip_safe(safe) if zip else safe


# --------------------------------------------------------------------------------------------------
# real XML + synthetic rasters
# --------------------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(root: ET.Element, name: str) -> ET.Element | None:
    return next((e for e in root.iter() if _local(e.tag) == name), None)


def _find_text(root: ET.Element, name: str, what: str) -> str:
    el = _find(root, name)
    if el is None or not (el.text or "").strip():
        raise ValueError(f"{what}: no {name}")
    return (el.text or "").strip()


def fill_safe_skeleton(real_product_xml: Path, real_tile_xml: Path, out_dir: Path, *,
                       resolutions: Iterable[int] = (60,), seed: int = 0,
                       arrays: Mapping[tuple[str, int], np.ndarray] | None = None, zip: bool = False) -> Path:
    """Build a ``.SAFE`` from REAL ESA metadata files plus synthetic rasters; return the folder (or zip).

    The real ``MTD_MSIL2A.xml``/``MTD_MSIL1C.xml`` and ``MTD_TL.xml`` are copied byte for byte to their
    places (``<PRODUCT_URI>/`` and ``GRANULE/<granule>/``, the granule folder taken from the ``IMAGE_FILE``
    paths). For every ``IMAGE_FILE`` of a band (``B01``…``B12``, ``B8A``, ``SCL``) at one of ``resolutions``
    (L2A: the ``_60m`` suffix; L1C: the band's native resolution) a JP2 is written, sized by the tile
    file's ``Size`` and placed by its ``Geoposition`` (CRS from ``HORIZONTAL_CS_CODE``). ``TCI``/``AOT``/
    ``WVP`` and files at other resolutions stay absent, as in ``safe-layout-T29UNU``.

    Pixels: ``arrays[(band, res)]`` (DN, uint16; SCL uint8) when given, else a scene rendered by
    :func:`render_scene` for the product's tile, date, platform and baseline at 1/6 of the tile size and
    repeated 6×6 (coarser features, same classes and spectra), encoded with the product's own
    quantification and ``BOA_ADD_OFFSET``/``RADIO_ADD_OFFSET`` (offset 0 where the file lists none).
    """
    real_product_xml, real_tile_xml = Path(real_product_xml), Path(real_tile_xml)
    pxml, txml = real_product_xml.read_bytes(), real_tile_xml.read_bytes()
    proot, troot = ET.fromstring(pxml), ET.fromstring(txml)
    level = {"Level-2A_User_Product": "L2A", "Level-1C_User_Product": "L1C"}.get(_local(proot.tag))
    if level is None:
        raise ValueError(f"{real_product_xml}: not a Sentinel-2 product metadata file")
    product_uri = _find_text(proot, "PRODUCT_URI", str(real_product_xml))
    if not product_uri.endswith(".SAFE"):
        product_uri += ".SAFE"
    image_files = [(e.text or "").strip() for e in proot.iter() if _local(e.tag) == "IMAGE_FILE"]
    if not image_files:
        raise ValueError(f"{real_product_xml}: no IMAGE_FILE")
    granule_dir = image_files[0].split("/")[1]
    epsg = int(_find_text(troot, "HORIZONTAL_CS_CODE", str(real_tile_xml)).split(":")[1])
    sizes: dict[int, tuple[int, int]] = {}
    ul: dict[int, tuple[float, float]] = {}
    for el in troot.iter():
        if _local(el.tag) == "Size":
            sizes[int(el.get("resolution", "0"))] = (int(_find_text(el, "NROWS", "Size")),
                                                     int(_find_text(el, "NCOLS", "Size")))
        elif _local(el.tag) == "Geoposition":
            ul[int(el.get("resolution", "0"))] = (float(_find_text(el, "ULX", "Geoposition")),
                                                  float(_find_text(el, "ULY", "Geoposition")))
    quant_tag = "BOA_QUANTIFICATION_VALUE" if level == "L2A" else "QUANTIFICATION_VALUE"
    quant = float(_find_text(proot, quant_tag, str(real_product_xml)))
    offset_tag = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    offsets = {int(e.get("band_id", "-1")): float((e.text or "0").strip())
               for e in proot.iter() if _local(e.tag) == offset_tag}

    res_set = set(resolutions)
    wanted: list[tuple[str, str, int]] = []  # (IMAGE_FILE, band, res)
    for f in image_files:
        parts = Path(f).name.split("_")
        if level == "L2A":
            band, res = parts[-2], int(parts[-1].removesuffix("m"))
        else:
            band = parts[-1]
            res = BANDS[band].resolution if band in BANDS else 0
        if res in res_set and (band == "SCL" or normalise_band_name(band) == band):
            wanted.append((f, band, res))
    if not wanted:
        raise ValueError(f"{real_product_xml}: no band IMAGE_FILE at resolutions {sorted(res_set)}")

    scene: SceneArrays | None = None
    if arrays is None:
        scene = _skeleton_scene(proot, troot, sizes[10][0], seed, bool(offsets))
    safe = Path(out_dir) / product_uri
    if safe.exists():
        shutil.rmtree(safe)
    safe.mkdir(parents=True)
    (safe / real_product_xml.name).write_bytes(pxml)
    (safe / "GRANULE" / granule_dir).mkdir(parents=True)
    (safe / "GRANULE" / granule_dir / "MTD_TL.xml").write_bytes(txml)
    for rel, band, res in wanted:
        if arrays is not None:
            data = np.asarray(arrays[(band, res)])
        else:
            assert scene is not None
            data = _skeleton_band(scene, band, res, level, quant, offsets)
        if data.shape != sizes[res]:
            raise ValueError(f"{band} at {res} m: array shape {data.shape} != MTD_TL Size {sizes[res]}")
        ulx, uly = ul[res]
        write_jp2(safe / f"{rel}.jp2", data, res, epsg, ulx, uly)
    logger.info("filled %s with %d synthetic band files", safe, len(wanted))
    return zip_safe(safe) if zip else safe


def _skeleton_scene(proot: ET.Element, troot: ET.Element, n10: int, seed: int, has_offsets: bool) -> SceneArrays:
    """Render a scene for a real product's tile/date/platform/baseline at 1/6 of the tile size."""
    tile_id = _find_text(troot, "TILE_ID", "MTD_TL.xml")
    tile = next(p[1:] for p in tile_id.split("_") if len(p) == 6 and p[0] == "T" and p[1:3].isdigit())
    start = _find_text(proot, "PRODUCT_START_TIME", "product metadata")
    t = datetime.fromisoformat(start.replace("Z", "+00:00"))
    craft = _find_text(proot, "SPACECRAFT_NAME", "product metadata")
    platform = next(k for k, v in PLATFORM_NAMES.items() if v == craft)
    baseline = _find_text(proot, "PROCESSING_BASELINE", "product metadata")
    spec = SceneSpec(tile=tile, datetime=t, platform=platform, processing_baseline=baseline)
    if spec.has_offsets != has_offsets:  # follow the file, not the baseline rule (clamping of ρ < 0 differs)
        spec = replace(spec, processing_baseline="05.10" if has_offsets else "03.01")
    if n10 % 6:
        raise ValueError(f"tile size {n10} is not a multiple of 6")
    return render_scene(spec, n10 // 6, seed)


def _skeleton_band(scene: SceneArrays, band: str, res: int, level: str, quant: float,
                   offsets: Mapping[int, float]) -> np.ndarray:
    if band == "SCL":
        small = _scl_at(scene.scl, res)
    else:
        src = scene.boa if level == "L2A" else scene.toa
        rho = _to_resolution(src[band], BANDS[band].resolution, res)
        small = encode_dn(rho, offsets.get(BANDS[band].band_id, 0.0), quant)
    return np.repeat(np.repeat(small, 6, axis=0), 6, axis=1)
