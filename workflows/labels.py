"""What an operator sees in the Argo UI and in ``kubectl``/``argo list``: Workflow labels and name prefixes.

Kubernetes label values are at most 63 characters of ``[A-Za-z0-9_.-]``, beginning and ending with an
alphanumeric (or empty). Work-order parameters are not: ``tiles`` is a comma-separated list (``47PPR,47PQR``)
that can name every Thai tile (98 × 6 characters). So each label has an **encoding**, defined twice, once
as a Python function (used by ``raw2ready submit`` and the tests) and once as the expr-lang expression that
the Argo controller evaluates from ``spec.workflowMetadata.labelsFrom`` of the WorkflowTemplate (so that UI,
``argo submit``, Sensor and ``raw2ready submit`` Workflows all get the same labels):

* ``raw2ready/tiles`` — the tile ids upper-cased and joined with ``_`` (``47PPR_47PQR``); when that is longer
  than 63 characters, the first 8 tiles and the count of the others (``47NMH_…_47NPG_and90more``);
* ``raw2ready/start``, ``raw2ready/end`` — the dates as typed (``2024-01-31``), stripped of anything a label
  cannot hold;
* ``raw2ready/scene`` — the scene id (``S2B_47PPR_20240115T035029``) of a lone ``raw2ready-scene`` run;
* ``raw2ready/step`` — on every step pod, the step name.

Every encoding ends by keeping only label characters, cutting to 63 and trimming separators from both ends,
so the result is a valid label value for *any* input: a typo in the submit form fails in the ``scenes`` step
with its own message, never as a Workflow rejected for an invalid label. The expressions use only
expr-lang builtins (``upper``, ``split``, ``filter``, ``join``, ``len``, ``string``, slices, ``let``) and the
Sprig functions Argo exposes as ``sprig.*`` (``regexReplaceAll``, ``trunc``, ``trimAll``), which Argo
Workflows v4.1 (expr-lang v1.17, Sprig v3) provides; only a cluster evaluates them.
"""

from __future__ import annotations

import re
from datetime import date

LABEL_TILES = "raw2ready/tiles"
LABEL_START = "raw2ready/start"
LABEL_END = "raw2ready/end"
LABEL_SCENE = "raw2ready/scene"
LABEL_STEP = "raw2ready/step"
LABEL_SUBMITTED_BY = "raw2ready/submitted-by"

MAX_LABEL = 63
"""Kubernetes' limit on a label value (and on a Workflow name, which Argo copies into pod labels)."""
TILES_SHOWN = 8
"""Tiles named in a ``raw2ready/tiles`` value that would not fit whole (8 × 6 − 1 = 47 characters)."""
GENERATED_SUFFIX = 5
"""Random characters Kubernetes appends to a ``generateName``."""

_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def is_valid_label_value(value: str) -> bool:
    """True if ``value`` is a valid Kubernetes label value (≤ 63 characters, the allowed alphabet)."""
    return len(value) <= MAX_LABEL and _LABEL_VALUE.fullmatch(value) is not None


def _finish(value: str) -> str:
    """Keep label characters, cut to 63, trim separators at both ends (mirrors :func:`_finish_expr`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "", value)[:MAX_LABEL].strip("_.-")


def _finish_expr(expr: str) -> str:
    return f"sprig.trimAll('_.-', sprig.trunc({MAX_LABEL}, sprig.regexReplaceAll('[^A-Za-z0-9_.-]+', {expr}, '')))"


def label_value(text: str) -> str:
    """A free-text parameter (a date, a scene id) as a label value: only what a label can hold."""
    return _finish(text)


def label_value_expr(ref: str) -> str:
    """The expr-lang expression of :func:`label_value` over ``ref`` (e.g. ``workflow.parameters.start``)."""
    return _finish_expr(ref)


def tiles_label(tiles: str) -> str:
    """``raw2ready/tiles`` of a tile list: ``47PPR,47PQR`` → ``47PPR_47PQR``; long lists keep 8 tiles + a count."""
    t = [x for x in re.split(r"[^A-Z0-9]+", tiles.upper()) if x]
    joined = "_".join(t)
    value = joined if len(joined) <= MAX_LABEL else "_".join(t[:TILES_SHOWN]) + f"_and{len(t) - TILES_SHOWN}more"
    return _finish(value)


def tiles_label_expr(ref: str) -> str:
    """The expr-lang expression of :func:`tiles_label` over ``ref`` (``workflow.parameters.tiles``)."""
    return ("let t = filter(split(sprig.regexReplaceAll('[^A-Z0-9]+', upper(" + ref + "), ','), ','), # != ''); "
            "let j = join(t, '_'); "
            + _finish_expr(f"len(j) <= {MAX_LABEL} ? j : join(t[:{TILES_SHOWN}], '_') + '_and' + "
                           f"string(len(t) - {TILES_SHOWN}) + 'more'"))


def workflow_name_prefix(tiles: str, start: date, end: date, base: str = "raw2ready") -> str:
    """``generateName`` of a submitted Workflow: ``raw2ready-47ppr-20240101-20240131-``.

    Lower-case DNS label characters only, and short enough that the generated name (prefix + 5 random
    characters) stays within 63 characters, because Argo copies it into the pods' labels.
    """
    dates = f"-{start:%Y%m%d}-{end:%Y%m%d}-"
    room = MAX_LABEL - GENERATED_SUFFIX - len(base) - 1 - len(dates)
    slug = tiles_label(tiles).lower().replace("_", "-")[:room].strip("-")
    return f"{base}-{slug}{dates}" if slug else f"{base}{dates}"
