"""Training pairs and patches: normalise, crop, degrade, and sample aligned LR/HR patches.

Part of the numerical core (no pybids, no nipype). Every volume goes through the same steps
as the evaluation protocol (:mod:`bids_sr.evaluation`), so a model is trained on exactly
the inputs it is later scored on:

1. robust normalisation (:func:`bids_sr.image.robust_normalisation`): background → 0,
   bright tissue → ~1;
2. :func:`bids_sr.degrade.crop_to_factor`, then :func:`bids_sr.degrade.degrade` with a preset;
3. for networks on the HR grid (SRReCNN3D) the cubic-spline upsampling of the LR image,
   :func:`bids_sr.interpolation.upsample` (order 3) — what inference feeds them.

Alignment. On the grid of :mod:`bids_sr.image` the HR block ``[i·s, (i+p)·s)`` covers the
same field of view as the LR voxels ``[i, i+p)``, so an LR patch of size ``p`` at offset
``i`` pairs with the HR patch of size ``p·s`` at offset ``i·s`` — exactly, per axis.

Sampling. Patch origins are drawn so the patch centre lies in the head foreground
(:func:`bids_sr.image.foreground_mask` of the normalised HR image); subjects are drawn in
proportion to their weight. Augmentation: flips (the grid is symmetric, so a flipped pair is
still aligned — except for the ``decimate`` preset, whose kept samples are not centred, so
it gets no flips), axis permutations only when the factors and the patch are isotropic, and
an intensity jitter (one random gain and offset per patch, shared by input and target).

Misregistration (guided networks). A real reference is registered to its T1w with some
error, so with ``misregistration=(mm, degrees)`` each reference patch (real or synthesised)
is resampled under its own random rigid transform about the patch centre — a translation
of uniform length in [0, mm] in a random direction and a rotation by a uniform angle in
[0, degrees] about a random axis — from a block sampled a few voxels larger than the patch
(:func:`misregistration_margin`), with :func:`scipy.ndimage.affine_transform` (linear). The
T1w input and the target stay put, so the network learns to use a reference's edges without
trusting their exact position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from bids_sr.degrade import crop_to_factor, degrade
from bids_sr.image import foreground_mask, robust_normalisation
from bids_sr.interpolation import upsample


@dataclass
class TrainingVolume:
    """One subject ready for patch sampling (all arrays float32, normalised).

    ``lr``: the simulated LR image; ``hr``: the cropped HR truth; ``ilr``: the cubic-spline
    upsampling of ``lr`` on the HR grid (HR-grid networks only); ``reference``: a second HR
    contrast on the same grid (guided networks only; None → synthesised per patch);
    ``centres``: LR voxel indices ``(n, 3)`` inside the head where a patch may be centred;
    ``spacing``: the HR voxel size in mm (turns misregistration in mm into voxels).
    """

    name: str
    lr: np.ndarray
    hr: np.ndarray
    factors: tuple[int, int, int]
    centres: np.ndarray
    ilr: np.ndarray | None = None
    reference: np.ndarray | None = None
    weight: float = 1.0
    extra: dict = field(default_factory=dict)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


def integer_factor_tuple(factors: Sequence[float]) -> tuple[int, int, int]:
    """Per-axis integer factors (training samples LR/HR blocks, so factors must be integers)."""
    ints = tuple(int(round(float(f))) for f in factors)
    if len(ints) != 3 or any(abs(i - float(f)) > 1e-6 for i, f in zip(ints, factors)):
        raise ValueError(f"training needs integer per-axis factors, got {tuple(factors)}")
    return (ints[0], ints[1], ints[2])


def prepare_volume(
    name: str,
    hr: np.ndarray,
    factors: Sequence[float],
    degradation: str,
    *,
    hr_grid_input: bool = False,
    reference: np.ndarray | None = None,
    weight: float = 1.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> TrainingVolume:
    """Normalise, crop and degrade one HR volume (module doc); the reference is normalised
    on its own and cropped the same way (it must share the HR grid)."""
    f = integer_factor_tuple(factors)
    hr = np.asarray(hr, dtype=np.float32)
    truth = crop_to_factor(robust_normalisation(hr).apply(hr), f)
    lr = degrade(truth, f, degradation)
    ilr = upsample(lr, f, order=3) if hr_grid_input else None
    ref = None
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape != hr.shape:
            raise ValueError(
                f"{name}: reference shape {reference.shape} differs from the T1w {hr.shape}; "
                "it must be on the T1w grid"
            )
        ref = crop_to_factor(robust_normalisation(reference).apply(reference), f)
    head = foreground_mask(truth)
    # an LR voxel is a valid centre when most of its HR block is head
    blocks = head.reshape(lr.shape[0], f[0], lr.shape[1], f[1], lr.shape[2], f[2])
    centres = np.argwhere(blocks.mean(axis=(1, 3, 5)) >= 0.5)
    if centres.size == 0:
        raise ValueError(f"{name}: no head foreground found to sample patches from")
    sizes = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return TrainingVolume(name, lr, truth, f, centres.astype(np.int32), ilr, ref, weight,
                          spacing=sizes)


@dataclass
class Batch:
    """A batch of aligned patches: ``inputs`` (N, C, …) for the network, ``targets``
    (N, 1, …) on the HR grid."""

    inputs: np.ndarray
    targets: np.ndarray


def uninformative_reference(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A reference that carries no structure: uniform noise or a constant, in [0, 1]."""
    if rng.random() < 0.5:
        return rng.random(tuple(shape), dtype=np.float32)
    return np.full(tuple(shape), rng.random(), dtype=np.float32)


def random_rigid(
    rng: np.random.Generator, max_shift_mm: float, max_angle_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """A random rigid transform: a rotation matrix by an angle ~U(0, max_angle_deg) about a
    uniformly random axis (Rodrigues) and a translation (mm) of length ~U(0, max_shift_mm)
    in a uniformly random direction."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.0, max_angle_deg))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return rotation, direction * rng.uniform(0.0, max_shift_mm)


def misregistration_margin(
    shape: Sequence[int], spacing: Sequence[float], max_shift_mm: float, max_angle_deg: float
) -> tuple[int, int, int]:
    """Voxels to add on each side of a patch so that a rigid transform within the bounds
    about its centre samples only inside the larger block (plus one for linear weights)."""
    radius = float(np.linalg.norm([(n - 1) / 2 * d for n, d in zip(shape, spacing)]))
    reach = max_shift_mm + 2 * np.sin(np.deg2rad(max_angle_deg) / 2) * radius  # mm
    m0, m1, m2 = (int(np.ceil(reach / d)) + 1 for d in spacing)
    return (m0, m1, m2)


def resample_rigid(
    block: np.ndarray,
    margin: Sequence[int],
    rotation: np.ndarray,
    shift_mm: Sequence[float],
    spacing: Sequence[float],
) -> np.ndarray:
    """The patch inside ``block`` (``margin`` voxels short of each face) moved rigidly about
    its centre: ``out(x) = block(c + R (x - c) + t)`` in mm (``R`` = ``rotation``, ``t`` =
    ``shift_mm``), linear interpolation. The identity gives the central patch exactly."""
    shape = tuple(n - 2 * m for n, m in zip(block.shape, margin))
    scale = np.asarray(spacing, dtype=float)
    matrix = (np.asarray(rotation, dtype=float) * scale[None, :]) / scale[:, None]  # S⁻¹RS
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    offset = centre + np.asarray(margin) - matrix @ centre + np.asarray(shift_mm) / scale
    return ndimage.affine_transform(block, matrix, offset=offset, output_shape=shape, order=1,
                                    mode="nearest").astype(np.float32, copy=False)


def padded_block(volume: np.ndarray, start: Sequence[int], size: Sequence[int],
                 margin: Sequence[int]) -> np.ndarray:  # fmt: skip
    """``volume[start - margin : start + size + margin]`` per axis, zero (background) beyond
    the volume's faces."""
    lo = [s - m for s, m in zip(start, margin)]
    hi = [s + n + m for s, n, m in zip(start, size, margin)]
    inner = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, volume.shape))
    pad = [(max(-a, 0), max(b - n, 0)) for a, b, n in zip(lo, hi, volume.shape)]
    return np.pad(volume[inner], pad)


class PatchSampler:
    """Draw aligned, augmented LR/HR patch batches from prepared volumes with a numpy
    Generator (all randomness comes from ``rng``, so a run is reproducible and resumable).

    ``patch_size``: HR patch edge per axis (a multiple of each factor). ``input_grid``:
    'lr' → inputs are LR patches; 'hr' → inputs are ILR patches on the HR grid.
    ``reference_fn(hr_patch, rng, volume) -> ref``: synthesises a reference when a volume has none
    (or, with probability ``synth_probability``, even when it has one); None for
    single-channel networks. ``background_fraction``: the share of patches whose origin is
    drawn uniformly over the whole volume instead of around a head voxel — the only patches
    in which a network sees a receptive field of pure background and learns to leave it at
    zero (0, the default, keeps sampling to the head and the random stream unchanged).
    ``uninformative_fraction``: the share of guided patches whose reference is replaced by
    pure noise or a constant (half each), target unchanged — so the network learns to fall
    back on the T1w alone where the reference carries nothing (0: the stream is unchanged).
    ``misregistration``: ``(mm, degrees)`` bounds of the random rigid transform applied to
    each guided patch's reference (module doc; ``(0, 0)``: none, the stream is unchanged).
    """

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        patch_size: int | Sequence[int],
        *,
        input_grid: str,
        degradation: str,
        augment: bool = True,
        jitter: float = 0.1,
        reference_fn: Callable[[np.ndarray, np.random.Generator, TrainingVolume], np.ndarray]
        | None = None,
        synth_probability: float = 0.5,
        background_fraction: float = 0.0,
        uninformative_fraction: float = 0.0,
        misregistration: Sequence[float] = (0.0, 0.0),
    ) -> None:
        if not volumes:
            raise ValueError("no training volumes")
        self.volumes = list(volumes)
        self.factors = self.volumes[0].factors
        size = [int(patch_size)] * 3 if np.isscalar(patch_size) else [int(p) for p in patch_size]
        bad = [p for p, f in zip(size, self.factors) if p % f or p < f]
        if bad:
            raise ValueError(
                f"patch size {tuple(size)} must be a multiple of the factors {self.factors}"
            )
        self.hr_size = tuple(size)
        self.lr_size = tuple(p // f for p, f in zip(size, self.factors))
        for vol in self.volumes:
            if any(n < p for n, p in zip(vol.lr.shape, self.lr_size)):
                raise ValueError(
                    f"{vol.name}: LR image {vol.lr.shape} is smaller than the patch {self.lr_size}"
                )
        if input_grid not in ("lr", "hr"):
            raise ValueError(f"input_grid must be 'lr' or 'hr', got {input_grid!r}")
        self.input_grid = input_grid
        self.flips = augment and degradation != "decimate"
        self.permute = augment and len(set(self.factors)) == 1 and len(set(self.hr_size)) == 1
        self.jitter = float(jitter) if augment else 0.0
        self.reference_fn = reference_fn
        self.synth_probability = float(synth_probability)
        if not 0.0 <= background_fraction < 1.0:
            raise ValueError(f"background_fraction must lie in [0, 1), got {background_fraction}")
        self.background_fraction = float(background_fraction)
        if not 0.0 <= uninformative_fraction < 1.0:
            raise ValueError(
                f"uninformative_fraction must lie in [0, 1), got {uninformative_fraction}"
            )
        self.uninformative_fraction = float(uninformative_fraction)
        shift, angle = (float(v) for v in misregistration)
        if shift < 0 or angle < 0:
            raise ValueError(f"misregistration bounds must be >= 0, got {tuple(misregistration)}")
        self.misregistration = (shift, angle)
        weights = np.array([v.weight for v in self.volumes], dtype=float)
        self.p = weights / weights.sum()

    def _origin(self, vol: TrainingVolume, rng: np.random.Generator) -> tuple[int, ...]:
        if self.background_fraction and rng.random() < self.background_fraction:
            shape = zip(self.lr_size, vol.lr.shape)
            return tuple(int(rng.integers(0, n - p + 1)) for p, n in shape)
        centre = vol.centres[rng.integers(len(vol.centres))]
        origin = []
        for c, p, n in zip(centre, self.lr_size, vol.lr.shape):
            origin.append(int(np.clip(c - p // 2, 0, n - p)))
        return tuple(origin)

    def sample(self, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        """One patch pair: (input channels on the input grid, HR target)."""
        vol = self.volumes[rng.choice(len(self.volumes), p=self.p)]
        o = self._origin(vol, rng)
        s = self.factors
        lr_sl = tuple(slice(i, i + p) for i, p in zip(o, self.lr_size))
        hr_sl = tuple(slice(i * f, i * f + p) for i, f, p in zip(o, s, self.hr_size))
        target = vol.hr[hr_sl]
        first = vol.lr[lr_sl] if self.input_grid == "lr" else vol.ilr[hr_sl]
        channels = [first]
        if self.reference_fn is not None:
            use_real = vol.reference is not None and rng.random() >= self.synth_probability
            if any(self.misregistration):
                ref = self._misregistered(vol, [sl.start for sl in hr_sl], use_real, rng)
            else:
                ref = vol.reference[hr_sl] if use_real else self.reference_fn(target, rng, vol)
            if self.uninformative_fraction and rng.random() < self.uninformative_fraction:
                ref = uninformative_reference(target.shape, rng)
            channels.append(np.asarray(ref, dtype=np.float32))
        if self.flips:
            for axis in range(3):
                if rng.random() < 0.5:
                    channels = [np.flip(c, axis) for c in channels]
                    target = np.flip(target, axis)
        if self.permute:
            order = tuple(int(a) for a in rng.permutation(3))
            channels = [np.transpose(c, order) for c in channels]
            target = np.transpose(target, order)
        if self.jitter:
            gain = 1.0 + rng.uniform(-self.jitter, self.jitter)
            offset = rng.uniform(-self.jitter, self.jitter) * 0.1
            channels[0] = channels[0] * gain + offset
            target = target * gain + offset
        return [np.ascontiguousarray(c, dtype=np.float32) for c in channels], np.ascontiguousarray(
            target, dtype=np.float32
        )

    def _misregistered(self, vol: TrainingVolume, start: Sequence[int], use_real: bool,
                       rng: np.random.Generator) -> np.ndarray:  # fmt: skip
        """The reference patch at ``start`` (real, or synthesised from the truth) under a
        random rigid transform within :attr:`misregistration`, from a larger block."""
        margin = misregistration_margin(self.hr_size, vol.spacing, *self.misregistration)
        source = vol.reference if use_real else vol.hr
        block = padded_block(source, start, self.hr_size, margin)
        if not use_real:
            block = self.reference_fn(block, rng, vol)
        rotation, shift = random_rigid(rng, *self.misregistration)
        return resample_rigid(block, margin, rotation, shift, vol.spacing)

    def batch(self, size: int, rng: np.random.Generator) -> Batch:
        """``size`` patch pairs stacked as (N, C, …) inputs and (N, 1, …) targets."""
        pairs = [self.sample(rng) for _ in range(size)]
        inputs = np.stack([np.stack(c) for c, _ in pairs])
        targets = np.stack([t[None] for _, t in pairs])
        return Batch(inputs, targets)

    def fixed_batch(self, size: int, seed: int) -> Batch:
        """A reproducible batch without augmentation (validation patches)."""
        saved = self.flips, self.permute, self.jitter, self.misregistration
        self.flips, self.permute, self.jitter, self.misregistration = False, False, 0.0, (0, 0)
        try:
            return self.batch(size, np.random.default_rng(seed))
        finally:
            self.flips, self.permute, self.jitter, self.misregistration = saved
