"""Raster I/O: read bands from any href (local, s3://, https://), write work GeoTIFFs and publish COGs.

Reads go through GDAL with :func:`steps.storage.gdal_env`; writes are staged in a private scratch
directory and then moved into storage atomically (``Storage.put_file``), so a reader never sees a
half-written raster. GDAL read failures are classified: HTTP 5xx/timeouts/connection resets become
``TransientError`` (exit 75, retried), anything else about a band becomes ``InvalidInputError`` (exit 3).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling

from steps.errors import InvalidInputError, TransientError
from steps.products import Product
from steps.storage import LocalStorage, S3Storage, gdal_env, scratch_dir, sha256_multihash_file

log = logging.getLogger(__name__)

_TRANSIENT_GDAL = re.compile(
    r"HTTP response code: (5\d\d|429)|timed out|Timeout|Connection (reset|refused|was reset)|"
    r"Couldn't connect|SSL connect error|Recv failure|Send failure|Empty reply|transfer closed",
    re.IGNORECASE,
)


@contextlib.contextmanager
def gdal_errors(what: str) -> Iterator[None]:
    """Classify rasterio/GDAL errors raised inside the block (transient vs invalid input)."""
    try:
        yield
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise InvalidInputError(f"{what}: not found") from exc
        msg = str(exc)
        if _TRANSIENT_GDAL.search(msg):
            raise TransientError(f"{what}: {msg}") from exc
        raise InvalidInputError(f"{what}: unreadable ({msg.splitlines()[0] if msg else type(exc).__name__})") from exc


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform (pixel corner), shape (rows, cols)."""

    crs: str
    transform: Affine
    shape: tuple[int, int]

    @property
    def res(self) -> float:
        """Pixel size in CRS units (square pixels)."""
        return float(self.transform.a)

    def scaled(self, res: float) -> Grid:
        """The same extent at another resolution (extent must be a multiple of ``res``)."""
        factor = res / self.res
        rows, cols = round(self.shape[0] / factor), round(self.shape[1] / factor)
        t = self.transform
        return Grid(self.crs, Affine(res, 0.0, t.c, 0.0, -res, t.f), (rows, cols))


def read_band(href: str, *, grid: Grid | None = None, resampling: Resampling = Resampling.nearest,
              what: str | None = None) -> tuple[np.ndarray, Grid]:
    """Read band 1 of ``href`` as stored (e.g. uint16 DN). With ``grid``, resample onto that grid's shape.

    The grid's extent must equal the file's (Sentinel-2 bands of one tile share the extent), so resampling
    only changes the pixel size — e.g. 20 m → 10 m nearest, or 10 m → 20 m average.
    """
    label = what or href
    with gdal_env(), gdal_errors(label), rasterio.open(href) as src:
        file_grid = Grid(src.crs.to_string() if src.crs else "", src.transform, (src.height, src.width))
        if grid is None or grid.shape == file_grid.shape:
            data = src.read(1)
        else:
            data = src.read(1, out_shape=grid.shape, resampling=resampling)
        return data, file_grid


def raster_info(href: str, what: str | None = None) -> dict[str, Any]:
    """CRS, transform, shape, dtype, nodata and block size of a raster (metadata only, no pixels)."""
    with gdal_env(), gdal_errors(what or href), rasterio.open(href) as src:
        return {
            "crs": src.crs.to_string() if src.crs else None,
            "epsg": src.crs.to_epsg() if src.crs else None,
            "transform": list(src.transform)[:6],
            "shape": (src.height, src.width),
            "dtype": src.dtypes[0],
            "nodata": src.nodata,
            "scales": src.scales,
            "offsets": src.offsets,
        }


def encode(values: np.ndarray, product: Product) -> np.ndarray:
    """Physical float values (NaN = no data) → stored integers of ``product`` (round half away from zero)."""
    info = np.iinfo(np.dtype(product.dtype))
    scaled = (values - product.offset) / product.scale
    out = np.full(values.shape, product.nodata, dtype=product.dtype)
    ok = np.isfinite(scaled)
    lo = info.min + 1 if product.nodata == info.min else info.min
    hi = info.max - 1 if product.nodata == info.max else info.max
    out[ok] = np.clip(np.round(scaled[ok]), lo, hi).astype(product.dtype)
    return out


def decode(stored: np.ndarray, product: Product) -> np.ndarray:
    """Stored integers → float64 physical values, NaN where ``nodata``."""
    out = stored.astype(np.float64) * product.scale + product.offset
    out[stored == product.nodata] = np.nan
    return out


def write_gtiff(storage: LocalStorage | S3Storage, key: str, data: np.ndarray, grid: Grid, product: Product,
                tags: dict[str, str] | None = None) -> str:
    """Write a tiled, compressed GeoTIFF (work file, not yet a COG) and return its URL."""
    with scratch_dir() as d:
        path = d / Path(key).name
        profile = {
            "driver": "GTiff", "width": grid.shape[1], "height": grid.shape[0], "count": 1,
            "dtype": product.dtype, "crs": grid.crs, "transform": grid.transform, "nodata": product.nodata,
            "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "ZSTD", "zstd_level": 1,
            "predictor": 2 if product.dtype.startswith("int") and product.scale != 1.0 else 1,
            "BIGTIFF": "IF_SAFER",
        }
        with gdal_env(), rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
            dst.scales = (product.scale,)
            dst.offsets = (product.offset,)
            dst.set_band_description(1, product.key)
            if product.unit:
                dst.units = (product.unit,)
            if tags:
                dst.update_tags(**tags)
        storage.put_file(path, key)
    return storage.url(key)


@dataclass(frozen=True)
class PublishedAsset:
    """A COG written to its final place."""

    key: str
    href: str
    checksum: str  # file:checksum multihash
    size: int


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


def publish_cog(src_href: str, storage: LocalStorage | S3Storage, key: str, product: Product) -> PublishedAsset:
    """Translate a work GeoTIFF into a validated COG at ``key`` (DEFLATE, 512² blocks, internal overviews).

    Written with GDAL's COG driver (overviews down to one block; ``nearest`` for class/flag products,
    ``average`` for continuous ones; nodata, scale and offset carried over), validated with rio-cogeo's
    ``cog_validate`` before it is moved into place; its sha256 multihash is returned.
    """
    from rasterio.shutil import copy as rio_copy
    from rio_cogeo.cogeo import cog_validate

    with scratch_dir() as d:
        out = d / Path(key).name
        with gdal_env(), gdal_errors(src_href):
            with rasterio.open(src_href) as src:  # opening maps s3:// and https:// to GDAL's /vsi paths
                rio_copy(src, str(out), driver="COG", **cog_options(product))
            valid, errors, _warnings = cog_validate(str(out), quiet=True)
        if not valid:
            raise InvalidInputError(f"COG validation failed for {key}: {errors}")
        checksum = sha256_multihash_file(out)
        size = out.stat().st_size
        storage.put_file(out, key)
    return PublishedAsset(key=key, href=storage.url(key), checksum=checksum, size=size)
