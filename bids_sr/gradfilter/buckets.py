"""Hashing voxels into buckets, learned strength/coherence thresholds, and the symmetry
group used for augmentation.

A bucket is ``((φ_bin · nθ + θ_bin) · ns + s_bin) · nc + c_bin`` with ``nφ`` uniform bins
of the folded azimuth ``φ ∈ [0, π)``, ``nθ`` uniform bins of ``θ ∈ [0, π]``, and strength /
coherence bins cut at thresholds learned from training voxels (tertiles for 3 bins; in
general the ``k/n`` quantiles). Defaults: 8 × 8 × 3 × 3 = 576 buckets.

Augmentation by symmetry: flipping or permuting the axes of an image permutes the taps of
every patch and maps each voxel's dominant orientation ``v1`` to ``S v1`` (``S`` a signed
permutation matrix) while strength and coherence, eigenvalue functions, do not change. So an
augmented sample is the tap-permuted patch with the bucket recomputed from ``S v1`` — an exact
remapping of the angle bins, with no second pass over the image. Axis permutations are
allowed only between axes with equal factors (an anisotropic degradation is not symmetric
under the others).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from bids_sr.gradfilter.features import LocalFeatures, orientation_angles

DEFAULT_BINS = (8, 8, 3, 3)  # φ, θ, strength, coherence


def check_bins(bins: Sequence[int]) -> tuple[int, int, int, int]:
    """Validate ``(nφ, nθ, n_strength, n_coherence)``."""
    values = tuple(int(b) for b in bins)
    if len(values) != 4 or min(values) < 1:
        raise ValueError(f"bins must be four positive counts (phi, theta, strength, coherence), "
                         f"got {tuple(bins)}")
    return values  # type: ignore[return-value]


def quantile_thresholds(values: np.ndarray, n_bins: int) -> np.ndarray:
    """The ``n_bins − 1`` cut points splitting ``values`` into equal-count bins (tertiles
    for 3 bins)."""
    if n_bins <= 1:
        return np.zeros(0, dtype=np.float32)
    if values.size == 0:
        raise ValueError("cannot learn strength/coherence thresholds from zero training voxels")
    qs = np.arange(1, n_bins) / n_bins
    return np.quantile(np.asarray(values, dtype=np.float64), qs).astype(np.float32)


def _digitize(values: Any, cuts: np.ndarray, xp: ModuleType) -> Any:
    index = xp.zeros(values.shape, dtype=xp.int32)
    for cut in np.asarray(cuts, dtype=np.float32):
        index += (values > cut).astype(xp.int32)
    return index


@dataclass(frozen=True)
class BucketSpec:
    """Bin counts and learned thresholds: everything needed to hash a voxel."""

    bins: tuple[int, int, int, int]
    strength_thresholds: np.ndarray
    coherence_thresholds: np.ndarray

    @property
    def n_buckets(self) -> int:
        return int(np.prod(self.bins))

    def angle_bins(self, v1: Any, xp: ModuleType) -> tuple[Any, Any]:
        """φ and θ bin indices of orientations ``v1`` (shape ``(3, n)``)."""
        n_phi, n_theta = self.bins[0], self.bins[1]
        phi, theta = orientation_angles(v1, xp)
        phi_bin = xp.clip((phi * (n_phi / np.pi)).astype(xp.int32), 0, n_phi - 1)
        theta_bin = xp.clip((theta * (n_theta / np.pi)).astype(xp.int32), 0, n_theta - 1)
        return phi_bin, theta_bin

    def bucket(self, v1: Any, strength: Any, coherence: Any, xp: ModuleType) -> Any:
        """Bucket index (int32) of each voxel."""
        _, n_theta, n_s, n_c = self.bins
        phi_bin, theta_bin = self.angle_bins(v1, xp)
        s_bin = _digitize(strength, self.strength_thresholds, xp)
        c_bin = _digitize(coherence, self.coherence_thresholds, xp)
        return ((phi_bin * n_theta + theta_bin) * n_s + s_bin) * n_c + c_bin

    def bucket_of(self, features: LocalFeatures, xp: ModuleType) -> Any:
        return self.bucket(features.v1, features.strength, features.coherence, xp)


@dataclass(frozen=True)
class Symmetry:
    """An axis permutation followed by flips, as applied to an image or a patch."""

    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def apply_to_array(self, data: np.ndarray) -> np.ndarray:
        out = np.transpose(data, self.perm)
        axes = tuple(a for a in range(3) if self.flips[a])
        return np.flip(out, axis=axes) if axes else out

    def tap_order(self, patch_size: int) -> np.ndarray:
        """Index array ``t`` with ``patch'[k] = patch[t[k]]`` for flattened patches."""
        taps = np.arange(patch_size**3).reshape((patch_size,) * 3)
        return np.ascontiguousarray(self.apply_to_array(taps)).ravel()

    def transform_orientation(self, v1: Any, xp: ModuleType) -> Any:
        """Orientation of the transformed image: ``v'[k] = ±v[perm[k]]``."""
        signs = xp.asarray([-1.0 if f else 1.0 for f in self.flips], dtype=v1.dtype)
        return v1[list(self.perm)] * signs[:, None]


def symmetry_group(factors: Sequence[float]) -> list[Symmetry]:
    """All flips combined with the axis permutations that keep ``factors`` unchanged
    (48 elements for isotropic factors, 16 for 1×1×4). The identity comes first."""
    f = [float(v) for v in factors]
    perms = [p for p in itertools.permutations(range(3))
             if all(np.isclose(f[p[k]], f[k]) for k in range(3))]
    flips = list(itertools.product((False, True), repeat=3))
    return [Symmetry(perm=tuple(p), flips=tuple(fl)) for p in perms for fl in flips]
