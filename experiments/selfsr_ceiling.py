#!/usr/bin/env python
"""What selfsr's network could reach if it were taught with the truth (its ceiling).

selfsr teaches its per-scan network from the scan's *in-plane* data, degraded the way the
slices were acquired, because the through-plane truth does not exist for a real 2D scan.
This experiment asks how much that costs: on a validation image degraded with the ``slice``
model, it trains the same network, with the same budget (steps, batch, patch), on the
*true* through-plane planes of the image (B-spline planes → the HR planes), applies it the
way selfsr does (both orientations, averaged, data consistency) and prints brain PSNR and
the gain over B-spline. Compare with selfsr's gain on the same input
(``bids_sr-train validate selfsr ...``): when the two are close, self-supervision is
not what limits selfsr; the network's size and training budget are.

    python experiments/selfsr_ceiling.py --image chris --scale 1 1 3 [--width 128] [--unshuffle 2]
        [--steps 3000] [--path T1W] [--init PRIOR.safetensors]

``--path`` scores any image (e.g. an IXI validation subject) instead of ``--image``;
``--init`` starts from a prior (as selfsr does) instead of random weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bids_sr.acquisition import enforce_consistency, simulated_acquisition
from bids_sr.degrade import crop_to_factor, degrade
from bids_sr.evaluation import DATA_RANGE
from bids_sr.image import load_volume, robust_normalisation
from bids_sr.interpolation import upsample
from bids_sr.masks import brain_mask
from bids_sr.metrics import compute_metrics
from bids_sr.recipes import SELFSR
from bids_sr.selfsr import network
from bids_sr.selfsr.pairs import slice_phase
from bids_sr.selfsr.store import load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

IMAGES = {"chris": "real_t1/chris_T1w.nii.gz",
          "openms19": "real_multicontrast/openms_patient19_T1.nii.gz"}  # fmt: skip


def true_pairs(base: np.ndarray, truth: np.ndarray, axis: int, n_lr: int, patch: int) -> list:
    """Training pairs of the through-plane planes themselves: B-spline plane → HR plane, in
    the layout selfsr's network trains on (rows across the slices)."""
    phase = slice_phase(base.shape[axis], n_lr)
    pairs = []
    for stack in (a for a in range(3) if a != axis):
        other = ({0, 1, 2} - {axis, stack}).pop()
        order = (stack, axis, other)
        degraded = np.ascontiguousarray(np.transpose(base, order))
        target = np.ascontiguousarray(np.transpose(truth, order))
        pairs.append(network._Pairs(degraded, target, network.patch_centres(target, patch),
                                    phase))  # fmt: skip
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", choices=list(IMAGES), default="chris")
    parser.add_argument("--scale", nargs=3, type=float, default=[1.0, 1.0, 3.0])
    parser.add_argument("--thickness-ratio", type=float, default=1.0)
    parser.add_argument("--width", type=int, default=network.TrainSettings.width)
    parser.add_argument("--depth", type=int, default=network.TrainSettings.depth)
    parser.add_argument("--unshuffle", type=int, default=network.TrainSettings.unshuffle,
                        help="run the network on pixel-unshuffled planes (PlaneNet)")
    parser.add_argument("--steps", type=int, default=SELFSR.max_iterations)
    parser.add_argument("--batch", type=int, default=network.TrainSettings.batch)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--path", type=Path, help="an image to score instead of --image")
    parser.add_argument("--init", type=Path, help="a prior to start from (safetensors)")
    args = parser.parse_args(argv)
    volume = load_volume(args.path or args.shared / IMAGES[args.image])
    factors = tuple(args.scale)
    axis = int(np.argmax(factors))
    truth = crop_to_factor(robust_normalisation(volume.data).apply(volume.data), factors)
    mask = brain_mask(truth, volume.zooms)
    acquisition = simulated_acquisition(
        volume.zooms, factors, thickness=args.thickness_ratio * volume.zooms[axis] * factors[axis]
    )
    lr = degrade(truth, factors, "slice", acquisition=acquisition)
    base = upsample(lr, factors, order=3)

    def brain_psnr(image: np.ndarray) -> float:
        corrected = enforce_consistency(image, lr, acquisition)
        return compute_metrics(corrected, truth, mask=mask, data_range=DATA_RANGE)["psnr_brain"]

    settings = network.TrainSettings(width=args.width, batch=args.batch)
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    net = network.PlaneNet(depth=args.depth, width=args.width, unshuffle=args.unshuffle)
    if args.init:  # the prior's architecture, widened to --width, as selfsr starts
        tensors, _ = load_model(args.init)
        state = {name: torch.from_numpy(np.asarray(v)) for name, v in tensors.items()}
        net = network.net_from_prior(state, args.width)
    pairs = true_pairs(base, truth, axis, lr.shape[axis], settings.patch)
    network.fit(net, pairs, settings, args.steps, rng, progress=True,
                desc="ceiling: training on the true through-plane planes")  # fmt: skip
    estimates = [network.apply_plane_net(net, base, axis, other, lr.shape[axis])
                 for other in range(3) if other != axis]  # fmt: skip
    seconds = time.perf_counter() - start
    bspline, ceiling = brain_psnr(base), brain_psnr(np.mean(estimates, axis=0))
    name = args.path.name if args.path else args.image
    print(f"{name} ×{'x'.join(f'{f:g}' for f in factors)} thickness "
          f"{args.thickness_ratio:g}× spacing; network {args.depth}×{args.width} channels "
          f"(unshuffle {args.unshuffle}), {args.steps} "
          f"steps of {args.batch} patches ({seconds:.0f} s): bspline {bspline:.2f} dB, trained "
          f"on the truth {ceiling:.2f} dB, gain {ceiling - bspline:+.2f} dB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
