"""Tests for steps.science.lai — the numpy port of SNAP's biophysical LAI network."""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import math
from pathlib import Path

import numpy as np
import pytest

from steps.science import lai as sl

INRA_DIR = Path(__file__).resolve().parent / "data" / "inra"
PKG_DATA = Path(str(importlib.resources.files("steps").joinpath("data", "snap_biophysical")))
SHARED_REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "snap_biophysical"

# (version, platform argument, test-case folder, expected row count)
INRA_SETS = [
    ("2_1", "sentinel-2a", "2_1", 100),
    ("3_0", "sentinel-2a", "3_0/S2A", 41_472),
    ("3_0", "S2B", "3_0/S2B", 654),
    ("3_0", "s2c", "3_0/S2B", 654),  # S2C ships a byte copy of the S2B network and test cases
]

NETWORK_FILES = [
    "LAI_DefinitionDomain_Grid",
    "LAI_DefinitionDomain_MinMax",
    "LAI_Denormalisation",
    "LAI_ExtremeCases",
    "LAI_Normalisation",
    "LAI_Weights_Layer1_Bias",
    "LAI_Weights_Layer1_Neurons",
    "LAI_Weights_Layer2_Bias",
    "LAI_Weights_Layer2_Neurons",
]
NETWORK_FOLDERS = ["2_1/LAI", "3_0/S2A/LAI", "3_0/S2B/LAI", "3_0/S2C/LAI"]


def load_cases(folder: str) -> np.ndarray:
    return np.loadtxt(INRA_DIR / folder / "LAI" / "LAI_TestCases", delimiter=",", ndmin=2)


def run(net: sl.LaiNetwork, x: np.ndarray, **kw):
    """compute_lai on (11, n) inputs."""
    return sl.compute_lai(x[:8], x[8], x[9], x[10], net, **kw)


# ------------------------------------------------------------------------------------------------
# INRA test vectors


@pytest.mark.parametrize(("version", "platform", "folder", "n_rows"), INRA_SETS)
def test_inra_test_cases_reproduced_within_1e3(version, platform, folder, n_rows):
    cases = load_cases(folder)
    assert cases.shape == (n_rows, 12)
    net = sl.load_network(version, platform)
    lai, flags = run(net, cases[:, :11].T, mode="clean")
    expected = cases[:, 11]
    finite = np.isfinite(expected)
    err = np.abs(lai[finite].astype(np.float64) - expected[finite])
    assert err.max() <= 1e-3, f"{net.id}: max |error| {err.max():.2e}"
    # rows INRA marks NaN are those beyond max + tolerance
    assert np.isnan(lai[~finite]).all()
    assert (flags[~finite] & sl.FLAG_OUTPUT_TOO_HIGH).all()
    # and nothing else is NaN / no-data
    assert np.isfinite(lai[finite]).all()
    assert (flags != sl.FLAGS_NODATA).all()


def test_inra_s2a_clamped_rows_carry_threshold_flags():
    cases = load_cases("3_0/S2A")
    net = sl.load_network("3_0", "S2A")
    lai, flags = run(net, cases[:, :11].T)
    expected = cases[:, 11]
    at_min = expected == 0.0
    at_max = expected == 8.0
    assert at_min.sum() == 8 and at_max.sum() == 20 and np.isnan(expected).sum() == 20
    assert (flags[at_min] & sl.FLAG_THRESHOLDED_TO_MIN).all()
    assert (lai[at_min] == 0.0).all()
    assert (flags[at_max] & sl.FLAG_THRESHOLDED_TO_MAX).all()
    assert (lai[at_max] == 8.0).all()


def test_inra_input_out_of_range_counts_match_science_notes():
    # REFERENCE_VALUES.md: 27 685 S2A rows flagged with SNAP's (truncated) grid, 23 231 with the full
    # grid, 303 S2B rows, none of the 2_1 rows.
    counts = {}
    for version, platform, folder, grid in [
        ("3_0", "S2A", "3_0/S2A", "snap"),
        ("3_0", "S2A", "3_0/S2A", "full"),
        ("3_0", "S2B", "3_0/S2B", "snap"),
        ("2_1", "S2A", "2_1", "snap"),
    ]:
        x = load_cases(folder)[:, :11].T
        _, flags = run(sl.load_network(version, platform, grid=grid), x)
        counts[(folder, grid)] = int((flags & sl.FLAG_INPUT_OUT_OF_RANGE).astype(bool).sum())
    assert counts == {
        ("3_0/S2A", "snap"): 27_685,
        ("3_0/S2A", "full"): 23_231,
        ("3_0/S2B", "snap"): 303,
        ("2_1", "snap"): 0,
    }


# ------------------------------------------------------------------------------------------------
# independent float64 hand evaluation


def _read_rows(folder: str, name: str) -> list[list[float]]:
    with (PKG_DATA / folder / name).open(newline="") as fh:
        return [[float(v) for v in row] for row in csv.reader(fh) if row]


def hand_lai(folder: str, x: list[float]) -> float:
    """SCIENCE_NOTES §1.3 written out with plain Python floats and loops (raw output, no clamping)."""
    norm = _read_rows(folder, "LAI_Normalisation")
    w1 = _read_rows(folder, "LAI_Weights_Layer1_Neurons")
    b1 = _read_rows(folder, "LAI_Weights_Layer1_Bias")[0]
    w2 = _read_rows(folder, "LAI_Weights_Layer2_Neurons")[0]
    b2 = _read_rows(folder, "LAI_Weights_Layer2_Bias")[0][0]
    y_min, y_max = _read_rows(folder, "LAI_Denormalisation")[0]
    xn = [2.0 * (x[i] - norm[i][0]) / (norm[i][1] - norm[i][0]) - 1.0 for i in range(11)]
    out = b2
    for j in range(5):
        a = b1[j]
        for i in range(11):
            a += w1[j][i] * xn[i]
        out += w2[j] * math.tanh(a)
    return 0.5 * (out + 1.0) * (y_max - y_min) + y_min


@pytest.mark.parametrize(
    ("version", "platform", "data_folder", "case_folder", "rows"),
    [
        ("2_1", "S2A", "2_1/LAI", "2_1", [0, 1, 2]),
        ("3_0", "S2A", "3_0/S2A/LAI", "3_0/S2A", [0, 3, 1691, 2180]),  # 1691: →8, 2180: →0 (clamped)
        ("3_0", "S2B", "3_0/S2B/LAI", "3_0/S2B", [0, 4]),
    ],
)
def test_hand_float64_evaluation_agrees(version, platform, data_folder, case_folder, rows):
    cases = load_cases(case_folder)
    net = sl.load_network(version, platform)
    x = cases[rows, :11]
    hand = np.array([hand_lai(data_folder, list(r)) for r in x])
    # REFERENCE_VALUES.md example values ("raw NN (recomputed, float64)") sanity-check the hand code
    if case_folder == "2_1":
        assert hand[0] == pytest.approx(1.489786, abs=1e-6)
    if case_folder == "3_0/S2A":
        assert hand[2] == pytest.approx(8.128637, abs=1e-6)
        assert hand[3] == pytest.approx(-0.039412, abs=1e-6)
    # the module's float64 path agrees to rounding; the fast float32 path within its documented budget
    np.testing.assert_allclose(sl.evaluate_network(x.T, net), hand, rtol=0, atol=1e-9)
    clamped = np.clip(hand, 0.0, 8.0)  # none of these rows is beyond the tolerance
    lai64, _ = run(net, x.T, mode="snap", precision="float64")
    np.testing.assert_allclose(lai64, clamped, rtol=0, atol=1e-6)  # float32 output rounding only
    lai32, _ = run(net, x.T, mode="snap")  # default fast path: float32 hidden layer (~3e-6 measured)
    np.testing.assert_allclose(lai32, clamped, rtol=0, atol=1e-5)


def test_fast_path_within_1e4_of_float64_on_random_inputs():
    rng = np.random.default_rng(42)
    n = 200_000
    for net in (sl.load_network("3_0", "S2A"), sl.load_network("2_1"), sl.load_network("3_0", "S2B")):
        lo, hi = net.norm_min, net.norm_max
        span = hi - lo
        # 10 % beyond the training ranges on each side, float32 like real rasters
        x = (lo[:, None] + span[:, None] * rng.uniform(-0.1, 1.1, (11, n))).astype(np.float32)
        lai, flags = run(net, x, mode="snap")
        ref_value, ref_flags = sl.apply_output_range(sl.evaluate_network(x, net), net, mode="snap")
        assert np.max(np.abs(lai - ref_value)) <= 1e-4
        # near-boundary refinement makes the output flags those of the float64 evaluation
        out_bits = sl.FLAG_THRESHOLDED_TO_MIN | sl.FLAG_THRESHOLDED_TO_MAX
        out_bits |= sl.FLAG_OUTPUT_TOO_LOW | sl.FLAG_OUTPUT_TOO_HIGH
        np.testing.assert_array_equal(flags & out_bits, ref_flags)


def _inputs_near_output(net: sl.LaiNetwork, x0: np.ndarray, band: int, target: float) -> np.ndarray:
    """Inputs (11, m) along one band through x0 whose float64 output lies within ±2e-7 of ``target``."""

    def f(t: float) -> float:
        x = x0.copy()
        x[band] += t
        return float(sl.evaluate_network(x, net)) - target

    lo, hi = -0.2, 0.2
    assert f(lo) * f(hi) < 0, "no crossing in the bracket"
    for _ in range(200):  # bisection down to float64 resolution
        mid = 0.5 * (lo + hi)
        if f(mid) * f(lo) > 0:
            lo = mid
        else:
            hi = mid
    slope = (f(hi + 1e-6) - f(hi - 1e-6)) / 2e-6
    offsets = np.linspace(-2e-7, 2e-7, 41) / slope  # output offsets of −2e-7 … +2e-7
    xs = np.repeat(x0[:, None], offsets.size, axis=1)
    xs[band] += hi + offsets
    return xs


@pytest.mark.parametrize(
    ("row", "band", "boundary"),
    # S2A test rows near each boundary; band 5 = B8A, band 0 = B3 (where the output crosses the boundary)
    [(2180, 5, "out_min"), (1691, 5, "out_max"), (2180, 0, "lo-tol"), (827, 5, "hi+tol")],
)
def test_flags_next_to_boundaries_follow_float64_evaluation(row, band, boundary):
    # float32 rounding (~1e-6) exceeds these ±2e-7 offsets, so only the float64 refinement gets them right
    net = sl.load_network("3_0", "S2A")
    target = {
        "out_min": net.out_min,
        "out_max": net.out_max,
        "lo-tol": net.out_min - net.tolerance,
        "hi+tol": net.out_max + net.tolerance,
    }[boundary]
    x0 = load_cases("3_0/S2A")[row, :11]
    xs = _inputs_near_output(net, x0, band=band, target=target)
    y64 = sl.evaluate_network(xs, net)
    assert (y64 < target).any() and (y64 > target).any()
    want_value, want_flags = sl.apply_output_range(y64, net, mode="snap")
    lai, flags = run(net, xs, mode="snap")
    np.testing.assert_array_equal(flags & ~np.uint8(sl.FLAG_INPUT_OUT_OF_RANGE), want_flags)
    np.testing.assert_array_equal(lai, want_value.astype(np.float32))


# ------------------------------------------------------------------------------------------------
# flags on crafted inputs


def constant_output_network(base: sl.LaiNetwork, y: float) -> sl.LaiNetwork:
    """A copy of ``base`` whose raw output is exactly ``y`` for every input (zero output weights)."""
    return dataclasses.replace(base, w2=np.zeros(5), b2=y, y_min=-1.0, y_max=1.0)


@pytest.fixture(scope="module")
def in_domain_input() -> np.ndarray:
    """(11, 1) input of 2_1 test row 1, which lies inside the 2_1 definition domain."""
    return load_cases("2_1")[:1, :11].T.copy()


def test_2_1_negative_tolerance_is_used_as_absolute_value():
    net = sl.load_network("2_1")
    assert net.tolerance == 0.2 and net.out_min == 0.0 and net.out_max == 8.0


@pytest.mark.parametrize(
    ("raw", "clean", "snap", "flag"),
    [
        (-0.3, math.nan, -0.3, sl.FLAG_OUTPUT_TOO_LOW),
        ("lo-tol", "lo-tol", "lo-tol", 0),  # exactly min − tol: strict comparisons → untouched
        (-0.1, 0.0, 0.0, sl.FLAG_THRESHOLDED_TO_MIN),
        (0.0, 0.0, 0.0, 0),
        (3.5, 3.5, 3.5, 0),
        (8.0, 8.0, 8.0, 0),
        (8.1, 8.0, 8.0, sl.FLAG_THRESHOLDED_TO_MAX),
        ("hi+tol", "hi+tol", "hi+tol", 0),  # exactly max + tol
        (8.3, math.nan, 8.3, sl.FLAG_OUTPUT_TOO_HIGH),
    ],
)
def test_output_flags_and_values_per_snap_rules(in_domain_input, raw, clean, snap, flag):
    base = sl.load_network("2_1")
    special = {"lo-tol": base.out_min - base.tolerance, "hi+tol": base.out_max + base.tolerance}
    raw, clean, snap = (special.get(v, v) if isinstance(v, str) else v for v in (raw, clean, snap))
    net = constant_output_network(base, raw)
    for mode, want in (("clean", clean), ("snap", snap)):
        lai, flags = run(net, in_domain_input, mode=mode)
        assert flags[0] == flag, mode
        if math.isnan(want):
            assert np.isnan(lai[0]), mode
        else:
            assert lai[0] == np.float32(want), mode
    value, flags = sl.apply_output_range(np.array([raw]), base, mode="snap")
    assert flags[0] == flag and (value[0] == snap)


def test_exact_boundary_values_are_representable_as_expected():
    # guards the parametrised boundary cases: lo − tol and hi + tol are what the literals say
    net = sl.load_network("3_0", "S2B")
    assert net.out_min - net.tolerance == -0.2
    assert net.out_max + net.tolerance == 8.2


def test_nan_or_infinite_input_gives_nodata(in_domain_input):
    net = sl.load_network("2_1")
    x = np.repeat(in_domain_input, 6, axis=1)
    x[0, 1] = np.nan  # reflectance NaN
    x[8, 2] = np.nan  # cos(view zenith) NaN
    x[10, 3] = np.inf  # relative azimuth cosine inf
    x[5, 4] = -np.inf
    lai, flags = run(net, x)
    assert flags[0] == 0 and np.isfinite(lai[0])
    assert (flags[1:5] == sl.FLAGS_NODATA).all()
    assert np.isnan(lai[1:5]).all()
    assert flags[5] == 0 and lai[5] == lai[0]


def test_valid_false_gives_nodata(in_domain_input):
    net = sl.load_network("2_1")
    x = np.repeat(in_domain_input, 3, axis=1)
    lai, flags = run(net, x, valid=np.array([True, False, True]))
    np.testing.assert_array_equal(flags, [0, sl.FLAGS_NODATA, 0])
    assert np.isnan(lai[1]) and np.isfinite(lai[[0, 2]]).all()


def test_nodata_value_is_not_a_valid_flag_combination():
    cases = load_cases("3_0/S2A")
    _, flags = run(sl.load_network("3_0", "S2A"), cases[:, :11].T, mode="snap")
    assert flags.max() < 32
    assert sl.FLAGS_NODATA >= 32


def _grid_rows(folder: str) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in r) for r in _read_rows(folder, "LAI_DefinitionDomain_Grid")]


def _bin_centre_input(net: sl.LaiNetwork, bins: tuple[int, ...]) -> np.ndarray:
    p, big_p = net.domain_min, net.domain_max
    return p + (np.array(bins) - 0.5) / 10.0 * (big_p - p)


def test_input_out_of_range_bounds_are_inclusive_at_min():
    net = sl.load_network("2_1")
    rows = _grid_rows("2_1/LAI")
    row = next(r for r in rows if r[0] == 1)
    refl = _bin_centre_input(net, row)
    refl[0] = net.domain_min[0]  # exactly the lower bound: bin 1, inside
    assert not sl.input_out_of_range(refl, net)
    refl[0] = np.nextafter(net.domain_min[0], -1.0)  # just below: outside the bounds
    assert sl.input_out_of_range(refl, net)


def test_input_exactly_at_max_projects_to_bin_11_and_is_flagged():
    net = sl.load_network("2_1")
    rows = _grid_rows("2_1/LAI")
    k, row = next((k, r) for r in rows for k in range(8) if r[k] == 10)
    refl = _bin_centre_input(net, row)
    assert not sl.input_out_of_range(refl, net)
    refl[k] = np.nextafter(net.domain_max[k], 0.0)  # still bin 10
    assert not sl.input_out_of_range(refl, net)
    refl[k] = net.domain_max[k]  # inside the bounds but bin 11, never a grid row (as in SNAP)
    assert sl.input_out_of_range(refl, net)


def test_input_out_of_range_flag_keeps_network_value(in_domain_input):
    net = sl.load_network("2_1")
    x = np.repeat(in_domain_input, 2, axis=1)
    x[0, 1] = net.domain_max[0] + 0.01  # B3 above the domain
    lai, flags = run(net, x)
    assert flags[0] == 0 and flags[1] == sl.FLAG_INPUT_OUT_OF_RANGE
    assert np.isfinite(lai[1])
    assert lai[1] == pytest.approx(float(sl.evaluate_network(x[:, 1], net)), abs=1e-5)


def test_snap_mode_keeps_values_beyond_tolerance_clean_mode_drops_them():
    cases = load_cases("3_0/S2A")
    net = sl.load_network("3_0", "S2A")
    x = cases[:, :11].T
    clean, f_clean = run(net, x, mode="clean")
    snap, f_snap = run(net, x, mode="snap")
    np.testing.assert_array_equal(f_clean, f_snap)
    too_high = (f_snap & sl.FLAG_OUTPUT_TOO_HIGH).astype(bool)
    assert too_high.sum() == 20
    assert np.isnan(clean[too_high]).all()
    assert (snap[too_high] > 8.2).all()
    np.testing.assert_allclose(snap[too_high], sl.evaluate_network(x[:, too_high], net), atol=1e-5)
    np.testing.assert_array_equal(clean[~too_high], snap[~too_high])


def python_domain_check(refl: np.ndarray, net: sl.LaiNetwork, rows: set[tuple[int, ...]]) -> np.ndarray:
    """Straightforward per-pixel reading of SNAP's processInputOutOfRange."""
    out = []
    p, big_p = net.domain_min.tolist(), net.domain_max.tolist()
    for x in refl.T.tolist():
        if any(x[k] < p[k] or x[k] > big_p[k] for k in range(8)):
            out.append(True)
            continue
        bins = tuple(math.floor(10 * (x[k] - p[k]) / (big_p[k] - p[k]) + 1) for k in range(8))
        out.append(bins not in rows)
    return np.array(out)


@pytest.mark.parametrize(
    ("version", "platform", "grid", "grid_file"),
    [
        ("2_1", "S2A", "snap", "2_1/LAI/LAI_DefinitionDomain_Grid"),
        ("3_0", "S2A", "snap", "3_0/S2A/LAI/LAI_DefinitionDomain_Grid"),
        ("3_0", "S2A", "full", "3_0/S2A/LAI_derived/LAI_DefinitionDomain_Grid_full_from_xlsx"),
        ("3_0", "S2B", "snap", "3_0/S2B/LAI/LAI_DefinitionDomain_Grid"),
    ],
)
def test_domain_check_matches_per_pixel_python(version, platform, grid, grid_file):
    net = sl.load_network(version, platform, grid=grid)
    with (PKG_DATA / grid_file).open() as fh:
        rows = {tuple(int(v) for v in line.split(",")) for line in fh if line.strip()}
    rng = np.random.default_rng(7)
    n = 3000
    p, big_p = net.domain_min, net.domain_max
    # half: inside random grid cells, some bands pushed one bin away; half: uniform incl. outside bounds
    grid_arr = np.array(sorted(rows))
    picked = grid_arr[rng.integers(0, len(grid_arr), n // 2)].astype(float)
    picked += rng.integers(-1, 2, picked.shape) * (rng.random(picked.shape) < 0.1)
    inside = p + (picked - 1 + rng.random(picked.shape)) / 10.0 * (big_p - p)
    uniform = p + rng.uniform(-0.05, 1.05, (n - n // 2, 8)) * (big_p - p)
    refl = np.vstack([inside, uniform]).T
    refl[:, :20] = p[:, None]  # exact lower bounds
    refl[:, 20:40] = big_p[:, None]  # exact upper bounds
    refl = refl.astype(np.float32).astype(np.float64)  # float32-representable, like raster input
    got = sl.input_out_of_range(refl, net)
    want = python_domain_check(refl, net, rows)
    np.testing.assert_array_equal(got, want)
    assert 0.05 < want.mean() < 0.95  # both outcomes exercised
    # and compute_lai sets the bit exactly there (angles irrelevant for the check)
    _, flags = sl.compute_lai(refl, 0.99, 0.6, 0.1, net)
    np.testing.assert_array_equal((flags & sl.FLAG_INPUT_OUT_OF_RANGE).astype(bool), want)


# ------------------------------------------------------------------------------------------------
# network loading and platform mapping


def test_s2c_uses_the_s2b_numbers():
    s2b = sl.load_network("3_0", "sentinel-2b")
    s2c = sl.load_network("3_0", "Sentinel-2C")
    assert s2c.id == "3_0/S2C" and s2b.id == "3_0/S2B"
    for field in ("norm_min", "norm_max", "w1", "b1", "w2", "domain_min", "domain_max", "grid_keys"):
        np.testing.assert_array_equal(getattr(s2c, field), getattr(s2b, field))
    assert (s2c.b2, s2c.y_min, s2c.y_max, s2c.tolerance) == (s2b.b2, s2b.y_min, s2b.y_max, s2b.tolerance)


def test_s2a_and_s2b_networks_differ():
    a, b = sl.load_network("3_0", "S2A"), sl.load_network("3_0", "S2B")
    assert not np.array_equal(a.w1, b.w1)


@pytest.mark.parametrize("name", ["sentinel-2a", "Sentinel-2A", "S2A", "s2a", "SENTINEL2A", "sentinel_2a"])
def test_platform_spellings_map_to_the_same_network(name):
    assert sl.load_network("3_0", name) is sl.load_network("3_0", "S2A")


def test_version_2_1_ignores_platform():
    net = sl.load_network("2_1", "S2B")
    assert net is sl.load_network("2_1", "sentinel-2c")
    assert net.id == "2_1"
    assert net.b1[0] == pytest.approx(4.96238030555)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"version": "4_0"}, "version"),
        ({"version": "3_0", "platform": "landsat-8"}, "platform"),
        ({"version": "3_0", "platform": "S2D"}, "platform"),
        ({"grid": "huge"}, "grid"),
    ],
)
def test_unknown_version_platform_or_grid_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sl.load_network(**kwargs)


def test_full_grid_only_changes_3_0_s2a():
    assert sl.load_network("3_0", "S2A", grid="full").grid_keys.size == 5355
    assert sl.load_network("3_0", "S2A", grid="snap").grid_keys.size == 2930
    assert sl.load_network("3_0", "S2B", grid="full") is sl.load_network("3_0", "S2B", grid="snap")
    assert sl.load_network("2_1", grid="full") is sl.load_network("2_1")


def test_network_arrays_are_read_only():
    net = sl.load_network()
    with pytest.raises(ValueError):
        net.w1[0, 0] = 1.0


# ------------------------------------------------------------------------------------------------
# shapes, chunking, broadcasting


def test_chunking_workers_and_broadcasting_do_not_change_results():
    cases = load_cases("3_0/S2A")[:4096]
    net = sl.load_network("3_0", "S2A")
    refl = cases[:, :8].T.reshape(8, 64, 64).astype(np.float32)
    cos = [cases[:, 8 + i].reshape(64, 64) for i in range(3)]
    ref_lai, ref_flags = sl.compute_lai(refl, *cos, net)
    for kw in ({"chunk_px": 100}, {"chunk_px": 64 * 64 * 4}, {"chunk_px": 256, "workers": 2}):
        lai, flags = sl.compute_lai(refl, *cos, net, **kw)
        np.testing.assert_array_equal(lai, ref_lai)
        np.testing.assert_array_equal(flags, ref_flags)
    # a non-contiguous window gives the same values as the full run
    lai_w, flags_w = sl.compute_lai(refl[:, 5:30, 7:50], *(c[5:30, 7:50] for c in cos), net)
    np.testing.assert_array_equal(lai_w, ref_lai[5:30, 7:50])
    np.testing.assert_array_equal(flags_w, ref_flags[5:30, 7:50])
    # scalar angles broadcast
    lai_s, _ = sl.compute_lai(refl, 0.99, 0.6, -0.4, net)
    lai_f, _ = sl.compute_lai(
        refl, np.full((64, 64), 0.99), np.full((64, 64), 0.6), np.full((64, 64), -0.4), net
    )
    np.testing.assert_array_equal(lai_s, lai_f)
    assert lai_s.dtype == np.float32 and ref_flags.dtype == np.uint8


def test_float64_precision_matches_float32_path_and_float64_reference():
    cases = load_cases("3_0/S2A")
    net = sl.load_network("3_0", "S2A")
    x = cases[:, :11].T.copy()
    x[0, 5] = np.nan
    lai32, f32 = run(net, x, mode="snap")
    lai64, f64 = run(net, x, mode="snap", precision="float64")
    np.testing.assert_array_equal(f32, f64)
    assert f64[5] == sl.FLAGS_NODATA and np.isnan(lai64[5])
    np.testing.assert_allclose(lai32, lai64, rtol=0, atol=1e-5)
    ref, _ = sl.apply_output_range(sl.evaluate_network(x, net), net, mode="snap")
    ok = np.isfinite(ref)
    np.testing.assert_array_equal(lai64[ok], ref[ok].astype(np.float32))


def test_huge_finite_input_is_nodata_without_warnings(in_domain_input):
    x = np.repeat(in_domain_input, 2, axis=1)
    x[3, 1] = 1e300  # overflows the float32 working copy
    lai, flags = run(sl.load_network("2_1"), x)
    assert flags[1] == sl.FLAGS_NODATA and np.isnan(lai[1]) and flags[0] == 0


def test_single_pixel_and_bad_shapes():
    row = load_cases("2_1")[0]
    lai, flags = sl.compute_lai(row[:8], row[8], row[9], row[10], sl.load_network("2_1"))
    assert lai.shape == () and flags.shape == ()
    assert float(lai) == pytest.approx(row[11], abs=1e-3)
    with pytest.raises(ValueError, match=r"\(8, \.\.\.\)"):
        sl.compute_lai(np.zeros((7, 3)), 1.0, 1.0, 1.0, sl.load_network())
    with pytest.raises(ValueError, match="broadcast"):
        sl.compute_lai(np.zeros((8, 3)), np.ones(4), 1.0, 1.0, sl.load_network())
    with pytest.raises(ValueError, match="precision"):
        sl.compute_lai(np.zeros((8, 3)), 1.0, 1.0, 1.0, sl.load_network(), precision="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        sl.compute_lai(np.zeros((8, 3)), 1.0, 1.0, 1.0, sl.load_network(), mode="strict")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# package data provenance


def _shipped_files() -> list[tuple[Path, Path]]:
    pairs = []
    for folder in NETWORK_FOLDERS:
        for name in NETWORK_FILES:
            pairs.append((PKG_DATA / folder / name, Path(folder) / name))
    derived = "3_0/S2A/LAI_derived/LAI_DefinitionDomain_Grid_full_from_xlsx"
    pairs.append((PKG_DATA / derived, Path(derived)))
    for folder in ("2_1", "3_0/S2A", "3_0/S2B"):
        pairs.append((INRA_DIR / folder / "LAI" / "LAI_TestCases", Path(folder) / "LAI" / "LAI_TestCases"))
    return pairs


def test_all_network_files_are_shipped():
    missing = [str(p) for p, _ in _shipped_files() if not p.is_file()]
    assert not missing
    assert (PKG_DATA / "PROVENANCE.md").is_file()


@pytest.mark.parametrize(("local", "rel"), _shipped_files(), ids=lambda v: str(v))
def test_shipped_data_is_byte_identical_to_shared_reference(local, rel):
    if not SHARED_REF.is_dir():
        pytest.skip(f"shared/reference not found at {SHARED_REF}: cannot compare package data with upstream")
    assert local.read_bytes() == (SHARED_REF / rel).read_bytes()
