"""Pretraining the per-scan CNN's starting point on the slice family (numerical core).

One set of weights for every 2D scan: planes of HR training volumes, degraded along one
in-plane axis with *random* acquisitions — slice factor 2–6, thickness 0.6–1.1 × the
spacing (gaps and overlaps), ``rect`` or ``gaussian`` profile, any of the three axes as the
stack — teach :class:`bids_sr.selfsr.network.PlaneNet` the slice family in general; each
scan then fine-tunes it on its own slices (:func:`bids_sr.selfsr.network.train_plane_net`
with ``init``), so the per-scan budget buys more than from a random start.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from bids_sr.acquisition import Acquisition
from bids_sr.image import robust_normalisation
from bids_sr.selfsr.network import PlaneNet, TrainSettings, _pairs, fit, net_from_numpy

FACTORS = (2.0, 6.0)
THICKNESS_RATIOS = (0.6, 1.1)
PROFILES = ("rect", "gaussian")


def random_acquisition(rng: np.random.Generator) -> tuple[Acquisition, float]:
    """A random 2D acquisition of the slice family on a 1-voxel grid, and its factor."""
    factor = float(rng.uniform(*FACTORS))
    axis = int(rng.integers(3))
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = factor
    thickness = factor * float(rng.uniform(*THICKNESS_RATIOS))
    profile = PROFILES[int(rng.integers(len(PROFILES)))]
    return Acquisition(spacing=tuple(spacing), slice_axis=axis, thickness=thickness,
                       profile=profile), factor  # fmt: skip


def pretrain_plane_net(
    volumes: Sequence[np.ndarray], *, steps: int, acquisitions_per_volume: int = 4,
    seed: int = 0, settings: TrainSettings = TrainSettings(), device: str = "cpu",
    progress: bool = False, init: dict[str, np.ndarray] | None = None,
) -> tuple[PlaneNet, dict]:  # fmt: skip
    """Train a :class:`PlaneNet` on random slice-family pairs of the HR ``volumes``
    (robust-normalised here). Returns the network and a summary of what it saw.

    ``init``: the arrays of an earlier prior to continue from (its architecture, not the
    settings', is the network's): pretraining longer on fresh random acquisitions, e.g. when
    more compute is at hand, without starting over."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pairs, seen = [], []
    for volume in volumes:
        data = robust_normalisation(volume).apply(volume)
        for _ in range(acquisitions_per_volume):
            acquisition, factor = random_acquisition(rng)
            pairs += _pairs(data, acquisition, factor, settings.patch)
            seen.append({"factor": round(factor, 3), "slice_axis": acquisition.slice_axis,
                         "thickness_ratio": round(acquisition.thickness / factor, 3),
                         "profile": acquisition.profile})  # fmt: skip
    if init is None:
        net = PlaneNet(depth=settings.depth, width=settings.width, unshuffle=settings.unshuffle)
    else:
        net = net_from_numpy(init).train()
    summary = fit(net, pairs, settings, steps, rng, device=device, progress=progress,
                  desc="selfsr: pretraining on the slice family")  # fmt: skip
    return net, {**summary, "steps": steps, "acquisitions": seen,
                 "train_s": time.perf_counter() - start}  # fmt: skip
