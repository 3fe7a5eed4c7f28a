"""Learning per-bucket filters (METHODS.md §3, re-implemented and fixed).

For every training image: normalise, crop to the factor, degrade with a preset, cheap-upscale
back to the HR grid, and sample voxels every ``stride`` voxels inside the HR head foreground
(the LR input is never masked with an HR mask — the original's information leak). Each sample
is a patch of the upscale (row of ``A``) and the HR centre voxel (``b``).

Accumulation: ``Q[j] += A_jᵀ A_j`` and ``V[j] += A_jᵀ b_j`` per bucket ``j``, in chunks of
samples sorted by bucket (one matrix product per bucket per chunk). Products run in float32
and are added to float64 accumulators; ``Q`` is stored as packed upper triangles (symmetric),
so its memory is ``n_buckets · taps (taps + 1) / 2 · 8`` bytes whatever the number of images:
272 MB for 576 buckets of 7³ taps, 1.25 GB for 9³, 4.1 GB for the original's 11³ (8.2 GB
dense). The default 7³ patch covers ±1.5 LR voxels at ×2.

Solve: a global filter from all samples, ridge-regularised towards the identity (centre tap
1), then per bucket the Tikhonov problem ``(Q_j + λ_j I) h_j = V_j + λ_j h_global`` by
Cholesky, with ``λ_j = regularisation · trace(Q_j) / taps``: directions the bucket's data do not
determine fall back to the global filter, and buckets with fewer than ``min_samples`` samples
take the global filter outright — never a zero filter.

Thresholds: strength/coherence cuts are quantiles (tertiles) of training voxels. With a
re-iterable input (a list, or a lazy sequence of images) a first pass collects a bounded
uniform reservoir sample of (strength, coherence) over all images; with a one-shot iterator
the first image's samples set them. Pass ``thresholds=`` to fix them.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from bids_sr.degrade import PRESETS, crop_to_factor, degrade
from bids_sr.gradfilter.buckets import (
    DEFAULT_BINS,
    BucketSpec,
    check_bins,
    quantile_thresholds,
    symmetry_group,
)
from bids_sr.gradfilter.features import FEATURE_HALO, local_features, structure_tensor
from bids_sr.gradfilter.filterset import FilterSet
from bids_sr.gradfilter.patches import cheap_upscale, gather_patches
from bids_sr.gradfilter.xp import ArrayBackend, get_backend, to_numpy
from bids_sr.image import as_factors, foreground_mask, robust_normalisation

RESERVOIR_SIZE = 1_000_000


def _single_threaded_blas():
    """Per-bucket Gram products are small: multithreaded BLAS only adds synchronisation (5×
    slower on a loaded 2-core machine). Use threadpoolctl when installed, else do nothing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def training_pair(
    hr: np.ndarray, factors: Sequence[float], degradation: str = "gaussian"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(upscale, hr, mask)`` for one HR image: normalised and cropped HR, the cheap upscale
    of its degraded LR on the same grid, and the HR head foreground where samples are taken."""
    hr = np.asarray(hr, dtype=np.float32)
    if hr.ndim != 3:
        raise ValueError(f"training images must be 3D, got shape {hr.shape}")
    hr = crop_to_factor(robust_normalisation(hr).apply(hr), factors)
    lr = degrade(hr, factors, degradation)
    upscale = cheap_upscale(lr, factors)
    if upscale.shape != hr.shape:
        raise RuntimeError(f"upscale shape {upscale.shape} differs from HR shape {hr.shape}")
    return upscale, hr, foreground_mask(hr)


def sample_positions(
    mask: np.ndarray, stride: int, rng: np.random.Generator, max_samples: int | None = None
) -> np.ndarray:
    """``(3, n)`` voxel coordinates on a grid of step ``stride`` inside ``mask``, optionally a
    random subset of at most ``max_samples`` (sorted, for cache-friendly gathers)."""
    off = stride // 2
    sub = mask[off::stride, off::stride, off::stride]
    pos = np.stack(np.nonzero(sub)).astype(np.int64) * stride + off
    if max_samples is not None and pos.shape[1] > max_samples:
        keep = np.sort(rng.choice(pos.shape[1], size=max_samples, replace=False))
        pos = pos[:, keep]
    return pos


def sample_features(upscale: np.ndarray, positions: np.ndarray, backend: ArrayBackend,
                    slab: int = 32):
    """Structure-tensor features at ``positions`` (slab by slab, memory bounded)."""
    xp = backend.xp
    padded = np.pad(upscale, FEATURE_HALO, mode="edge")
    tensors = []
    order = np.argsort(positions[0], kind="stable")
    pos = positions[:, order]
    for start in range(0, upscale.shape[0], slab):
        stop = min(start + slab, upscale.shape[0])
        lo, hi = np.searchsorted(pos[0], [start, stop])
        if hi == lo:
            continue
        block = backend.asarray(padded[start:stop + 2 * FEATURE_HALO])
        tensor = structure_tensor(block, xp, backend.ndi)
        p = backend.asarray(pos[:, lo:hi])
        tensors.append(tensor[:, p[0] - start, p[1], p[2]])
    tensor = xp.concatenate(tensors, axis=1) if tensors else xp.zeros((6, 0), xp.float32)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return local_features(tensor[:, backend.asarray(inverse)], xp)


class _Accumulator:
    """Per-bucket normal equations in packed symmetric float64 storage."""

    def __init__(self, n_buckets: int, taps: int, backend: ArrayBackend):
        xp = backend.xp
        self.backend = backend
        self.taps = taps
        iu = np.triu_indices(taps)
        self.iu = (backend.asarray(iu[0]), backend.asarray(iu[1]))
        self.q = xp.zeros((n_buckets, iu[0].size), dtype=xp.float64)
        self.v = xp.zeros((n_buckets, taps), dtype=xp.float64)
        self.counts = np.zeros(n_buckets, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return int(self.q.nbytes + self.v.nbytes)

    def add(self, a_t: Any, target: Any, bucket: Any) -> None:
        """Add samples: ``a_t`` ``(taps, n)`` patches, ``target`` ``(n,)``, ``bucket`` ``(n,)``."""
        xp = self.backend.xp
        # CuPy's argsort is always stable and rejects kind=; NumPy needs it asked for
        order = np.argsort(bucket, kind="stable") if xp is np else xp.argsort(bucket)
        sorted_bucket = bucket[order]
        a_t = a_t[:, order]
        target = target[order]
        ids, starts, counts = (to_numpy(x) for x in xp.unique(
            sorted_bucket, return_index=True, return_counts=True))
        with _single_threaded_blas() if xp is np else contextlib.nullcontext():
            for j, s, c in zip(ids.tolist(), starts.tolist(), counts.tolist()):
                block = a_t[:, s:s + c]
                gram = block @ block.T
                self.q[j] += gram[self.iu]
                self.v[j] += block @ target[s:s + c]
                self.counts[j] += c

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        m = np.zeros((self.taps, self.taps), dtype=np.float64)
        iu = (to_numpy(self.iu[0]), to_numpy(self.iu[1]))
        m[iu] = packed
        return m + np.triu(m, 1).T


def _ridge_solve(q: np.ndarray, v: np.ndarray, prior: np.ndarray, ridge: float) -> np.ndarray:
    """Solve ``(Q + λI) h = V + λ prior`` by Cholesky, raising λ if Q is not positive enough."""
    scale = max(float(np.trace(q)) / q.shape[0], 1e-12)
    lam = ridge * scale
    for _ in range(8):
        try:
            factor = scipy.linalg.cho_factor(q + lam * np.eye(q.shape[0]), check_finite=False)
            return scipy.linalg.cho_solve(factor, v + lam * prior, check_finite=False)
        except np.linalg.LinAlgError:
            lam = lam * 10 if lam > 0 else 1e-8 * scale
    raise np.linalg.LinAlgError("normal equations stayed singular after regularisation")


def _thresholds_from(images: Iterable[np.ndarray], factors, degradation, stride, max_samples,
                     spec_bins, backend, rng, progress) -> tuple[np.ndarray, np.ndarray, int]:
    """Strength/coherence quantiles from a uniform reservoir sample over ``images``."""

    keys = np.zeros(0)
    values = np.zeros((2, 0), dtype=np.float32)
    n_images = 0
    for hr in tqdm(images, desc="gradfilter thresholds", unit="image", disable=not progress):
        upscale, _, mask = training_pair(hr, factors, degradation)
        pos = sample_positions(mask, stride, rng, max_samples)
        feats = sample_features(upscale, pos, backend)
        new = np.stack([to_numpy(feats.strength), to_numpy(feats.coherence)])
        keys = np.concatenate([keys, rng.random(new.shape[1])])
        values = np.concatenate([values, new], axis=1)
        if keys.size > RESERVOIR_SIZE:
            keep = np.argpartition(keys, RESERVOIR_SIZE)[:RESERVOIR_SIZE]
            keys, values = keys[keep], values[:, keep]
        n_images += 1
    return (quantile_thresholds(values[0], spec_bins[2]),
            quantile_thresholds(values[1], spec_bins[3]), n_images)


def _symmetric_copy(a_t: Any, v1: Any, group: list, tap_orders: list, rng: np.random.Generator,
                    backend: ArrayBackend) -> tuple[Any, Any]:
    """Each sample under one random symmetry: tap-permuted patches and moved orientations
    (strength and coherence are invariant, so only the angle bins change)."""
    xp = backend.xp
    choice = rng.integers(0, len(group), size=a_t.shape[1])
    a_aug = xp.empty_like(a_t)
    v1_aug = xp.empty_like(v1)
    for g in np.unique(choice).tolist():
        cols = backend.asarray(np.nonzero(choice == g)[0])
        a_aug[:, cols] = a_t[:, cols][tap_orders[g]]
        v1_aug[:, cols] = group[g].transform_orientation(v1[:, cols], xp)
    return a_aug, v1_aug


def _threshold_plan(
    hr_images: Iterable[np.ndarray],
) -> tuple[Iterable[np.ndarray], Iterable[np.ndarray], str]:
    """``(images to learn from, images to set thresholds from, description)``.

    A sequence is read twice (thresholds from all images); a one-shot iterator is read once,
    its first image setting the thresholds and then being learned from like the others.
    """
    if isinstance(hr_images, Sequence):
        if len(hr_images) == 0:
            raise ValueError("learn_gradient_filters needs at least one training image")
        return hr_images, hr_images, "quantiles of a uniform sample of all images' voxels"
    iterator = iter(hr_images)
    first = next(iterator, None)
    if first is None:
        raise ValueError("learn_gradient_filters needs at least one training image")
    return (itertools.chain([first], iterator), [first],
            "quantiles of the first image's training voxels")


def learn_gradient_filters(
    hr_images: Iterable[np.ndarray],
    factors: float | Sequence[float],
    *,
    degradation: str = "gaussian",
    bins: Sequence[int] = DEFAULT_BINS,
    patch_size: int = 7,
    stride: int = 3,
    max_samples_per_image: int | None = None,
    regularisation: float = 1e-3,
    min_samples: int | None = None,
    augment: bool = True,
    augment_copies: int = 1,
    thresholds: tuple[Sequence[float], Sequence[float]] | None = None,
    chunk_samples: int = 65536,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
) -> FilterSet:
    """Learn one filter per bucket mapping the cheap upscale to the HR image (module doc).

    ``hr_images``: HR training volumes (any intensity scale; each is normalised).
    ``augment``: add ``augment_copies`` copies of every sample under a random symmetry
    (flips, and axis permutations between axes of equal factor) with its bucket recomputed.
    ``min_samples`` defaults to the number of taps. Returns a :class:`FilterSet` whose
    ``info`` records the training settings, sample counts, timings and accumulator bytes.
    """

    factors = as_factors(factors)
    bins = check_bins(bins)
    if degradation not in PRESETS:
        raise ValueError(f"unknown degradation {degradation!r}; choose from {PRESETS}")
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch size must be odd and positive, got {patch_size}")
    if stride < 1:
        raise ValueError(f"sample stride must be >= 1, got {stride}")
    backend = get_backend(device)
    xp = backend.xp
    rng = np.random.default_rng(seed)
    taps = patch_size**3
    min_samples = taps if min_samples is None else int(min_samples)
    start_time = time.perf_counter()

    images, threshold_images, threshold_source = _threshold_plan(hr_images)
    if thresholds is not None:
        s_cut = np.asarray(thresholds[0], dtype=np.float32)
        c_cut = np.asarray(thresholds[1], dtype=np.float32)
        threshold_source = "given"
    else:
        s_cut, c_cut, _ = _thresholds_from(threshold_images, factors, degradation, stride,
                                           max_samples_per_image, bins, backend,
                                           np.random.default_rng(seed), progress)
    spec = BucketSpec(bins, s_cut, c_cut)
    if s_cut.shape != (bins[2] - 1,) or c_cut.shape != (bins[3] - 1,):
        raise ValueError(f"thresholds {s_cut.shape}/{c_cut.shape} do not match bins {bins}")
    threshold_time = time.perf_counter() - start_time

    group = symmetry_group(factors)[1:]
    tap_orders = [backend.asarray(g.tap_order(patch_size)) for g in group]
    acc = _Accumulator(spec.n_buckets, taps, backend)
    r = patch_size // 2
    n_images = 0
    n_samples = 0
    per_image_s: list[float] = []
    for hr in tqdm(images, desc="gradfilter learning", unit="image", disable=not progress):
        t0 = time.perf_counter()
        upscale, hr_norm, mask = training_pair(hr, factors, degradation)
        pos = sample_positions(mask, stride, rng, max_samples_per_image)
        feats = sample_features(upscale, pos, backend)
        buckets = spec.bucket_of(feats, xp)
        padded = backend.asarray(np.pad(upscale, r, mode="edge"))
        hr_dev = backend.asarray(hr_norm)
        pos_dev = backend.asarray(pos)
        for s in range(0, pos.shape[1], chunk_samples):
            sl = slice(s, s + chunk_samples)
            p = pos_dev[:, sl]
            a_t = gather_patches(padded, p, patch_size, xp)
            target = hr_dev[p[0], p[1], p[2]]
            acc.add(a_t, target, buckets[sl])
            for _ in range(int(augment) * augment_copies if group else 0):
                a_aug, v1_aug = _symmetric_copy(a_t, feats.v1[:, sl], group, tap_orders, rng,
                                                backend)
                b = spec.bucket(v1_aug, feats.strength[sl], feats.coherence[sl], xp)
                acc.add(a_aug, target, b)
        n_images += 1
        n_samples += int(pos.shape[1])
        per_image_s.append(time.perf_counter() - t0)
    if n_images == 0:
        raise ValueError("learn_gradient_filters needs at least one training image")

    solve_start = time.perf_counter()
    q_host = to_numpy(acc.q)
    v_host = to_numpy(acc.v)
    identity = np.zeros(taps)
    identity[taps // 2] = 1.0
    global_filter = _ridge_solve(acc.unpack(q_host.sum(axis=0)), v_host.sum(axis=0), identity,
                                 1e-4)
    filters = np.empty((spec.n_buckets, taps), dtype=np.float64)
    fallback = acc.counts < min_samples
    with _single_threaded_blas():
        for j in range(spec.n_buckets):
            if fallback[j]:
                filters[j] = global_filter
            else:
                filters[j] = _ridge_solve(acc.unpack(q_host[j]), v_host[j], global_filter,
                                          regularisation)
    info: dict[str, Any] = {
        "degradation": degradation,
        "training_images": n_images,
        "training_samples": n_samples,
        "accumulated_samples": int(acc.counts.sum()),
        "sample_stride": stride,
        "max_samples_per_image": max_samples_per_image,
        "regularisation": regularisation,
        "min_samples": min_samples,
        "augment": bool(augment),
        "augment_copies": augment_copies if augment else 0,
        "symmetries": len(group) + 1,
        "threshold_source": threshold_source,
        "seed": seed,
        "device": backend.device,
        "accumulator_bytes": acc.nbytes,
        "threshold_pass_s": threshold_time,
        "learn_per_image_s": per_image_s,
        "solve_s": time.perf_counter() - solve_start,
        "buckets_fallback": int(fallback.sum()),
    }
    return FilterSet(
        filters=filters.astype(np.float32),
        factors=factors,
        patch_size=patch_size,
        bins=bins,
        strength_thresholds=s_cut,
        coherence_thresholds=c_cut,
        counts=acc.counts,
        fallback=fallback,
        global_filter=global_filter.astype(np.float32),
        info=info,
    )
