"""The one radiometry rule (steps.sentinel2.radiometry): decision table over the real combinations and the
contradictions, plus hand-computed reflectance pixels."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from steps.errors import InvalidInputError
from steps.sentinel2.metadata import ProductMetadata, parse_product_metadata
from steps.sentinel2.radiometry import resolve_radiometry, to_reflectance

REAL = Path(__file__).parent / "data" / "real"
P_T29UNU = (REAL / "safe-layout-T29UNU" / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
            / "MTD_MSIL2A.xml")
P_T01KAB = REAL / "real-metadata" / "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825" / "MTD_MSIL2A.xml"
P_T01CCV = REAL / "real-metadata" / "S2B_MSIL2A_20191228T210519_N0212_R071_T01CCV_20201003T104658" / "MTD_MSIL2A.xml"
P_T46RER = REAL / "real-metadata" / "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248" / "MTD_MSIL1C.xml"

BANDS = ["B04", "B08", "B8A"]


def _p(path: Path) -> ProductMetadata:
    return parse_product_metadata(path.read_bytes(), source=path.name)


def _item(scale: float, offset: float) -> dict[str, tuple[float, float]]:
    return dict.fromkeys(BANDS, (scale, offset))


def _resolve(**kw):
    args = {"level": "L2A", "item_scale_offset": None, "boa_offset_applied": None, "product": None,
            "baseline": None, "what": "ITEM-X"}
    args.update(kw)
    return resolve_radiometry(BANDS, **args)


# ---- the combinations present in the real material --------------------------------------------------


def test_earth_search_v1_29rkh_pb0214_flag_false() -> None:
    r = _resolve(item_scale_offset=_item(0.0001, 0.0), boa_offset_applied=False, baseline="02.14")
    assert r.source == "item raster:bands (earthsearch:boa_offset_applied=false)"
    assert r.scale == dict.fromkeys(BANDS, 0.0001) and r.offset == dict.fromkeys(BANDS, 0.0)
    assert r.baseline == "02.14"
    assert "baseline" in r.checked


def test_earth_search_oct2022_variant_pb0400_offset_no_flag() -> None:
    r = _resolve(item_scale_offset=_item(0.0001, -0.1), boa_offset_applied=None, baseline="04.00")
    assert r.source == "item raster:bands (earthsearch:boa_offset_applied=absent)"
    assert r.offset == dict.fromkeys(BANDS, -0.1)
    assert r.offset_dn("B04") == pytest.approx(-1000.0)


def test_stactools_t46rer_pb0301_offset0_with_its_product_xml() -> None:
    r = _resolve(level="L1C", item_scale_offset=_item(0.0001, 0.0), product=_p(P_T46RER), baseline="03.01")
    assert r.source == "item raster:bands (earthsearch:boa_offset_applied=absent)"
    assert r.offset == dict.fromkeys(BANDS, 0.0)
    assert r.checked == ("product (no offset list)", "product")


@pytest.mark.parametrize(
    ("path", "baseline", "source", "offset"),
    [
        (P_T29UNU, None, "product metadata BOA_ADD_OFFSET", -0.1),
        (P_T01KAB, "05.09", "product metadata BOA_ADD_OFFSET", -0.1),
        (P_T01CCV, "02.12", "product metadata (no offset list)", 0.0),
    ],
)
def test_no_item_values_product_xml_decides(path: Path, baseline: str | None, source: str, offset: float) -> None:
    """PC / Earth Search v0 / EOPF items carry no scale/offset: the product XML decides when given."""
    r = _resolve(product=_p(path), baseline=baseline)
    assert r.source == source
    assert r.scale == dict.fromkeys(BANDS, 1e-4)
    assert r.offset == pytest.approx(dict.fromkeys(BANDS, offset))


def test_l1c_product_label() -> None:
    r = _resolve(level="L1C", product=_p(P_T46RER))
    assert r.source == "product metadata (no offset list)"
    assert r.offset == dict.fromkeys(BANDS, 0.0)


@pytest.mark.parametrize(("pb", "offset"), [("02.12", 0.0), ("02.14", 0.0), ("03.01", 0.0), ("04.00", -0.1),
                                            ("05.09", -0.1), ("05.11", -0.1)])
def test_no_item_values_no_product_baseline_rule(pb: str, offset: float) -> None:
    """PC (s2:processing_baseline), Earth Search v0 (N0212 in the id) and EOPF (N0511 in the id)."""
    r = _resolve(baseline=pb)
    assert r.source == f"processing baseline {pb} rule"
    assert r.offset == dict.fromkeys(BANDS, offset)
    assert r.scale == dict.fromkeys(BANDS, 1e-4)


def test_flag_true_means_offset_already_in_dn() -> None:
    r = _resolve(item_scale_offset=_item(0.0001, 0.0), boa_offset_applied=True, baseline="05.09")
    assert r.source == "item raster:bands (earthsearch:boa_offset_applied=true)"
    assert r.offset == dict.fromkeys(BANDS, 0.0)
    # the same with the product XML (which lists −1000): never applied twice
    r2 = _resolve(item_scale_offset=_item(0.0001, 0.0), boa_offset_applied=True, product=_p(P_T01KAB))
    assert r2.offset == dict.fromkeys(BANDS, 0.0) and "product" in r2.checked
    # no item values, flag true, product XML: quantification only
    r3 = _resolve(boa_offset_applied=True, product=_p(P_T01KAB))
    assert r3.offset == dict.fromkeys(BANDS, 0.0) and r3.scale == dict.fromkeys(BANDS, 1e-4)
    assert "boa_offset_applied=true" in r3.source
    r4 = _resolve(boa_offset_applied=True, baseline="04.00")
    assert r4.offset == dict.fromkeys(BANDS, 0.0)
    # flag true with PB < 04.00: nothing to remove, accepted and noted
    r5 = _resolve(item_scale_offset=_item(0.0001, 0.0), boa_offset_applied=True, baseline="02.14")
    assert r5.offset == dict.fromkeys(BANDS, 0.0) and "changes nothing" in r5.detail


def test_item_only_without_anything_to_check() -> None:
    r = _resolve(item_scale_offset=_item(0.0001, -0.1))
    assert r.offset == dict.fromkeys(BANDS, -0.1) and r.checked == () and r.baseline is None


# ---- contradictions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        # the known wrong-flag case: PB >= 04.00, offset 0, flag false
        ({"item_scale_offset": _item(1e-4, 0.0), "boa_offset_applied": False, "baseline": "04.00"},
         r"ITEM-X: item raster:bands scale 0\.0001 offset 0 with earthsearch:boa_offset_applied=false "
         r"contradicts processing baseline 04\.00, which implies scale 0\.0001 offset -0\.1 \(−1000 DN\)"),
        ({"item_scale_offset": _item(1e-4, 0.0), "boa_offset_applied": None, "product": "T01KAB"},
         r"ITEM-X: item .*offset 0 .*contradicts MTD_MSIL2A\.xml \(BOA_ADD_OFFSET present, PB 05\.09"),
        # item offset −0.1 but the product (PB < 04.00) lists none
        ({"item_scale_offset": _item(1e-4, -0.1), "boa_offset_applied": False, "product": "T01CCV"},
         r"ITEM-X: item .*offset -0\.1 .*contradicts MTD_MSIL2A\.xml \(BOA_ADD_OFFSET absent, PB 02\.12"),
        ({"item_scale_offset": _item(1e-4, -0.1), "baseline": "02.14"},
         r"contradicts processing baseline 02\.14, which implies scale 0\.0001 offset 0 \(no offset\)"),
        # flag true but the item still lists an offset
        ({"item_scale_offset": _item(1e-4, -0.1), "boa_offset_applied": True, "baseline": "05.09"},
         r"ITEM-X: earthsearch:boa_offset_applied=true says the offset is already in the DN, but raster:bands "
         r"still gives offset -0\.1"),
        # item scale ≠ 1/quantification
        ({"item_scale_offset": _item(1e-3, -0.1), "product": "T29UNU"},
         r"ITEM-X: item raster:bands scale 0\.001 offset -0\.1 .*contradicts .*gives scale 0\.0001 offset -0\.1"),
        # item offset ≠ product offset
        ({"item_scale_offset": _item(1e-4, -0.2), "product": "T29UNU"}, r"contradicts MTD_MSIL2A\.xml"),
        # baseline argument ≠ product's PROCESSING_BASELINE
        ({"product": "T01KAB", "baseline": "02.12"},
         r"ITEM-X: processing baseline 02\.12 .*contradicts PROCESSING_BASELINE 05\.09 of MTD_MSIL2A\.xml"),
        # level mismatch
        ({"product": "T46RER"}, r"ITEM-X: product metadata is L1C but the scene is L2A"),
        # nothing decides
        ({}, r"ITEM-X: cannot decide the radiometric offset"),
        ({"item_scale_offset": {"B04": (1e-4, 0.0)}, "baseline": "02.14"},
         r"raster:bands scale/offset given for some bands but not for \['B08', 'B8A'\]"),
        ({"baseline": "4.0"}, r"malformed processing baseline"),
    ],
)
def test_contradictions_fail_with_both_claims(kw: dict, pattern: str) -> None:
    files = {"T01KAB": P_T01KAB, "T01CCV": P_T01CCV, "T29UNU": P_T29UNU, "T46RER": P_T46RER}
    if "product" in kw:
        kw = {**kw, "product": _p(files[kw["product"]])}
    with pytest.raises(InvalidInputError, match=pattern):
        _resolve(**kw)


def test_product_contradicting_its_own_baseline() -> None:
    p = _p(P_T01KAB)
    no_offsets = dataclasses.replace(p, add_offsets={})
    with pytest.raises(InvalidInputError, match=r"lists no BOA_ADD_OFFSET but its processing baseline 05\.09 requires"):
        _resolve(product=no_offsets)
    old = dataclasses.replace(p, processing_baseline="03.00")
    with pytest.raises(InvalidInputError, match=r"lists BOA_ADD_OFFSET but its processing baseline 03\.00 has no"):
        _resolve(product=old)
    partial = dataclasses.replace(p, add_offsets={"B04": -1000.0})
    with pytest.raises(InvalidInputError, match=r"lists no BOA_ADD_OFFSET for \['B08', 'B8A'\]"):
        _resolve(product=partial)


def test_product_values_win_over_the_baseline_rule() -> None:
    """A product with other values than −1000/10000 is the authority (the rule is only a fallback)."""
    p = dataclasses.replace(_p(P_T01KAB), add_offsets=dict.fromkeys(BANDS, -2000.0), quantification=20000.0)
    r = _resolve(product=p)
    assert r.scale == dict.fromkeys(BANDS, 1 / 20000) and r.offset == dict.fromkeys(BANDS, -0.1)
    r2 = _resolve(product=dataclasses.replace(p, quantification=10000.0))
    assert r2.offset == dict.fromkeys(BANDS, -0.2)


# ---- to_reflectance -----------------------------------------------------------------------------------


def test_to_reflectance_pb04_hand_computed() -> None:
    dn = np.array([[0, 1, 999, 1000], [1001, 1500, 11000, 65535]], dtype=np.uint16)
    refl, neg = to_reflectance(dn, 0.0001, -0.1)
    assert refl.dtype == np.float32
    assert neg == 2  # DN 1 and 999 give negative reflectance: masked, counted; DN 0 is no data, not counted
    assert np.isnan(refl[0, :3]).all()
    assert refl[0, 3] == 0.0  # DN exactly at the offset: reflectance 0, valid
    np.testing.assert_allclose(refl[1], [0.0001, 0.05, 1.0, 6.4535], rtol=1e-6)


def test_to_reflectance_pre04_hand_computed() -> None:
    dn = np.array([0, 1, 2500, 10000], dtype=np.uint16)
    refl, neg = to_reflectance(dn, 1e-4, 0.0)
    assert neg == 0
    assert np.isnan(refl[0])
    np.testing.assert_allclose(refl[1:], [0.0001, 0.25, 1.0], rtol=1e-6)


def test_to_reflectance_float_input_and_bad_params() -> None:
    refl, neg = to_reflectance(np.array([np.nan, 0.0, 500.0, 3000.0]), 1e-4, -0.1)
    assert neg == 1 and np.isnan(refl[:3]).all() and refl[3] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="bad radiometric"):
        to_reflectance(np.zeros(2, dtype=np.uint16), 0.0, 0.0)


def test_resolved_rule_applied_to_pixels() -> None:
    """End to end on the real T29UNU product XML: (DN − 1000)/10000."""
    r = _resolve(product=_p(P_T29UNU))
    refl, neg = to_reflectance(np.array([0, 800, 1234], dtype=np.uint16), r.scale["B04"], r.offset["B04"])
    assert neg == 1 and np.isnan(refl[:2]).all() and refl[2] == pytest.approx(0.0234, rel=1e-6)
