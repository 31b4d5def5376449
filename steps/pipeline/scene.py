"""The scene manifest: what ``ingest`` resolves once and every later step reads.

It names each band's file and its reflectance conversion (reflectance = DN·scale + offset, DN 0 = no
data), the output grids, the sun/view angles and the source identities, and records where each decision
came from (radiometry, angles, resolution). It lives at ``<out>/work/<scene_id>/scene.json`` and is
deleted with the work folder once the scene is published.

Grids. Steps ask for a grid by its *nominal class* — 10 (NDVI), 20 (LAI, cloud mask), 60 or any other
metre value (s2cloudless evaluation) — and :meth:`Scene.grid` answers with the pixel size ingest chose
for that class: 10/20 m for a full-resolution source, 20/20 m with ``--resolution 20``, 60/60 m for a
source that only has 60 m bands (or ``--resolution 60``), and 100/200 m for the decimated real COGs in
the tests. All grids share the upper-left corner and the extent of the scene (the tile, or a window of it).

Resampling. Every band is read from its finest file. Going coarser averages only valid DNs
(:func:`steps.science.resample.block_mean_dn`: DN 0 is never averaged in, whether or not the file has a
nodata tag); going finer repeats pixels (nearest).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from affine import Affine
from pydantic import BaseModel, ConfigDict, Field
from rasterio.enums import Resampling

from steps.errors import InvalidInputError
from steps.products.raster import BandRead, Grid, read_bands
from steps.science.radiometry import dn_to_reflectance
from steps.science.resample import block_mean_dn
from steps.sentinel2.source import SceneRef
from steps.storage import read_uri


class BandInfo(BaseModel):
    """One band file and how to turn its DN into reflectance."""

    model_config = ConfigDict(extra="forbid")

    href: str
    resolution: float = Field(description="pixel size of the file in metres (as stored, e.g. 10, 20, 60)")
    scale: float = Field(description="reflectance per DN (1/quantification)")
    offset: float = Field(description="reflectance offset (add_offset/quantification; 0 before PB 04.00)")
    nodata: float | None = Field(None, description="the file's nodata tag (ESA JPEG 2000: none; COGs: 0)")
    average_overview: int | None = Field(
        None, description="factor of the file's first overview when its writer recorded AVERAGE resampling "
                          "and nodata 0 (that overview is then the valid-DN 2×2 block mean; else None)")


class AngleGrids(BaseModel):
    """Sun/view angles in degrees: 23×23 grids from MTD_TL.xml (node (i, j) at (ulx + j·step, uly − i·step)),
    or only scene means when the source has no granule metadata (``step_m`` is then None)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="where the angles come from")
    step_m: float | None = None
    sun_zenith: list[list[float | None]] | None = None
    sun_azimuth: list[list[float | None]] | None = None
    view_zenith: list[list[float | None]] | None = None
    view_azimuth: list[list[float | None]] | None = None
    mean_sun_zenith: float
    mean_sun_azimuth: float
    mean_view_zenith: float
    mean_view_azimuth: float

    @property
    def has_grids(self) -> bool:
        """True when per-node grids are present (else only the means)."""
        return self.step_m is not None and self.sun_zenith is not None

    def array(self, name: str) -> np.ndarray:
        """One grid as float64 (None → NaN); ``ValueError`` when the scene has only means."""
        grid = getattr(self, name)
        if grid is None:
            raise ValueError(f"no {name} grid (angles from {self.source})")
        return np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=np.float64)


class RadiometryRecord(BaseModel):
    """Which source decided the DN → reflectance conversion (recorded in every derived item)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="deciding source of the L2A conversion, e.g. 'product metadata BOA_ADD_OFFSET'")
    detail: str = ""
    l1c_source: str = Field("", description="deciding source of the L1C conversion ('' without L1C)")


class Scene(SceneRef):
    """Everything later steps need about one scene: its :class:`SceneRef` plus what ingest resolved."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    epsg: int
    ulx: float
    uly: float
    extent_m: tuple[float, float] = Field(description="(height, width) of the scene's extent in metres")
    grid_res: dict[int, float] = Field(description="nominal grid class (10, 20, 60) -> pixel size used (m)")
    source_format: str = Field(description="'stac-item:<convention>' or 'safe'")
    bands: dict[str, BandInfo]
    scl: BandInfo
    ndvi_nir_band: str = Field("B08", description="NIR band of the NDVI: B08, or B8A when the source lacks B08")
    l1c_bands: dict[str, BandInfo] = Field(default_factory=dict)
    l1c_processing_baseline: str = ""
    angles: AngleGrids
    radiometry: RadiometryRecord
    cloud_cover: float | None = Field(None, description="the source's stated cloud cover (%), e.g. eo:cloud_cover")
    warnings: list[str] = Field(default_factory=list)

    def grid(self, res: int) -> Grid:
        """The scene's grid of nominal class ``res`` (10: NDVI, 20: LAI and cloud mask, 60)."""
        return self.grid_at(float(self.grid_res.get(res, res)))

    def grid_at(self, size: float) -> Grid:
        """The scene's extent on a grid of ``size`` metres (e.g. the s2cloudless evaluation grid)."""
        rows, cols = self.extent_m[0] / size, self.extent_m[1] / size
        if abs(rows - round(rows)) > 1e-6 or abs(cols - round(cols)) > 1e-6:
            raise InvalidInputError(f"scene {self.scene_id}: a {size:g} m grid does not divide its extent "
                                    f"{self.extent_m[1]:g}×{self.extent_m[0]:g} m")
        return Grid(f"EPSG:{self.epsg}", Affine(size, 0.0, self.ulx, 0.0, -size, self.uly),
                    (round(rows), round(cols)))

    def band_info(self, band: str, level: str = "L2A") -> BandInfo:
        """The file and DN→reflectance conversion of one band (``InvalidInputError`` if absent)."""
        if band == "SCL" and level == "L2A":
            return self.scl
        info = (self.l1c_bands if level == "L1C" else self.bands).get(band)
        if info is None:
            raise InvalidInputError(f"scene {self.scene_id}: no {level} band {band}")
        return info

    def read_dn(self, bands: Sequence[str], res: int | None = None, level: str = "L2A",
                grid: Grid | None = None) -> list[np.ndarray]:
        """Raw DN arrays (uint16 as stored) of ``bands`` on the grid of class ``res``, read concurrently.

        ``res`` is a grid class of :attr:`grid_res` (10, 20, 60); ``grid`` (e.g. :meth:`grid_at`) overrides it.

        ``res`` None = each band at its own file's grid. Coarser targets average the valid DNs of each block
        (DN 0 never averaged in); finer targets repeat pixels. Convert with
        :func:`steps.science.radiometry.dn_to_reflectance` and :meth:`band_info` (scale, offset).
        """
        infos = [self.band_info(b, level) for b in bands]
        plans: list[tuple[BandRead, int]] = []  # (read, k): k > 1 average k×k blocks, k < -1 repeat |k| times
        for band, info in zip(bands, infos, strict=True):
            what = f"{self.scene_id} {level} {band}"
            if res is None and grid is None:
                plans.append((BandRead(info.href, None, what=what), 1))
                continue
            target = grid if grid is not None else self.grid(int(res or 0))
            factor = target.res / info.resolution
            k = round(factor) if factor >= 1 else -round(1 / factor)
            if abs(factor - k) > 1e-6 and abs(1 / factor + k) > 1e-6:
                raise InvalidInputError(f"{what}: {info.resolution:g} m and the {target.res:g} m grid are not "
                                        "whole multiples")
            if k > 1 and info.nodata == 0:  # GDAL's average skips tagged nodata: the same numbers, in C,
                # from the file's own first overview when it was made that way (cheaper than full resolution)
                plans.append((BandRead(info.href, target, Resampling.average, what=what,
                                       use_overviews=info.average_overview == k), 1))
            else:  # read as stored; average valid DNs (no tag: GDAL would average DN 0 in) or repeat pixels here
                plans.append((BandRead(info.href, target.scaled(info.resolution), what=what), k))
        arrays = read_bands([p for p, _ in plans])
        return [_resample_dn(a, k) for a, (_, k) in zip(arrays, plans, strict=True)]

    def reflectance(self, band: str, res: int | None = None, level: str = "L2A",
                    out: np.ndarray | None = None) -> np.ndarray:
        """Band ``band`` as float32 reflectance (NaN = no data) on the grid of class ``res``.

        ``out``: optional float32 array of the target shape to fill (e.g. one plane of a band stack).
        """
        (dn,) = self.read_dn([band], res, level)
        return self._to_reflectance(band, level, dn, out)

    def reflectances(self, bands: Sequence[str], res: int, level: str = "L2A",
                     grid: Grid | None = None) -> np.ndarray:
        """Bands as one float32 reflectance stack ``(len(bands), rows, cols)`` on the grid of class ``res``.

        The bands are read concurrently and converted straight into the stack (no intermediate copies);
        values equal ``np.stack([self.reflectance(b, res, level) for b in bands])``.
        """
        dns = self.read_dn(bands, res, level, grid)
        out = np.empty((len(bands), *dns[0].shape), dtype=np.float32)
        for k, band in enumerate(bands):
            self._to_reflectance(band, level, dns[k], out[k])
            dns[k] = np.empty(0, dtype=np.uint16)  # release each DN array as soon as it is converted
        return out

    def _to_reflectance(self, band: str, level: str, dn: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        info = self.band_info(band, level)
        refl = dn_to_reflectance(dn, info.scale, info.offset)
        if out is None:
            return refl
        out[...] = refl
        return out

    def dump(self) -> bytes:
        """Canonical JSON bytes."""
        return (json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True) + "\n").encode()


def _resample_dn(dn: np.ndarray, k: int) -> np.ndarray:
    """``k`` > 1: valid-DN block mean of k×k blocks; ``k`` < -1: each pixel repeated |k|×|k| times; else as is."""
    if k > 1:
        return block_mean_dn(dn, k)
    if k < -1:
        return np.repeat(np.repeat(dn, -k, axis=0), -k, axis=1)
    return dn


def load_scene(href: str) -> Scene:
    """Read a scene manifest from any href; a missing or invalid one is an ``InvalidInputError``."""
    try:
        data: dict[str, Any] = json.loads(read_uri(href, side="output"))
        return Scene.model_validate(data)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"scene manifest not found: {href}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"invalid scene manifest {href}: {exc}") from exc
