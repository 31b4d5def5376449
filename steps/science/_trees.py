"""Private helpers: parse a LightGBM text model into flat arrays and evaluate it exactly with numpy.

Only what the s2cloudless model needs is supported: numerical splits (no categorical splits), one class,
``binary`` objective. The decision rule is LightGBM's ``Tree::NumericalDecision`` semantics as documented
in its model format: a node's ``decision_type`` packs bit 0 = categorical, bit 1 = default-left, bits 2-3 =
missing type (0 none, 1 zero, 2 NaN). With missing type *none* a NaN feature value is replaced by 0.0 before
the comparison; with *zero* a value in [-1e-35, 1e-35] takes the default direction; with *NaN* a NaN takes
the default direction. Otherwise ``x <= threshold`` goes left. Thresholds are doubles and the input is
compared after conversion to double, so ``float32`` inputs are compared exactly like LightGBM does.
Raw scores are summed in tree order in float64, then ``p = 1 / (1 + exp(-sigmoid * raw))``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_K_ZERO_THRESHOLD = 1e-35
_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2


@dataclass(frozen=True)
class TreeEnsemble:
    """A LightGBM binary model as flat, contiguous arrays (all trees concatenated).

    Node ``k`` (global index) tests ``feature[k]`` against ``threshold[k]``; ``left[k]``/``right[k]`` is a
    global node index when >= 0 and ``-(global leaf index) - 1`` when < 0. ``root[t]`` uses the same
    encoding (a single-leaf tree has a negative root). ``leaf_value`` is the raw-score contribution.
    """

    feature: np.ndarray  # int32 (n_nodes,)
    threshold: np.ndarray  # float64 (n_nodes,)
    left: np.ndarray  # int32 (n_nodes,)
    right: np.ndarray  # int32 (n_nodes,)
    default_left: np.ndarray  # bool (n_nodes,)
    missing_type: np.ndarray  # uint8 (n_nodes,)
    leaf_value: np.ndarray  # float64 (n_leaves,)
    root: np.ndarray  # int32 (n_trees,)
    n_features: int
    sigmoid: float
    path: Path | None = None

    @property
    def n_trees(self) -> int:
        """Number of trees (boosting iterations)."""
        return int(self.root.size)


def _parse_blocks(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    current = header
    for raw in text.splitlines():
        line = raw.strip()
        if line == "end of trees":
            break
        if line.startswith("Tree="):
            current = {}
            trees.append(current)
            continue
        if "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
    return header, trees


def parse_lightgbm_model(path: str | Path) -> TreeEnsemble:
    """Parse a LightGBM text model file (``Booster.save_model`` format, version v2/v3/v4).

    Raises ``ValueError`` for anything this evaluator does not implement (multiclass, categorical
    splits, linear trees, non-binary objectives).
    """
    path = Path(path)
    header, trees = _parse_blocks(path.read_text())
    if int(header.get("num_class", "1")) != 1 or int(header.get("num_tree_per_iteration", "1")) != 1:
        raise ValueError("only single-class LightGBM models are supported")
    objective = header.get("objective", "")
    if not objective.startswith("binary"):
        raise ValueError(f"only the binary objective is supported, got {objective!r}")
    sigmoid = 1.0
    for token in objective.split()[1:]:
        if token.startswith("sigmoid:"):
            sigmoid = float(token.split(":", 1)[1])
    if header.get("linear_tree", "0") not in ("0", ""):
        raise ValueError("linear trees are not supported")
    n_features = int(header["max_feature_idx"]) + 1

    feats, thrs, lefts, rights, dtypes, leaves, roots = [], [], [], [], [], [], []
    node_base = 0
    leaf_base = 0
    for tree in trees:
        n_leaves = int(tree["num_leaves"])
        if int(tree.get("num_cat", "0")) != 0:
            raise ValueError("categorical splits are not supported")
        leaf_value = np.array(tree["leaf_value"].split(), dtype=np.float64)
        if n_leaves == 1:
            roots.append(-leaf_base - 1)
            leaves.append(leaf_value[:1])
            leaf_base += 1
            continue
        f = np.array(tree["split_feature"].split(), dtype=np.int32)
        t = np.array(tree["threshold"].split(), dtype=np.float64)
        d = np.array(tree["decision_type"].split(), dtype=np.int32)
        lc = np.array(tree["left_child"].split(), dtype=np.int64)
        rc = np.array(tree["right_child"].split(), dtype=np.int64)
        if np.any(d & 1):
            raise ValueError("categorical splits are not supported")
        if not (f.size == t.size == d.size == lc.size == rc.size == n_leaves - 1):
            raise ValueError("inconsistent tree arrays in model file")

        def remap(c: np.ndarray, nb: int = node_base, lb: int = leaf_base) -> np.ndarray:
            # LightGBM encodes leaf j as ~j == -j - 1; make both indices global.
            return np.where(c >= 0, c + nb, -((-c - 1) + lb) - 1).astype(np.int32)

        feats.append(f)
        thrs.append(t)
        dtypes.append(d)
        lefts.append(remap(lc))
        rights.append(remap(rc))
        leaves.append(leaf_value)
        roots.append(node_base)
        node_base += n_leaves - 1
        leaf_base += n_leaves

    dtype_all = np.concatenate(dtypes).astype(np.int32)
    ens = TreeEnsemble(
        feature=np.ascontiguousarray(np.concatenate(feats)),
        threshold=np.ascontiguousarray(np.concatenate(thrs)),
        left=np.ascontiguousarray(np.concatenate(lefts)),
        right=np.ascontiguousarray(np.concatenate(rights)),
        default_left=(dtype_all & 2) != 0,
        missing_type=((dtype_all >> 2) & 3).astype(np.uint8),
        leaf_value=np.ascontiguousarray(np.concatenate(leaves)),
        root=np.array(roots, dtype=np.int32),
        n_features=n_features,
        sigmoid=sigmoid,
        path=path,
    )
    logger.debug("parsed %s: %d trees, %d nodes, %d leaves", path.name, ens.n_trees, node_base, leaf_base)
    return ens


def predict_raw(ens: TreeEnsemble, X: np.ndarray, n_trees: int | None = None, chunk: int = 65536) -> np.ndarray:
    """Raw score (sum of leaf values, float64) for each row of ``X`` (n, n_features), LightGBM semantics.

    ``n_trees`` limits the sum to the first trees (like LightGBM's ``num_iteration``); None = all.

    All trees are walked together, one tree level per step, over a shrinking set of (row, tree) pairs
    that have not reached a leaf yet; rows are processed in chunks to bound memory.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != ens.n_features:
        raise ValueError(f"X must have shape (n, {ens.n_features}), got {X.shape}")
    out = np.empty(X.shape[0], dtype=np.float64)
    any_zero_missing = bool(np.any(ens.missing_type == _MISSING_ZERO))
    n_trees = ens.n_trees if n_trees is None else max(1, min(int(n_trees), ens.n_trees))
    roots = ens.root[:n_trees]
    for start in range(0, X.shape[0], chunk):
        xc = np.asarray(X[start : start + chunk], dtype=np.float64)
        n = xc.shape[0]
        has_nan = bool(np.isnan(xc).any())
        # state over (row, tree) pairs
        node = np.tile(roots, n)
        row = np.repeat(np.arange(n, dtype=np.int64), n_trees)
        leaf = np.empty(n * n_trees, dtype=np.int64)
        pair = np.arange(n * n_trees, dtype=np.int64)
        done = node < 0
        leaf[pair[done]] = -node[done].astype(np.int64) - 1
        keep = ~done
        node, row, pair = node[keep], row[keep], pair[keep]
        while node.size:
            x = xc[row, ens.feature[node]]
            mt = ens.missing_type[node]
            if has_nan:
                x = np.where(np.isnan(x) & (mt != _MISSING_NAN), 0.0, x)
            go_left = x <= ens.threshold[node]
            if has_nan or any_zero_missing:
                use_default = ((mt == _MISSING_NAN) & np.isnan(x)) | (
                    (mt == _MISSING_ZERO) & (np.abs(x) <= _K_ZERO_THRESHOLD)
                )
                go_left = np.where(use_default, ens.default_left[node], go_left)
            node = np.where(go_left, ens.left[node], ens.right[node])
            done = node < 0
            if done.any():
                leaf[pair[done]] = -node[done].astype(np.int64) - 1
                keep = ~done
                node, row, pair = node[keep], row[keep], pair[keep]
        values = ens.leaf_value[leaf].reshape(n, n_trees)
        # Sum in tree order, like LightGBM's predictor (sequential float64 additions).
        acc = np.zeros(n, dtype=np.float64)
        for t in range(n_trees):
            acc += values[:, t]
        out[start : start + n] = acc
    return out


def predict_proba(ens: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """Probability of the positive class (float64) for each row of ``X``: sigmoid of the raw score."""
    raw = predict_raw(ens, X)
    return 1.0 / (1.0 + np.exp(-ens.sigmoid * raw))
