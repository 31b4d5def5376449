"""The offset rule and its deciding source for every real item in tests/data/real (table test).

Expected values were written by hand from each file and ``../shared/real/README.md`` ("Radiometric offset:
what these files show"): Earth Search v1 29RKH states scale 1e-4 / offset 0 with
``earthsearch:boa_offset_applied: false`` (PB 02.14); the Oct-2022 v1 items 52HGH/5CNL state offset −0.1 and
no flag (PB 04.00); the stactools L1C T46RER states offset 0 (PB 03.01); Planetary Computer, Earth Search v0
and EOPF items state no scale/offset, so the baseline decides (from ``s2:processing_baseline`` or the product
id: N0212 → 02.12, N0511 → 05.11 with −1000 DN).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.errors import InvalidInputError
from steps.sentinel2.items import S2Item, parse_items
from steps.sentinel2.metadata import parse_product_metadata
from steps.sentinel2.radiometry import resolve_radiometry

REAL = Path(__file__).parent / "data" / "real"
ITEM = "item raster:bands (earthsearch:boa_offset_applied={})"
PB = "processing baseline {} rule"

# (file relative to tests/data/real, item id) -> (level, baseline, deciding source, offset of B04)
TABLE: dict[tuple[str, str], tuple[str, str, str, float]] = {
    ("rio-tiler-pds/S2A_29RKH_20200219_0_L2A/S2A_29RKH_20200219_0_L2A.json", "S2A_29RKH_20200219_0_L2A"):
        ("L2A", "02.14", ITEM.format("false"), 0.0),
    ("rio-tiler-pds/S2A_31NBJ_20190524_0_L2A/S2A_31NBJ_20190524_0_L2A.json", "S2A_31NBJ_20190524_0_L2A"):
        ("L2A", "02.12", PB.format("02.12"), 0.0),
    ("stac-items/EOPF-Explorer+data-pipeline/S2A_MSIL2A_20250831T103701_N0511_R008_T31TFL_20250831T145420.json",
     "S2A_MSIL2A_20250831T103701_N0511_R008_T31TFL_20250831T145420"): ("L2A", "05.11", PB.format("05.11"), -0.1),
    ("stac-items/developmentseed+titiler/item.json", "S2A_34SGA_20200318_0_L2A"):
        ("L2A", "02.14", PB.format("02.14"), 0.0),
    ("stac-items/opendatacube+odc-stac/S2A_28QCH_20200714_0_L2A.json", "S2A_28QCH_20200714_0_L2A"):
        ("L2A", "02.14", PB.format("02.14"), 0.0),
    ("stac-items/opendatacube+odc-stac/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json",
     "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531"): ("L2A", "02.12", PB.format("02.12"), 0.0),
    ("stac-items/opendatacube+odc-stac/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json",
     "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531"): ("L2A", "02.12", PB.format("02.12"), 0.0),
    ("stac-items/stac-utils+pystac/example-sentinel2.json", "S2A_MSIL1C_20210908T042701_R133_T46RER_20210908T070248"):
        ("L1C", "03.01", ITEM.format("absent"), 0.0),
    ("stac-items/stac-utils+pystac/raster-sentinel2-example.json", "S2B_33SVB_20210221_0_L2A"):
        ("L2A", "02.14", PB.format("02.14"), 0.0),
    ("stac-items/stac-utils+stac-task/sentinel2-l2a-j2k-payload.json", "S2A_52HGH_20221007_0_L2A"):
        ("L2A", "04.00", ITEM.format("absent"), -0.1),
    ("stac-items/stac-utils+stac-task/sentinel2-l2a-j2k-payload.json", "S2B_5CNL_20221009_0_L2A"):
        ("L2A", "04.00", ITEM.format("absent"), -0.1),
}
# the two Planetary Computer item collections: every item PB 02.12 (s2:processing_baseline), no scale/offset
COLLECTIONS = {"stac-items/opendatacube+odc-stac/site1-20200606-tall-strip-africa.geojson": 9,
               "stac-items/opendatacube+odc-stac/site2-2020_jun_jul-35MNM.geojson": 13}


def decide(it: S2Item, product: object = None):
    """The pipeline's decision for B04/B08 of one item (what ingest calls)."""
    so = {b: (a.scale, a.offset) for b in ("B04", "B08") for a in [it.bands[b]]
          if a.scale is not None and a.offset is not None}
    return resolve_radiometry(("B04", "B08"), level=it.level, item_scale_offset=so if len(so) == 2 else None,
                              boa_offset_applied=it.boa_offset_applied, product=product,  # type: ignore[arg-type]
                              baseline=it.processing_baseline, what=it.id)


def _items(rel: str) -> list[S2Item]:
    path = REAL / rel
    return parse_items(json.loads(path.read_text()), str(path))


@pytest.mark.parametrize(("rel", "item_id"), sorted(TABLE))
def test_offset_rule_and_deciding_source_per_real_item(rel: str, item_id: str) -> None:
    level, baseline, source, offset = TABLE[(rel, item_id)]
    (it,) = [i for i in _items(rel) if i.id == item_id]
    assert (it.level, it.processing_baseline) == (level, baseline)
    r = decide(it)
    assert r.source == source
    assert r.offset["B04"] == pytest.approx(offset, abs=1e-12) and r.offset["B08"] == pytest.approx(offset, abs=1e-12)
    assert r.scale["B04"] == pytest.approx(1e-4)


@pytest.mark.parametrize("rel", sorted(COLLECTIONS))
def test_planetary_computer_collections_are_decided_by_the_baseline(rel: str) -> None:
    items = _items(rel)
    assert len(items) == COLLECTIONS[rel]
    for it in items:
        r = decide(it)
        assert (it.processing_baseline, r.source, r.offset["B04"]) == ("02.12", PB.format("02.12"), 0.0)


def test_every_real_item_is_in_the_table() -> None:
    files = [p for p in (REAL / "stac-items").rglob("*") if p.suffix in (".json", ".geojson")]
    files += list((REAL / "rio-tiler-pds").rglob("S2*_L2A.json"))
    seen = {(p.relative_to(REAL).as_posix(), it.id) for p in files for it in _items(p.relative_to(REAL).as_posix())}
    listed = set(TABLE) | {(rel, it.id) for rel in COLLECTIONS for it in _items(rel)}
    assert seen == listed


def test_stactools_item_agrees_with_its_real_product_xml() -> None:
    """T46RER: the item's scale/offset (1e-4, 0) are checked against the real MTD_MSIL1C.xml (PB 03.01)."""
    (it,) = _items("stac-items/stac-utils+pystac/example-sentinel2.json")
    xml = REAL / "real-metadata" / "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248" / "MTD_MSIL1C.xml"
    r = decide(it, parse_product_metadata(xml.read_bytes(), source=str(xml)))
    assert r.source == ITEM.format("absent") and r.offset["B04"] == 0.0


def test_a_v1_item_whose_flag_contradicts_its_baseline_fails_the_scene() -> None:
    """The known catalogue defect: PB ≥ 04.00, offset 0 and flag false cannot all be true."""
    path = REAL / "rio-tiler-pds/S2A_29RKH_20200219_0_L2A/S2A_29RKH_20200219_0_L2A.json"
    obj = json.loads(path.read_text())
    obj["properties"]["s2:processing_baseline"] = "05.09"
    obj["properties"]["s2:product_uri"] = obj["properties"]["s2:product_uri"].replace("N0214", "N0509")
    obj["properties"]["s2:datatake_id"] = obj["properties"]["s2:datatake_id"].replace("N02.14", "N05.09")
    obj["properties"]["s2:granule_id"] = obj["properties"]["s2:granule_id"].replace("N02.14", "N05.09")
    obj["properties"]["s2:datastrip_id"] = obj["properties"]["s2:datastrip_id"].replace("N02.14", "N05.09")
    (it,) = parse_items(obj, str(path))
    with pytest.raises(InvalidInputError, match="S2A_29RKH_20200219_0_L2A"):
        decide(it)
