"""Registry of the deep SR networks: one :class:`MethodSpec` per ``--method`` name.

A spec says how to build the network from a config dict, which grid its input lives on
('lr' for learned upsampling, 'hr' for networks that refine an interpolated image), whether
it needs a registered high-resolution reference (and of which BIDS suffix: ``T2w`` or
``FLAIR``, each with its own weights), how far its receptive field reaches (the tile margin), which
intensity convention its weights expect, and where its shipped weights live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from bids_sr.cards.paths import WEIGHTS_DIR, default_weights_path, format_factors
from bids_sr.models import espcn, fsrcnn, srgan, srrecnn

#: Voxels of a tile's trusted core along each axis, inside its receptive-field margins
MIN_TILE_CORE = 4

__all__ = ["WEIGHTS_DIR", "MethodSpec", "format_factors", "get_spec", "list_methods"]


@dataclass(frozen=True)
class MethodSpec:
    """Everything the inference engine and the interfaces need to know about one network."""

    name: str
    builder: Callable[[dict[str, Any]], nn.Module]
    default_config: dict[str, Any]
    input_grid: str  # 'lr' (learned upsampling) or 'hr' (runs on the interpolated image)
    radius: Callable[[dict[str, Any]], int]
    intensity: str
    default_tile: int  # tile edge on the input grid, in voxels
    description: str = ""
    #: BIDS suffix of the registered HR reference channel (``T2w``, ``FLAIR``); None: mono
    reference_suffix: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_reference(self) -> bool:
        """Whether the network takes a registered HR reference as its second channel."""
        return self.reference_suffix is not None

    @property
    def needs_t2w(self) -> bool:
        """The older name of :attr:`needs_reference` (true for a FLAIR-guided network too)."""
        return self.needs_reference

    def build(self, config: dict[str, Any] | None = None) -> nn.Module:
        """Build the network from ``config`` (missing keys take the default config)."""
        return self.builder({**self.default_config, **(config or {})})

    def receptive_radius(self, config: dict[str, Any] | None = None) -> int:
        """Receptive-field radius in input-grid voxels (the minimum tile margin)."""
        return int(self.radius({**self.default_config, **(config or {})}))

    def min_tile(self, config: dict[str, Any] | None = None) -> int:
        """The smallest inference tile edge (input-grid voxels): a trusted core of
        :data:`MIN_TILE_CORE` voxels inside a margin of the receptive radius on each side."""
        return 2 * self.receptive_radius(config) + MIN_TILE_CORE

    @property
    def learned_upsampling(self) -> bool:
        return self.input_grid == "lr"

    def default_weights(self, factors: Sequence[float]) -> Path:
        """``bids_sr/data/weights/{method}_x{fx}x{fy}x{fz}.safetensors`` (may not exist)."""
        return default_weights_path(self.name, factors)


def _guided_srrecnn(suffix: str, intensity_note: str = "") -> MethodSpec:
    """SRReCNN3D with a registered HR reference of ``suffix`` as second channel: one method
    (and weights) per contrast, ``srrecnn-t2w``, ``srrecnn-flair``."""
    return MethodSpec(
        name=f"srrecnn-{suffix.lower()}",
        builder=srrecnn.build,
        default_config={**srrecnn.DEFAULT_CONFIG, "in_channels": 2},
        input_grid="hr",
        radius=srrecnn.receptive_radius,
        intensity="robust normalisation to ~[0, 1] for both channels" + intensity_note,
        default_tile=96,
        description=f"SRReCNN3D with a registered HR {suffix} as second channel (seed 001)",
        reference_suffix=suffix,
    )


_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="fsrcnn",
            builder=fsrcnn.build,
            default_config=dict(fsrcnn.DEFAULT_CONFIG),
            input_grid="lr",
            radius=fsrcnn.receptive_radius,
            intensity="robust normalisation to ~[0, 1] (imported originals: 0–255, "
            "via config input_scale)",
            default_tile=80,
            description="3D FSRCNN 56-16-4, transposed-conv upsampling (seed 000)",
        ),
        MethodSpec(
            name="espcn",
            builder=espcn.build,
            default_config=dict(espcn.DEFAULT_CONFIG),
            input_grid="lr",
            radius=espcn.receptive_radius,
            intensity="robust normalisation to ~[0, 1]",
            default_tile=96,
            description="3D-ESPCN, 3D pixel-shuffle upsampling (seed 003)",
        ),
        MethodSpec(
            name="srgan",
            builder=srgan.build,
            default_config=dict(srgan.DEFAULT_CONFIG),
            input_grid="lr",
            radius=srgan.receptive_radius,
            intensity="robust normalisation to ~[0, 1]",
            default_tile=48,
            description="3D SRGAN generator fs32 nb6, sub-pixel upsampling (seed 004)",
        ),
        MethodSpec(
            name="srrecnn",
            builder=srrecnn.build,
            default_config=dict(srrecnn.DEFAULT_CONFIG),
            input_grid="hr",
            radius=srrecnn.receptive_radius,
            intensity="robust normalisation to ~[0, 1] (original: min–max to [0, 1])",
            default_tile=96,
            description="SRReCNN3D, residual CNN on the cubic-spline-interpolated T1w (seed 001)",
        ),
        _guided_srrecnn("T2w", " (original: min–max to [0, 1])"),
        _guided_srrecnn("FLAIR"),
    )
}


def list_methods() -> tuple[str, ...]:
    """Names of the registered networks."""
    return tuple(_SPECS)


def get_spec(method: str) -> MethodSpec:
    """The :class:`MethodSpec` for ``method``; ValueError listing the choices otherwise."""
    try:
        return _SPECS[method]
    except KeyError:
        raise ValueError(f"unknown network {method!r}; choose from: {', '.join(_SPECS)}") from None


def integer_factors(method: str, factors: Sequence[float]) -> tuple[int, int, int]:
    """Per-axis integer factors for a learned-upsampling network; ValueError otherwise."""
    ints = tuple(int(round(float(f))) for f in factors)
    if (
        len(ints) != 3
        or any(abs(i - float(f)) > 1e-6 for i, f in zip(ints, factors))
        or min(ints) < 1
    ):
        raise ValueError(
            f"{method} upsamples with a learned layer and needs integer per-axis factors "
            f"(e.g. 2, 4 or 1x1x4), got {tuple(float(f) for f in factors)}; use srrecnn or an "
            "interpolation method for non-integer factors"
        )
    return (ints[0], ints[1], ints[2])
