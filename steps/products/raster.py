"""Raster I/O: read bands from any href (local, s3://, https://), write work GeoTIFFs and publish COGs.

Reads go through GDAL with :func:`steps.storage.gdal_env` of the side the raster lives on — the input
archive (``side="source"``, the default for band reads) or raw2ready's own outputs (``side="output"``,
e.g. a work cloud mask); writes are staged in a private scratch
directory and then moved into storage atomically (``Storage.put_file``), so a reader never sees a
half-written raster.

Performance notes (see ``docs/BENCHMARKS.md``): band reads decode their tiles on all cores
(``GDAL_NUM_THREADS``, honoured by GTiff and JP2OpenJPEG alike) and :func:`read_bands` reads several bands
concurrently (rasterio releases the GIL inside GDAL). Work rasters are written once, directly in their final
COG encoding (:func:`write_gtiff` → GDAL's COG driver from an in-memory dataset), so :func:`publish_cog` only
has to validate, hash and copy them instead of decompressing and re-encoding every pixel.

GDAL read failures are classified: HTTP 5xx/timeouts/connection resets become ``TransientError`` (exit
75, retried), anything else about a band becomes ``InvalidInputError`` (exit 3); an S3 refusal (HTTP 403,
``AccessDenied``, ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``) names the bucket, the side and the
setting to change, as boto3 errors do (:func:`steps.storage.access_denied_message`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling

from steps.errors import InvalidInputError, TransientError
from steps.products.definitions import Product
from steps.settings import Side, get_settings
from steps.storage import (
    LocalStorage,
    S3Storage,
    access_denied_message,
    gdal_env,
    read_uri,
    scratch_dir,
    sha256_multihash_file,
)

log = logging.getLogger(__name__)

_TRANSIENT_GDAL = re.compile(
    r"HTTP response code: (5\d\d|429)|timed out|Timeout|Connection (reset|refused|was reset)|"
    r"Couldn't connect|SSL connect error|Recv failure|Send failure|Empty reply|transfer closed",
    re.IGNORECASE,
)


_DENIED_GDAL = re.compile(
    r"\b(AccessDenied|Access Denied|Forbidden|InvalidAccessKeyId|SignatureDoesNotMatch|InvalidToken|ExpiredToken|"
    r"AllAccessDisabled)\b|HTTP (response code|error code)\s*:?\s*403|"
    r"Access Key Id you provided does not exist|signature we calculated does not match|security token",
    re.IGNORECASE,
)
# GDAL passes S3's error *message* on, sometimes without its code: recognise both
_DENIED_CODES = (
    ("InvalidAccessKeyId", re.compile(r"InvalidAccessKeyId|Access Key Id you provided does not exist", re.I)),
    ("SignatureDoesNotMatch", re.compile(r"SignatureDoesNotMatch|signature we calculated does not match", re.I)),
    ("InvalidToken", re.compile(r"InvalidToken|ExpiredToken|security token", re.I)),
    ("AccessDenied", re.compile(r"AccessDenied|Access Denied", re.I)),
)


def _s3_url(href: str) -> str | None:
    """``s3://bucket/key`` for an ``s3://`` or ``/vsis3/`` href, else ``None``."""
    if href.startswith("s3://"):
        return href
    if href.startswith("/vsis3/"):
        return "s3://" + href.removeprefix("/vsis3/")
    return None


@contextlib.contextmanager
def gdal_errors(what: str, *, href: str | None = None, side: Side | None = None) -> Iterator[None]:
    """Classify rasterio/GDAL errors raised inside the block (transient vs invalid input).

    With the ``href`` being read and the ``side`` it was read with, an S3 refusal becomes an
    ``InvalidInputError`` naming the bucket and the ``RAW2READY_…`` setting to change.
    """
    try:
        yield
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise InvalidInputError(f"{what}: not found") from exc
        msg = str(exc)
        url = _s3_url(href or what)
        if url is not None and _DENIED_GDAL.search(msg):
            code = next((c for c, pattern in _DENIED_CODES if pattern.search(msg)), "403")
            cfg = get_settings().s3_side(side) if side is not None else None
            label = "" if what == href or href is None else f"{what}: "
            raise InvalidInputError(label + access_denied_message(url, code, cfg)) from exc
        if _TRANSIENT_GDAL.search(msg):
            raise TransientError(f"{what}: {msg}") from exc
        raise InvalidInputError(f"{what}: unreadable ({msg.splitlines()[0] if msg else type(exc).__name__})") from exc


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform (pixel → CRS units, upper-left pixel corner), shape (rows, cols).

    The one grid type of the pipeline (band reads, resampling, product writes) and of the EDR (the catalog
    index's per-asset grids, pixel look-ups). In the catalog index and the time-series store manifests a
    grid is written as ``{"shape": [rows, cols], "transform": [a, b, c, d, e, f]}`` (:meth:`to_proj`,
    :meth:`from_proj`; the item's ``proj:shape`` and the first six ``proj:transform`` numbers).
    """

    crs: str
    transform: Affine
    shape: tuple[int, int]

    @classmethod
    def from_proj(cls, crs: str, proj: Mapping[str, Sequence[Any]]) -> Grid:
        """From ``{"shape": [rows, cols], "transform": [a, b, c, d, e, f, …]}`` (more numbers are ignored)."""
        rows, cols = int(proj["shape"][0]), int(proj["shape"][1])
        return cls(crs, Affine(*(float(v) for v in proj["transform"][:6])), (rows, cols))

    def to_proj(self) -> dict[str, list[Any]]:
        """``{"shape": [rows, cols], "transform": [a, b, c, d, e, f]}`` (the index and store-manifest form)."""
        return {"shape": [int(v) for v in self.shape], "transform": [float(v) for v in list(self.transform)[:6]]}

    @property
    def res(self) -> float:
        """Pixel size in CRS units (square pixels)."""
        return float(self.transform.a)

    @property
    def epsg(self) -> int:
        """The EPSG code of an ``EPSG:<code>`` CRS (``ValueError`` for any other CRS)."""
        code = self.crs.split(":", 1)
        if len(code) != 2 or code[0].upper() != "EPSG":
            raise ValueError(f"not an EPSG CRS: {self.crs!r}")
        return int(code[1])

    @property
    def height(self) -> int:
        """Rows."""
        return self.shape[0]

    @property
    def width(self) -> int:
        """Columns."""
        return self.shape[1]

    @functools.cached_property
    def inverse(self) -> tuple[float, float, float, float, float, float]:
        """Coefficients (a, b, c, d, e, f) of the inverse transform: col = a·x + b·y + c, row = d·x + e·y + f
        (plain floats: the EDR applies it once per date, and Affine's own operators cost microseconds)."""
        inv = ~self.transform
        return float(inv.a), float(inv.b), float(inv.c), float(inv.d), float(inv.e), float(inv.f)

    @property
    def centre(self) -> tuple[float, float]:
        """Grid centre (x, y) in the grid's CRS."""
        return self.transform @ (self.width / 2.0, self.height / 2.0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the grid's CRS."""
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (self.width, self.height)
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    def scaled(self, res: float) -> Grid:
        """The same extent at another resolution (extent must be a multiple of ``res``)."""
        factor = res / self.res
        rows, cols = round(self.shape[0] / factor), round(self.shape[1] / factor)
        t = self.transform
        return Grid(self.crs, Affine(res, 0.0, t.c, 0.0, -res, t.f), (rows, cols))


GDAL_THREADS = "ALL_CPUS"
"""``GDAL_NUM_THREADS`` for decoding and ``NUM_THREADS`` for encoding (block (de)compression on every core)."""

READ_WORKERS = 2
"""Bands read concurrently by :func:`read_bands` (GDAL releases the GIL; 2 matches the 2-core pods)."""


def read_band(href: str, *, grid: Grid | None = None, resampling: Resampling = Resampling.nearest,
              what: str | None = None, side: Side = "source", use_overviews: bool = False) -> tuple[np.ndarray, Grid]:
    """Read band 1 of ``href`` as stored (e.g. uint16 DN). With ``grid``, resample onto that grid's shape.

    ``side`` is the storage ``href`` lives on: ``"source"`` (default) for bands of the input archive,
    ``"output"`` for rasters raw2ready wrote (work files such as the cloud mask).

    The grid's extent must equal the file's (Sentinel-2 bands of one tile share the extent), so resampling
    only changes the pixel size — e.g. 20 m → 10 m nearest, or 10 m → 20 m average. Tiles are decoded on
    all cores (the pixels are the same as a single-threaded read).
    """
    label = what or href
    # GDAL_NUM_THREADS as a config option, not the GTiff NUM_THREADS open option: JPEG 2000 bands (ESA SAFE,
    # sentinel-s2-l1c) are decoded by JP2OpenJPEG, which honours the config option but warns about the open one
    # A resampled read does not use the file's overviews (OVERVIEW_LEVEL=NONE, a GDAL-core open option every
    # driver accepts) unless the caller knows they hold what it wants (``use_overviews``): COG overviews are made
    # by the producer with its own resampling (rio-tiler-pds' real 29RKH COGs: NEAREST), and JPEG 2000
    # "overviews" are wavelet levels, neither of which is the valid-DN block mean the products are defined with.
    opts = {} if grid is None or use_overviews else {"OVERVIEW_LEVEL": "NONE"}
    with (gdal_env(side=side), rasterio.Env(GDAL_NUM_THREADS=GDAL_THREADS), gdal_errors(label, href=href, side=side),
          rasterio.open(href, **opts) as src):
        file_grid = Grid(src.crs.to_string() if src.crs else "", src.transform, (src.height, src.width))
        if grid is None or grid.shape == file_grid.shape:
            data = src.read(1)
        else:
            data = src.read(1, out_shape=grid.shape, resampling=resampling)
        return data, file_grid


@dataclass(frozen=True)
class BandRead:
    """One request for :func:`read_bands` (the arguments of :func:`read_band`; source side by default)."""

    href: str
    grid: Grid | None = None
    resampling: Resampling = Resampling.nearest
    what: str | None = None
    side: Side = "source"
    use_overviews: bool = False


def read_bands(requests: Sequence[BandRead], workers: int = READ_WORKERS) -> list[np.ndarray]:
    """Read several bands concurrently (threads; GDAL I/O and decoding run without the GIL).

    Returns the arrays in request order, each exactly what :func:`read_band` returns; the first error
    (already classified as transient/invalid input) is raised.
    """
    def one(r: BandRead) -> np.ndarray:
        return read_band(r.href, grid=r.grid, resampling=r.resampling, what=r.what, side=r.side,
                         use_overviews=r.use_overviews)[0]

    if workers <= 1 or len(requests) <= 1:
        return [one(r) for r in requests]
    with ThreadPoolExecutor(max_workers=min(workers, len(requests))) as pool:
        return list(pool.map(one, requests))


def raster_info(href: str, what: str | None = None, *, side: Side = "source") -> dict[str, Any]:
    """CRS, transform, shape, dtype, nodata and block size of a raster (metadata only, no pixels).

    ``side``: the storage ``href`` lives on (default: the input archive).
    """
    with gdal_env(side=side), gdal_errors(what or href, href=href, side=side), rasterio.open(href) as src:
        return {
            "crs": src.crs.to_string() if src.crs else None,
            "epsg": src.crs.to_epsg() if src.crs else None,
            "transform": list(src.transform)[:6],
            "shape": (src.height, src.width),
            "dtype": src.dtypes[0],
            "nodata": src.nodata,
            "scales": src.scales,
            "offsets": src.offsets,
            "overviews": src.overviews(1),
            # how the overviews were made, as the writer recorded it (GDAL's COG driver / rio-cogeo)
            "overview_resampling": (src.tags(ns="IMAGE_STRUCTURE").get("OVERVIEW_RESAMPLING")
                                    or src.tags().get("OVR_RESAMPLING_ALG") or "").upper() or None,
        }


def encode(values: np.ndarray, product: Product) -> np.ndarray:
    """Physical float values (NaN = no data) → stored integers of ``product`` (round half away from zero).

    Element-wise and in place on one scratch array (no boolean gathers/scatters): the same values as
    ``clip(round((values - offset) / scale))`` on the finite pixels, ``nodata`` elsewhere.
    """
    info = np.iinfo(np.dtype(product.dtype))
    scaled = np.subtract(values, product.offset)
    scaled /= product.scale
    bad = ~np.isfinite(scaled)
    lo = info.min + 1 if product.nodata == info.min else info.min
    hi = info.max - 1 if product.nodata == info.max else info.max
    np.round(scaled, out=scaled)
    np.clip(scaled, lo, hi, out=scaled)
    with np.errstate(invalid="ignore"):  # NaN/inf cast to garbage here and are replaced just below
        out = scaled.astype(product.dtype)
    np.putmask(out, bad, product.nodata)
    return out


def decode(stored: np.ndarray, product: Product) -> np.ndarray:
    """Stored integers → float64 physical values, NaN where ``nodata``."""
    out = stored.astype(np.float64) * product.scale + product.offset
    out[stored == product.nodata] = np.nan
    return out


def _mem_dataset(data: np.ndarray, grid: Grid, product: Product, tags: dict[str, str] | None) -> Any:
    """An in-memory (GDAL MEM) dataset holding ``data`` with the product's metadata (caller closes it)."""
    from rasterio.io import MemoryFile

    mem = MemoryFile()
    ds = mem.open(driver="MEM", width=grid.shape[1], height=grid.shape[0], count=1, dtype=product.dtype,
                  crs=grid.crs, transform=grid.transform, nodata=product.nodata)
    ds.write(data, 1)
    ds.scales = (product.scale,)
    ds.offsets = (product.offset,)
    ds.set_band_description(1, product.key)
    if product.unit:
        ds.units = (product.unit,)
    # the GTiff work file this replaces carried the GTiff driver's default AREA_OR_POINT tag
    ds.update_tags(AREA_OR_POINT="Area", **(tags or {}))
    return mem, ds


def write_gtiff(storage: LocalStorage | S3Storage, key: str, data: np.ndarray, grid: Grid, product: Product,
                tags: dict[str, str] | None = None) -> str:
    """Write a work raster — already a COG in the product's final encoding — and return its URL.

    ``data`` has the product's stored dtype (e.g. from :func:`encode`). The file is exactly what
    :func:`publish_cog` used to produce from a separate work GeoTIFF (GDAL's COG driver, options of
    :func:`cog_options`), but written once straight from memory; :func:`publish_cog` recognises it
    (:func:`is_product_cog`) and only validates, hashes and copies it.
    """
    from rasterio.shutil import copy as rio_copy

    if data.shape != grid.shape:
        raise ValueError(f"{key}: array shape {data.shape} is not the grid shape {grid.shape}")
    with scratch_dir() as d:
        path = d / Path(key).name
        mem, ds = _mem_dataset(np.asarray(data, dtype=product.dtype), grid, product, tags)
        try:
            with gdal_env(side="output"), rasterio.Env(**COG_TMP_ENV):
                rio_copy(ds, str(path), driver="COG", **cog_options(product))
        finally:
            ds.close()
            mem.close()
        storage.put_file(path, key)
    return storage.url(key)


@dataclass(frozen=True)
class PublishedAsset:
    """A COG written to its final place."""

    key: str
    href: str
    checksum: str  # file:checksum multihash
    size: int


COG_TMP_ENV = {"COG_TMP_COMPRESSION": "ZSTD", "ZSTD_LEVEL_OVERVIEW": "1"}
"""GDAL config for the COG driver's *temporary* overview file: ZSTD level 1 instead of the default.

The temporary file is decoded losslessly into the final DEFLATE overviews, so the COG is byte-identical
(checked on full tiles); it saves ~30 % of the CPU of writing a 10 m NDVI COG. (``COG_TMP_COMPRESSION=NONE``
would save more but takes another overview code path whose coarse levels differ slightly.)
"""


def cog_options(product: Product) -> dict[str, Any]:
    """GDAL COG-driver creation options for a product (compression from rio-cogeo's DEFLATE profile)."""
    from rio_cogeo.profiles import cog_profiles

    continuous = product.key in ("ndvi", "lai")
    base = cog_profiles.get("deflate")
    return {
        "COMPRESS": str(base["compress"]).upper(),
        "LEVEL": 6,
        "PREDICTOR": "YES" if continuous else "NO",
        "BLOCKSIZE": 512,
        "OVERVIEW_RESAMPLING": "AVERAGE" if continuous else "NEAREST",
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
    }


def is_product_cog(href: str, product: Product) -> bool:
    """Whether ``href`` already is a COG in ``product``'s final encoding (as :func:`write_gtiff` writes it).

    Checks the GDAL COG-driver layout marker, DEFLATE compression, the predictor, 512² blocks, internal
    overviews, data type, nodata, scale and offset. Anything else (e.g. a plain work GeoTIFF from an
    older version) is translated by :func:`publish_cog` instead.
    """
    opts = cog_options(product)
    with rasterio.open(href) as src:
        structure = src.tags(ns="IMAGE_STRUCTURE")
        predictor = structure.get("PREDICTOR", "1")
        return bool(
            src.driver == "GTiff" and src.count == 1
            and structure.get("LAYOUT", "").upper() == "COG"
            and structure.get("COMPRESSION", "").upper() == opts["COMPRESS"]
            and (predictor != "1") == (opts["PREDICTOR"] == "YES")
            and src.block_shapes[0] == (opts["BLOCKSIZE"], opts["BLOCKSIZE"])
            and bool(src.overviews(1)) == (max(src.height, src.width) > opts["BLOCKSIZE"])
            and src.dtypes[0] == product.dtype and src.nodata == product.nodata
            and src.scales == (product.scale,) and src.offsets == (product.offset,)
        )


def _local_file(href: str) -> Path | None:
    """The local path of ``href`` when it is a plain file (not s3://, https://)."""
    if "://" in href and not href.startswith("file://"):
        return None
    p = Path(href.removeprefix("file://"))
    return p if p.is_file() else None


def publish_cog(src_href: str, storage: LocalStorage | S3Storage, key: str, product: Product) -> PublishedAsset:
    """Publish a work raster as a validated COG at ``key`` (DEFLATE, 512² blocks, internal overviews).

    A work raster that already is the product's COG (:func:`is_product_cog`, what :func:`write_gtiff`
    writes) is copied byte for byte. Anything else is translated with GDAL's COG driver (overviews down to
    one block; ``nearest`` for class/flag products, ``average`` for continuous ones; nodata, scale and
    offset carried over). Either way the file is validated with rio-cogeo's ``cog_validate`` before it is
    moved into place, and its sha256 multihash (of the very bytes uploaded) is returned.
    """
    from rasterio.shutil import copy as rio_copy
    from rio_cogeo.cogeo import cog_validate

    with scratch_dir() as d:
        out = d / Path(key).name
        with gdal_env(side="output"), gdal_errors(src_href, href=src_href, side="output"):
            if is_product_cog(src_href, product):
                local = _local_file(src_href)
                if local is not None:
                    shutil.copyfile(local, out)  # a private copy: what is validated is what is uploaded
                else:
                    out.write_bytes(read_uri(src_href, side="output"))
            else:
                # opening maps s3:// and https:// to GDAL's /vsi paths
                with rasterio.Env(**COG_TMP_ENV), rasterio.open(src_href) as src:
                    rio_copy(src, str(out), driver="COG", **cog_options(product))
            valid, errors, _warnings = cog_validate(str(out), quiet=True)
        if not valid:
            raise InvalidInputError(f"COG validation failed for {key}: {errors}")
        checksum = sha256_multihash_file(out)
        size = out.stat().st_size
        storage.put_file(out, key)
    return PublishedAsset(key=key, href=storage.url(key), checksum=checksum, size=size)
