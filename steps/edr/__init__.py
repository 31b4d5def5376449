"""OGC API - Environmental Data Retrieval over the raw2ready catalog, served by pygeoapi.

* :mod:`steps.edr.index`    — the catalog's ``index.json``, loaded once per process and reloaded when it changes.
* :mod:`steps.edr.query`    — query parsing: pygeoapi's arguments → a validated ``EDRQuery`` (400 otherwise).
* :mod:`steps.edr.timeq`    — the ``datetime`` query parameter (instants, intervals, open ends).
* :mod:`steps.edr.plan`     — read planning: query + index → a ``ReadPlan`` (items, tiles, pixels, dates).
* :mod:`steps.edr.reader`   — a plan's reads: the time-series store where it can, windowed COG reads otherwise.
* :mod:`steps.edr.coverage` — CoverageJSON building: plan + values → the answer.
* :mod:`steps.edr.provider` — the pygeoapi EDR provider (``position``, ``radius``, ``area``, ``cube``), a thin
  adapter over the four above.
* :mod:`steps.edr.config`   — the pygeoapi configuration and OpenAPI document for a catalog.
* :mod:`steps.edr.app`      — the WSGI application gunicorn runs (pygeoapi behind a strict-input guard).
* :mod:`steps.edr.cli`      — ``raw2ready serve``.

Conventions: queries come in WGS84 longitude/latitude (OGC CRS84); products are stored in the tile's UTM
CRS (the item's ``proj:code``), so query geometries are transformed per item. Values are physical
(stored × scale + offset, see :mod:`steps.products.definitions`); stored no-data (−32768 for NDVI/LAI, which also marks
cloud-masked pixels; 255 for the uint8 assets) becomes ``null``.
"""
