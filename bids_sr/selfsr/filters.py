"""Closed-form per-scan through-plane filters: learn on in-plane pairs, apply through-plane.

The learner (RAISR's principle, in 2D planes that contain the degraded axis): every sample
is a ``k0 × k1`` patch of the B-spline upsampling of a plane degraded along its first axis
(:func:`bids_sr.selfsr.pairs.degrade_axis`) and the target is the residual ``sharp − upsampled``
at the patch centre. Per bucket (phase × angle × strength × coherence, :mod:`.features`)
``Q += AᵀA`` and ``V += Aᵀb`` are accumulated in float64 and solved by ridge regression
towards the bucket's phase filter (itself ridge-regularised towards zero, i.e. towards the
B-spline baseline), so sparse buckets fall back smoothly and empty ones exactly.

Application: in planes spanned by (slice axis, one in-plane axis) of the B-spline
upsampling of the scan, each voxel's patch times its bucket's filter is added to it.

Part of the numerical core (never imports nipype or pybids).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from bids_sr.acquisition import Acquisition
from bids_sr.progress import track
from bids_sr.recipes import SELFSR
from bids_sr.selfsr.features import BucketSpec, plane_features, quantile_cuts
from bids_sr.selfsr.pairs import (
    degrade_axis,
    detailed_inplane_axes,
    inplane_orientations,
    phase_bins,
    slice_phase,
)

#: Samples drawn per training orientation (the rest of the head adds little).
MAX_SAMPLES = 1_500_000
#: Voxels per chunk of patch gathering (memory: chunk × taps × 4 B × 2).
CHUNK = 400_000
ANGLE_BINS = 8
STRENGTH_BINS = 3
COHERENCE_BINS = 2
#: Ridge weight of a bucket's filter towards its phase filter (× mean diagonal of Q).
BUCKET_RIDGE = 0.02
#: Ridge weight of the phase filters towards zero (the B-spline baseline).
PHASE_RIDGE = 1e-4
#: Buckets with fewer samples than this many taps take their phase filter.
MIN_SAMPLES_PER_TAP = 4


@dataclass(frozen=True)
class PlaneFilters:
    """A learned filter set: ``filters`` (n_buckets × taps), its bucket spec and patch size."""

    filters: np.ndarray
    phase_filters: np.ndarray
    spec: BucketSpec
    patch: tuple[int, int]
    counts: np.ndarray

    def predict(self, patches: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """The residual each patch's bucket filter predicts (float32)."""
        return np.einsum("nt,nt->n", patches, self.filters[buckets]).astype(np.float32)


def patch_shape(factor: float) -> tuple[int, int]:
    """Patch extent (across the slices, along them): ±(ceil(factor) + 1) × ±3 voxels."""
    return (2 * (int(np.ceil(factor)) + 1) + 1, 7)


def phase_count(factor: float) -> int:
    """Number of phase bins for a slice factor (one per HR voxel of an integer factor)."""
    return max(1, int(round(factor)))


def _planes_first(volume: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """``volume`` with its stack axis first and the plane axes in ``axes`` order."""
    stack = ({0, 1, 2} - set(axes)).pop()
    return np.transpose(volume, (stack, axes[0], axes[1]))


def _windows(volume: np.ndarray, axes: tuple[int, int], patch: tuple[int, int]) -> np.ndarray:
    """A (stack, n0, n1, k0, k1) view of the edge-padded patches around every voxel."""
    planes = _planes_first(volume, axes)
    r0, r1 = patch[0] // 2, patch[1] // 2
    padded = np.pad(planes, ((0, 0), (r0, r0), (r1, r1)), mode="edge")
    return sliding_window_view(padded, patch, axis=(1, 2))


def _chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def head_region(volume: np.ndarray) -> np.ndarray:
    """Voxels worth filtering: above 2 % of the robust maximum, dilated by 3 voxels."""
    data = np.asarray(volume, dtype=np.float32)
    mask = data > 0.02 * float(np.percentile(data, 99.5) or 1.0)
    return ndimage.binary_dilation(mask, iterations=3)


@dataclass
class _Orientation:
    """One training orientation: degraded planes, targets, features, phase bins, positions."""

    degraded: np.ndarray
    target: np.ndarray
    axes: tuple[int, int]
    features: object
    phase_bin: np.ndarray  # per voxel
    positions: tuple[np.ndarray, ...]  # sampled (i, j, k) in volume order


def _training_orientations(
    base: np.ndarray, acquisition: Acquisition, factor: float, n_phases: int,
    rng: np.random.Generator, min_detail_ratio: float,
) -> list[_Orientation]:  # fmt: skip
    slice_axis = int(acquisition.slice_axis)
    # an in-plane axis blurred at acquisition would teach blurred targets (min_detail_ratio)
    detailed = detailed_inplane_axes(base, slice_axis, min_detail_ratio)
    out = []
    for axis, other in inplane_orientations(slice_axis, detailed):
        degraded, target, n_lr = degrade_axis(base, axis, factor, acquisition)
        feats = plane_features(degraded, (axis, other))
        bins_1d = phase_bins(slice_phase(degraded.shape[axis], n_lr), n_phases)
        shape = [1, 1, 1]
        shape[axis] = -1
        phase_bin = np.broadcast_to(bins_1d.reshape(shape), degraded.shape)
        candidates = np.flatnonzero(head_region(target))
        if candidates.size > MAX_SAMPLES:
            candidates = np.sort(rng.choice(candidates, MAX_SAMPLES, replace=False))
        positions = np.unravel_index(candidates, degraded.shape)
        out.append(_Orientation(degraded, target, (axis, other), feats, phase_bin, positions))
    return out


def _gather(windows: np.ndarray, axes: tuple[int, int], positions: tuple[np.ndarray, ...],
            sel: slice) -> np.ndarray:  # fmt: skip
    stack = ({0, 1, 2} - set(axes)).pop()
    index = (positions[stack][sel], positions[axes[0]][sel], positions[axes[1]][sel])
    patches = windows[index]
    return patches.reshape(patches.shape[0], -1).astype(np.float32, copy=False)


def _ridge(q: np.ndarray, v: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    taps = q.shape[0]
    lam = weight * max(float(np.trace(q)) / taps, 1e-12)
    return np.linalg.solve(q + lam * np.eye(taps), v + lam * prior)


def learn_plane_filters(
    base: np.ndarray, acquisition: Acquisition, factor: float, *, seed: int = 0,
    progress: bool = False, min_detail_ratio: float = SELFSR.min_detail_ratio,
) -> PlaneFilters:  # fmt: skip
    """Learn through-plane filters from the in-plane data of ``base``.

    ``base`` is the B-spline upsampling of the normalised scan on the output grid,
    ``acquisition`` its 2D acquisition model and ``factor`` the slice spacing in output-grid
    voxels along the slice axis. ``seed`` fixes the sample draw (the result is otherwise
    exact arithmetic: the same seed gives the same filters). ``min_detail_ratio``: which
    in-plane axes give training pairs (:func:`bids_sr.selfsr.pairs.detailed_inplane_axes`).
    """
    rng = np.random.default_rng(seed)
    patch = patch_shape(factor)
    taps = patch[0] * patch[1]
    n_phases = phase_count(factor)
    orientations = _training_orientations(base, acquisition, factor, n_phases, rng,
                                          min_detail_ratio)  # fmt: skip
    strength = np.concatenate([o.features.strength[o.positions] for o in orientations])
    coherence = np.concatenate([o.features.coherence[o.positions] for o in orientations])
    spec = BucketSpec(
        phases=n_phases, angles=ANGLE_BINS,
        strength_cuts=quantile_cuts(strength, STRENGTH_BINS),
        coherence_cuts=quantile_cuts(coherence, COHERENCE_BINS),
    )  # fmt: skip
    del strength, coherence
    q = np.zeros((spec.n_buckets, taps, taps))
    v = np.zeros((spec.n_buckets, taps))
    counts = np.zeros(spec.n_buckets, dtype=np.int64)
    chunks = [(o, sel) for o in orientations for sel in _chunks(o.positions[0].size)]
    windows = None
    for o, sel in track(chunks, desc="selfsr: learning filters, chunk", unit="chunk",
                        bar=progress):  # fmt: skip
        if windows is None or windows[0] is not o:
            windows = (o, _windows(o.degraded, o.axes, patch))
        f = o.features
        pos = tuple(p[sel] for p in o.positions)
        a = _gather(windows[1], o.axes, o.positions, sel)
        b = (o.target[pos] - o.degraded[pos]).astype(np.float32)
        bucket = spec.bucket(o.phase_bin[pos], f.angle[pos], f.strength[pos],
                             f.coherence[pos])  # fmt: skip
        order = np.argsort(bucket, kind="stable")
        bucket, a, b = bucket[order], a[order], b[order]
        ids, starts = np.unique(bucket, return_index=True)
        ends = np.append(starts[1:], bucket.size)
        for j, s0, s1 in zip(ids, starts, ends, strict=True):
            block = a[s0:s1]
            q[j] += block.T @ block
            v[j] += block.T @ b[s0:s1]
            counts[j] += s1 - s0
    per_phase = spec.n_buckets // n_phases
    phase_filters = np.zeros((n_phases, taps))
    filters = np.zeros((spec.n_buckets, taps))
    for p in range(n_phases):
        span = slice(p * per_phase, (p + 1) * per_phase)
        qp, vp = q[span].sum(axis=0), v[span].sum(axis=0)
        if counts[span].sum() >= MIN_SAMPLES_PER_TAP * taps:
            phase_filters[p] = _ridge(qp, vp, np.zeros(taps), PHASE_RIDGE)
        for j in range(span.start, span.stop):
            if counts[j] >= MIN_SAMPLES_PER_TAP * taps:
                filters[j] = _ridge(q[j], v[j], phase_filters[p], BUCKET_RIDGE)
            else:
                filters[j] = phase_filters[p]
    return PlaneFilters(
        filters=filters.astype(np.float32), phase_filters=phase_filters.astype(np.float32),
        spec=spec, patch=patch, counts=counts,
    )  # fmt: skip


def apply_plane_filters(
    base: np.ndarray, filters: PlaneFilters, slice_axis: int, other: int, n_lr: int, *,
    region: np.ndarray | None = None, progress: bool = False,
) -> np.ndarray:  # fmt: skip
    """``base`` plus the filters' residual in the (``slice_axis``, ``other``) planes.

    ``n_lr`` is the number of acquired slices (it sets each HR voxel's phase); only voxels
    in ``region`` (default: :func:`head_region`) are filtered.
    """
    axes = (int(slice_axis), int(other))
    feats = plane_features(base, axes)
    bins_1d = phase_bins(slice_phase(base.shape[slice_axis], n_lr), filters.spec.phases)
    shape = [1, 1, 1]
    shape[slice_axis] = -1
    phase_bin = np.broadcast_to(bins_1d.reshape(shape), base.shape)
    region = head_region(base) if region is None else region
    positions = np.nonzero(region)
    windows = _windows(base, axes, filters.patch)
    out = np.array(base, dtype=np.float32, copy=True)
    n = positions[0].size
    for sel in track(list(_chunks(n)), desc=f"selfsr: filtering planes ({axes[0]}, "
                     f"{axes[1]}), chunk", unit="chunk", bar=progress):  # fmt: skip
        pos = tuple(p[sel] for p in positions)
        bucket = filters.spec.bucket(phase_bin[pos], feats.angle[pos], feats.strength[pos],
                                     feats.coherence[pos])  # fmt: skip
        out[pos] += filters.predict(_gather(windows, axes, positions, sel), bucket)
    return out
