"""NIfTI input/output, the geometry of the super-resolved grid, and intensity normalisation.

This module is part of the numerical core: it never imports nipype or pybids.

The upsampled grid
------------------
For a per-axis factor ``s`` the high-resolution (HR) grid covers exactly the same field of
view as the low-resolution (LR) grid. HR voxel ``j`` along an axis has LR index coordinate

    i(j) = (j + 0.5) / s - 0.5

so the HR voxels of one ``s``-block are centred, on average, on the LR voxel centre
(averaging each ``s×s×s`` block of the HR grid returns a grid whose voxel centres are the LR
voxel centres). In matrix form, with ``A_lr`` the LR voxel-to-world affine,

    A_hr = A_lr · [[diag(1/s), (1 - s) / (2 s)], [0, 1]]

i.e. the voxel size is divided by ``s`` and the origin moves by half an HR voxel minus half an
LR voxel along each axis. The HR shape is ``round(n · s)``; for a non-integer factor the
*effective* factor ``round(n · s) / n`` is used so the field of view stays exact. This is the
convention of ``scipy.ndimage.zoom(..., grid_mode=True)``, which the interpolation baselines
use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sr.acquisition import coarse_axis
from bids_sr.fileio import atomic_path

Factors = tuple[float, float, float]


class ImageError(ValueError):
    """An input image that cannot be super-resolved; the message names the file and the problem."""


def as_factors(scale: float | Sequence[float]) -> Factors:
    """Return a per-axis factor triple from one factor or three; reject factors below 1."""
    values = [float(scale)] * 3 if np.isscalar(scale) else [float(v) for v in scale]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"scale needs one factor or three per-axis factors, got {len(values)}")
    for value in values:
        if not np.isfinite(value) or value < 1:
            raise ValueError(f"scale factors must be numbers >= 1, got {value}")
    return (values[0], values[1], values[2])


def voxel_sizes(affine: np.ndarray) -> Factors:
    """Voxel size in mm along each array axis, read from the affine's column norms."""
    sizes = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return (float(sizes[0]), float(sizes[1]), float(sizes[2]))


def hr_shape(lr_shape: Sequence[int], factors: Sequence[float]) -> tuple[int, int, int]:
    """Shape of the HR grid: each LR extent times its factor, rounded, at least 1."""
    return tuple(max(1, int(round(n * f))) for n, f in zip(lr_shape[:3], factors, strict=True))


def effective_factors(lr_shape: Sequence[int], factors: Sequence[float]) -> Factors:
    """The factors that the rounded HR shape actually realises (exact field of view)."""
    shape = hr_shape(lr_shape, factors)
    eff = [m / n for m, n in zip(shape, lr_shape[:3], strict=True)]
    return (eff[0], eff[1], eff[2])


def upsampled_affine(lr_affine: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Affine of the HR grid whose blocks average back onto the LR voxel centres (module doc)."""
    s = np.asarray(factors, dtype=float)
    grid = np.eye(4)
    grid[:3, :3] = np.diag(1.0 / s)
    grid[:3, 3] = (1.0 - s) / (2.0 * s)
    return np.asarray(lr_affine, dtype=float) @ grid


def factors_for_resolution(
    lr_affine: np.ndarray, resolution_mm: float | Sequence[float]
) -> Factors:
    """Per-axis factors that bring the LR voxel size to the requested output resolution.

    Axes already finer than the request keep factor 1 (the app never downsamples).
    """
    target = np.broadcast_to(np.asarray(resolution_mm, dtype=float), (3,))
    if np.any(~np.isfinite(target)) or np.any(target <= 0):
        raise ValueError(f"output resolution must be positive, got {resolution_mm}")
    sizes = np.asarray(voxel_sizes(lr_affine))
    factors = np.maximum(sizes / target, 1.0)
    return (float(factors[0]), float(factors[1]), float(factors[2]))


def requested_factors(
    lr_affine: np.ndarray,
    scale: float | Sequence[float] | None = None,
    resolution_mm: float | None = None,
) -> Factors:
    """The factors asked for: from ``resolution_mm`` when given, else from ``scale``, else
    (neither: the command line's default) :func:`default_factors`."""
    if resolution_mm:
        return factors_for_resolution(lr_affine, resolution_mm)
    if scale is None or (not np.isscalar(scale) and len(scale) == 0):
        return default_factors(lr_affine)
    return as_factors(scale)


#: Voxel sizes within this ratio of each other count as one resolution (default_factors).
SAME_SPACING = 1.05


def default_factors(lr_affine: np.ndarray) -> Factors:
    """The factors when the user asks for none: a 2D scan (one axis much coarser than the
    others, see :func:`bids_sr.acquisition.coarse_axis`) is brought to its finest voxel
    size — what it lacks is resolution across slices, and a clinical 0.9×0.9×3 mm T1w
    becomes 0.9 mm isotropic, not 0.45×0.45×1.5 mm — and a 3D scan is doubled along every
    axis. Axes within :data:`SAME_SPACING` of the finest keep factor 1 (headers store
    0.9115 and 0.9121 mm for one in-plane size: that is no axis to super-resolve)."""
    sizes = voxel_sizes(lr_affine)
    if coarse_axis(sizes) is None:
        return (2.0, 2.0, 2.0)
    finest = min(sizes)
    factors = [1.0 if size <= SAME_SPACING * finest else size / finest for size in sizes]
    return (factors[0], factors[1], factors[2])


@dataclass
class Volume:
    """A 3D image in memory: float32 data, its affine, and the header it came with."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header

    @property
    def zooms(self) -> Factors:
        return voxel_sizes(self.affine)


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get now (Linux ``MemAvailable``, else the free
    physical pages), or None when the system does not say."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_geometry(path: str | os.PathLike, affine: np.ndarray) -> None:
    """ImageError unless the voxel-to-world affine is finite and invertible: a zero, singular
    or NaN affine gives no voxel size, so no output grid (and no valid derivative)."""
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ImageError(f"{path}: the header's affine holds NaN or Inf values")
    sizes = np.asarray(voxel_sizes(affine))
    if np.any(sizes <= 1e-6) or abs(np.linalg.det(affine[:3, :3])) <= 1e-9 * np.prod(sizes):
        raise ImageError(
            f"{path}: the header's affine is zero or singular (voxel sizes "
            f"{', '.join(f'{v:g}' for v in sizes)} mm): fix the qform/sform"
        )


def check_memory(path: str | os.PathLike, header, available: int | None = None) -> None:
    """ImageError when loading the image (its stored data plus the float32 copy) would need
    more memory than is available: the header's shape × dtype says so before any read."""
    shape = tuple(int(n) for n in header.get_data_shape())
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    needed = voxels * (np.dtype(header.get_data_dtype()).itemsize + 4)
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise ImageError(
            f"{path}: the header declares shape {shape} ({header.get_data_dtype()}), which "
            f"needs {needed / 2**30:.1f} GiB of memory to load; {available / 2**30:.1f} GiB "
            "is available"
        )


def load_volume(path: str | os.PathLike, *, reject_constant: bool = False) -> Volume:
    """Load a 3D NIfTI as float32, checking it is something we can super-resolve.

    Raises :class:`ImageError` naming the file for: unreadable/corrupt files, a header that
    declares more data than memory can hold (checked before reading), non-3D data (a 4D
    file with a single volume is accepted and squeezed), a zero, singular or non-finite
    affine, complex-valued data (refused rather than silently cast: the imaginary part
    would be dropped; give the magnitude), all-zero images and NaN/Inf. With
    ``reject_constant`` (an image to super-resolve) also a constant image: it has no head
    to find and nothing to super-resolve (a constant *guide* is allowed: it is simply of no
    use, and the guided methods find that out).
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise ImageError(f"{path}: cannot read NIfTI image ({type(exc).__name__}: {exc})") from exc
    check_memory(path, img.header)
    if np.dtype(img.get_data_dtype()).kind == "c":  # casting would drop the imaginary part
        raise ImageError(
            f"{path}: complex-valued image ({img.get_data_dtype()}); give the magnitude image "
            "(BIDS part-mag), e.g. computed as abs() of this one"
        )
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except MemoryError as exc:
        raise ImageError(f"{path}: not enough memory to load the image {img.shape}") from exc
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise ImageError(f"{path}: cannot read NIfTI image ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageError(f"{path}: expected a 3D image, got {data.ndim}D with shape {data.shape}")
    if min(data.shape) < 2:
        raise ImageError(f"{path}: expected a 3D image, but an axis has one voxel {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ImageError(f"{path}: image holds NaN or Inf values")
    if not np.any(data):
        raise ImageError(f"{path}: image is all zeros")
    check_geometry(path, img.affine)
    low, high = float(data.min()), float(data.max())
    if reject_constant and low == high:
        raise ImageError(f"{path}: image is constant (every voxel is {low:g})")
    header = img.header.copy()
    return Volume(data=data, affine=np.asarray(img.affine, dtype=float), header=header)


def _output_header(reference: nib.Nifti1Header | None, affine: np.ndarray) -> nib.Nifti1Header:
    """A float32 header that keeps the reference's qform/sform codes and units."""
    header = nib.Nifti1Header() if reference is None else nib.Nifti1Header.from_header(reference)
    header.set_data_dtype(np.float32)
    header.set_slope_inter(None, None)
    qcode = int(reference["qform_code"]) if reference is not None else 1
    scode = int(reference["sform_code"]) if reference is not None else 1
    header.set_qform(affine, code=qcode or 1)
    header.set_sform(affine, code=scode or 1)
    return header


def save_volume(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    reference_header: nib.Nifti1Header | None = None,
) -> Path:
    """Write float32 NIfTI atomically (temporary name in the same folder, then rename).

    The qform and sform codes of ``reference_header`` are kept so the output is in the same
    space as the input (scanner or aligned), with the new affine. Data holding NaN or Inf
    (e.g. from weights full of NaN) is refused with :class:`ImageError`: no method's output
    is written unless every voxel is finite.
    """
    path = Path(path)
    finite = np.isfinite(data)
    if not np.all(finite):
        raise ImageError(
            f"{path}: the result holds {int(finite.size - finite.sum())} NaN or Inf voxel(s) "
            f"of {finite.size}; not written (are the weights or the input corrupt?)"
        )
    header = _output_header(reference_header, affine)
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine, header=header)
    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=f".tmp{suffix}") as tmp:
        nib.save(img, str(tmp))
    return path


@dataclass(frozen=True)
class Normalisation:
    """Linear intensity map ``(x - low) / (high - low)`` with its exact inverse.

    ``low`` and ``high`` are robust percentiles of the foreground, so the brain's intensities
    land near [0, 1] whatever the scanner scale, and :meth:`restore` brings a result back to
    the input's own scale (we never rescale without saying how: both values go in the sidecar).
    """

    low: float
    high: float

    def apply(self, data: np.ndarray) -> np.ndarray:
        return ((np.asarray(data, dtype=np.float32) - self.low) / (self.high - self.low)).astype(
            np.float32
        )

    def restore(self, data: np.ndarray) -> np.ndarray:
        return (np.asarray(data, dtype=np.float64) * (self.high - self.low) + self.low).astype(
            np.float32
        )


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """A cheap head mask: voxels above a tenth of the 99th percentile of non-zero voxels."""
    values = data[data > 0] if np.any(data > 0) else np.abs(data[data != 0])
    if values.size == 0:
        return np.zeros(data.shape, dtype=bool)
    return data > 0.1 * float(np.percentile(values, 99.0))


def robust_normalisation(
    data: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5
) -> Normalisation:
    """Fit a :class:`Normalisation`: ``low`` from the whole image (the background lands at 0),
    ``high`` from the foreground (bright tissue lands near 1, unmoved by a few hot voxels)."""
    mask = foreground_mask(data)
    values = data[mask] if mask.sum() > 10 else data.ravel()
    low = float(np.percentile(data, low_pct))
    high = float(np.percentile(values, high_pct))
    if not high > low:
        low, high = float(data.min()), float(data.max())
    if not high > low:
        high = low + 1.0
    return Normalisation(low=low, high=high)
