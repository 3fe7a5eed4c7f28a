"""In-plane local structure for bucketing 2D filters (RAISR's hashing, in one plane).

For planes spanned by two array axes of a 3D volume, the 2D structure tensor of the
gradients (central differences, Gaussian window) gives per voxel an orientation angle in
``[0, π)``, a strength (√λ1) and a coherence ``(√λ1 − √λ2) / (√λ1 + √λ2)``. A voxel's bucket
is (phase bin, angle bin, strength bin, coherence bin); the phase is the voxel's position
relative to the acquired slices (:func:`bids_sr.selfsr.pairs.slice_phase`).

Part of the numerical core (never imports nipype or pybids).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Gaussian window of the structure tensor (voxels).
WINDOW_SIGMA = 1.2


@dataclass(frozen=True)
class PlaneFeatures:
    """Per-voxel angle (radians, ``[0, π)``), strength and coherence of one volume."""

    angle: np.ndarray
    strength: np.ndarray
    coherence: np.ndarray


def plane_features(volume: np.ndarray, axes: tuple[int, int]) -> PlaneFeatures:
    """The 2D structure-tensor features of ``volume`` in the planes spanned by ``axes``.

    The angle is measured from ``axes[0]`` towards ``axes[1]`` (the dominant gradient's
    direction, folded to a half turn).
    """
    data = np.asarray(volume, dtype=np.float32)
    g0 = np.gradient(data, axis=axes[0])
    g1 = np.gradient(data, axis=axes[1])
    sigma = [0.0, 0.0, 0.0]
    sigma[axes[0]] = sigma[axes[1]] = WINDOW_SIGMA
    j00 = ndimage.gaussian_filter(g0 * g0, sigma, mode="nearest")
    j11 = ndimage.gaussian_filter(g1 * g1, sigma, mode="nearest")
    j01 = ndimage.gaussian_filter(g0 * g1, sigma, mode="nearest")
    del g0, g1
    half_trace = 0.5 * (j00 + j11)
    root = np.sqrt(np.maximum(0.25 * (j00 - j11) ** 2 + j01**2, 0.0))
    lam1 = np.maximum(half_trace + root, 0.0)
    lam2 = np.maximum(half_trace - root, 0.0)
    angle = 0.5 * np.arctan2(2.0 * j01, j00 - j11)  # (-π/2, π/2]
    angle = np.mod(angle, np.pi).astype(np.float32)
    s1, s2 = np.sqrt(lam1), np.sqrt(lam2)
    coherence = ((s1 - s2) / np.maximum(s1 + s2, 1e-12)).astype(np.float32)
    return PlaneFeatures(angle=angle, strength=s1.astype(np.float32), coherence=coherence)


@dataclass(frozen=True)
class BucketSpec:
    """How features map to buckets: bin counts and the strength/coherence cut points."""

    phases: int
    angles: int
    strength_cuts: np.ndarray  # ascending, len = strength bins - 1
    coherence_cuts: np.ndarray

    @property
    def n_buckets(self) -> int:
        return (self.phases * self.angles * (len(self.strength_cuts) + 1)
                * (len(self.coherence_cuts) + 1))  # fmt: skip

    def bucket(self, phase_bin: np.ndarray, angle: np.ndarray, strength: np.ndarray,
               coherence: np.ndarray) -> np.ndarray:  # fmt: skip
        """Bucket index per voxel (same shapes in, int64 out)."""
        a = np.clip(np.floor(angle / np.pi * self.angles).astype(np.int64), 0, self.angles - 1)
        s = np.searchsorted(self.strength_cuts, strength, side="right")
        c = np.searchsorted(self.coherence_cuts, coherence, side="right")
        n_s, n_c = len(self.strength_cuts) + 1, len(self.coherence_cuts) + 1
        return ((np.asarray(phase_bin, dtype=np.int64) * self.angles + a) * n_s + s) * n_c + c


def quantile_cuts(values: np.ndarray, n_bins: int) -> np.ndarray:
    """``n_bins - 1`` cut points at equal quantiles of ``values`` (float32)."""
    if n_bins <= 1 or values.size == 0:
        return np.zeros(0, dtype=np.float32)
    q = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.quantile(values.astype(np.float64), q).astype(np.float32)
