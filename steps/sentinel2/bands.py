"""The Sentinel-2 MSI band table: ESA names, Earth Search v1 asset keys, native resolutions, ESA band ids.

``band_id`` is ESA's index 0..12 used by the ``band_id``/``bandId`` attributes of the product and tile
metadata, in the order B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12. Wavelengths are the
band centres and widths in micrometres (as published on STAC ``eo:bands``).
"""

from __future__ import annotations

from dataclasses import dataclass

from steps.science.cloudmask import S2CLOUDLESS_BANDS  # the model's feature order: a fact of the model

__all__ = [
    "BANDS",
    "BAND_BY_ASSET_KEY",
    "BAND_BY_ID",
    "BAND_NAMES",
    "L1C_BANDS",
    "L2A_BANDS",
    "S2CLOUDLESS_BANDS",
    "Band",
    "normalise_band_name",
]


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


_TABLE = """
B01 coastal  60 0.443  0.027 coastal
B02 blue     10 0.490  0.098 blue
B03 green    10 0.560  0.045 green
B04 red      10 0.665  0.038 red
B05 rededge1 20 0.704  0.019 rededge
B06 rededge2 20 0.740  0.018 rededge
B07 rededge3 20 0.783  0.028 rededge
B08 nir      10 0.842  0.145 nir
B8A nir08    20 0.865  0.033 nir08
B09 nir09    60 0.945  0.026 nir09
B10 cirrus   60 1.3735 0.075 cirrus
B11 swir16   20 1.610  0.143 swir16
B12 swir22   20 2.190  0.242 swir22
"""
"""name, Earth Search v1 asset key, native resolution (m), centre and FWHM (µm), common name; in ESA order, so
that a row's position is its ``band_id``."""


def _band(band_id: int, row: str) -> Band:
    name, key, res, centre, fwhm, common = row.split()
    return Band(name, key, int(res), float(centre), float(fwhm), common, band_id)


BANDS: dict[str, Band] = {b.name: b for b in (_band(i, row) for i, row in enumerate(_TABLE.strip().splitlines()))}
"""The 13 MSI bands in ESA order (B01 … B8A … B12)."""

BAND_NAMES: tuple[str, ...] = tuple(BANDS)
L2A_BANDS: tuple[str, ...] = tuple(b for b in BANDS if b != "B10")  # B10 carries no BOA information
L1C_BANDS: tuple[str, ...] = BAND_NAMES
BAND_BY_ID: dict[int, str] = {b.band_id: b.name for b in BANDS.values()}
BAND_BY_ASSET_KEY: dict[str, str] = {b.asset_key: b.name for b in BANDS.values()}


def normalise_band_name(name: str) -> str | None:
    """ESA band name ("B04", "B8A") for the spellings found in metadata ("B4", "b04", "B8a"); else None."""
    n = name.strip().upper()
    if n == "B8A":
        return "B8A"
    if len(n) >= 2 and n[0] == "B" and n[1:].isdigit():
        cand = f"B{int(n[1:]):02d}"
        return cand if cand in BANDS else None
    return None
