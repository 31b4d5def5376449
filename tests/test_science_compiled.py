"""The compiled s2cloudless model (steps.science._compiled): proven equal to LightGBM's float32 output.

Property tests feed random and adversarial rows (feature values exactly on split thresholds and one
float32 step either side, zeros, values outside the training range) and require the float32 probability
to be bit-identical to LightGBM's, the evaluator s2cloudless uses. The error bound itself, the re-check
of undecidable pixels, the refusal of a compiled model that breaks the bound, and the fallback are tested
on their own.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steps.science import _compiled
from steps.science import cloudmask as cm


@pytest.fixture(scope="module")
def model() -> cm.S2CloudlessModel:
    return cm.load_s2cloudless_model()


@pytest.fixture(scope="module")
def forest(model: cm.S2CloudlessModel) -> _compiled.CompiledForest:
    return model.compiled()


def _rows(model: cm.S2CloudlessModel, draw_nodes: list[int], offsets: list[int], base: np.ndarray) -> np.ndarray:
    """``base`` rows with one feature set to a split threshold moved by ``offset`` float32 steps."""
    X = base.copy()
    t = model.trees
    for i, (node, off) in enumerate(zip(draw_nodes, offsets, strict=True)):
        v = np.float32(t.threshold[node])
        for _ in range(abs(off)):
            v = np.nextafter(v, np.float32(np.inf if off > 0 else -np.inf))
        X[i % X.shape[0], t.feature[node]] = v
    return X


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_float32_probability_bit_identical_to_lightgbm(model: cm.S2CloudlessModel,
                                                      forest: _compiled.CompiledForest, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 64), label="rows")
    values = st.floats(float(np.float32(-0.05)), float(np.float32(1.6)), width=32, allow_nan=False)
    base = np.array(data.draw(st.lists(st.lists(values, min_size=10, max_size=10), min_size=n, max_size=n)),
                    dtype=np.float32)
    k = data.draw(st.integers(0, 3 * n), label="adversarial features")
    nodes = data.draw(st.lists(st.integers(0, model.trees.threshold.size - 1), min_size=k, max_size=k))
    offsets = data.draw(st.lists(st.integers(-1, 1), min_size=k, max_size=k))
    X = _rows(model, nodes, offsets, base)
    got, _ = forest.predict_float32(X, model.lightgbm_proba)
    ref = model.lightgbm_proba(X).astype(np.float32)
    assert np.array_equal(got, ref)


def test_every_split_threshold_and_its_neighbours(model: cm.S2CloudlessModel,
                                                  forest: _compiled.CompiledForest) -> None:
    """All 130,730 split thresholds (and one float32 step either side) in one batch: bit-identical."""
    X = _compiled.check_sample(model.trees, n_random=0)
    got, _ = forest.predict_float32(X, model.lightgbm_proba)
    assert np.array_equal(got, model.lightgbm_proba(X).astype(np.float32))


def test_error_bound_holds_and_is_tiny(model: cm.S2CloudlessModel, forest: _compiled.CompiledForest) -> None:
    """The observed difference stays below the proven bound; the bound is far below a float32 step."""
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 0.8, size=(50_000, 10)).astype(np.float32)
    p, ref = forest.predict(X), model.lightgbm_proba(X)
    observed = float(np.max(np.abs(p - ref) / ref))
    assert observed <= forest.rel_bound < 1e-10
    # the bound by hand: 2 * 169 u / (1 - 169 u) * sum of the trees' largest |leaf|, then p(1-p) <= p
    u = 2.0**-53
    assert _compiled.score_error_bound(model.trees) == pytest.approx(
        2 * 169 * u / (1 - 169 * u) * _per_tree_max_leaf_sum(model), rel=1e-12)


def _per_tree_max_leaf_sum(model: cm.S2CloudlessModel) -> float:
    """Sum over trees of the largest |leaf value|, read from the model text itself (independent parse)."""
    total = 0.0
    for line in model.path.read_text().splitlines():
        if line.startswith("leaf_value="):
            total += max(abs(float(v)) for v in line.split("=", 1)[1].split())
    return total


def test_undecidable_pixels_are_rechecked_by_lightgbm(model: cm.S2CloudlessModel,
                                                      forest: _compiled.CompiledForest) -> None:
    """With a (pretend) much looser bound, many rows straddle a float32 boundary and go to LightGBM."""
    rng = np.random.default_rng(5)
    X = rng.uniform(0, 0.8, size=(20_000, 10)).astype(np.float32)
    calls: list[int] = []

    def reference(rows: np.ndarray) -> np.ndarray:
        calls.append(rows.shape[0])
        return model.lightgbm_proba(rows)

    loose = dataclasses.replace(forest, rel_bound=1e-7)
    got, n_rechecked = loose.predict_float32(X, reference)
    assert n_rechecked > 1000 and calls == [n_rechecked]
    assert np.array_equal(got, model.lightgbm_proba(X).astype(np.float32))
    # with the real bound almost nothing is undecidable
    _, n_real = forest.predict_float32(X, reference)
    assert n_real < 20


def test_a_compiled_model_outside_the_bound_is_refused(model: cm.S2CloudlessModel,
                                                       forest: _compiled.CompiledForest) -> None:
    class Skewed:
        def predict(self, data: np.ndarray, n_jobs: int | None = None) -> np.ndarray:
            return np.asarray(forest.model.predict(data, n_jobs=n_jobs)) * (1 + 1e-9)

    bad = dataclasses.replace(forest, model=Skewed())
    with pytest.raises(_compiled.CompiledModelUnavailableError, match="proven bound"):
        _compiled._verify(bad, model.trees, model.lightgbm_proba, _compiled.check_sample(model.trees, 100, 100))


def test_fallback_to_lightgbm_when_the_compiled_model_is_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    model = cm.load_s2cloudless_model()  # a fresh instance: its cache is this test's own
    model._cache["compiled"] = _compiled.CompiledModelUnavailableError("lleaves is not importable: test")
    rng = np.random.default_rng(8)
    toa = rng.uniform(0.0, 0.5, size=(40, 40, 10)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="steps.science.cloudmask"):
        got = cm.cloud_mask(model, toa, params=cm.params_for_resolution(160))
    assert got.engine == "lightgbm"
    assert "compiled cloud model unavailable" in caplog.text
    ref = cm.cloud_mask(cm.load_s2cloudless_model(), toa, params=cm.params_for_resolution(160), mode="exact")
    assert np.array_equal(got.mask, ref.mask) and np.array_equal(got.probability, ref.probability)


def test_cache_key_names_model_toolchain_and_cpu(model: cm.S2CloudlessModel, tmp_path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAW2READY_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RAW2READY_LLVM_CPU", "x86-64-v2")
    path = _compiled.compiled_path(model.path)
    assert path.parent == tmp_path / "s2cloudless"
    assert path.name.endswith("-x86-64-v2.o") and "lleaves" in path.name and "llvmlite" in path.name
    monkeypatch.setenv("RAW2READY_LLVM_CPU", "x86-64")
    assert _compiled.compiled_path(model.path) != path


# ------------------------------------------------------------------ adversarial probability fields
_CLEAR = np.array([0.03, 0.04, 0.03, 0.08, 0.35, 0.38, 0.12, 0.002, 0.18, 0.09], np.float32)  # vegetation
_CLOUD = np.array([0.45, 0.46, 0.47, 0.48, 0.52, 0.52, 0.30, 0.02, 0.40, 0.30], np.float32)  # thick cloud


@pytest.fixture(scope="module")
def alpha_at_threshold(model: cm.S2CloudlessModel) -> float:
    """Blend weight of cloud in clear whose s2cloudless probability is the 0.4 threshold (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        p = model.lightgbm_proba(((1 - mid) * _CLEAR + mid * _CLOUD)[None].astype(np.float32))[0]
        lo, hi = (mid, hi) if p < 0.4 else (lo, mid)
    return (lo + hi) / 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.sampled_from(["checkerboard", "thin_lines", "noise", "ramp"]),
       res=st.sampled_from([60, 160]), size=st.integers(24, 72), spread=st.floats(0.0, 0.05),
       seed=st.integers(0, 2**16))
def test_adversarial_fields_give_the_exact_modes_mask(model: cm.S2CloudlessModel, alpha_at_threshold: float,
                                                      pattern: str, res: int, size: int, spread: float,
                                                      seed: int) -> None:
    """Fields whose probabilities sit on the threshold at the averaging scale: fast mask == exact mask."""
    params = cm.params_for_resolution(res)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    period = max(params.average_over, 1)
    if pattern == "checkerboard":  # cloud/clear squares as wide as the averaging disk
        sign = np.where(((yy // period) + (xx // period)) % 2 == 0, 1.0, -1.0)
    elif pattern == "thin_lines":  # one-pixel cloud lines every few pixels
        sign = np.where(xx % 3 == 0, 1.0, -1.0)
    elif pattern == "ramp":  # a slow gradient through the threshold
        sign = (xx / max(size - 1, 1)) * 2 - 1
    else:
        sign = rng.uniform(-1, 1, size=(size, size))
    alpha = np.clip(alpha_at_threshold + spread * sign + rng.normal(0, 1e-4, size=(size, size)), 0, 1)
    toa = ((1 - alpha)[..., None] * _CLEAR + alpha[..., None] * _CLOUD).astype(np.float32)
    fast = cm.cloud_mask(model, toa, params=params, mode="fast")
    exact = cm.cloud_mask(model, toa, params=params, mode="exact")
    assert fast.engine == "compiled" and exact.engine == "lightgbm"
    assert np.array_equal(fast.probability, exact.probability)
    assert np.array_equal(fast.mask, exact.mask)
