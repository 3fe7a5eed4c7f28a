"""Learning and applying gradient filters on tiny synthetic volumes; filter files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from bids_sr.degrade import degrade
from bids_sr.gradfilter import (
    apply_gradient_filters,
    default_weights_path,
    filter_upscale,
    learn_gradient_filters,
    load_filters,
    save_filters,
)
from bids_sr.gradfilter.learn import training_pair
from bids_sr.gradfilter.xp import cuda_available, get_backend
from bids_sr.image import hr_shape
from bids_sr.interpolation import upsample

ISO = (2.0, 2.0, 2.0)


def ellipsoid_phantom(seed: int, shape=(32, 32, 32), blobs: int = 12) -> np.ndarray:
    """Smooth piecewise-constant ellipsoids on a dim background, float32."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[tuple(slice(0, n) for n in shape)].astype(np.float32)
    img = np.zeros(shape, np.float32)
    for _ in range(blobs):
        centre = [rng.uniform(4, n - 4) for n in shape]
        axes = rng.uniform(2, 9, 3)
        inside = sum(((grid[i] - centre[i]) / axes[i]) ** 2 for i in range(3)) < 1
        img[inside] = rng.uniform(0.2, 1.0)
    return (ndimage.gaussian_filter(img, 0.7) + 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def filterset():
    images = [ellipsoid_phantom(seed) for seed in range(4)]
    return learn_gradient_filters(images, 2, patch_size=5, stride=1, augment=True,
                                  device="cpu", seed=0)


@pytest.fixture(scope="module")
def filter_file(filterset, tmp_path_factory):
    path = tmp_path_factory.mktemp("filters") / "gradfilter_x2x2x2.safetensors"
    return save_filters(filterset, path, card={"command": "pytest fixture"})


def held_out(factors=ISO):
    upscale, hr, mask = training_pair(ellipsoid_phantom(99), factors)
    lr = degrade(hr, factors, "gaussian")
    return upscale, hr, mask, lr


def rmse(a, b, mask):
    return float(np.sqrt(np.mean((a - b)[mask] ** 2)))


def test_learned_filters_beat_cheap_upscale_and_bspline(filterset):
    upscale, hr, mask, lr = held_out()
    result, stats = filter_upscale(upscale, filterset, backend=get_backend("cpu"))
    e_cheap = rmse(upscale, hr, mask)
    e_bspline = rmse(upsample(lr, ISO, order=3), hr, mask)
    e_filter = rmse(result, hr, mask)
    assert e_filter < 0.75 * e_cheap
    assert e_filter < e_bspline
    assert stats["buckets_used"] > 50


def test_no_zero_filters_and_sparse_buckets_fall_back(filterset):
    norms = np.abs(filterset.filters).sum(axis=1)
    assert np.all(norms > 0.5)
    assert filterset.fallback.any() and not filterset.fallback.all()
    np.testing.assert_array_equal(filterset.filters[filterset.fallback][0],
                                  filterset.global_filter)
    # filters approximately preserve the mean intensity (taps sum to ~1)
    assert np.all(np.abs(filterset.filters.sum(axis=1) - 1) < 0.2)
    assert filterset.info["accumulator_bytes"] == 576 * (125 * 126 // 2 + 125) * 8


def test_apply_is_deterministic_and_chunk_independent(filter_file):
    _, _, _, lr = held_out()
    first, report = apply_gradient_filters(lr, ISO, weights=str(filter_file), device="cpu")
    second, _ = apply_gradient_filters(lr, ISO, weights=str(filter_file), device="cpu",
                                       chunk_voxels=600)
    np.testing.assert_array_equal(first, second)
    assert first.shape == hr_shape(lr.shape, ISO) and first.dtype == np.float32
    assert first.min() >= lr.min() and first.max() <= lr.max()
    json.dumps(report)
    assert report["device"] == "cpu" and report["filters_sha256"] and report["chunks"] == 1
    assert 0 < report["buckets_used"] <= 576


def test_census_blending_reverts_disagreeing_voxels(filter_file):
    _, _, _, lr = held_out()
    plain, _ = apply_gradient_filters(lr, ISO, weights=str(filter_file), device="cpu")
    kept, report = apply_gradient_filters(lr, ISO, weights=str(filter_file), device="cpu",
                                          census_threshold=26)
    np.testing.assert_array_equal(plain, kept)
    assert report["census_reverted_voxels"] == 0
    _, strict = apply_gradient_filters(lr, ISO, weights=str(filter_file), device="cpu",
                                       census_threshold=0)
    assert strict["census_reverted_voxels"] > 0


def test_anisotropic_factor_end_to_end(tmp_path):
    factors = (1.0, 1.0, 4.0)
    images = (ellipsoid_phantom(seed, shape=(24, 24, 32)) for seed in range(3))  # one-shot
    filterset = learn_gradient_filters(images, factors, patch_size=5, stride=1, augment=True,
                                       device="cpu")
    assert filterset.info["symmetries"] == 16
    assert "first image" in filterset.info["threshold_source"]
    path = save_filters(filterset, tmp_path / "gradfilter_x1x1x4.safetensors", card={})
    upscale, hr, mask, lr = held_out(factors)
    assert lr.shape == (32, 32, 8)
    result, report = apply_gradient_filters(lr, factors, weights=str(path), device="cpu")
    assert result.shape == hr.shape == (32, 32, 32)
    assert rmse(result, hr, mask) < rmse(upscale, hr, mask)
    with pytest.raises(ValueError, match="gradfilter_x1x1x4.safetensors.*factors"):
        apply_gradient_filters(lr, ISO, weights=str(path), device="cpu")


def test_default_weights_name_and_missing_message(monkeypatch, tmp_path):
    assert default_weights_path(2).name == "gradfilter_x2x2x2.safetensors"
    assert default_weights_path((1, 1, 4)).name == "gradfilter_x1x1x4.safetensors"
    assert default_weights_path((1.5, 1.5, 1.5)).name == "gradfilter_x1.5x1.5x1.5.safetensors"
    from bids_sr.cards import paths as card_paths

    monkeypatch.setattr(card_paths, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no shipped weights for gradfilter at ×3x3x3"):
        apply_gradient_filters(np.ones((4, 4, 4), np.float32), (3.0, 3.0, 3.0))


def test_save_load_round_trip(filterset, filter_file):
    loaded = load_filters(filter_file)
    np.testing.assert_array_equal(loaded.filters, filterset.filters)
    np.testing.assert_array_equal(loaded.strength_thresholds, filterset.strength_thresholds)
    np.testing.assert_array_equal(loaded.fallback, filterset.fallback)
    assert loaded.factors == ISO and loaded.patch_size == 5 and loaded.bins == (8, 8, 3, 3)
    assert filter_file.stat().st_mode & 0o044 == 0o044  # readable by others
    card = json.loads(filter_file.with_name("gradfilter_x2x2x2.card.json").read_text())
    assert card["command"] == "pytest fixture" and card["training_images"] == 4
    assert card["degradation"] == "gaussian" and len(card["sha256"]) == 64


def test_corrupt_files_raise_naming_the_file(filter_file, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match="broken.safetensors"):
        load_filters(broken)
    tampered = tmp_path / "tampered.safetensors"
    data = bytearray(filter_file.read_bytes())
    data[-10] ^= 0xFF
    tampered.write_bytes(bytes(data))
    card = json.loads(filter_file.with_name("gradfilter_x2x2x2.card.json").read_text())
    (tmp_path / "tampered.card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="tampered.safetensors.*sha256"):
        load_filters(tampered)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_filters(tmp_path / "missing.safetensors")


def test_cuda_request_without_gpu_is_a_clear_error():
    if cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="cuda"):
        get_backend("cuda")
    assert get_backend("auto").device == "cpu"


@pytest.mark.skipif(not cuda_available(), reason="CuPy with a CUDA GPU is not available")
def test_cupy_and_numpy_agree(filter_file):
    images = [ellipsoid_phantom(seed) for seed in range(2)]
    cpu = learn_gradient_filters(images, 2, patch_size=5, stride=2, device="cpu")
    gpu = learn_gradient_filters(images, 2, patch_size=5, stride=2, device="cuda")
    np.testing.assert_allclose(gpu.strength_thresholds, cpu.strength_thresholds, rtol=1e-4)
    assert np.mean(gpu.counts == cpu.counts) > 0.99
    _, _, _, lr = held_out()
    a, _ = apply_gradient_filters(lr, ISO, weights=str(filter_file), device="cpu")
    b, report = apply_gradient_filters(lr, ISO, weights=str(filter_file), device="cuda")
    assert report["device"] == "cuda"
    assert np.mean(np.abs(a - b) < 1e-4) > 0.999


def test_learning_rejects_empty_input_and_bad_settings():
    for empty in ([], iter([])):
        with pytest.raises(ValueError, match="at least one training image"):
            learn_gradient_filters(empty, 2, device="cpu")
    with pytest.raises(ValueError, match="odd"):
        learn_gradient_filters([ellipsoid_phantom(0)], 2, patch_size=4, device="cpu")
    with pytest.raises(ValueError, match="degradation"):
        learn_gradient_filters([ellipsoid_phantom(0)], 2, degradation="blur", device="cpu")
