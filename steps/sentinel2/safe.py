"""Local Sentinel-2 SAFE products: a ``.SAFE`` directory, a ``.zip`` of one, or a folder of them.

Layout (SAFE_COMPACT, as downloaded from the Copernicus Data Space; the zip holds one top-level
``<product id>.SAFE/`` folder)::

    S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE/
      MTD_MSIL2A.xml  (MTD_MSIL1C.xml for L1C)   manifest.safe   INSPIRE.xml
      GRANULE/L2A_T29UNU_A038058_20221005T115407/MTD_TL.xml
      GRANULE/L2A_T29UNU_A038058_20221005T115407/IMG_DATA/R10m/T29UNU_20221005T115411_B04_10m.jp2  (L2A)
      GRANULE/L1C_T46RER_A032448_20210908T043714/IMG_DATA/T46RER_20210908T042701_B04.jp2          (L1C)
      DATASTRIP/…  AUX_DATA/…  HTML/…  rep_info/…

The band files are those the product XML lists as ``IMAGE_FILE`` (relative to the SAFE root, without
extension: ``.jp2`` is appended). L2A names end ``_<band>_<res>m`` (bands B01…B12, B8A, SCL, AOT, WVP, TCI;
several resolutions per band); L1C names end ``_<band>`` at the band's native resolution (TCI at 10 m).
Hrefs are strings GDAL opens: a plain path for a directory, ``/vsizip/<absolute zip path>/<SAFE>/<path>``
for a zip. A listed file that is absent is reported only when a caller asks for that band
(:meth:`SafeProduct.href`); :meth:`SafeProduct.missing_files` lists all of them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from steps.errors import InvalidInputError
from steps.sentinel2.bands import BANDS
from steps.sentinel2.metadata import ProductMetadata, TileMetadata, parse_product_metadata, parse_tile_metadata

logger = logging.getLogger(__name__)

__all__ = ["SafeProduct", "find_safe_products", "open_safe", "verify_manifest"]

PRODUCT_XML_NAMES = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")
_BAND_FILE = re.compile(r"_(B\d{2}|B8A|TCI|AOT|WVP|SCL)(?:_(\d{2})m)?$")
_NATIVE_RES = {**{b.name: b.resolution for b in BANDS.values()}, "TCI": 10}


@dataclass(frozen=True, eq=False)
class SafeProduct:
    """One opened SAFE product (directory or zip).

    Attributes:
        path: the ``.SAFE`` directory or the ``.zip`` file (absolute).
        safe_name: the SAFE folder name (``<product id>.SAFE``).
        is_zip: True for a zip.
        product: parsed ``MTD_MSIL2A.xml``/``MTD_MSIL1C.xml``.
        tile: parsed ``GRANULE/<granule>/MTD_TL.xml``.
        granule_dir: ``GRANULE/<granule>`` (relative to the SAFE root).
        band_hrefs: band name (``"B04"``, ``"SCL"``, ``"TCI"``, ``"AOT"``, ``"WVP"``) → {resolution m: href}
            for every ``IMAGE_FILE`` entry, present or not.
        image_paths: the same keys → {resolution: path relative to the SAFE root, with ``.jp2``}.
        missing: relative paths of listed image files that are absent.
    """

    path: Path
    safe_name: str
    is_zip: bool
    product: ProductMetadata
    tile: TileMetadata
    granule_dir: str
    band_hrefs: dict[str, dict[int, str]]
    image_paths: dict[str, dict[int, str]]
    missing: tuple[str, ...]

    @property
    def level(self) -> str:
        """``"L2A"`` or ``"L1C"``."""
        return self.product.level

    @property
    def product_id(self) -> str:
        """The product id (``PRODUCT_URI`` without ``.SAFE``)."""
        return self.product.product_id

    def missing_files(self) -> list[str]:
        """Relative paths (``GRANULE/…/X.jp2``) listed as ``IMAGE_FILE`` but absent from the product."""
        return list(self.missing)

    def resolutions(self, band: str) -> list[int]:
        """Resolutions (m, ascending) at which the product lists ``band``; empty if it lists none."""
        return sorted(self.band_hrefs.get(band, {}))

    def href(self, band: str, resolution: int | None = None) -> str:
        """GDAL-openable href of ``band`` at ``resolution`` (default: the finest listed).

        Raises:
            InvalidInputError: the product does not list the band/resolution, or the file is absent.
        """
        by_res = self.band_hrefs.get(band)
        if not by_res:
            raise InvalidInputError(f"{self.safe_name}: the product lists no image file for band {band}")
        res = min(by_res) if resolution is None else resolution
        if res not in by_res:
            raise InvalidInputError(
                f"{self.safe_name}: band {band} is not listed at {res} m (listed: {sorted(by_res)} m)"
            )
        rel = self.image_paths[band][res]
        if rel in self.missing:
            raise InvalidInputError(f"{self.safe_name}: image file {rel} (band {band}, {res} m) is missing")
        return by_res[res]

    def file_href(self, rel: str) -> str:
        """GDAL-openable href of any file given relative to the SAFE root."""
        return _href(self.path, self.safe_name, self.is_zip, rel)

    def read_bytes(self, rel: str) -> bytes:
        """Bytes of a file given relative to the SAFE root (e.g. ``manifest.safe``).

        Raises:
            InvalidInputError: the file is absent.
        """
        return _Reader(self.path, self.is_zip, self.safe_name).read(rel)


def _href(path: Path, safe_name: str, is_zip: bool, rel: str) -> str:
    if is_zip:
        return f"/vsizip/{path.as_posix()}/{safe_name}/{rel}"
    return str(path / rel)


class _Reader:
    """Uniform access to the files of a SAFE directory or a zip (paths relative to the SAFE root)."""

    def __init__(self, path: Path, is_zip: bool, safe_name: str) -> None:
        self.path, self.is_zip, self.safe_name = path, is_zip, safe_name
        self._names: set[str] | None = None
        if is_zip:
            try:
                with zipfile.ZipFile(path) as zf:
                    prefix = f"{safe_name}/"
                    self._names = {n[len(prefix):] for n in zf.namelist() if n.startswith(prefix) and n[-1:] != "/"}
            except (OSError, zipfile.BadZipFile) as exc:
                raise InvalidInputError(f"{path}: not a readable zip ({exc})") from None

    def exists(self, rel: str) -> bool:
        if self._names is not None:
            return rel in self._names
        return (self.path / rel).is_file()

    def read(self, rel: str) -> bytes:
        if not self.exists(rel):
            raise InvalidInputError(f"{self.safe_name}: missing file {rel}")
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(f"{self.safe_name}/{rel}")
        return (self.path / rel).read_bytes()

    def sha3(self, rel: str) -> tuple[int, str]:
        """(size in bytes, SHA3-256 hex digest) of a file, streamed in 1 MiB chunks."""
        h = hashlib.sha3_256()
        n = 0
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf, zf.open(f"{self.safe_name}/{rel}") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
                    n += len(chunk)
        else:
            with (self.path / rel).open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
                    n += len(chunk)
        return n, h.hexdigest()

    def list(self, prefix: str) -> list[str]:
        if self._names is not None:
            return sorted(n for n in self._names if n.startswith(prefix))
        base = self.path / prefix
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.path).as_posix() for p in base.rglob("*") if p.is_file())


def _zip_safe_name(path: Path) -> str | None:
    """The single top-level ``*.SAFE`` folder of a zip, None if it has none.

    Raises:
        InvalidInputError: the zip is unreadable or holds several SAFE folders.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            tops = {PurePosixPath(n).parts[0] for n in zf.namelist() if PurePosixPath(n).parts}
    except (OSError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"{path}: not a readable zip ({exc})") from None
    safes = sorted(t for t in tops if t.upper().endswith(".SAFE"))
    if len(safes) > 1:
        raise InvalidInputError(f"{path}: holds {len(safes)} SAFE folders ({', '.join(safes)}); expected one")
    return safes[0] if safes else None


def open_safe(path: str | Path) -> SafeProduct:
    """Open a Sentinel-2 SAFE product from a ``.SAFE`` directory or a ``.zip`` holding one.

    Reads the product XML at the SAFE root and the granule's ``MTD_TL.xml`` (the granule named by the
    ``IMAGE_FILE`` paths); builds band hrefs from ``IMAGE_FILE`` + ``.jp2``. No raster is opened.

    Raises:
        InvalidInputError: not a SAFE, no/unreadable product or tile XML, several granules, or product and
            tile metadata that disagree (level, tile).
    """
    p = Path(path).expanduser().resolve()
    if p.is_file() and p.suffix.lower() == ".zip":
        safe_name = _zip_safe_name(p)
        if safe_name is None:
            raise InvalidInputError(f"{p}: the zip holds no top-level .SAFE folder")
        is_zip = True
    elif p.is_dir():
        safe_name, is_zip = p.name, False
    else:
        raise InvalidInputError(f"{p}: not a .SAFE directory or a .zip of one")
    rd = _Reader(p, is_zip, safe_name)

    xml_name = next((n for n in PRODUCT_XML_NAMES if rd.exists(n)), None)
    if xml_name is None:
        raise InvalidInputError(f"{safe_name}: no product metadata ({' or '.join(PRODUCT_XML_NAMES)}) at the SAFE root")
    product = parse_product_metadata(rd.read(xml_name), source=f"{safe_name}/{xml_name}")

    granules = sorted({"/".join(f.split("/")[:2]) for f in product.image_files if f.startswith("GRANULE/")})
    if not granules:  # no IMAGE_FILE list: fall back to the GRANULE folder itself
        granules = sorted({"/".join(n.split("/")[:2]) for n in rd.list("GRANULE/") if n.endswith("/MTD_TL.xml")})
    if len(granules) != 1:
        raise InvalidInputError(f"{safe_name}: expected one granule, found {len(granules)} ({', '.join(granules)})")
    granule_dir = granules[0]
    tl_rel = f"{granule_dir}/MTD_TL.xml"
    tile = parse_tile_metadata(rd.read(tl_rel), source=f"{safe_name}/{tl_rel}")
    if tile.level != product.level:
        raise InvalidInputError(f"{safe_name}: {xml_name} is {product.level} but {tl_rel} is {tile.level}")
    if product.tile_ids and tile.tile_id not in product.tile_ids:
        raise InvalidInputError(
            f"{safe_name}: {tl_rel} is tile {tile.tile_id} but the image files name {', '.join(product.tile_ids)}"
        )

    hrefs: dict[str, dict[int, str]] = {}
    rels: dict[str, dict[int, str]] = {}
    missing: list[str] = []
    for f in product.image_files:
        m = _BAND_FILE.search(f)
        if not m:
            logger.info("%s: IMAGE_FILE %s names no known band; ignored", safe_name, f)
            continue
        band = m.group(1)
        if m.group(2):
            res = int(m.group(2))
        elif band in _NATIVE_RES:
            res = _NATIVE_RES[band]
        else:
            raise InvalidInputError(f"{safe_name}: IMAGE_FILE {f} has no resolution and {band} has no native one")
        rel = f"{f}.jp2"
        if res in rels.get(band, {}):
            raise InvalidInputError(f"{safe_name}: band {band} at {res} m is listed twice")
        rels.setdefault(band, {})[res] = rel
        hrefs.setdefault(band, {})[res] = _href(p, safe_name, is_zip, rel)
        if not rd.exists(rel):
            missing.append(rel)
    if missing:
        logger.info("%s: %d of %d listed image files are absent", safe_name, len(missing), len(product.image_files))
    return SafeProduct(path=p, safe_name=safe_name, is_zip=is_zip, product=product, tile=tile, granule_dir=granule_dir,
                       band_hrefs=hrefs, image_paths=rels, missing=tuple(missing))


def find_safe_products(folder: str | Path) -> list[Path]:
    """SAFE products directly inside ``folder``: directories named ``*.SAFE`` and zips holding one.

    ``folder`` itself may be a ``.SAFE`` directory or such a zip (then it is the only result). Not recursive.
    Zips without a SAFE folder are skipped with a warning (so that other downloads can sit in the folder).

    Returns:
        Absolute paths, sorted by name.

    Raises:
        InvalidInputError: ``folder`` does not exist, or a zip in it is unreadable.
    """
    f = Path(folder).expanduser().resolve()
    if f.is_dir() and f.name.upper().endswith(".SAFE"):
        return [f]
    if f.is_file() and f.suffix.lower() == ".zip":
        if _zip_safe_name(f) is None:
            raise InvalidInputError(f"{f}: the zip holds no top-level .SAFE folder")
        return [f]
    if not f.is_dir():
        raise InvalidInputError(f"{f}: no such folder")
    out: list[Path] = []
    for c in sorted(f.iterdir(), key=lambda x: x.name):
        if c.is_dir() and c.name.upper().endswith(".SAFE"):
            out.append(c)
        elif c.is_file() and c.suffix.lower() == ".zip":
            if _zip_safe_name(c) is None:
                logger.warning("%s: zip without a .SAFE folder; skipped", c)
            else:
                out.append(c)
    return out


def verify_manifest(product: SafeProduct, *, include_missing: bool = False) -> list[str]:
    """Check the files listed in ``manifest.safe`` against their size and SHA3-256 checksum.

    Only files present in the product are checked; absent ones are reported only with
    ``include_missing=True`` (a SAFE copy may legitimately hold only part of the product).

    Returns:
        One line per problem (empty list: every present listed file matches).
    """
    try:
        raw = product.read_bytes("manifest.safe")
    except InvalidInputError:
        return [f"{product.safe_name}: manifest.safe is missing"]
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        return [f"{product.safe_name}/manifest.safe: not well-formed XML ({exc})"]
    rd = _Reader(product.path, product.is_zip, product.safe_name)
    problems: list[str] = []
    for obj in root.iter():
        if obj.tag.rsplit("}", 1)[-1] != "byteStream":
            continue
        loc = next((c for c in obj.iter() if c.tag.rsplit("}", 1)[-1] == "fileLocation"), None)
        cks = next((c for c in obj.iter() if c.tag.rsplit("}", 1)[-1] == "checksum"), None)
        if loc is None or not loc.get("href"):
            continue
        rel = loc.get("href", "").removeprefix("./")
        if not rd.exists(rel):
            if include_missing:
                problems.append(f"{rel}: listed in manifest.safe but missing")
            continue
        nbytes, got = rd.sha3(rel)
        size = obj.get("size")
        if size is not None and size.isdigit() and int(size) != nbytes:
            problems.append(f"{rel}: size {nbytes} ≠ manifest {size}")
        if cks is not None and (cks.get("checksumName") or "").upper() == "SHA3-256":
            want = (cks.text or "").strip().lower()
            if got != want:
                problems.append(f"{rel}: SHA3-256 {got} ≠ manifest {want}")
        elif cks is not None:
            logger.info("%s: checksum %s not verified (only SHA3-256 is)", rel, cks.get("checksumName"))
    return problems
