"""The networks: published parameter counts, shapes for per-axis factors, alignment, registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bids_sr.models import espcn, fsrcnn, registry, srgan, srrecnn


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("method", "config", "expected"),
    [
        ("fsrcnn", {}, 77_457),
        ("srrecnn", {}, 888_769),
        ("srrecnn-t2w", {}, 890_497),
        ("srrecnn-flair", {}, 890_497),
        ("srrecnn", {"layers": 20}, 1_995_329),
        ("espcn", {"factors": [4, 4, 4]}, 179_364),
        ("espcn", {"factors": [2, 2, 2]}, 28_108),
        ("srgan", {"factors": [4, 4, 4]}, 431_097),
    ],
)
def test_published_parameter_counts(method, config, expected):
    assert n_params(registry.get_spec(method).build(config)) == expected


@pytest.mark.parametrize("method", ["fsrcnn", "espcn", "srgan"])
@pytest.mark.parametrize("factors", [(2, 2, 2), (3, 3, 3), (1, 1, 4), (2, 1, 3)])
def test_learned_upsampling_output_shape(method, factors):
    torch.manual_seed(0)
    model = registry.get_spec(method).build({"factors": list(factors)}).eval()
    x = torch.rand(1, 1, 5, 6, 7)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1, 5 * factors[0], 6 * factors[1], 7 * factors[2])
    assert torch.isfinite(y).all()


def _tf_same_transposed(x, weight, bias, stride, kernel):
    """Reference: full transposed conv, then TF 'same' crop (pad_before = (k - s) // 2)."""
    full = nn.functional.conv_transpose3d(x, weight, bias, stride=stride)
    out = []
    for axis, s in enumerate(stride):
        before = max(kernel - s, 0) // 2
        out.append(slice(before, before + x.shape[2 + axis] * s))
    return full[(slice(None), slice(None), *out)]


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 1, 4), (3, 1, 2)])
def test_fsrcnn_deconv_matches_tensorflow_same_alignment(factors):
    torch.manual_seed(1)
    model = fsrcnn.build({"factors": list(factors), "m": 1}).eval()
    with torch.no_grad():
        model.deconv.weight.normal_()
        feats = torch.rand(1, 56, 4, 5, 6)
        ours = model.deconv(feats)
        dz, dy, dx = model._drop
        ours = ours[:, :, : ours.shape[2] - dz, : ours.shape[3] - dy, : ours.shape[4] - dx]
        ref = _tf_same_transposed(feats, model.deconv.weight, model.deconv.bias, factors, 9)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref)


def test_fsrcnn_published_alignment_constants():
    model = fsrcnn.build({})
    assert model.deconv.padding == (3, 3, 3) and model.deconv.stride == (2, 2, 2)
    assert model._drop == (1, 1, 1)
    assert fsrcnn.tf_same_transposed_padding(9, 1) == (4, 0)  # factor 1: a 'same' conv


def test_fsrcnn_factor_one_is_same_convolution():
    torch.manual_seed(2)
    model = fsrcnn.build({"factors": [1, 1, 1], "m": 1}).eval()
    feats = torch.rand(1, 56, 6, 6, 6)
    with torch.no_grad():
        ours = model.deconv(feats)
        # transposed conv with stride 1 == correlation with the flipped, transposed kernel
        kernel = model.deconv.weight.flip(2, 3, 4).transpose(0, 1)
        ref = nn.functional.conv3d(feats, kernel, model.deconv.bias, padding=4)
    torch.testing.assert_close(ours, ref)


def test_pixel_shuffle_order_follows_methods():
    r = (2, 3, 2)
    x = torch.arange(12 * 2 * 2 * 2, dtype=torch.float32).reshape(1, 12, 2, 2, 2)
    y = espcn.pixel_shuffle_3d(x, r)
    assert y.shape == (1, 1, 4, 6, 4)
    for z, yy, xx in [(0, 0, 0), (1, 1, 1), (0, 1, 1)]:
        for a in range(2):
            for b in range(3):
                for c in range(2):
                    channel = a * 3 * 2 + b * 2 + c
                    assert y[0, 0, z * 2 + a, yy * 3 + b, xx * 2 + c] == x[0, channel, z, yy, xx]


def test_srgan_stage_decomposition():
    assert srgan.upsampling_stages((4, 4, 4)) == [(2, 2, 2), (2, 2, 2)]
    assert srgan.upsampling_stages((1, 1, 4)) == [(1, 1, 2), (1, 1, 2)]
    assert srgan.upsampling_stages((3, 3, 3)) == [(3, 3, 3)]
    assert srgan.upsampling_stages((6, 2, 1)) == [(2, 2, 1), (3, 1, 1)]


@pytest.mark.parametrize("mode", srgan.UPSAMPLING_MODES)
def test_srgan_upsampling_modes(mode):
    torch.manual_seed(3)
    model = srgan.build({"factors": [2, 2, 4], "upsampling": mode, "nb": 1}).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 1, 4, 4, 3))
    assert y.shape == (2, 1, 8, 8, 12)


def test_srgan_deconv_init_is_checkerboard_free():
    torch.manual_seed(4)
    model = srgan.build({"factors": [2, 2, 2], "upsampling": "deconv", "nb": 1})
    stage = model.upsample[0]
    with torch.no_grad():
        stage.deconv.bias.zero_()
        y = stage.deconv(torch.ones(1, 32, 6, 6, 6))[0, :, 4:-4, 4:-4, 4:-4]
    # a constant input gives a constant output away from the borders: no 2-periodic pattern
    spread = (y.amax(dim=(1, 2, 3)) - y.amin(dim=(1, 2, 3))).abs().max()
    assert spread < 1e-5 * y.abs().max()


def test_srgan_discriminator_global_pooling():
    disc = srgan.build_discriminator()
    assert n_params(disc) < 5_000_000  # the original's dense layer alone held ~100 M
    with torch.no_grad():
        assert disc.eval()(torch.rand(2, 1, 16, 16, 16)).shape == (2, 1)
        assert disc(torch.rand(1, 1, 20, 24, 12)).shape == (1, 1)


def test_srrecnn_residual_is_on_t1w_channel_only():
    model = srrecnn.build({"in_channels": 2, "layers": 3, "features": 8}).eval()
    with torch.no_grad():
        model.body[-1].weight.zero_()
        model.body[-1].bias.zero_()
        x = torch.rand(1, 2, 6, 7, 8)
        y = model(x)
    assert y.shape == (1, 1, 6, 7, 8)
    torch.testing.assert_close(y, x[:, :1])


def test_receptive_radii():
    assert registry.get_spec("srrecnn").receptive_radius() == 10
    assert registry.get_spec("srrecnn").receptive_radius({"layers": 20}) == 20
    assert registry.get_spec("espcn").receptive_radius() == 2
    assert registry.get_spec("fsrcnn").receptive_radius() == 10
    assert registry.get_spec("srgan").receptive_radius() == 1 + 12 + 1 + 4 + 1


def test_receptive_radius_bounds_influence():
    """Perturbing an input voxel just beyond the radius leaves the centre output unchanged."""
    torch.manual_seed(5)
    for method in registry.list_methods():
        spec = registry.get_spec(method)
        config = {"factors": [2, 2, 2]} if spec.learned_upsampling else {}
        if method == "srgan":
            config["nb"] = 1
        model = spec.build(config).eval()
        r = model.receptive_radius
        n = 2 * r + 5
        channels = 2 if spec.needs_t2w else 1
        x = torch.rand(1, channels, n, n, n)
        x2 = x.clone()
        x2[:, :, n // 2 + r + 1, :, :] += 1.0
        with torch.no_grad():
            y, y2 = model(x), model(x2)
        s = 2 if spec.learned_upsampling else 1
        centre = (n // 2) * s
        torch.testing.assert_close(
            y[..., centre : centre + s, :, :], y2[..., centre : centre + s, :, :]
        )


def test_registry_contract():
    assert set(registry.list_methods()) == {"fsrcnn", "espcn", "srgan", "srrecnn", "srrecnn-t2w",
                                            "srrecnn-flair"}
    spec = registry.get_spec("srrecnn")
    assert spec.default_weights((2.0, 2.0, 2.0)).name == "srrecnn_x2x2x2.safetensors"
    assert spec.default_weights((1, 1, 4)).name == "srrecnn_x1x1x4.safetensors"
    assert spec.default_weights((1.5, 1.5, 1.5)).name == "srrecnn_x1.5x1.5x1.5.safetensors"
    assert spec.default_weights((2, 2, 2)).parent.parts[-3:] == ("bids_sr", "data", "weights")
    assert spec.input_grid == "hr" and not spec.needs_t2w
    assert registry.get_spec("srrecnn-t2w").reference_suffix == "T2w"
    # the FLAIR-guided twin: same network, its own method key (weights name their method)
    flair = registry.get_spec("srrecnn-flair")
    assert flair.needs_reference and flair.reference_suffix == "FLAIR"
    assert flair.default_config == registry.get_spec("srrecnn-t2w").default_config
    assert not registry.get_spec("srrecnn").needs_reference
    assert registry.get_spec("fsrcnn").input_grid == "lr"
    with pytest.raises(ValueError, match="unknown network"):
        registry.get_spec("unet")


def test_integer_factors_error_is_clear():
    assert registry.integer_factors("espcn", (1.0, 1.0, 4.0)) == (1, 1, 4)
    with pytest.raises(ValueError, match="espcn .* integer per-axis factors"):
        registry.integer_factors("espcn", (1.5, 1.5, 1.5))


@pytest.mark.parametrize("size", [2, 3, 4, 7])
def test_transposed_conv_on_tiny_inputs_is_exact_with_sound_gradients(size):
    """Zero-pad-and-crop gives the plain transposed convolution's output and gradients
    (the reference runs without oneDNN, whose weight gradient is corrupt on tiny inputs)."""
    from bids_sr.models.padding import transposed_conv3d

    torch.manual_seed(0)
    deconv = nn.ConvTranspose3d(6, 1, 9, stride=(2, 2, 1), padding=(3, 3, 4))
    x = torch.rand(2, 6, size, size + 1, 5, requires_grad=True)
    with torch.backends.mkldnn.flags(enabled=False):
        ref = deconv(x)
        ref.square().mean().backward()
    ref_w, ref_x = deconv.weight.grad.clone(), x.grad.clone()
    deconv.zero_grad()
    x.grad = None
    out = transposed_conv3d(deconv, x)
    out.square().mean().backward()
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(deconv.weight.grad, ref_w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x.grad, ref_x, rtol=1e-4, atol=1e-7)


def test_replicate_padding_reaches_every_convolution_and_the_transposed_one():
    """A constant LR image through FSRCNN with replicate padding gives an output that is
    periodic with the stride right up to the faces (no dark border from zero padding);
    with the published zero padding the faces differ."""
    from bids_sr.models.padding import set_padding_mode

    x = torch.full((1, 1, 6, 6, 6), 0.7)
    with torch.no_grad():
        rep = fsrcnn.build({"padding_mode": "replicate"}).eval()(x)
        torch.manual_seed(0)
        zero = fsrcnn.build({"padding_mode": "zeros"}).eval()
        zero.deconv.weight.normal_(std=0.05)
        zero = zero(x)
    for out, periodic in ((rep, True), (zero, False)):
        diff = (out[:, :, :-2] - out[:, :, 2:]).abs().max().item()
        assert (diff < 1e-6) == periodic
    for module in (srgan, espcn):
        model = module.build({"factors": [2, 2, 2], "padding_mode": "replicate"})
        convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
        assert convs and all(m.padding_mode == "replicate" for m in convs)
    with pytest.raises(ValueError, match="padding_mode"):
        set_padding_mode(model, "mirror")


def test_replicate_transposed_conv_equals_deconv_of_the_extended_input():
    from bids_sr.models.padding import transposed_conv3d

    torch.manual_seed(1)
    deconv = nn.ConvTranspose3d(3, 1, 9, stride=2, padding=3)
    x = torch.rand(1, 3, 7, 8, 9)
    wide = nn.functional.pad(x, [6] * 6, mode="replicate")
    with torch.no_grad():
        ref = deconv(wide)[:, :, 12:-12, 12:-12, 12:-12]
        ours = transposed_conv3d(deconv, x, "replicate")
    torch.testing.assert_close(ours, ref)
