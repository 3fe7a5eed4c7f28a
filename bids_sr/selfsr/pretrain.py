"""Pretraining the per-scan CNN's starting point on the slice family (numerical core).

One set of weights for every 2D scan: planes of HR training volumes, degraded along one
in-plane axis with *random* acquisitions — slice factor 2–6, thickness 0.6–1.1 × the
spacing (gaps and overlaps), ``rect`` or ``gaussian`` profile, any of the three axes as the
stack — teach :class:`bids_sr.selfsr.network.PlaneNet` the slice family in general; each
scan then fine-tunes it on its own slices (:func:`bids_sr.selfsr.network.train_plane_net`
with ``init``), so the per-scan budget buys more than from a random start.

Guided (the starting point of ``selfsr-t2w`` and ``selfsr-flair``): with ``references``, each
random acquisition of a volume also gets a guide plane — one of the volume's real registered
references (T2w, FLAIR) or, as often, a contrast-randomised copy of the T1w itself
(:func:`bids_sr.contrast.randomise_contrast`: random tissue-intensity map, bias field,
gamma, blur, noise) — shifted by a random misregistration of up to :data:`MAX_SHIFT_VOXELS`.
From scratch, a per-scan guided network starts with the guide's weights at zero and spends
its whole budget learning *that* a guide helps; from a guided prior it only learns how this
scan's guide maps onto its T1w.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from bids_sr.acquisition import Acquisition
from bids_sr.contrast import randomise_contrast, tissue_centres
from bids_sr.image import robust_normalisation
from bids_sr.selfsr.network import (
    PlaneNet,
    TrainSettings,
    _pairs,
    add_reference_input,
    fit,
    net_from_numpy,
)

FACTORS = (2.0, 6.0)
THICKNESS_RATIOS = (0.6, 1.1)
PROFILES = ("rect", "gaussian")
#: Guided pretraining: the chance that an acquisition's guide is one of the volume's real
#: references (when it has any) rather than a contrast-randomised copy of its T1w ...
REAL_REFERENCE_FRACTION = 0.5
#: ... the largest misregistration of the guide (a shift of random direction and uniform
#: length, voxels; issue 14 asks for 0–1 mm) and the largest blur of a synthesised guide
MAX_SHIFT_VOXELS = 1.0
SYNTHETIC_BLUR = 1.0


def random_acquisition(rng: np.random.Generator, factors: Sequence[float] = FACTORS
                       ) -> tuple[Acquisition, float]:  # fmt: skip
    """A random 2D acquisition of the slice family on a 1-voxel grid (slice factor uniform
    in ``factors``), and its factor."""
    factor = float(rng.uniform(*factors))
    axis = int(rng.integers(3))
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = factor
    thickness = factor * float(rng.uniform(*THICKNESS_RATIOS))
    profile = PROFILES[int(rng.integers(len(PROFILES)))]
    return Acquisition(spacing=tuple(spacing), slice_axis=axis, thickness=thickness,
                       profile=profile), factor  # fmt: skip


def random_guide(t1: np.ndarray, real: Sequence[np.ndarray], centres: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, str]:  # fmt: skip
    """A guide for the normalised HR ``t1``: one of its normalised ``real`` references or a
    contrast-randomised copy of it, misregistered by a random shift; and its kind."""
    if real and rng.random() < REAL_REFERENCE_FRACTION:
        index = int(rng.integers(len(real)))
        guide, kind = real[index], f"real{index}"
    else:
        guide = randomise_contrast(t1, rng, centres, blur=SYNTHETIC_BLUR)
        kind = "synthetic"
    direction = rng.normal(size=3)
    shift = direction / np.linalg.norm(direction) * rng.uniform(0.0, MAX_SHIFT_VOXELS)
    return ndimage.shift(guide, shift, order=1, mode="nearest").astype(np.float32), kind


def _start(init: dict[str, np.ndarray] | None, settings: TrainSettings,
           guided: bool) -> PlaneNet:  # fmt: skip
    """The network pretraining starts from: ``init``'s (an unguided one gains a guide input
    whose weights start at zero) or a fresh one of ``settings``' architecture."""
    inputs = 3 if guided else 2
    if init is None:
        return PlaneNet(depth=settings.depth, width=settings.width,
                        unshuffle=settings.unshuffle, inputs=inputs)  # fmt: skip
    net = net_from_numpy(init)
    if net.inputs == inputs:
        return net.train()
    if not guided:
        raise ValueError("an unguided prior cannot continue from a guided network")
    state = add_reference_input(net.state_dict())
    guided_net = PlaneNet(depth=net.depth, width=net.width, unshuffle=net.unshuffle, inputs=3)
    guided_net.load_state_dict(state)
    return guided_net.train()


def pretrain_plane_net(
    volumes: Sequence[np.ndarray], *, steps: int,
    acquisitions_per_volume: int | Sequence[int] = 4, seed: int = 0,
    factors: Sequence[float] = FACTORS, settings: TrainSettings = TrainSettings(),
    device: str = "cpu",
    progress: bool = False, init: dict[str, np.ndarray] | None = None,
    references: Sequence[Sequence[np.ndarray]] | None = None,
) -> tuple[PlaneNet, dict]:  # fmt: skip
    """Train a :class:`PlaneNet` on random slice-family pairs of the HR ``volumes``
    (robust-normalised here). Returns the network and a summary of what it saw.

    ``acquisitions_per_volume``: one count for all, or one per volume (many small volumes
    of a cohort then weigh no more than a few large ones); ``factors``: the range of slice
    factors drawn.

    ``init``: the arrays of an earlier prior to continue from (its architecture, not the
    settings', is the network's): pretraining longer on fresh random acquisitions, e.g. when
    more compute is at hand, without starting over.

    ``references``: for a guided prior, per volume its registered real references on its
    grid (each may be empty); every acquisition then gets a guide (:func:`random_guide`).
    An unguided ``init`` gains the guide input with zero weights (it starts unguided)."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    guided = references is not None
    if guided and len(references) != len(volumes):
        raise ValueError(f"{len(references)} reference lists for {len(volumes)} volumes")
    pairs, seen = [], []
    counts = ([int(acquisitions_per_volume)] * len(volumes)
              if isinstance(acquisitions_per_volume, int) else list(acquisitions_per_volume))
    if len(counts) != len(volumes):
        raise ValueError(f"{len(counts)} acquisition counts for {len(volumes)} volumes")
    for index, volume in enumerate(volumes):
        data = robust_normalisation(volume).apply(volume)
        real, centres = [], None
        if guided:
            real = [robust_normalisation(r).apply(r).astype(np.float32) for r in references[index]]
            if any(r.shape != data.shape for r in real):
                raise ValueError(f"volume {index}: a reference's shape differs from {data.shape}")
            centres = tissue_centres(data)
        for _ in range(counts[index]):
            acquisition, factor = random_acquisition(rng, factors)
            guide, kind = random_guide(data, real, centres, rng) if guided else (None, None)
            pairs += _pairs(data, acquisition, factor, settings.patch, guide)
            seen.append({"factor": round(factor, 3), "slice_axis": acquisition.slice_axis,
                         "thickness_ratio": round(acquisition.thickness / factor, 3),
                         "profile": acquisition.profile,
                         **({"guide": kind} if guided else {})})  # fmt: skip
            del guide
    net = _start(init, settings, guided)
    summary = fit(net, pairs, settings, steps, rng, device=device, progress=progress,
                  desc="selfsr: pretraining on the slice family")  # fmt: skip
    return net, {**summary, "steps": steps, "acquisitions": seen,
                 "train_s": time.perf_counter() - start}  # fmt: skip
