"""raw2ready's synthesizer: a seeded, deterministic synthetic Sentinel-2 archive in the real formats.

A tool, not runtime: the pipeline (package ``steps``) never imports it. It renders scenes with a pure numpy
model (:mod:`synthesizer.render`) and writes them the way real data arrives:

* :mod:`synthesizer.esa`: ESA's names and metadata files in the real layout (``MTD_TL.xml``,
  ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml``);
* :mod:`synthesizer.earthsearch`: a static STAC catalog in the Earth Search v1 item shape with COG bands,
  ``granule_metadata``, ``product_metadata`` and ``tileinfo_metadata`` assets;
* :mod:`synthesizer.safe`: ``.SAFE`` folders and CDSE-style zips with lossless JPEG 2000 bands, and SAFE
  products built from real ESA XML with synthetic rasters;
* :mod:`synthesizer.cli`: the ``raw2ready synth`` and ``raw2ready demo`` commands (entry-point plugins).

The same specs, size and seed always give the same bytes.
"""

from __future__ import annotations

from synthesizer.earthsearch import L1C_COLLECTION, L2A_COLLECTION, encode_dn, synthesize_archive, write_scene
from synthesizer.esa import ProductNames, product_metadata_xml, product_names, tile_metadata_xml
from synthesizer.render import (
    OFFSET_DN,
    QUANTIFICATION,
    TRUTH_BUILT,
    TRUTH_CIRRUS,
    TRUTH_CLASSES,
    TRUTH_CLOUD,
    TRUTH_DENSE_VEG,
    TRUTH_NODATA,
    TRUTH_SHADOW,
    TRUTH_SOIL,
    TRUTH_SPARSE_VEG,
    TRUTH_WATER,
    SceneArrays,
    SceneSpec,
    data_footprint_lonlat,
    render_scene,
)
from synthesizer.safe import fill_safe_skeleton, write_safe, zip_safe
from synthesizer.specs import baseline_for_date, demo_specs, specs_for_range

__all__ = [
    "L1C_COLLECTION",
    "L2A_COLLECTION",
    "OFFSET_DN",
    "QUANTIFICATION",
    "TRUTH_BUILT",
    "TRUTH_CIRRUS",
    "TRUTH_CLASSES",
    "TRUTH_CLOUD",
    "TRUTH_DENSE_VEG",
    "TRUTH_NODATA",
    "TRUTH_SHADOW",
    "TRUTH_SOIL",
    "TRUTH_SPARSE_VEG",
    "TRUTH_WATER",
    "ProductNames",
    "SceneArrays",
    "SceneSpec",
    "baseline_for_date",
    "data_footprint_lonlat",
    "demo_specs",
    "encode_dn",
    "fill_safe_skeleton",
    "product_metadata_xml",
    "product_names",
    "render_scene",
    "specs_for_range",
    "synthesize_archive",
    "tile_metadata_xml",
    "write_safe",
    "write_scene",
    "zip_safe",
]
