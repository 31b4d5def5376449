"""OGC API - Environmental Data Retrieval over the raw2ready catalog, served by pygeoapi.

* :mod:`steps.edr.index`    — the catalog's ``index.json``, loaded once per process and reloaded when it changes.
* :mod:`steps.edr.timeq`    — the ``datetime`` query parameter (instants, intervals, open ends).
* :mod:`steps.edr.reader`   — windowed COG reads in a thread pool (GDAL releases the GIL).
* :mod:`steps.edr.provider` — the pygeoapi EDR provider (``position``, ``radius``, ``area``, ``cube``).
* :mod:`steps.edr.config`   — the pygeoapi configuration and OpenAPI document for a catalog.
* :mod:`steps.edr.app`      — the WSGI application gunicorn runs (pygeoapi behind a strict-input guard).
* :mod:`steps.edr.cli`      — ``raw2ready serve``.

Conventions: queries come in WGS84 longitude/latitude (OGC CRS84); products are stored in the tile's UTM
CRS (the item's ``proj:code``), so query geometries are transformed per item. Values are physical
(stored × scale + offset, see :mod:`steps.products.definitions`); stored no-data (−32768 for NDVI/LAI, which also marks
cloud-masked pixels; 255 for the uint8 assets) becomes ``null``.
"""
