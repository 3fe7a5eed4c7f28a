"""The learned filter set: one linear filter per bucket plus what is needed to hash voxels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bids_sr.gradfilter.buckets import BucketSpec, check_bins


@dataclass
class FilterSet:
    """Per-bucket filters on the cheap upscale of one factor.

    ``filters`` has shape ``(n_buckets, patch_size³)`` (float32; taps in C order over the
    patch cube); ``counts`` is the number of training samples per bucket (augmented copies
    included) and ``fallback`` marks buckets that use the global filter because they had too
    few samples. ``info`` holds provenance (degradation, images, timings) for the model card.
    """

    filters: np.ndarray
    factors: tuple[float, float, float]
    patch_size: int
    bins: tuple[int, int, int, int]
    strength_thresholds: np.ndarray
    coherence_thresholds: np.ndarray
    counts: np.ndarray
    fallback: np.ndarray
    global_filter: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bins = check_bins(self.bins)
        self.factors = tuple(float(f) for f in self.factors)  # type: ignore[assignment]
        self.patch_size = int(self.patch_size)
        taps = self.patch_size**3
        n = int(np.prod(self.bins))
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch size must be odd and positive, got {self.patch_size}")
        if self.filters.shape != (n, taps):
            raise ValueError(f"filters have shape {self.filters.shape}, expected {(n, taps)} "
                             f"for bins {self.bins} and patch size {self.patch_size}")
        if self.global_filter.shape != (taps,):
            raise ValueError(f"global filter has shape {self.global_filter.shape}, "
                             f"expected {(taps,)}")
        for name, arr, size in (("strength", self.strength_thresholds, self.bins[2] - 1),
                                ("coherence", self.coherence_thresholds, self.bins[3] - 1)):
            if np.asarray(arr).shape != (size,):
                raise ValueError(f"{name} thresholds have shape {np.asarray(arr).shape}, "
                                 f"expected {(size,)}")
        if self.counts.shape != (n,) or self.fallback.shape != (n,):
            raise ValueError(f"counts/fallback must have shape {(n,)}")

    @property
    def spec(self) -> BucketSpec:
        return BucketSpec(self.bins, np.asarray(self.strength_thresholds, dtype=np.float32),
                          np.asarray(self.coherence_thresholds, dtype=np.float32))

    @property
    def n_buckets(self) -> int:
        return int(np.prod(self.bins))

    @property
    def radius(self) -> int:
        return self.patch_size // 2
