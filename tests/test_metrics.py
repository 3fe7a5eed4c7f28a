"""Metrics against known values: PSNR of a known noise level, SSIM identities, masking."""

import numpy as np
import pytest

from bids_sr.metrics import (
    SSIM_K1,
    compute_metrics,
    gradient_magnitude_error,
    psnr,
    ssim,
)


def _phantom(shape=(32, 32, 32)):
    """A smooth blob with a sharp-edged inner cube: structure at several scales."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(g * g for g in grids))
    data = np.clip(1.2 - radius, 0, 1) * 0.8
    data[10:20, 12:22, 8:18] += 0.2
    return data.astype(np.float32)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1])
def test_psnr_of_known_gaussian_noise(sigma):
    rng = np.random.default_rng(1)
    ref = _phantom()
    noisy = ref + rng.normal(0, sigma, ref.shape)
    expected = 20 * np.log10(1.0 / sigma)
    assert psnr(noisy, ref, data_range=1.0) == pytest.approx(expected, abs=0.1)
    # doubling the data range adds 20·log10(2) dB
    assert psnr(noisy, ref, data_range=2.0) == pytest.approx(expected + 20 * np.log10(2), abs=0.1)


def test_psnr_identical_is_inf_and_bad_arguments():
    ref = _phantom()
    assert psnr(ref, ref, data_range=1.0) == float("inf")
    with pytest.raises(ValueError, match="data_range"):
        psnr(ref, ref, data_range=0)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(ref[:-1], ref, data_range=1)
    with pytest.raises(ValueError, match="no voxels"):
        psnr(ref, ref, data_range=1, mask=np.zeros(ref.shape, bool))


def test_ssim_identical_is_one_and_decreases_with_noise():
    rng = np.random.default_rng(2)
    ref = _phantom()
    assert ssim(ref, ref, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    scores = [
        ssim(ref + rng.normal(0, s, ref.shape), ref, data_range=1.0) for s in (0.01, 0.03, 0.1, 0.3)
    ]
    assert all(a > b for a, b in zip(scores, scores[1:]))
    assert scores[0] > 0.9 and scores[-1] < 0.3


def test_ssim_of_constant_images_matches_the_luminance_formula():
    # no variance anywhere: SSIM reduces to (2ab + C1) / (a² + b² + C1) exactly
    a, b, rng_ = 0.6, 0.3, 1.0
    c1 = (SSIM_K1 * rng_) ** 2
    value = ssim(np.full((12, 12, 12), a), np.full((12, 12, 12), b), data_range=rng_)
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def test_masked_and_whole_volume_differ_as_expected():
    rng = np.random.default_rng(3)
    ref = _phantom()
    mask = np.zeros(ref.shape, bool)
    mask[10:22, 10:22, 10:22] = True
    # noise only 6 voxels beyond the mask edge, outside the SSIM window (radius 5)
    outside = ~np.pad(np.ones((24, 24, 24), bool), 4)
    noisy = ref + np.where(outside, rng.normal(0, 0.1, ref.shape), 0)
    out = compute_metrics(noisy, ref, mask=mask, data_range=1.0)
    assert out["psnr_brain"] == float("inf")
    assert out["ssim_brain"] == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(out["psnr_whole"]) and out["psnr_whole"] > 20
    assert out["ssim_whole"] < 0.9
    assert out["gradient_error_brain"] == pytest.approx(0.0, abs=1e-12)
    assert set(out) == {
        "psnr_brain",
        "ssim_brain",
        "psnr_whole",
        "ssim_whole",
        "gradient_error_brain",
    }


def test_gradient_error_scores_blur_and_is_scale_free():
    from scipy import ndimage

    ref = _phantom()
    blurred = ndimage.gaussian_filter(ref, 1.5)
    flat = np.full_like(ref, ref.mean())
    assert gradient_magnitude_error(ref, ref) == 0.0
    err_blur = gradient_magnitude_error(blurred, ref)
    assert 0.05 < err_blur < gradient_magnitude_error(flat, ref)
    assert gradient_magnitude_error(flat, ref) == pytest.approx(1.0)
    assert gradient_magnitude_error(10 * blurred, 10 * ref) == pytest.approx(err_blur)
