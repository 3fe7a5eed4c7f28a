"""3D-ESPCN (seed 003): two convolutions on the LR grid, then a 3D pixel shuffle.

conv 3³ 1→50, ReLU; conv 1³ 50→100, ReLU; conv 3³ 100→rz·ry·rx; pixel shuffle
``HR[z·rz + a, y·ry + b, x·rx + c] = channel a·ry·rx + b·rx + c``. 179,364 parameters at
r = 4 and 28,108 at r = 2. Per-axis integer factors (e.g. 1×1×4) are supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bids_sr.models.padding import set_padding_mode

DEFAULT_CONFIG: dict[str, Any] = {
    "factors": [4, 4, 4],
    "features": [50, 100],
    "in_channels": 1,
    "input_scale": 1.0,
    "padding_mode": "zeros",
}


def pixel_shuffle_3d(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Rearrange (N, C·rz·ry·rx, D, H, W) into (N, C, D·rz, H·ry, W·rx) (METHODS.md order)."""
    rz, ry, rx = (int(f) for f in factors)
    n, c, d, h, w = x.shape
    out = c // (rz * ry * rx)
    x = x.reshape(n, out, rz, ry, rx, d, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(n, out, d * rz, h * ry, w * rx)


class ESPCN3D(nn.Module):
    """3D efficient sub-pixel CNN with per-axis integer factors; ``padding_mode``: see
    :mod:`bids_sr.models.padding`."""

    def __init__(
        self,
        factors: Sequence[int] = (4, 4, 4),
        features: Sequence[int] = (50, 100),
        in_channels: int = 1,
        input_scale: float = 1.0,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.factors = tuple(int(f) for f in factors)
        if len(self.factors) != 3 or min(self.factors) < 1:
            raise ValueError(f"ESPCN needs three integer factors >= 1, got {factors}")
        f1, f2 = (int(v) for v in features)
        r3 = self.factors[0] * self.factors[1] * self.factors[2]
        self.input_scale = float(input_scale)
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, f1, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(f1, f2, 1),
            nn.ReLU(inplace=True),
            nn.Conv3d(f2, r3, 3, padding=1),
        )
        set_padding_mode(self.body, padding_mode)
        for module in self.body:
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @property
    def receptive_radius(self) -> int:
        return receptive_radius({})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.input_scale
        y = pixel_shuffle_3d(self.body(x * scale if scale != 1 else x), self.factors)
        return y / scale if scale != 1 else y


def receptive_radius(config: dict[str, Any]) -> int:
    """Two 3³ convolutions on the LR grid: radius 2 LR voxels."""
    return 2


def build(config: dict[str, Any]) -> ESPCN3D:
    """Build an ESPCN3D from a config dict (missing keys take DEFAULT_CONFIG values)."""
    cfg = {**DEFAULT_CONFIG, **config}
    return ESPCN3D(
        factors=cfg["factors"],
        features=cfg["features"],
        in_channels=cfg["in_channels"],
        input_scale=cfg["input_scale"],
        padding_mode=cfg["padding_mode"],
    )
