"""Sentinel-2 radiometry: ONE rule deciding ``reflectance = DN·scale + offset`` per band, and recording why.

Background (``SCIENCE_NOTES.md`` §7): from processing baseline (PB) 04.00 on, ESA's L1C/L2A DNs carry an
additive offset (``RADIO_ADD_OFFSET``/``BOA_ADD_OFFSET``, −1000 DN for every band so far) listed in the
product metadata; before 04.00 there is no offset. So ``ρ = (DN + ADD_OFFSET_b) / QUANTIFICATION``; DN 0 is
no data in every case. The offset is decided by metadata, never by acquisition date (Collection-1
reprocessing gives old acquisitions PB ≥ 05.00).

Three sources can state the rule, in this order of precedence:

1. **item** — the STAC item's ``raster:bands`` ``scale``/``offset`` (reflectance units), read together
   with ``earthsearch:boa_offset_applied`` (true: the provider already removed the offset from the DN, so
   it must never be applied a second time).
2. **product** — the product XML (``MTD_MSIL2A.xml``/``MTD_MSIL1C.xml``): ``*_QUANTIFICATION_VALUE`` and the
   per-band ``*_ADD_OFFSET`` list (absent before PB 04.00).
3. **baseline** — the processing baseline alone: PB ≥ 04.00 → scale 1e-4, offset −0.1 (−1000 DN);
   PB < 04.00 → scale 1e-4, offset 0.

The highest available source decides; **it is checked against the next available lower source** (the
product XML is itself checked against its own baseline), and
a contradiction fails the scene (:class:`~steps.errors.InvalidInputError` naming ``what`` and both claims)
instead of guessing — catalogues are known to carry wrong flags (Element84/earth-search #66, #71).
"Offset" below is in reflectance units (−0.1 = −1000 DN at quantification 10000); "PB" is the baseline
argument or, if absent, the product's ``PROCESSING_BASELINE`` (both given and different → error).

Decision table ("flag" = ``earthsearch:boa_offset_applied``; *real* = occurs in ``shared/real/``):

==  ==============================  =====================  =======  ===============================================
#   item scale / offset, flag       product XML            PB       result: ``source`` (or the error)
==  ==============================  =====================  =======  ===============================================
1   1e-4 / 0, false (*real* ES v1   —                      02.14    "item raster:bands
    29RKH)                                                          (earthsearch:boa_offset_applied=false)"
2   1e-4 / −0.1, absent (*real*     —                      04.00    "item raster:bands
    ES v1 Oct 2022 52HGH, 5CNL)                                     (earthsearch:boa_offset_applied=absent)"
3   1e-4 / 0, absent (*real*        no offset list         03.01    item raster:bands (…=absent)
    stactools T46RER)               (*real* T46RER XML)
4   1e-4 / 0, true                  —  or with offsets     ≥ 04.00  item raster:bands (…=true); offset 0 (in DN)
5   1e-4 / −0.1, true               any                    any      ERROR flag says applied, offset still listed
6   1e-4 / 0, false or absent       — or no offset list    ≥ 04.00  ERROR PB needs −1000 DN (the known wrong flag)
7   1e-4 / 0, false or absent       offsets −1000          ≥ 04.00  ERROR item ≠ product
8   1e-4 / −0.1, false or absent    no offset list / —     < 04.00  ERROR item ≠ product / PB rule
9   scale ≠ 1/QUANTIFICATION        given                  any      ERROR item scale ≠ product
10  none (*real* PC, ES v0, EOPF)   given                  = XML    "product metadata BOA_ADD_OFFSET"
                                                                    (or "… RADIO_ADD_OFFSET" / "… (no offset list)")
11  none, flag true                 given                  any      "product metadata quantification
                                                                    (earthsearch:boa_offset_applied=true)", offset 0
12  none (*real* PC, v0, EOPF ids)  —                      known    "processing baseline NN.NN rule"
13  none                            —                      unknown  ERROR nothing decides
14  any                             offsets present iff    —        ERROR product contradicts its own baseline
                                    PB ≥ 04.00 broken
15  any                             PB 05.09               "02.12"  ERROR baseline argument ≠ PROCESSING_BASELINE
==  ==============================  =====================  =======  ===============================================

The item is checked against the product XML when one is given, else against the baseline rule. If the
product's offsets/quantification differ from −1000/10000 the product wins (logged): ESA's file is the
authority, the baseline rule only a fallback.

A ``flag true`` with PB < 04.00 is accepted (there was no offset to remove; offset 0 either way) and noted
in ``detail``. ``flag false`` without item scale/offset only confirms "raw DN" and changes nothing.

:func:`to_reflectance` applies a decision to DN arrays: DN 0 → NaN (no data); reflectance < 0 after the
offset is **invalid** (NaN) and counted, never clipped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from steps.errors import InvalidInputError
from steps.science.radiometry import dn_to_reflectance, mask_negative
from steps.sentinel2.bands import BANDS
from steps.sentinel2.metadata import OFFSET_BASELINE, ProductMetadata, baseline_key

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_QUANTIFICATION", "Radiometry", "resolve_radiometry", "to_reflectance"]

DEFAULT_QUANTIFICATION = 10000.0
"""ESA's quantification value for L1C and L2A reflectance (all baselines so far)."""
BASELINE_OFFSET_DN = -1000.0
"""The add-offset of every band from PB 04.00 on (ESA, OPT-MPC, forum.step.esa.int/t/35431)."""

_REL = 1e-6
_ABS = 1e-9


@dataclass(frozen=True)
class Radiometry:
    """The decided rule: ``reflectance = DN·scale[band] + offset[band]`` (unitless), DN 0 = no data.

    ``source`` is a short stable label of the deciding source (recorded in derived items), ``baseline``
    the processing baseline used in the checks (or None), ``detail`` a sentence on what was checked.
    """

    scale: dict[str, float]
    offset: dict[str, float]
    source: str
    baseline: str | None
    detail: str = ""
    checked: tuple[str, ...] = field(default_factory=tuple)

    def offset_dn(self, band: str) -> float:
        """The offset in DN units (−1000.0 for PB ≥ 04.00 raw DN), i.e. ``offset/scale``."""
        return self.offset[band] / self.scale[band]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL, abs_tol=_ABS)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _claims(bands: Sequence[str], scale: Mapping[str, float], offset: Mapping[str, float]) -> tuple[str, str]:
    """A compact 'scale …, offset …' string (one value when all bands agree)."""
    sv = {_fmt(scale[b]) for b in bands}
    ov = {_fmt(offset[b]) for b in bands}
    s = next(iter(sv)) if len(sv) == 1 else ", ".join(f"{b}={_fmt(scale[b])}" for b in bands)
    o = next(iter(ov)) if len(ov) == 1 else ", ".join(f"{b}={_fmt(offset[b])}" for b in bands)
    return s, o


def _mismatch(
    bands: Sequence[str],
    a: tuple[Mapping[str, float], Mapping[str, float]],
    b: tuple[Mapping[str, float], Mapping[str, float]],
) -> list[str]:
    return [x for x in bands if not (_close(a[0][x], b[0][x]) and _close(a[1][x], b[1][x]))]


def resolve_radiometry(
    bands: Sequence[str],
    *,
    level: str,
    item_scale_offset: Mapping[str, tuple[float, float]] | None,
    boa_offset_applied: bool | None,
    product: ProductMetadata | None,
    baseline: str | None,
    what: str,
) -> Radiometry:
    """Decide scale and offset per band by the rule of the module docstring (item → product → baseline).

    Args:
        bands: ESA band names (``"B04"``, ``"B8A"``) to decide for.
        level: ``"L2A"`` or ``"L1C"``.
        item_scale_offset: per band ``(scale, offset)`` from the item's ``raster:bands`` (reflectance =
            DN·scale + offset), or None when the item has none. Must cover all ``bands`` when given.
        boa_offset_applied: ``earthsearch:boa_offset_applied`` (None when the item lacks it).
        product: the parsed product XML, if available.
        baseline: processing baseline ("05.09") from the item or product id, if known.
        what: the item / scene id used in error messages.

    Returns:
        :class:`Radiometry` with ``scale``/``offset`` for every band in ``bands``.

    Raises:
        InvalidInputError: the sources contradict each other (message names ``what`` and both claims),
            nothing decides, a band is unknown, or the inputs are malformed.
    """
    if level not in ("L2A", "L1C"):
        raise InvalidInputError(f"{what}: unknown processing level {level!r} (expected L2A or L1C)")
    bands = list(dict.fromkeys(bands))
    unknown = [b for b in bands if b not in BANDS]
    if unknown or not bands:
        raise InvalidInputError(f"{what}: no or unknown Sentinel-2 bands {unknown or bands} for radiometry")
    otag = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    flag_txt = {True: "true", False: "false", None: "absent"}[boa_offset_applied]
    checked: list[str] = []

    # ---- the processing baseline --------------------------------------------------------------------
    pb = baseline.strip() if baseline else None
    if pb is not None:
        baseline_key(pb)
    if product is not None:
        if product.level != level:
            raise InvalidInputError(f"{what}: product metadata is {product.level} but the scene is {level}")
        ppb = product.processing_baseline
        if pb is not None and baseline_key(pb) != baseline_key(ppb):
            raise InvalidInputError(
                f"{what}: processing baseline {pb} (item/product id) contradicts PROCESSING_BASELINE {ppb} "
                f"of {product.source or 'the product metadata'}"
            )
        pb = ppb
    with_offset = None if pb is None else baseline_key(pb) >= baseline_key(OFFSET_BASELINE)

    # ---- claims of the lower sources ---------------------------------------------------------------
    rule: tuple[dict[str, float], dict[str, float]] | None = None
    if pb is not None:
        off = BASELINE_OFFSET_DN / DEFAULT_QUANTIFICATION if with_offset else 0.0
        rule = (dict.fromkeys(bands, 1.0 / DEFAULT_QUANTIFICATION), dict.fromkeys(bands, off))

    prod: tuple[dict[str, float], dict[str, float]] | None = None
    if product is not None:
        q = product.quantification
        offs = product.add_offsets
        if bool(offs) != bool(with_offset):
            raise InvalidInputError(
                f"{what}: {product.source or 'product metadata'} "
                f"{'lists' if offs else 'lists no'} {otag} but its processing baseline {pb} "
                f"{'requires' if with_offset else 'has no'} offsets (ESA adds them from {OFFSET_BASELINE} on)"
            )
        missing = [b for b in bands if offs and b not in offs]
        if missing:
            raise InvalidInputError(f"{what}: {product.source or 'product metadata'} lists no {otag} for {missing}")
        prod = (dict.fromkeys(bands, 1.0 / q), {b: offs.get(b, 0.0) / q for b in bands})
        if rule is not None and _mismatch(bands, prod, rule):
            # the values differ from −1000/10000 — ESA may change them; the product file is the authority
            logger.warning("%s: product radiometry differs from the baseline %s rule; using the product's", what, pb)
        checked.append(f"product {otag}" if offs else "product (no offset list)")

    # ---- 1. the item ---------------------------------------------------------------------------------
    if item_scale_offset is not None and any(b in item_scale_offset for b in bands):
        lacking = [b for b in bands if b not in item_scale_offset]
        if lacking:
            raise InvalidInputError(f"{what}: raster:bands scale/offset given for some bands but not for {lacking}")
        iscale = {b: float(item_scale_offset[b][0]) for b in bands}
        ioff = {b: float(item_scale_offset[b][1]) for b in bands}
        bad = [b for b in bands if not (math.isfinite(iscale[b]) and iscale[b] > 0 and math.isfinite(ioff[b]))]
        if bad:
            raise InvalidInputError(f"{what}: raster:bands scale/offset not usable for {bad}")
        s_txt, o_txt = _claims(bands, iscale, ioff)
        item_claim = f"raster:bands scale {s_txt} offset {o_txt} with earthsearch:boa_offset_applied={flag_txt}"
        label = f"item raster:bands (earthsearch:boa_offset_applied={flag_txt})"
        if boa_offset_applied is True:
            nz = [b for b in bands if not _close(ioff[b], 0.0)]
            if nz:
                raise InvalidInputError(
                    f"{what}: earthsearch:boa_offset_applied=true says the offset is already in the DN, but "
                    f"raster:bands still gives offset {o_txt} (applying it would subtract it twice)"
                )
            note = "offset already applied by the provider (flag true)"
            if with_offset is False:
                note += f"; PB {pb} < {OFFSET_BASELINE} has no offset, so the flag changes nothing"
        else:
            note = "raw DN"
        # the item is checked against the product XML when there is one, else against the baseline rule
        lower_name, lower = ("product", prod) if prod is not None else ("baseline", rule)
        if lower is not None:
            claim = (lower[0], dict.fromkeys(bands, 0.0)) if boa_offset_applied is True else lower
            bad = _mismatch(bands, (iscale, ioff), claim)
            if bad:
                cs, co = _claims(bands, *claim)
                if lower_name == "product" and product is not None:
                    other = (
                        f"{product.source or 'the product metadata'} ({otag} "
                        f"{'present' if product.add_offsets else 'absent'}, PB {pb}, quantification "
                        f"{_fmt(product.quantification)}), which gives scale {cs} offset {co}"
                    )
                else:
                    other = (
                        f"processing baseline {pb}, which implies scale {cs} offset {co} "
                        + ("(−1000 DN)" if with_offset else "(no offset)")
                    )
                if boa_offset_applied is True:
                    other += " once the provider's offset removal is taken into account"
                raise InvalidInputError(f"{what}: item {item_claim} contradicts {other}; bands {bad}")
            checked.append(lower_name)
        offset_final = dict.fromkeys(bands, 0.0) if boa_offset_applied is True else ioff
        return Radiometry(
            scale=iscale,
            offset=offset_final,
            source=label,
            baseline=pb,
            detail=f"{item_claim}; {note}; checked against: {', '.join(dict.fromkeys(checked)) or 'nothing else'}",
            checked=tuple(dict.fromkeys(checked)),
        )

    # ---- 2. the product XML ----------------------------------------------------------------------------
    if prod is not None and product is not None:
        if boa_offset_applied is True:
            return Radiometry(
                scale=prod[0],
                offset=dict.fromkeys(bands, 0.0),
                source="product metadata quantification (earthsearch:boa_offset_applied=true)",
                baseline=pb,
                detail=f"quantification {_fmt(product.quantification)}; the item says the offset is already in the DN",
                checked=tuple(checked),
            )
        label = f"product metadata {otag}" if product.add_offsets else "product metadata (no offset list)"
        s_txt, o_txt = _claims(bands, *prod)
        return Radiometry(
            scale=prod[0],
            offset=prod[1],
            source=label,
            baseline=pb,
            detail=f"{product.source or 'product metadata'}: scale {s_txt} offset {o_txt} (PB {pb})",
            checked=tuple(checked),
        )

    # ---- 3. the baseline rule ----------------------------------------------------------------------------
    if rule is not None:
        off_final = dict.fromkeys(bands, 0.0) if boa_offset_applied is True else rule[1]
        return Radiometry(
            scale=rule[0],
            offset=off_final,
            source=f"processing baseline {pb} rule",
            baseline=pb,
            detail=(
                f"PB {pb} {'≥' if with_offset else '<'} {OFFSET_BASELINE}: "
                f"{'offset −1000 DN' if with_offset else 'no offset'}, quantification 10000"
                + ("; earthsearch:boa_offset_applied=true: offset already in the DN" if boa_offset_applied else "")
            ),
            checked=tuple(checked),
        )
    raise InvalidInputError(
        f"{what}: cannot decide the radiometric offset: no raster:bands scale/offset, no product metadata "
        "and no processing baseline"
    )


def to_reflectance(dn: np.ndarray, scale: float, offset: float) -> tuple[np.ndarray, int]:
    """Reflectance from DN: ``DN·scale + offset`` as float32; DN 0 → NaN; negative results → NaN, counted.

    Negative reflectance after the offset (DN below −offset/scale, e.g. DN < 1000 at PB ≥ 04.00) is invalid
    for raw2ready's products: it is masked (NaN), never clipped, and its pixel count returned so that the
    item can record it. The test is done in the DN domain (``DN + offset/scale < 0``) so that DN exactly at
    the offset gives reflectance 0, not a rounding-negative.

    Args:
        dn: integer (or float) DN array; 0 = no data. NaN input is treated as no data.
        scale: reflectance per DN (> 0), e.g. 1e-4.
        offset: reflectance offset, e.g. −0.1.

    Returns:
        ``(reflectance float32 array of dn's shape, number of negative (masked) pixels)``.

    Raises:
        ValueError: scale is not a positive finite number or offset is not finite.
    """
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(offset)):
        raise ValueError(f"bad radiometric scale/offset {scale}/{offset}")
    # the pipeline's own conversion and negative rule (steps.science.radiometry), applied to a decision
    out = dn_to_reflectance(np.asarray(dn), scale, offset)
    return out, int(np.count_nonzero(mask_negative(out)))
