"""3D SRGAN (seed 004): a residual generator with learned upsampling, and a discriminator.

Generator (3³ convolutions, N(0, 0.02) init, leaky ReLU 0.25): conv 1→fs, BN, LReLU; ``nb``
residual blocks [conv, BN, LReLU, conv, BN] + skip; conv, BN, long skip to the head; then one
upsampling stage per factor of the per-axis decomposition (×4 → two ×2 stages, 1×1×4 → two
1×1×2 stages, ×3 → one ×3 stage); final conv → 1 channel. Upsampling modes:

``subpixel`` (default)
    conv c→(up_channels/8)·∏stride, LReLU, 3D pixel shuffle. With the published defaults
    (fs 32, nb 6, ×4, up_channels 64) each ×2 stage is conv→64 + shuffle→8 channels, and the
    generator has 431,097 parameters — the original's figure.
``deconv``
    transposed conv with kernel 3·stride, stride, padding stride (6³/2/2 for ×2), initialised
    from a 3³ kernel enlarged by nearest neighbour so it starts checkerboard-free; →up_channels.
``nn``
    nearest-neighbour resize then conv 3³ → up_channels, LReLU.

The discriminator keeps the original's convolution stack (32, 32/s2, 64, 64/s2, 128,
128/s2, 256, 256/s2; BN after all but the first; LReLU 0.3) but replaces its 100-M-parameter
dense layer on the flattened map by global average pooling, then dense 1024 and dense 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bids_sr.models.espcn import pixel_shuffle_3d
from bids_sr.models.padding import set_padding_mode, transposed_conv3d

UPSAMPLING_MODES = ("subpixel", "deconv", "nn")

DEFAULT_CONFIG: dict[str, Any] = {
    "factors": [4, 4, 4],
    "fs": 32,
    "nb": 6,
    "upsampling": "subpixel",
    "up_channels": 64,
    "in_channels": 1,
    "input_scale": 1.0,
    "padding_mode": "zeros",
}


def upsampling_stages(factors: Sequence[int]) -> list[tuple[int, int, int]]:
    """Split per-axis integer factors into per-stage strides: factors of 2 first, then the rest.

    ``(4, 4, 4) → [(2, 2, 2), (2, 2, 2)]``; ``(1, 1, 4) → [(1, 1, 2), (1, 1, 2)]``;
    ``(3, 3, 3) → [(3, 3, 3)]``; ``(1, 1, 1) → []``.
    """
    per_axis: list[list[int]] = []
    for factor in factors:
        f = int(factor)
        if f < 1:
            raise ValueError(f"SRGAN needs integer factors >= 1, got {tuple(factors)}")
        parts = []
        while f % 2 == 0:
            parts.append(2)
            f //= 2
        if f > 1:
            parts.append(f)
        per_axis.append(parts)
    n_stages = max((len(p) for p in per_axis), default=0)
    return [tuple(p[i] if i < len(p) else 1 for p in per_axis) for i in range(n_stages)]


def _lrelu(slope: float = 0.25) -> nn.LeakyReLU:
    return nn.LeakyReLU(slope, inplace=True)


class _ResidualBlock(nn.Module):
    def __init__(self, fs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(fs, fs, 3, padding=1),
            nn.BatchNorm3d(fs),
            _lrelu(),
            nn.Conv3d(fs, fs, 3, padding=1),
            nn.BatchNorm3d(fs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _SubPixelStage(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv3d(c_in, c_out * stride[0] * stride[1] * stride[2], 3, padding=1)
        self.act = _lrelu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.act(self.conv(x)), self.stride)


class _DeconvStage(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        kernel = tuple(3 * s for s in stride)
        self.stride = stride
        self.deconv = nn.ConvTranspose3d(c_in, c_out, kernel, stride=stride, padding=stride)
        self.act = _lrelu()
        self.padding_mode = "zeros"

    def nn_enlarged_init(self, std: float = 0.02) -> None:
        """Draw a 3³ kernel and repeat each tap stride times per axis (checkerboard-free)."""
        base = torch.randn(self.deconv.in_channels, self.deconv.out_channels, 3, 3, 3) * std
        for axis, s in enumerate(self.stride):
            base = base.repeat_interleave(s, dim=2 + axis)
        with torch.no_grad():
            self.deconv.weight.copy_(base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(transposed_conv3d(self.deconv, x, self.padding_mode))


class _ResizeConvStage(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.act = _lrelu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, scale_factor=self.stride, mode="nearest")
        return self.act(self.conv(x))


class SRGANGenerator3D(nn.Module):
    """The 3D SRGAN generator with per-axis integer factors and three upsampling modes;
    ``padding_mode`` of every convolution: see :mod:`bids_sr.models.padding`."""

    def __init__(
        self,
        factors: Sequence[int] = (4, 4, 4),
        fs: int = 32,
        nb: int = 6,
        upsampling: str = "subpixel",
        up_channels: int = 64,
        in_channels: int = 1,
        input_scale: float = 1.0,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"unknown SRGAN upsampling {upsampling!r}; use {UPSAMPLING_MODES}")
        self.factors = tuple(int(f) for f in factors)
        self.nb = nb
        self.upsampling = upsampling
        self.input_scale = float(input_scale)
        self.head = nn.Sequential(
            nn.Conv3d(in_channels, fs, 3, padding=1), nn.BatchNorm3d(fs), _lrelu()
        )
        self.blocks = nn.Sequential(*[_ResidualBlock(fs) for _ in range(nb)])
        self.tail = nn.Sequential(nn.Conv3d(fs, fs, 3, padding=1), nn.BatchNorm3d(fs))
        stages: list[nn.Module] = []
        channels = fs
        for stride in upsampling_stages(self.factors):
            if upsampling == "subpixel":
                out = up_channels // 8
                stages.append(_SubPixelStage(channels, out, stride))
            elif upsampling == "deconv":
                out = up_channels
                stages.append(_DeconvStage(channels, out, stride))
            else:
                out = up_channels
                stages.append(_ResizeConvStage(channels, out, stride))
            channels = out
        self.upsample = nn.Sequential(*stages)
        self.final = nn.Conv3d(channels, 1, 3, padding=1)
        set_padding_mode(self, padding_mode)
        for stage in self.upsample:
            if isinstance(stage, _DeconvStage):
                stage.padding_mode = padding_mode
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) weights and zero biases; transposed convs get the NN-enlarged kernel."""
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        for module in self.upsample:
            if isinstance(module, _DeconvStage):
                module.nn_enlarged_init()

    @property
    def receptive_radius(self) -> int:
        return receptive_radius({"nb": self.nb, "factors": list(self.factors)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.input_scale
        head = self.head(x * scale if scale != 1 else x)
        y = self.tail(self.blocks(head)) + head
        y = self.final(self.upsample(y))
        return y / scale if scale != 1 else y


class SRGANDiscriminator3D(nn.Module):
    """Convolution stack of the original discriminator with global pooling before the dense
    layers (the original's flatten→dense-1024 alone held ~100 M parameters)."""

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        first = True
        for width in widths:
            for stride in (1, 2):
                layers.append(nn.Conv3d(channels, width, 3, stride=stride, padding=1))
                if not first:
                    layers.append(nn.BatchNorm3d(width))
                layers.append(nn.LeakyReLU(0.3, inplace=True))
                channels, first = width, False
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels, 1024), nn.LeakyReLU(0.3, inplace=True), nn.Linear(1024, 1)
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Least-squares GAN score per volume, shape (N, 1); any input size ≥ 1 voxel."""
        return self.classifier(self.features(x).mean(dim=(2, 3, 4)))


def receptive_radius(config: dict[str, Any]) -> int:
    """Bound in LR voxels: head 1, 2 per residual block, tail 1, ≤ 2 per stage, final 1."""
    cfg = {**DEFAULT_CONFIG, **config}
    return 1 + 2 * int(cfg["nb"]) + 1 + 2 * len(upsampling_stages(cfg["factors"])) + 1


def build(config: dict[str, Any]) -> SRGANGenerator3D:
    """Build the generator from a config dict (missing keys take DEFAULT_CONFIG values)."""
    cfg = {**DEFAULT_CONFIG, **config}
    return SRGANGenerator3D(
        factors=cfg["factors"],
        fs=cfg["fs"],
        nb=cfg["nb"],
        upsampling=cfg["upsampling"],
        up_channels=cfg["up_channels"],
        in_channels=cfg["in_channels"],
        input_scale=cfg["input_scale"],
        padding_mode=cfg["padding_mode"],
    )


def build_discriminator(config: dict[str, Any] | None = None) -> SRGANDiscriminator3D:
    """Build the global-pooling discriminator (config keys: in_channels, widths)."""
    cfg = {"in_channels": 1, "widths": [32, 64, 128, 256], **(config or {})}
    return SRGANDiscriminator3D(in_channels=cfg["in_channels"], widths=cfg["widths"])
