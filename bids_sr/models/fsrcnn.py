"""3D FSRCNN (seed 000): feature extraction, shrink, mapping, expand, learned upsampling.

Input is the LR volume; the last layer is a transposed convolution whose stride is the
per-axis integer factor. Published configuration (d=56, s=16, m=4, ×2): 77,457 parameters.

Alignment. The original is a Keras model whose transposed convolution uses TensorFlow's
'same' padding: for kernel ``k`` and stride ``s`` it pads ``k - s`` in total, ``(k - s) // 2``
before and the rest after. We reproduce that with ``ConvTranspose3d(padding=(k - s) // 2)``
followed by dropping ``(k - s) - 2·((k - s) // 2)`` (0 or 1) voxels at the end of each axis.
For k = 9, s = 2 this is ``padding=3`` then drop the last voxel, and the output sampled at
``[::2, ::2, ::2]`` lands on the LR samples (as the original's decimation training expects);
with s = 1 it is an ordinary 'same' convolution. The original's ReLU after the transposed
convolution is dropped (it clips the output for no benefit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bids_sr.models.padding import set_padding_mode, transposed_conv3d

DEFAULT_CONFIG: dict[str, Any] = {
    "factors": [2, 2, 2],
    "d": 56,
    "s": 16,
    "m": 4,
    "deconv_kernel": 9,
    "in_channels": 1,
    "input_scale": 1.0,
    "padding_mode": "zeros",
}


def tf_same_transposed_padding(kernel: int, stride: int) -> tuple[int, int]:
    """(padding for ConvTranspose, voxels to drop at the end) matching TF 'same' alignment."""
    total = max(kernel - stride, 0)
    before = total // 2
    return before, total - 2 * before


class FSRCNN3D(nn.Module):
    """3D FSRCNN with per-axis integer upsampling factors.

    ``input_scale`` multiplies the input (and divides the output): imported weights trained
    on 0–255 intensities keep working on our ~[0, 1] normalised volumes. ``lr_scale``: the
    training loop gives the transposed convolution a tenth of the learning rate, as Dong et
    al. (2016) do — its 9³×56 taps all move one output voxel, so at the full rate Adam makes
    the output jump and training diverges. ``padding_mode``: see
    :mod:`bids_sr.models.padding` ('zeros' as published; training uses 'replicate').
    """

    lr_scale = {"deconv": 0.1}

    def __init__(
        self,
        factors: Sequence[int] = (2, 2, 2),
        d: int = 56,
        s: int = 16,
        m: int = 4,
        deconv_kernel: int = 9,
        in_channels: int = 1,
        input_scale: float = 1.0,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.factors = tuple(int(f) for f in factors)
        if len(self.factors) != 3 or min(self.factors) < 1:
            raise ValueError(f"FSRCNN needs three integer factors >= 1, got {factors}")
        self.m = m
        self.deconv_kernel = deconv_kernel
        self.input_scale = float(input_scale)
        layers: list[nn.Module] = [nn.Conv3d(in_channels, d, 5, padding=2), nn.ReLU(inplace=True)]
        layers += [nn.Conv3d(d, s, 1), nn.ReLU(inplace=True)]
        for _ in range(m):
            layers += [nn.Conv3d(s, s, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.Conv3d(s, d, 1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        pads = [tf_same_transposed_padding(deconv_kernel, f) for f in self.factors]
        self._drop = tuple(p[1] for p in pads)
        self.deconv = nn.ConvTranspose3d(
            d, 1, deconv_kernel, stride=self.factors, padding=tuple(p[0] for p in pads)
        )
        set_padding_mode(self.body, padding_mode)
        self.padding_mode = padding_mode
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.body:
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.deconv.weight, std=1e-3)
        nn.init.zeros_(self.deconv.bias)

    @property
    def receptive_radius(self) -> int:
        """Radius in LR voxels beyond which an input voxel cannot change an output voxel."""
        return receptive_radius({"m": self.m, "deconv_kernel": self.deconv_kernel})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x * self.input_scale) if self.input_scale != 1 else self.body(x)
        y = transposed_conv3d(self.deconv, features, self.padding_mode)
        dz, dy, dx = self._drop
        y = y[:, :, : y.shape[2] - dz, : y.shape[3] - dy, : y.shape[4] - dx]
        return y / self.input_scale if self.input_scale != 1 else y


def receptive_radius(config: dict[str, Any]) -> int:
    """5³ head (2) + m 3³ mapping layers (1 each) + the transposed conv (≤ k // 2 LR voxels)."""
    cfg = {**DEFAULT_CONFIG, **config}
    return 2 + int(cfg["m"]) + int(cfg["deconv_kernel"]) // 2


def build(config: dict[str, Any]) -> FSRCNN3D:
    """Build an FSRCNN3D from a config dict (missing keys take DEFAULT_CONFIG values)."""
    cfg = {**DEFAULT_CONFIG, **config}
    return FSRCNN3D(
        factors=cfg["factors"],
        d=cfg["d"],
        s=cfg["s"],
        m=cfg["m"],
        deconv_kernel=cfg["deconv_kernel"],
        in_channels=cfg["in_channels"],
        input_scale=cfg["input_scale"],
        padding_mode=cfg["padding_mode"],
    )
