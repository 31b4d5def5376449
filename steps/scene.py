"""The scene manifest: what ``ingest`` resolves once and every later step reads.

It names each band's href and its reflectance conversion (reflectance = DN·scale + offset, DN 0 = no
data), the tile grid, the angle grids and the source identities. It lives at
``<out>/work/<scene_id>/scene.json`` and is deleted with the work folder once the scene is published.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from affine import Affine
from pydantic import BaseModel, ConfigDict, Field

from steps.errors import InvalidInputError
from steps.raster import BandRead, Grid, read_bands
from steps.science.radiometry import dn_to_reflectance
from steps.source import SceneRef
from steps.storage import read_uri


class BandInfo(BaseModel):
    """One band asset and how to turn its DN into reflectance."""

    model_config = ConfigDict(extra="forbid")

    href: str
    resolution: int
    scale: float = Field(description="reflectance per DN (1/quantification)")
    offset: float = Field(description="reflectance offset (add_offset/quantification; 0 before PB 04.00)")


class AngleGrids(BaseModel):
    """Granule-metadata angle grids in degrees; node (i, j) at (ulx + j·step, uly − i·step)."""

    model_config = ConfigDict(extra="forbid")

    step_m: float
    sun_zenith: list[list[float | None]]
    sun_azimuth: list[list[float | None]]
    view_zenith: list[list[float | None]]
    view_azimuth: list[list[float | None]]
    mean_sun_zenith: float
    mean_sun_azimuth: float
    mean_view_zenith: float
    mean_view_azimuth: float

    def array(self, name: str) -> np.ndarray:
        """One grid as float64 (None → NaN)."""
        return np.array(getattr(self, name), dtype=np.float64)


class Scene(SceneRef):
    """Everything later steps need about one scene: its :class:`SceneRef` plus what ingest resolved."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    epsg: int
    ulx: float
    uly: float
    shape_10m: tuple[int, int]
    bands: dict[str, BandInfo]
    scl_href: str
    l1c_bands: dict[str, BandInfo] = Field(default_factory=dict)
    l1c_processing_baseline: str = ""
    angles: AngleGrids
    offsets_source: str = Field(description="where the radiometric offsets came from")
    warnings: list[str] = Field(default_factory=list)

    def grid(self, res: int) -> Grid:
        """The scene's grid at ``res`` metres (10, 20 or 60)."""
        factor = res // 10
        rows, cols = self.shape_10m[0] // factor, self.shape_10m[1] // factor
        return Grid(f"EPSG:{self.epsg}", Affine(float(res), 0.0, self.ulx, 0.0, -float(res), self.uly), (rows, cols))

    def band_info(self, band: str, level: str = "L2A") -> BandInfo:
        """The href and DN→reflectance conversion of one band (``InvalidInputError`` if absent)."""
        info = (self.l1c_bands if level == "L1C" else self.bands).get(band)
        if info is None:
            raise InvalidInputError(f"scene {self.scene_id}: no {level} band {band}")
        return info

    def _band_read(self, band: str, res: int | None, level: str) -> BandRead:
        from rasterio.enums import Resampling

        info = self.band_info(band, level)
        target = self.grid(res or info.resolution)
        resampling = Resampling.nearest if target.res <= info.resolution else Resampling.average
        return BandRead(info.href, target, resampling, f"{self.scene_id} {level} {band}")

    def read_dn(self, bands: Sequence[str], res: int | None = None, level: str = "L2A") -> list[np.ndarray]:
        """Raw DN arrays (as stored, uint16) of ``bands`` on the ``res`` grid, read concurrently.

        Resampling as in :meth:`reflectance`; convert with :func:`steps.science.radiometry.dn_to_reflectance`
        and :meth:`band_info` (scale, offset).
        """
        return read_bands([self._band_read(b, res, level) for b in bands])

    def reflectance(self, band: str, res: int | None = None, level: str = "L2A",
                    out: np.ndarray | None = None) -> np.ndarray:
        """Band ``band`` as float32 reflectance (NaN = no data), optionally resampled to ``res`` metres.

        Upsampling uses nearest neighbour, downsampling the mean of valid pixels (GDAL ``average``
        ignores nodata). ``out``: optional float32 array of the target shape to fill (e.g. one plane of a
        band stack, saving a copy).
        """
        (dn,) = self.read_dn([band], res, level)
        return self._to_reflectance(band, level, dn, out)

    def reflectances(self, bands: Sequence[str], res: int, level: str = "L2A") -> np.ndarray:
        """Bands as one float32 reflectance stack ``(len(bands), rows, cols)`` on the ``res`` grid.

        The bands are read concurrently and converted straight into the stack (no intermediate copies);
        values equal ``np.stack([self.reflectance(b, res, level) for b in bands])``.
        """
        dns = self.read_dn(bands, res, level)
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


def load_scene(href: str) -> Scene:
    """Read a scene manifest from any href; a missing or invalid one is an ``InvalidInputError``."""
    try:
        data: dict[str, Any] = json.loads(read_uri(href))
        return Scene.model_validate(data)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"scene manifest not found: {href}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"invalid scene manifest {href}: {exc}") from exc
