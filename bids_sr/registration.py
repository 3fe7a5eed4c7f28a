"""Rigid registration of a T2w onto a T1w and resampling onto any NIfTI grid (SimpleITK).

This module is part of the numerical core: it never imports nipype or pybids.

World coordinates: NIfTI and ITK disagree
-----------------------------------------
A NIfTI affine (as nibabel reads it) maps voxel ``(i, j, k)`` to *RAS+* millimetres: +x is
Right, +y Anterior, +z Superior. An ITK image carries ``origin``, ``spacing`` and a
``direction`` matrix that map the same voxel to *LPS+* millimetres (+x Left, +y Posterior,
+z Superior). The two worlds differ by the flip ``F = diag(-1, -1, 1)``::

    x_LPS = F · x_RAS            (and x_RAS = F · x_LPS: F is its own inverse)
    origin    = F · A[:3, 3]
    spacing   = column norms of A[:3, :3]
    direction = F · A[:3, :3] · diag(1 / spacing)

Array order also differs: nibabel arrays are indexed ``[i, j, k]`` while
``sitk.GetArrayFromImage`` returns ``[k, j, i]``. :func:`sitk_image_from_array` and
:func:`array_from_sitk_image` do both conversions, so a voxel has the same world position
whichever library read the file. Images are always read with nibabel
(:func:`bids_sr.image.load_volume`), like the rest of the app, and handed to ITK through these
helpers, so that ITK's own, different choice between a file's qform and sform never matters.

Transform direction
-------------------
ITK transforms map points of the *fixed* image's space to the *moving* image's space: it is
the direction needed to pull moving intensities onto the fixed grid. With the T1w fixed and
the T2w moving, the transform written by :func:`write_itk_transform` takes a T1w-space LPS
point to the T2w-space LPS point with the same anatomy, and *resampling the T2w into the T1w
space* uses it as is. In BIDS/fMRIPrep naming this is ``from-T2w_to-T1w_mode-image_xfm.txt``
(what ``antsApplyTransforms -i T2w -r T1w -t xfm.txt`` expects).

Quality number
--------------
After registration the T2w is resampled onto the T1w grid and the *normalised mutual
information* ``NMI = (H(T1w) + H(T2w)) / H(T1w, T2w)`` (Studholme et al. 1999; 1 for
independent images, 2 for one image determining the other) is computed over the T1w's
foreground where the T2w has data, from a 32 × 32 joint histogram of robustly scaled
intensities. Mutual information, unlike correlation, does not care that the T1w and T2w
contrasts are inverted. A registration is usable when it passes a quality check, a
:class:`bids_sr.recipes.RegistrationQC` (least NMI and overlap; its documentation says how the
shipped threshold was chosen).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from bids_sr.fileio import atomic_path
from bids_sr.image import foreground_mask, load_volume
from bids_sr.progress import Progress
from bids_sr.recipes import REGISTRATION_QC, RegistrationQC

#: The RAS ↔ LPS flip (its own inverse).
FLIP_RAS_LPS = np.diag([-1.0, -1.0, 1.0])

#: Initial alignments: centres of mass ("moments"), centres of the image boxes ("geometry"),
#: or the scanner coordinates as they are ("header": no initial translation; best for two
#: scans of one session whose FOVs differ, e.g. a thick-slab T2w of part of the head: its
#: centre of mass lies far from the T1w's, and "moments" started 29 mm off). "auto": "header"
#: when the two images share a space (:func:`share_a_space`), "moments" when they do not or
#: when the
#: header start fails the quality check (:class:`bids_sr.recipes.RegistrationQC`).
INITIALISATIONS = ("auto", "moments", "geometry", "header")

#: Largest deviation from orthonormality (after removing voxel sizes) of an affine's 3×3 part
#: that is tolerated and rounded away; a real shear is refused (ITK images cannot hold one).
SHEAR_TOLERANCE = 1e-3

_QUALITY_BINS = 32


class RegistrationError(ValueError):
    """Registration inputs that cannot be used; the message names the problem."""


class SitkGeometry(NamedTuple):
    """Origin, spacing and row-major direction of an ITK image (LPS+ world)."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]


def affine_to_sitk_geometry(affine: np.ndarray) -> SitkGeometry:
    """ITK origin/spacing/direction (LPS+) of the grid that a NIfTI RAS+ affine describes.

    The direction matrix is made exactly orthonormal (polar decomposition) when the affine's
    columns are orthogonal to within :data:`SHEAR_TOLERANCE`; a sheared affine raises
    :class:`ValueError`, since ITK cannot represent it.
    """
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"expected a finite 4x4 affine, got {affine.shape}")
    linear = FLIP_RAS_LPS @ affine[:3, :3]
    spacing = np.sqrt((linear**2).sum(axis=0))
    if np.any(spacing <= 0):
        raise ValueError(f"affine has a zero voxel size: {spacing.tolist()}")
    direction = linear / spacing
    u, _, vt = np.linalg.svd(direction)
    orthonormal = u @ vt
    if np.max(np.abs(orthonormal - direction)) > SHEAR_TOLERANCE:
        raise ValueError("affine is sheared (non-orthogonal axes); ITK images cannot represent it")
    origin = FLIP_RAS_LPS @ affine[:3, 3]
    return SitkGeometry(
        origin=tuple(float(v) for v in origin),
        spacing=tuple(float(v) for v in spacing),
        direction=tuple(float(v) for v in orthonormal.ravel()),
    )


def sitk_geometry_to_affine(
    origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]
) -> np.ndarray:
    """The NIfTI RAS+ voxel-to-world affine of an ITK grid (inverse of
    :func:`affine_to_sitk_geometry`)."""
    linear = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(
        np.asarray(spacing, dtype=float)
    )
    affine = np.eye(4)
    affine[:3, :3] = FLIP_RAS_LPS @ linear
    affine[:3, 3] = FLIP_RAS_LPS @ np.asarray(origin, dtype=float)
    return affine


def sitk_image_from_array(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A float32 ITK image of a nibabel-ordered ``[i, j, k]`` array with a RAS+ affine."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {data.shape}")
    geometry = affine_to_sitk_geometry(affine)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0), np.float32))
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    return image


def array_from_sitk_image(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The ``[i, j, k]`` float32 array and RAS+ affine of a 3D ITK image."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    affine = sitk_geometry_to_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return data, affine


def reference_image(shape: Sequence[int], affine: np.ndarray) -> sitk.Image:
    """An empty ITK image that only defines a grid (shape + RAS+ affine), for resampling."""
    shape = tuple(int(n) for n in shape[:3])
    geometry = affine_to_sitk_geometry(affine)
    image = sitk.Image(list(shape), sitk.sitkUInt8)
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    return image


ImageLike = str | os.PathLike | sitk.Image


def _as_sitk(image: ImageLike) -> sitk.Image:
    """An ITK float32 image from a NIfTI path (read with nibabel) or an ITK image."""
    if isinstance(image, sitk.Image):
        return sitk.Cast(image, sitk.sitkFloat32)
    volume = load_volume(image)
    try:
        return sitk_image_from_array(volume.data, volume.affine)
    except ValueError as exc:
        raise RegistrationError(f"{image}: {exc}") from exc


def _prepared(image: sitk.Image) -> sitk.Image:
    """Intensities clipped to robust percentiles and scaled to [0, 1] (geometry kept), so a few
    hot voxels do not squeeze the metric's histogram."""
    data = sitk.GetArrayViewFromImage(image)
    low, high = np.percentile(data, [0.5, 99.5])
    if not high > low:
        low, high = float(data.min()), float(data.max()) + 1.0
    return sitk.Clamp((image - float(low)) / float(high - low), sitk.sitkFloat32, 0.0, 1.0)


def _initial_transform(fixed: sitk.Image, moving: sitk.Image, how: str) -> sitk.Euler3DTransform:
    """A centred Euler transform: rotation about the fixed image's centre, translation by the
    chosen initial alignment (see :data:`INITIALISATIONS`)."""
    if how == "header":
        centre = fixed.TransformContinuousIndexToPhysicalPoint(
            [(n - 1) / 2.0 for n in fixed.GetSize()]
        )
        transform = sitk.Euler3DTransform()
        transform.SetCenter(centre)
        return transform
    mode = (
        sitk.CenteredTransformInitializerFilter.MOMENTS
        if how == "moments"
        else sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), mode)
    return sitk.Euler3DTransform(initial)


def normalised_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = _QUALITY_BINS) -> float:
    """Studholme's NMI ``(H(a) + H(b)) / H(a, b)`` of two equally long samples.

    Each sample is clipped to its own 0.5–99.5 percentile range and binned into ``bins``
    equal bins; the value lies in [1, 2] (1: independent, 2: one determines the other).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size != b.size or a.size < bins:
        raise ValueError(f"need two equally long samples of at least {bins} values")

    def binned(x: np.ndarray) -> np.ndarray:
        low, high = np.percentile(x, [0.5, 99.5])
        if not high > low:
            return np.zeros(x.shape, dtype=np.int64)
        scaled = (np.clip(x, low, high) - low) / (high - low)
        return np.minimum((scaled * bins).astype(np.int64), bins - 1)

    joint = np.bincount(binned(a) * bins + binned(b), minlength=bins * bins).astype(np.float64)
    joint /= joint.sum()

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    joint_entropy = entropy(joint)
    if joint_entropy == 0.0:
        return 2.0
    pj = joint.reshape(bins, bins)
    return (entropy(pj.sum(axis=1)) + entropy(pj.sum(axis=0))) / joint_entropy


def _resample_onto(
    moving: sitk.Image, reference: sitk.Image, transform: sitk.Transform, order: int
) -> sitk.Image:
    interpolators = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}
    if order not in interpolators:
        raise ValueError(f"interpolation order must be 0, 1 or 3, got {order}")
    return sitk.Resample(moving, reference, transform, interpolators[order], 0.0, sitk.sitkFloat32)


def registration_quality(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform
) -> tuple[float, float]:
    """``(nmi, overlap)`` of the moving image pulled onto the fixed grid by ``transform``.

    The NMI (:func:`normalised_mutual_information`) is computed over the fixed image's
    foreground (:func:`bids_sr.image.foreground_mask`) where the moving image has data;
    ``overlap`` is the fraction of that foreground the moving image covers.
    """
    fixed_data = sitk.GetArrayFromImage(fixed)
    mask = foreground_mask(fixed_data)
    if mask.sum() < _QUALITY_BINS:
        return 1.0, 0.0
    support = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    support.CopyInformation(moving)
    covered = sitk.GetArrayFromImage(_resample_onto(support, fixed, transform, 0)) > 0
    inside = mask & covered
    overlap = float(inside.sum()) / float(mask.sum())
    if inside.sum() < _QUALITY_BINS:
        return 1.0, overlap
    resampled = sitk.GetArrayFromImage(_resample_onto(moving, fixed, transform, 1))
    return normalised_mutual_information(fixed_data[inside], resampled[inside]), overlap


def _sampling_fractions(
    fixed: sitk.Image, levels: Sequence[int], fraction: float, max_samples: int | None
) -> list[float]:
    """Per-level sampling fractions: ``fraction``, lowered where a level would otherwise
    sample more than ``max_samples`` voxels."""
    voxels = float(np.prod(fixed.GetSize()))
    out = []
    for shrink in levels:
        level_voxels = voxels / float(shrink) ** 3
        cap = 1.0 if max_samples is None else min(1.0, max_samples / level_voxels)
        out.append(float(min(fraction, cap)))
    return out


@contextmanager
def _itk_threads(threads: int | None) -> Iterator[None]:
    """Run ITK with ``threads`` threads (process-wide default, restored afterwards).

    The registration method's own thread setting does not reach every filter and metric it
    creates; only the global default makes the Mattes metric's accumulation order, hence the
    result, reproducible bit for bit.
    """
    if threads is None:
        yield
        return
    if int(threads) < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _itk_seed(seed: int) -> int:
    """A non-zero 32-bit ITK seed for a user seed (ITK reads 0 as \"use the wall clock\")."""
    return int(seed) % (2**32 - 1) + 1


@dataclass(frozen=True)
class RigidResult:
    """The outcome of :func:`register_rigid`.

    ``transform`` maps fixed-space (T1w) LPS points to moving-space (T2w) LPS points (module
    docstring). ``metric_value`` is the final Mattes mutual information as ITK reports it
    (negative; lower is better) at the finest level; ``quality`` is the NMI after registration
    and ``overlap`` the fraction of the fixed foreground covered (:func:`registration_quality`);
    ``qc`` the quality check they are held to.
    """

    transform: sitk.Euler3DTransform
    metric_value: float
    quality: float
    overlap: float
    initialisation: str
    stop_condition: str
    qc: RegistrationQC = REGISTRATION_QC

    @property
    def usable(self) -> bool:
        """Whether the registration is good enough to guide super-resolution (passes ``qc``)."""
        return self.quality >= self.qc.min_nmi and self.overlap >= self.qc.min_overlap

    @property
    def rotation_degrees(self) -> float:
        """Angle of the recovered rotation, in degrees."""
        matrix = np.asarray(self.transform.GetMatrix()).reshape(3, 3)
        cosine = np.clip((np.trace(matrix) - 1.0) / 2.0, -1.0, 1.0)
        return float(np.degrees(np.arccos(cosine)))

    @property
    def translation_mm(self) -> float:
        """Length of the recovered translation (about the rotation centre), in mm."""
        return float(np.linalg.norm(self.transform.GetTranslation()))

    def summary(self) -> dict:
        """JSON-ready figures for a sidecar or a report."""
        return {
            "RegistrationQualityNMI": round(self.quality, 4),
            "RegistrationQualityThreshold": self.qc.min_nmi,
            "RegistrationOverlap": round(self.overlap, 4),
            "RegistrationMinOverlap": self.qc.min_overlap,
            "RegistrationQCSha256": self.qc.sha256,
            "RegistrationUsable": self.usable,
            "RegistrationMetricMattesMI": round(self.metric_value, 6),
            "RegistrationInitialisation": self.initialisation,
            "RegistrationRotationDegrees": round(self.rotation_degrees, 3),
            "RegistrationTranslationMM": round(self.translation_mm, 3),
        }


def register_rigid(
    fixed: ImageLike,
    moving: ImageLike,
    *,
    initialisation: str = "auto",
    sampling_fraction: float = 0.15,
    seed: int = 0,
    levels: Sequence[int] = (4, 2, 1),
    smoothing: Sequence[float] = (2.0, 1.0, 0.0),
    iterations: int = 200,
    histogram_bins: int = 50,
    max_samples: int | None = 100_000,
    threads: int | None = 1,
    qc: RegistrationQC = REGISTRATION_QC,
) -> RigidResult:
    """Rigidly register ``moving`` (e.g. a T2w) to ``fixed`` (e.g. a T1w).

    Images are NIfTI paths (read with nibabel) or ITK images. The method: Mattes mutual
    information on intensities clipped to their 0.5–99.5 percentiles, with a random sample of
    ``sampling_fraction`` of the fixed voxels drawn with ``seed``; an Euler (rotation +
    translation) transform centred by :func:`_initial_transform` (``initialisation``, one of
    :data:`INITIALISATIONS`); a multi-resolution pyramid (``levels`` shrink factors, Gaussian
    ``smoothing`` sigmas in voxels); regular-step gradient descent with parameter scales from
    physical shifts (one degree and one millimetre weigh alike at the brain's size). At each
    level at most ``max_samples`` points are sampled (the fraction shrinks for big images:
    Mattes MI needs tens of thousands of samples, not millions, and the cost is linear in them).

    Deterministic: the sample is drawn with ``seed`` and the metric is evaluated with a fixed
    number of ``threads`` (several threads accumulate the metric's derivative in a varying
    order, which changes the result in the 8th digit; ``None`` keeps ITK's default, every
    core, and gives up bit-for-bit reproducibility). ``qc``: the quality check that decides
    whether the result is usable (and, with ``initialisation='auto'``, whether the header
    start failed). Returns a :class:`RigidResult` whose transform maps fixed points to
    moving points.
    """
    if initialisation not in INITIALISATIONS:
        raise ValueError(f"initialisation must be one of {INITIALISATIONS}, got {initialisation!r}")
    if not 0.0 < sampling_fraction <= 1.0:
        raise ValueError(f"sampling_fraction must be in (0, 1], got {sampling_fraction}")
    if len(levels) != len(smoothing) or not levels:
        raise ValueError("levels and smoothing need one value per resolution level")
    fixed_image, moving_image = _as_sitk(fixed), _as_sitk(moving)
    settings = dict(sampling_fraction=sampling_fraction, seed=seed, levels=levels,
                    smoothing=smoothing, iterations=iterations, histogram_bins=histogram_bins,
                    max_samples=max_samples, threads=threads, qc=qc)  # fmt: skip
    if initialisation != "auto":
        return _register(fixed_image, moving_image, initialisation, **settings)
    if not share_a_space(fixed_image, moving_image):  # another session or scanner frame
        return _register(fixed_image, moving_image, "moments", **settings)
    result = _register(fixed_image, moving_image, "header", **settings)
    if result.quality >= qc.min_nmi:  # aligned (a small overlap is the FOV's, not
        return result  # the start's: moments would not cover more of the T1w)
    retried = _register(fixed_image, moving_image, "moments", **settings)
    best = max((retried, result), key=lambda r: (r.usable, r.quality))
    return replace(best, initialisation=f"{best.initialisation} (header failed the quality "
                                        "check; moments tried)")  # fmt: skip


def share_a_space(fixed: sitk.Image, moving: sitk.Image, fraction: float = 0.5) -> bool:
    """Whether the headers alone place ``moving`` on ``fixed``: at least ``fraction`` of the
    moving image's foreground falls on the fixed image's foreground, however little of the
    fixed image the moving one covers (a slab of part of the head shares the T1w's space)."""
    moving_mask = foreground_mask(sitk.GetArrayFromImage(moving))
    if not moving_mask.any():
        return False
    fixed_mask = sitk.GetImageFromArray(
        foreground_mask(sitk.GetArrayFromImage(fixed)).astype(np.uint8)
    )
    fixed_mask.CopyInformation(fixed)
    on_fixed = sitk.GetArrayFromImage(
        _resample_onto(fixed_mask, moving, sitk.Euler3DTransform(), 0)
    ) > 0  # fmt: skip
    return float((on_fixed & moving_mask).sum()) >= fraction * float(moving_mask.sum())


def _register(fixed_image: sitk.Image, moving_image: sitk.Image, initialisation: str, *,
              sampling_fraction: float, seed: int, levels: Sequence[int],
              smoothing: Sequence[float], iterations: int, histogram_bins: int,
              max_samples: int | None, threads: int | None,
              qc: RegistrationQC) -> RigidResult:  # fmt: skip
    """One registration from one initial alignment (:func:`register_rigid`)."""
    transform = _initial_transform(fixed_image, moving_image, initialisation)

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # ITK's seed 0 means "seed from the wall clock": shift user seeds by one.
    fractions = _sampling_fractions(fixed_image, levels, sampling_fraction, max_samples)
    method.SetMetricSamplingPercentagePerLevel(fractions, _itk_seed(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-4,
        numberOfIterations=int(iterations),
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([int(v) for v in levels])
    method.SetSmoothingSigmasPerLevel([float(v) for v in smoothing])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    # at most ``iterations`` per level; the optimiser usually converges sooner
    progress = Progress("rigid registration: optimiser iteration", None)
    method.AddCommand(sitk.sitkIterationEvent, progress.step)
    try:
        with _itk_threads(threads):
            if threads is not None:
                method.SetNumberOfThreads(int(threads))
            method.Execute(_prepared(fixed_image), _prepared(moving_image))
    finally:
        progress.close()

    quality, overlap = registration_quality(fixed_image, moving_image, transform)
    return RigidResult(
        transform=transform,
        metric_value=float(method.GetMetricValue()),
        quality=quality,
        overlap=overlap,
        initialisation=initialisation,
        stop_condition=method.GetOptimizerStopConditionDescription(),
        qc=qc,
    )


def write_itk_transform(transform: sitk.Transform, path: str | os.PathLike) -> Path:
    """Write ``transform`` in ITK's text format (``.txt``), atomically.

    The file holds the transform as ITK defines it: it maps points of the fixed (T1w) space to
    points of the moving (T2w) space, in LPS+ millimetres, which is what ANTs and ITK need to
    resample the T2w into T1w space (BIDS name ``..._from-T2w_to-T1w_mode-image_xfm.txt``).
    """
    path = Path(path)
    if path.suffix != ".txt":
        raise ValueError(f"{path}: an ITK text transform needs a .txt name")
    with atomic_path(path, suffix=".tmp.txt") as tmp:
        sitk.WriteTransform(transform, str(tmp))
    return path


def read_itk_transform(path: str | os.PathLike) -> sitk.Transform:
    """Read an ITK transform file, with a one-line error naming the file when it cannot."""
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise RegistrationError(f"{path}: cannot read an ITK transform") from exc
    if transform.GetDimension() != 3:
        raise RegistrationError(f"{path}: expected a 3D transform")
    return transform


def resample_to_grid(
    moving_image: ImageLike,
    transform: sitk.Transform,
    reference_shape: Sequence[int],
    reference_affine: np.ndarray,
    order: int = 3,
    clip: bool = True,
) -> np.ndarray:
    """Pull ``moving_image`` onto any grid given by a NIfTI shape and RAS+ affine.

    ``transform`` maps points of the grid's space to the moving image's space (as registered
    by :func:`register_rigid` with the grid's image fixed). ``order`` 3 is cubic B-spline, 1
    linear, 0 nearest. Points outside the moving image get 0. With ``clip`` the B-spline's
    overshoot is clipped to the moving image's intensity range. Returns a float32 array in
    nibabel order ``[i, j, k]`` with ``reference_shape``.
    """
    moving = _as_sitk(moving_image)
    try:
        reference = reference_image(reference_shape, reference_affine)
    except ValueError as exc:
        raise RegistrationError(f"reference grid: {exc}") from exc
    data = sitk.GetArrayFromImage(_resample_onto(moving, reference, transform, order))
    if clip:
        values = sitk.GetArrayViewFromImage(moving)
        data = np.clip(data, min(0.0, float(values.min())), float(values.max()))
    return np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32)
