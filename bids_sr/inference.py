"""Sliding-window inference of the deep SR networks on volumes of any size, on CPU or GPU.

Design (after MONAI's ``sliding_window_inference``, adapted to super-resolution):

* The volume stays in host memory; only batches of tiles travel to the device, so device
  memory is bounded by the tile size, not by the volume.
* Tiles are cut on the network's input grid (the LR grid for learned upsampling, the HR grid
  for SRReCNN3D) and never extend past the volume: a tile touching the border sees exactly
  the zero 'same' padding a whole-volume pass sees, so no extra padding is needed and any
  size works (an axis shorter than the tile is taken whole).
* Each tile's output is trusted only beyond a margin of at least the receptive-field radius
  from its interior edges; there every output voxel equals the whole-volume result. Cores of
  neighbouring tiles overlap by ``tile_overlap`` of their width and are blended with a
  raised-cosine ramp (smooth, strictly positive), so the result is seam-free and matches a
  whole-volume pass to float rounding.
* On CUDA out-of-memory the tile edge is halved and the run retried, and as a last resort
  the run falls back to the CPU with a warning; it never crashes for lack of GPU memory.
"""

from __future__ import annotations

import math
import resource
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bids_sr.cards import paths as card_paths
from bids_sr.image import as_factors, hr_shape
from bids_sr.interpolation import upsample
from bids_sr.models.registry import (
    MIN_TILE_CORE,
    MethodSpec,
    format_factors,
    get_spec,
    integer_factors,
)
from bids_sr.models.weights import load_model, read_metadata
from bids_sr.progress import track

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_OVERLAP = 0.125


# --------------------------------------------------------------------------- devices
def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without a GPU → 'cpu' + warning."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn("CUDA requested but torch sees no GPU; running on the CPU", stacklevel=2)
        return "cpu"
    return device


def _amp_dtype(amp: str | None, device: str) -> torch.dtype | None:
    if amp in (None, "", "none", "fp32"):
        return None
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of bf16, fp16 or None, got {amp!r}")
    if not device.startswith("cuda"):
        warnings.warn(
            f"mixed precision ({amp}) is for CUDA; running fp32 on {device}", stacklevel=3
        )
        return None
    return AMP_DTYPES[amp]


# --------------------------------------------------------------------------- tiling
def axis_plan(n: int, tile: int, margin: int, overlap: float) -> tuple[int, list[int], int]:
    """Tiling of one axis of ``n`` voxels: (tile length, tile starts, blending ramp width).

    Uses the fewest tiles of at most ``tile`` voxels whose trusted cores (tile minus
    ``margin`` at interior edges) overlap by at least ``overlap`` of the core width, then
    shrinks the tiles to the smallest equal length that still covers the axis and spaces
    them evenly (no wasted near-duplicate last tile). An axis no longer than ``tile`` is one
    tile.
    """
    if tile >= n:
        return n, [0], 0
    core = tile - 2 * margin
    if core < 2:
        raise ValueError(f"tile {tile} too small for a margin of {margin} voxels")
    ramp = max(1, int(math.ceil(overlap * core)))
    if ramp >= core:
        raise ValueError(f"tile_overlap {overlap} leaves no step for tile {tile}")
    count = 2
    while True:
        length = int(math.ceil((n + (count - 1) * (2 * margin + ramp)) / count))
        if length <= tile:
            break
        count += 1
    starts = [int(round(i * (n - length) / (count - 1))) for i in range(count)]
    max_step = max(b - a for a, b in zip(starts, starts[1:]))
    return length, starts, max(0, length - 2 * margin - max_step)


def _ramp(length: int) -> np.ndarray:
    i = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / length)


def axis_weight(n: int, start: int, tile: int, margin: int, ramp: int, scale: int) -> np.ndarray:
    """Blending weight over one tile's output along one axis (length ``tile·scale``).

    Zero within ``margin`` input voxels of an interior edge (not trusted), a raised-cosine
    ramp over the next ``ramp`` voxels, one elsewhere; edges on the volume border get no
    margin and no ramp because there the tile sees the same padding as the whole volume.
    """
    w = np.ones(tile * scale, dtype=np.float64)
    m, r = margin * scale, ramp * scale
    if start > 0:
        w[:m] = 0.0
        if r:
            w[m : m + r] = np.minimum(w[m : m + r], _ramp(r))
    if start + tile < n:
        w[len(w) - m :] = 0.0
        if r:
            end = len(w) - m
            w[end - r : end] = np.minimum(w[end - r : end], _ramp(r)[::-1])
    return w


def plan_tiles(
    shape: Sequence[int], tile: int, margin: int, overlap: float
) -> tuple[tuple[int, int, int], list[tuple[int, int, int]], list[int]]:
    """Tile shape, the list of tile start corners and the per-axis blending ramp widths."""
    plans = [axis_plan(n, tile, margin, overlap) for n in shape]
    tshape = (plans[0][0], plans[1][0], plans[2][0])
    per_axis = [p[1] for p in plans]
    corners = [(a, b, c) for a in per_axis[0] for b in per_axis[1] for c in per_axis[2]]
    return tshape, corners, [p[2] for p in plans]


def tiled_forward(
    model: nn.Module,
    x: np.ndarray,
    out_factors: Sequence[int],
    *,
    tile_size: int,
    margin: int,
    overlap: float = DEFAULT_OVERLAP,
    device: str = "cpu",
    amp_dtype: torch.dtype | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``model`` over ``x`` (C, D, H, W on the input grid) tile by tile; blend on the host.

    ``out_factors``: integer output/input size ratio per axis (1 for HR-grid networks).
    Returns the (D·fz, H·fy, W·fx) float32 output and tiling facts for the report.
    """
    shape = x.shape[1:]
    fz, fy, fx = (int(f) for f in out_factors)
    out_shape = (shape[0] * fz, shape[1] * fy, shape[2] * fx)
    tshape, corners, ramp = plan_tiles(shape, tile_size, margin, overlap)
    out = np.zeros(out_shape, dtype=np.float32)
    wsum = np.zeros(out_shape, dtype=np.float32)
    model = model.to(device).eval()
    batches = [corners[i : i + batch_size] for i in range(0, len(corners), batch_size)]
    for batch in track(batches, desc="super-resolving, tile batch", unit="batch", bar=progress):
        arr = np.stack(
            [x[:, a : a + tshape[0], b : b + tshape[1], c : c + tshape[2]] for a, b, c in batch]
        )
        xb = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
        with torch.inference_mode():
            if amp_dtype is not None:
                with torch.autocast(device_type="cuda", dtype=amp_dtype):
                    yb = model(xb)
            else:
                yb = model(xb)
        yb = yb.float().cpu().numpy()[:, 0]
        for (a, b, c), y in zip(batch, yb):
            wz = axis_weight(shape[0], a, tshape[0], margin, ramp[0], fz)
            wy = axis_weight(shape[1], b, tshape[1], margin, ramp[1], fy)
            wx = axis_weight(shape[2], c, tshape[2], margin, ramp[2], fx)
            w = (wz[:, None, None] * wy[None, :, None] * wx[None, None, :]).astype(np.float32)
            region = (
                slice(a * fz, (a + tshape[0]) * fz),
                slice(b * fy, (b + tshape[1]) * fy),
                slice(c * fx, (c + tshape[2]) * fx),
            )
            out[region] += w * y
            wsum[region] += w
    if np.any(wsum <= 0):  # cannot happen with the plan above; guard against silent holes
        raise RuntimeError("tiling left voxels without a trusted tile; increase tile_size")
    out /= wsum
    facts = {"tiles": len(corners), "tile_shape": list(tshape), "tile_margin": margin}
    return out, facts


# --------------------------------------------------------------------------- OOM handling
def run_with_fallback(
    run: Callable[[int, str], Any], tile_size: int, min_tile: int, device: str
) -> tuple[Any, int, str, bool]:
    """Call ``run(tile, device)``; on CUDA out-of-memory halve the tile, then fall back to CPU.

    Returns (result, tile used, device used, fell_back_to_cpu).
    """
    tile = tile_size
    while True:
        try:
            return run(tile, device), tile, device, False
        except torch.cuda.OutOfMemoryError:
            if not device.startswith("cuda"):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if tile // 2 >= min_tile:
                warnings.warn(
                    f"CUDA out of memory with {tile}-voxel tiles; retrying with {tile // 2}",
                    stacklevel=2,
                )
                tile //= 2
                continue
            warnings.warn(
                "CUDA out of memory even with the smallest tiles; falling back to the CPU",
                stacklevel=2,
            )
            result = run(tile_size, "cpu")
            return result, tile_size, "cpu", True


# --------------------------------------------------------------------------- weights
def resolve_weights(spec: MethodSpec, factors: Sequence[float]) -> Path:
    """The shipped weights for ``factors``; for HR-grid networks the closest shipped factors
    when the exact file is absent (they work at any factor). FileNotFoundError otherwise."""
    path = spec.default_weights(factors)
    if path.exists():
        return path
    weights_dir = card_paths.WEIGHTS_DIR  # read at call time: one setting for all methods
    if not spec.learned_upsampling and weights_dir.is_dir():
        best: tuple[float, Path] | None = None
        for candidate in sorted(weights_dir.glob(f"{spec.name}_x*.safetensors")):
            try:
                trained = read_metadata(candidate)
            except ValueError:
                continue
            if trained["method"] != spec.name:
                continue
            distance = sum(abs(math.log(a / b)) for a, b in zip(factors, trained["factors"]))
            if best is None or distance < best[0]:
                best = (distance, candidate)
        if best is not None:
            return best[1]
    raise FileNotFoundError(
        f"no shipped weights for {spec.name} at ×{format_factors(factors)}; train them with "
        f"`bids_sr-train {spec.name} ...` or pass --weights PATH"
    )


def _peak_memory_mb(device: str) -> tuple[float, str]:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process_max_rss"


# --------------------------------------------------------------------------- entry point
def network_input(
    lr: np.ndarray,
    factors: Sequence[float],
    spec: MethodSpec,
    reference: np.ndarray | None,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The (C, D, H, W) network input on its grid and the integer output/input ratio."""
    if spec.learned_upsampling:
        ints = integer_factors(spec.name, factors)
        if reference is not None:
            warnings.warn(f"{spec.name} does not use a reference image; ignoring it", stacklevel=3)
        return lr[None].astype(np.float32, copy=False), ints
    ilr = upsample(lr, factors, order=3)
    channels = [ilr]
    if spec.needs_reference:
        if reference is None:
            raise ValueError(
                f"{spec.name} needs a reference {spec.reference_suffix} on the output grid "
                "(reference=...)"
            )
        if tuple(reference.shape) != ilr.shape:
            raise ValueError(
                f"{spec.name}: reference shape {tuple(reference.shape)} differs from the output "
                f"grid {ilr.shape}; register/resample the {spec.reference_suffix} onto the "
                "upsampled T1w grid"
            )
        channels.append(np.asarray(reference, dtype=np.float32))
    return np.stack(channels).astype(np.float32, copy=False), (1, 1, 1)


def super_resolve_network(
    lr: np.ndarray,
    factors: tuple[float, float, float],
    method: str,
    *,
    weights: str | None = None,
    reference: np.ndarray | None = None,
    device: str = "auto",
    tile_size: int | None = None,
    tile_overlap: float | None = None,
    seed: int = 0,
    progress: bool = False,
    amp: str | None = None,
    batch_size: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Super-resolve a normalised LR volume with the network ``method``; return (HR, report).

    ``lr`` is float32 normalised to about [0, 1]; the output lies on the HR grid of
    :mod:`bids_sr.image` (shape ``hr_shape(lr.shape, factors)``). ``weights`` defaults to the
    shipped file for ``factors``. ``tile_size`` is the tile edge on the network's input grid
    (default from the registry), ``tile_overlap`` the fraction of the trusted core shared by
    neighbours (default 0.125), ``amp`` 'bf16' or 'fp16' for mixed precision on CUDA. The
    report is JSON-serialisable provenance: device, tiles, memory, weights and checksum.

    Example::

        hr, report = super_resolve_network(lr, (2.0, 2.0, 2.0), "srrecnn", device="auto")
    """
    start = time.perf_counter()
    spec = get_spec(method)
    factors = as_factors(factors)
    if lr.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {lr.shape}")
    lr = np.asarray(lr, dtype=np.float32)
    if spec.learned_upsampling:
        integer_factors(method, factors)  # fail fast, before looking for weights
    path = Path(weights) if weights else resolve_weights(spec, factors)
    torch.manual_seed(seed)
    model, info = load_model(path, method=method, factors=factors, device="cpu")
    x, out_factors = network_input(lr, factors, spec, reference)

    dev = resolve_device(device)
    amp_dtype = _amp_dtype(amp, dev)
    margin = int(model.receptive_radius)
    tile = int(tile_size or spec.default_tile)
    min_tile = 2 * margin + MIN_TILE_CORE
    if tile < min_tile:
        warnings.warn(
            f"tile_size {tile} is too small for {method}'s receptive field; using {min_tile}",
            stacklevel=2,
        )
        tile = min_tile
    overlap = DEFAULT_OVERLAP if tile_overlap is None else float(tile_overlap)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile_overlap must be in [0, 1), got {overlap}")
    n_batch = int(batch_size or (4 if dev.startswith("cuda") else 1))
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def run(tile_edge: int, run_device: str) -> tuple[np.ndarray, dict[str, Any]]:
        return tiled_forward(
            model,
            x,
            out_factors,
            tile_size=tile_edge,
            margin=margin,
            overlap=overlap,
            device=run_device,
            amp_dtype=amp_dtype if run_device.startswith("cuda") else None,
            batch_size=n_batch,
            progress=progress,
        )

    (hr, facts), tile_used, dev_used, fell_back = run_with_fallback(run, tile, min_tile, dev)
    expected = hr_shape(lr.shape, factors)
    if hr.shape != expected:
        raise RuntimeError(f"{method} produced {hr.shape}, expected {expected}")
    peak, peak_kind = _peak_memory_mb(dev_used)
    report = {
        "device": dev_used,
        "device_requested": device,
        "fell_back_to_cpu": bool(fell_back),
        "tiles": facts["tiles"],
        "tile_size": tile_used,
        "tile_shape": facts["tile_shape"],
        "tile_margin": facts["tile_margin"],
        "tile_overlap": overlap,
        "tile_grid": spec.input_grid,
        "batch_size": n_batch,
        "amp": amp if amp_dtype is not None and dev_used.startswith("cuda") else None,
        "peak_memory_mb": round(float(peak), 1),
        "peak_memory_kind": peak_kind,
        "weights": info["path"],
        "weights_sha256": info["sha256"],
        "weights_factors": info["factors"],
        "seed": seed,
        "network_runtime_s": round(time.perf_counter() - start, 3),
    }
    return hr.astype(np.float32, copy=False), report
