"""Sentinel-2 input formats: everything raw2ready knows about how ESA and the catalogues publish the data.

=====================  ===================================================================================
module                 what it reads
=====================  ===================================================================================
``bands``              the 13 MSI bands (ESA order, band ids, native resolutions, common names)
``metadata``           ESA XML where it really lives: ``MTD_TL.xml`` (tile geocoding, sun/view angle grids)
                       and ``MTD_MSIL2A.xml``/``MTD_MSIL1C.xml`` (baseline, spacecraft, quantification,
                       ``BOA_ADD_OFFSET``/``RADIO_ADD_OFFSET``, image file list, cloud statistics)
``radiometry``         the one DN → reflectance rule (item ``raster:bands`` + ``earthsearch:*`` → product
                       XML → processing baseline), contradictions refused, deciding source recorded
``items``              STAC items of every catalogue convention (Earth Search v0/v1/c1, Planetary Computer,
                       Copernicus Data Space, stactools, EOPF), L2A↔L1C pairing, duplicate resolution
``safe``               ``.SAFE`` directories and CDSE ``.zip`` downloads
``product``            one :class:`~steps.sentinel2.product.SourceProduct` view over an item or a SAFE
=====================  ===================================================================================

Nothing here decides by acquisition date, and nothing invents a format: every reader is tested against
the real files in ``tests/data/real/``.
"""

from __future__ import annotations

from steps.sentinel2.bands import (
    BAND_BY_ASSET_KEY,
    BAND_BY_ID,
    BAND_NAMES,
    BANDS,
    L1C_BANDS,
    L2A_BANDS,
    S2CLOUDLESS_BANDS,
    Band,
)

__all__ = ["BANDS", "BAND_BY_ASSET_KEY", "BAND_BY_ID", "BAND_NAMES", "L1C_BANDS", "L2A_BANDS", "S2CLOUDLESS_BANDS",
           "Band"]
