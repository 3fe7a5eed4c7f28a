"""Tiled inference: equals a whole-volume pass, any size works, device/AMP/OOM handling."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from bids_sr import inference
from bids_sr.image import hr_shape
from bids_sr.models import registry
from bids_sr.models.weights import save_weights

torch.set_num_threads(1)

SMALL = {
    "fsrcnn": {"factors": [2, 2, 2], "m": 2, "d": 12, "s": 6},
    "espcn": {"factors": [2, 2, 2], "features": [8, 16]},
    "srgan": {"factors": [2, 2, 2], "nb": 1, "fs": 8, "up_channels": 16},
    "srrecnn": {"layers": 4, "features": 8},
    "srrecnn-t2w": {"layers": 4, "features": 8, "in_channels": 2},
}


def _volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    return ndimage.gaussian_filter(rng.random(shape), 1.0).astype(np.float32)


def _randomise_bn(model):
    """Non-trivial BatchNorm statistics, so eval-mode BN is exercised by the tiling test."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("method", list(SMALL))
def test_tiled_equals_whole_volume(method):
    torch.manual_seed(0)
    spec = registry.get_spec(method)
    model = spec.build(SMALL[method]).eval()
    _randomise_bn(model)
    channels = 2 if spec.needs_t2w else 1
    shape = (23, 30, 19) if spec.learned_upsampling else (34, 29, 40)
    x = np.stack([_volume(shape, seed=c) for c in range(channels)])
    scale = (2, 2, 2) if spec.learned_upsampling else (1, 1, 1)
    margin = model.receptive_radius
    whole, facts_whole = inference.tiled_forward(model, x, scale, tile_size=64, margin=margin)
    tiled, facts = inference.tiled_forward(
        model, x, scale, tile_size=2 * margin + 6, margin=margin, overlap=0.3, batch_size=3
    )
    assert facts_whole["tiles"] == 1 and facts["tiles"] >= 4
    assert tiled.shape == tuple(n * s for n, s in zip(shape, scale))
    assert np.abs(tiled - whole).max() < 1e-4


@pytest.mark.parametrize(
    ("n", "tile", "margin"), [(50, 20, 4), (128, 96, 2), (128, 80, 10), (33, 32, 5), (200, 40, 12)]
)
def test_axis_plan_covers_every_voxel(n, tile, margin):
    length, starts, ramp = inference.axis_plan(n, tile, margin, 0.125)
    assert length <= tile and starts[0] == 0 and starts[-1] == n - length
    total = np.zeros(n * 2)
    for s in starts:
        w = inference.axis_weight(n, s, length, margin, ramp, 2)
        assert np.all(np.diff(w[: len(w) // 2]) >= 0)  # ramps up then down: smooth blending
        total[s * 2 : (s + length) * 2] += w
    assert total.min() > 0
    # no wasted work: the tiles cover the axis with little more than their margins
    assert len(starts) * length <= n + len(starts) * (2 * margin + 0.125 * tile + 2)


def test_too_small_tile_is_rejected_by_plan():
    with pytest.raises(ValueError, match="too small"):
        inference.axis_plan(40, 8, 4, 0.25)


@pytest.fixture
def weights_dir(tmp_path):
    paths = {}
    torch.manual_seed(1)
    for method, config in SMALL.items():
        factors = tuple(config.get("factors", [2, 2, 2]))
        model = registry.get_spec(method).build(config)
        paths[method] = save_weights(
            model,
            tmp_path / f"{method}.safetensors",
            method=method,
            config=config,
            factors=factors,
            card={"data": "untrained test fixture"},
        )
    return paths


@pytest.mark.parametrize("method", list(SMALL))
def test_super_resolve_network_contract(method, weights_dir):
    lr = _volume((12, 14, 10))
    spec = registry.get_spec(method)
    reference = None
    if spec.needs_t2w:
        reference = _volume(hr_shape(lr.shape, (2, 2, 2)), seed=5)
    hr, report = inference.super_resolve_network(
        lr,
        (2.0, 2.0, 2.0),
        method,
        weights=str(weights_dir[method]),
        reference=reference,
        device="cpu",
        tile_size=16 if spec.learned_upsampling else 12,
    )
    assert hr.shape == hr_shape(lr.shape, (2, 2, 2)) and hr.dtype == np.float32
    assert np.isfinite(hr).all()
    json.dumps(report)
    assert report["device"] == "cpu" and report["fell_back_to_cpu"] is False
    assert report["tiles"] >= 1 and report["peak_memory_mb"] > 0
    assert len(report["weights_sha256"]) == 64 and report["weights"].endswith(".safetensors")
    assert report["amp"] is None


def test_hr_grid_network_takes_anisotropic_non_integer_factors(weights_dir):
    lr = _volume((10, 12, 8))
    hr, report = inference.super_resolve_network(
        lr, (1.0, 1.5, 2.5), "srrecnn", weights=str(weights_dir["srrecnn"]), device="cpu"
    )
    assert hr.shape == hr_shape(lr.shape, (1.0, 1.5, 2.5))


def test_srrecnn_with_zero_residual_returns_cubic_interpolation(tmp_path):
    from bids_sr.interpolation import upsample

    model = registry.get_spec("srrecnn").build(SMALL["srrecnn"])
    with torch.no_grad():
        model.body[-1].weight.zero_()
        model.body[-1].bias.zero_()
    path = save_weights(
        model,
        tmp_path / "z.safetensors",
        method="srrecnn",
        config=SMALL["srrecnn"],
        factors=(2, 2, 2),
        card={},
    )
    lr = _volume((10, 11, 12))
    hr, _ = inference.super_resolve_network(
        lr, (2, 2, 2), "srrecnn", weights=str(path), device="cpu", tile_size=14
    )
    np.testing.assert_allclose(hr, upsample(lr, (2, 2, 2), order=3), atol=1e-6)


def test_errors(weights_dir):
    lr = _volume((8, 8, 8))
    with pytest.raises(ValueError, match="integer per-axis factors"):
        inference.super_resolve_network(
            lr, (1.5, 1.5, 1.5), "espcn", weights=str(weights_dir["espcn"])
        )
    with pytest.raises(ValueError, match="trained for ×2x2x2 but ×1x1x4 was requested"):
        inference.super_resolve_network(lr, (1, 1, 4), "espcn", weights=str(weights_dir["espcn"]))
    with pytest.raises(ValueError, match="needs a reference T2w"):
        inference.super_resolve_network(
            lr, (2, 2, 2), "srrecnn-t2w", weights=str(weights_dir["srrecnn-t2w"])
        )
    with pytest.raises(ValueError, match="reference shape"):
        inference.super_resolve_network(
            lr,
            (2, 2, 2),
            "srrecnn-t2w",
            reference=np.zeros((8, 8, 8)),
            weights=str(weights_dir["srrecnn-t2w"]),
        )
    with pytest.raises(ValueError, match="amp must be"):
        inference.super_resolve_network(
            lr, (2, 2, 2), "espcn", amp="int8", weights=str(weights_dir["espcn"])
        )


def test_missing_shipped_weights_message():
    lr = _volume((8, 8, 8))
    with pytest.raises(FileNotFoundError) as info:
        inference.super_resolve_network(lr, (1, 1, 7), "fsrcnn")
    assert str(info.value) == (
        "no shipped weights for fsrcnn at ×1x1x7; train them with `bids_sr-train fsrcnn ...` "
        "or pass --weights PATH"
    )


def test_amp_on_cpu_warns_and_runs_fp32(weights_dir):
    lr = _volume((8, 8, 8))
    with pytest.warns(UserWarning, match="mixed precision"):
        _, report = inference.super_resolve_network(
            lr, (2, 2, 2), "espcn", amp="bf16", device="cpu", weights=str(weights_dir["espcn"])
        )
    assert report["amp"] is None


def test_oom_retries_smaller_tiles_then_falls_back_to_cpu():
    calls = []

    def run(tile, device):
        calls.append((tile, device))
        if device == "cuda":
            raise torch.cuda.OutOfMemoryError("simulated")
        return "ok"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, tile, device, fell_back = inference.run_with_fallback(run, 64, 16, "cuda")
    assert result == "ok" and device == "cpu" and fell_back and tile == 64
    assert calls == [(64, "cuda"), (32, "cuda"), (16, "cuda"), (64, "cpu")]
    assert any("falling back to the CPU" in str(w.message) for w in caught)


def test_oom_retry_succeeds_with_half_tiles():
    def run(tile, device):
        if tile > 32:
            raise torch.cuda.OutOfMemoryError("simulated")
        return tile

    with pytest.warns(UserWarning, match="retrying with 32"):
        result, tile, device, fell_back = inference.run_with_fallback(run, 64, 16, "cuda")
    assert (result, tile, device, fell_back) == (32, 32, "cuda", False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_error_against_fp32_on_cuda(amp, weights_dir):
    lr = _volume((24, 24, 24))
    ref, _ = inference.super_resolve_network(
        lr, (2, 2, 2), "srrecnn", device="cuda", weights=str(weights_dir["srrecnn"])
    )
    out, report = inference.super_resolve_network(
        lr, (2, 2, 2), "srrecnn", device="cuda", amp=amp, weights=str(weights_dir["srrecnn"])
    )
    assert report["amp"] == amp and report["device"] == "cuda"
    tolerance = 2e-2 if amp == "bf16" else 5e-3
    assert np.abs(out - ref).max() < tolerance


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(weights_dir):
    lr = _volume((16, 16, 16))
    cpu, _ = inference.super_resolve_network(
        lr, (2, 2, 2), "fsrcnn", device="cpu", weights=str(weights_dir["fsrcnn"])
    )
    gpu, report = inference.super_resolve_network(
        lr, (2, 2, 2), "fsrcnn", device="cuda", weights=str(weights_dir["fsrcnn"])
    )
    assert report["device"] == "cuda" and report["peak_memory_kind"].startswith("cuda")
    assert np.abs(cpu - gpu).max() < 1e-3
