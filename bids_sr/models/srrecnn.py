"""SRReCNN3D (seed 001): a residual CNN that refines the interpolated image on the HR grid.

L convolutions 3³ with 64 filters (padding 1, ReLU on all but the last, which outputs one
channel), global residual ``out = ILR + net(x)``. ``x`` is the cubic-spline-interpolated LR
T1w (ILR), optionally with a registered HR T2w as a second channel; the residual is added to
the T1w channel only (the original added a 1-channel output to a 2-channel input).
Parameters: 10 layers mono 888,769; 10 layers with two channels 890,497; 20 layers 1,995,329.
Because it runs on the HR grid it takes any factor, non-integer and anisotropic included.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

DEFAULT_CONFIG: dict[str, Any] = {"layers": 10, "features": 64, "in_channels": 1}


class SRReCNN3D(nn.Module):
    """Residual 3D CNN on the HR grid; channel 0 of the input is the interpolated T1w."""

    def __init__(self, layers: int = 10, features: int = 64, in_channels: int = 1) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"SRReCNN3D needs at least 2 layers, got {layers}")
        self.layers = int(layers)
        modules: list[nn.Module] = []
        channels = in_channels
        for _ in range(layers - 1):
            modules += [nn.Conv3d(channels, features, 3, padding=1), nn.ReLU(inplace=True)]
            channels = features
        modules.append(nn.Conv3d(channels, 1, 3, padding=1))
        self.body = nn.Sequential(*modules)
        for module in self.body:
            if isinstance(module, nn.Conv3d):  # He-normal, as the original
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @property
    def receptive_radius(self) -> int:
        return receptive_radius({"layers": self.layers})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.body(x)


def receptive_radius(config: dict[str, Any]) -> int:
    """One HR voxel per 3³ layer."""
    return int({**DEFAULT_CONFIG, **config}["layers"])


def build(config: dict[str, Any]) -> SRReCNN3D:
    """Build an SRReCNN3D from a config dict (missing keys take DEFAULT_CONFIG values)."""
    cfg = {**DEFAULT_CONFIG, **config}
    return SRReCNN3D(layers=cfg["layers"], features=cfg["features"], in_channels=cfg["in_channels"])
