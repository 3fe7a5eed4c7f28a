"""Applying learned filters: cheap upscale → per-voxel bucket → dot(patch, filter).

Vectorised and memory bounded: the upscale is padded once and processed in slabs along the
first axis (each slab with the halo its structure tensor and patches need, so the result does
not depend on the slab size). Inside a slab the filtering is one whole-array multiply-add per
tap — ``out += shifted_k · h[bucket, k]`` — so there is no per-voxel Python loop and no
``n × taps`` patch matrix in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_sr.cards import paths as card_paths
from bids_sr.gradfilter.features import FEATURE_HALO, local_features, structure_tensor
from bids_sr.gradfilter.filterset import FilterSet
from bids_sr.gradfilter.io import file_sha256, load_filters
from bids_sr.gradfilter.patches import cheap_upscale, tap_offsets
from bids_sr.gradfilter.xp import ArrayBackend, get_backend, to_numpy
from bids_sr.image import as_factors, hr_shape
from bids_sr.progress import track

# batch sizes: small enough to stay in CPU cache, large enough to fill a GPU
EIG_BATCH = {"cpu": 2**14, "cuda": 2**21}
TAP_BLOCK = {"cpu": 2**18, "cuda": 2**24}


def default_weights_path(factors: float | Sequence[float]) -> Path:
    """Shipped filter file for ``factors``: ``gradfilter_x2x2x2.safetensors`` etc."""
    return card_paths.default_weights_path("gradfilter", as_factors(factors))


def slab_buckets(block: Any, filterset: FilterSet, backend: ArrayBackend) -> Any:
    """Bucket index ``(n,)`` of every interior voxel of a block padded by FEATURE_HALO."""
    xp = backend.xp
    tensor = structure_tensor(block, xp, backend.ndi).reshape(6, -1)
    spec = filterset.spec
    out = xp.empty(tensor.shape[1], dtype=xp.int32)
    batch = EIG_BATCH[backend.device]
    for s in range(0, tensor.shape[1], batch):
        out[s:s + batch] = spec.bucket_of(local_features(tensor[:, s:s + batch], xp), xp)
    return out


def census_blend(upscale: Any, result: Any, threshold: int, xp: Any) -> tuple[Any, int]:
    """Keep the upscale where the 3³ census transforms of upscale and result differ in more
    than ``threshold`` of the 26 neighbour comparisons (structure the filters invented);
    returns the blended volume and the number of voxels reverted."""
    pu = xp.pad(upscale, 1, mode="edge")
    pr = xp.pad(result, 1, mode="edge")
    distance = xp.zeros(result.shape, dtype=xp.int16)
    nx, ny, nz = result.shape
    for dx, dy, dz in tap_offsets(3):
        if dx == dy == dz == 0:
            continue
        su = pu[1 + dx:1 + dx + nx, 1 + dy:1 + dy + ny, 1 + dz:1 + dz + nz]
        sr = pr[1 + dx:1 + dx + nx, 1 + dy:1 + dy + ny, 1 + dz:1 + dz + nz]
        distance += (su > upscale) != (sr > result)
    revert = distance > threshold
    return xp.where(revert, upscale, result), int(revert.sum())


def filter_upscale(
    upscale: np.ndarray,
    filterset: FilterSet,
    *,
    backend: ArrayBackend,
    chunk_voxels: int = 2**21,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Filter a cheap upscale with ``filterset``; returns the result (float32, host) and
    ``{"chunks": …, "buckets_used": …}``."""
    xp = backend.xp
    r = filterset.radius
    halo = max(FEATURE_HALO, r)
    nx, ny, nz = upscale.shape
    padded = np.pad(np.asarray(upscale, dtype=np.float32), halo, mode="edge")
    columns = backend.asarray(np.ascontiguousarray(filterset.filters.T), dtype=xp.float32)
    offsets = tap_offsets(filterset.patch_size)
    slab = max(1, chunk_voxels // max(1, ny * nz))
    out = np.empty(upscale.shape, dtype=np.float32)
    used = np.zeros(filterset.n_buckets, dtype=bool)
    starts = list(range(0, nx, slab))
    f0 = halo - FEATURE_HALO
    for start in track(starts, desc="gradfilter: filtering, slab", unit="slab", bar=progress):
        stop = min(start + slab, nx)
        block = backend.asarray(padded[start:stop + 2 * halo])
        feat_block = block[f0:f0 + (stop - start) + 2 * FEATURE_HALO, f0:f0 + ny + 2 * FEATURE_HALO,
                           f0:f0 + nz + 2 * FEATURE_HALO]
        bucket = slab_buckets(feat_block, filterset, backend).reshape(stop - start, ny, nz)
        used[to_numpy(xp.unique(bucket))] = True
        # the tap loop runs on sub-slabs of ~TAP_BLOCK voxels so its operands stay in cache
        step = max(1, TAP_BLOCK[backend.device] // max(1, ny * nz))
        for s0 in range(0, stop - start, step):
            s1 = min(stop - start, s0 + step)
            sub_bucket = bucket[s0:s1].astype(xp.intp)
            acc = xp.zeros((s1 - s0, ny, nz), dtype=xp.float32)
            weight = xp.empty_like(acc)
            for k, (dx, dy, dz) in enumerate(offsets):
                # NumPy buffers take(out=) under mode="raise"; buckets are in range anyway
                if xp is np:
                    np.take(columns[k], sub_bucket, out=weight, mode="clip")
                else:
                    xp.take(columns[k], sub_bucket, out=weight)
                weight *= block[halo + s0 + dx:halo + s1 + dx, halo + dy:halo + dy + ny,
                                halo + dz:halo + dz + nz]
                acc += weight
            out[start + s0:start + s1] = to_numpy(acc)
    return out, {"chunks": len(starts), "buckets_used": int(used.sum())}


def apply_gradient_filters(
    lr: np.ndarray,
    factors: tuple[float, float, float],
    *,
    weights: str | None = None,
    device: str = "auto",
    progress: bool = False,
    census_threshold: int | None = None,
    chunk_voxels: int = 2**21,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Super-resolve a normalised LR volume with learned gradient filters.

    ``lr`` is float32 scaled to about [0, 1]; the output lies on the HR grid of
    :mod:`bids_sr.image` (``hr_shape(lr.shape, factors)``), clipped to the input's range.
    ``weights`` is a filter file (default: the shipped one for ``factors``);
    ``census_threshold`` (0–26) turns on census-transform blending. The report holds the
    device, the filter file and its sha256, the number of chunks and of buckets used.
    """
    factors = as_factors(factors)
    lr = np.asarray(lr, dtype=np.float32)
    if lr.ndim != 3:
        raise ValueError(f"gradfilter needs a 3D volume, got shape {lr.shape}")
    if weights is None:
        path = default_weights_path(factors)
        if not path.is_file():
            label = card_paths.format_factors(factors)
            raise FileNotFoundError(
                f"no shipped weights for gradfilter at ×{label}; train them with "
                f"`bids_sr-train gradfilter BIDS_DIR OUT_DIR --scale ...` or pass --weights PATH"
            )
    else:
        path = Path(weights)
    filterset = load_filters(path)
    same_grid = hr_shape(lr.shape, filterset.factors) == hr_shape(lr.shape, factors)
    if not (np.allclose(filterset.factors, factors, rtol=1e-6, atol=1e-6) or same_grid):
        raise ValueError(
            f"{path}: filters were learned for factors {filterset.factors}, but factors "
            f"{factors} were requested; use filters trained for {factors}"
        )
    if census_threshold is not None and not 0 <= int(census_threshold) <= 26:
        raise ValueError(f"census threshold must be between 0 and 26, got {census_threshold}")
    backend = get_backend(device)
    upscale = cheap_upscale(lr, factors)
    result, stats = filter_upscale(upscale, filterset, backend=backend,
                                   chunk_voxels=chunk_voxels, progress=progress)
    reverted = 0
    if census_threshold is not None:
        blended, reverted = census_blend(backend.asarray(upscale), backend.asarray(result),
                                         int(census_threshold), backend.xp)
        result = to_numpy(blended).astype(np.float32)
    np.clip(result, float(lr.min()), float(lr.max()), out=result)
    report = {
        "device": backend.device,
        "filters": str(path),
        "filters_sha256": file_sha256(path),
        "filter_factors": list(filterset.factors),
        "patch_size": filterset.patch_size,
        "chunks": stats["chunks"],
        "buckets_used": stats["buckets_used"],
        "buckets_total": filterset.n_buckets,
        "census_threshold": census_threshold,
        "census_reverted_voxels": reverted,
    }
    return result, report
