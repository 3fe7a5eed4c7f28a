#!/usr/bin/env python
"""How much a registered reference *can* add on one T1w/T2w pair: the guide's headroom.

Issue 14 asks the guided network to beat its mono twin by 1 dB on each validation pair. When
it falls short on a pair, two causes look alike in the validation table: the reference does
not carry the missing detail (no model can reach the target there), or it does and the
shipped network has not learned to read that kind of reference (more or better training
data would). This experiment separates them on the isotropic case (T1w ×``--scale``
Gaussian, the reference at the HR resolution).

It degrades the pair's T1w the way ``bids_sr-train validate`` does, then fine-tunes the
shipped guided network and its shipped mono twin, with the same budget and the same patch
stream, on the pair itself — patches from the half of the head with x below the midline
(the truth is known there) — and scores brain PSNR, after data consistency, on the other
half only (``HELD_OUT_GAP`` voxels from the midline on). A hemisphere is not an unseen
image (the two are near mirror images, a template's especially), so the tuned figures are
an optimistic bound of what this architecture can draw from this reference: if the tuned
guided − mono margin is below the target, the reference cannot give it; if it is above
while the shipped margin is not, the shortfall lies in training.

    python experiments/guide_headroom.py --pair mni152 [--steps 2000] [--threads 1]
        [--networks srrecnn-t2w srrecnn]

Fine-tuning: L1 loss on the patch interior (``LOSS_MARGIN`` voxels from each face left
out), Adam at a constant ``--lr``, batches of 8 patches of 24³ with random flips; one
thread takes about 1.7 s a step for the 32-feature SRReCNN3D.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bids_sr.evaluation import DATA_RANGE, evaluate_image
from bids_sr.image import load_volume
from bids_sr.inference import network_input, resolve_weights
from bids_sr.metrics import compute_metrics
from bids_sr.models.registry import get_spec
from bids_sr.models.weights import load_model, save_weights
from bids_sr.superresolve import super_resolve

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

PAIRS = {
    "mni152": ("real_multicontrast/mni152_T1_1mm_brain.nii.gz",
               "real_multicontrast/mni152_T2_1mm_brain.nii.gz"),
    "openms19": ("real_multicontrast/openms_patient19_T1.nii.gz",
                 "real_multicontrast/openms_patient19_T2.nii.gz"),
}  # fmt: skip
HELD_OUT_GAP = 4  # voxels kept out on each side of the midline (no patch reaches the scored half)
PATCH = 24
BATCH = 8
LOSS_MARGIN = 4


def training_centres(mask: np.ndarray, limit: int) -> np.ndarray:
    """Head voxels around which a ``PATCH``³ patch fits below x = ``limit``."""
    centres = np.argwhere(mask[: limit - PATCH // 2])
    return centres[centres[:, 0] >= PATCH // 2]


def patch_batch(channels: list[np.ndarray], truth: np.ndarray, centres: np.ndarray, limit: int,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``BATCH`` aligned (input channels, truth) patches below x = ``limit``, randomly flipped."""
    inputs, targets = [], []
    for _ in range(BATCH):
        centre = centres[rng.integers(len(centres))]
        origin = [int(np.clip(c - PATCH // 2, 0, n - PATCH)) for c, n in zip(centre, truth.shape)]
        origin[0] = min(origin[0], limit - PATCH)
        window = tuple(slice(o, o + PATCH) for o in origin)
        patch = [c[window] for c in channels]
        target = truth[window]
        for axis in range(3):
            if rng.random() < 0.5:
                patch = [np.flip(p, axis) for p in patch]
                target = np.flip(target, axis)
        inputs.append(np.stack(patch))
        targets.append(target[None])
    return (torch.from_numpy(np.ascontiguousarray(np.stack(inputs))),
            torch.from_numpy(np.ascontiguousarray(np.stack(targets))))  # fmt: skip


def fine_tune(model: torch.nn.Module, channels: list[np.ndarray], truth: np.ndarray,
              mask: np.ndarray, limit: int, steps: int, lr: float, seed: int) -> float:  # fmt: skip
    """Fine-tune ``model`` in place on patches below x = ``limit``; return the seconds taken."""
    centres = training_centres(mask, limit)
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start = time.perf_counter()
    m = LOSS_MARGIN
    for step in range(steps):
        x, y = patch_batch(channels, truth, centres, limit, rng)
        loss = (model(x) - y).abs()[..., m:-m, m:-m, m:-m].mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 250 == 0:
            print(f"  step {step}: L1 {loss.item():.5f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    model.eval()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default="mni152")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--networks", nargs="+", default=["srrecnn-t2w", "srrecnn"],
                        help="shipped networks to fine-tune (a guided one and its mono twin)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the tuned weights here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    paths = [args.shared / p for p in PAIRS[args.pair]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"guide_headroom: {missing[0]} not found (pass --shared)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t1, t2 = (load_volume(p) for p in paths)
    factors = (args.scale,) * 3
    arrays: dict = {}
    evaluate_image(t1.data, t1.affine, factors=args.scale, degradation="gaussian",
                   methods=args.networks, reference=t2.data, arrays=arrays, device="cpu")
    truth, lr, mask, guide = arrays["truth"], arrays["input"], arrays["mask"], arrays["reference"]
    mid = truth.shape[0] // 2
    scored = mask.copy()
    scored[: mid + HELD_OUT_GAP] = False
    folder = args.out or Path(tempfile.mkdtemp(prefix="guide_headroom_"))

    def held_out_psnr(sr: np.ndarray) -> float:
        return compute_metrics(sr, truth, mask=scored, data_range=DATA_RANGE)["psnr_brain"]

    print(f"{args.pair} ×{args.scale:g} Gaussian: trained on x < {mid - HELD_OUT_GAP}, "
          f"scored on x >= {mid + HELD_OUT_GAP} ({int(scored.sum())} brain voxels)", flush=True)
    results = {"bspline": (held_out_psnr(arrays["sr"]["bspline"]), None)}
    for name in args.networks:
        spec = get_spec(name)
        model, info = load_model(resolve_weights(spec, factors), method=name, factors=factors)
        reference = guide if spec.needs_reference else None
        channels, _ = network_input(lr, factors, spec, reference)  # what inference feeds it
        print(f"{name}: fine-tuning {args.steps} steps", flush=True)
        seconds = fine_tune(model, list(channels), truth, mask, mid - HELD_OUT_GAP, args.steps,
                            args.lr, args.seed)  # fmt: skip
        weights = save_weights(model, folder / f"{name}_tuned.safetensors", method=name,
                               config=info["config"], factors=factors)  # fmt: skip
        tuned, _ = super_resolve(lr, factors, name, weights=str(weights), reference=reference,
                                 device="cpu", acquisition=arrays["acquisition"])  # fmt: skip
        results[name] = (held_out_psnr(arrays["sr"][name]), held_out_psnr(tuned))
        print(f"{name}: shipped {results[name][0]:.3f} dB, tuned {results[name][1]:.3f} dB "
              f"({seconds:.0f} s)", flush=True)
    print(f"\nheld-out half, brain PSNR (dB); fine-tuned {args.steps} steps, Adam {args.lr:g}")
    print(f"{'network':<16}{'shipped':>10}{'tuned':>10}")
    for name, (shipped, tuned) in results.items():
        print(f"{name:<16}{shipped:>10.3f}{'' if tuned is None else f'{tuned:>10.3f}'}")
    guided, mono = args.networks[0], args.networks[-1]
    if guided != mono:
        margins = [results[guided][k] - results[mono][k] for k in (0, 1)]
        print(f"{guided} − {mono}: shipped {margins[0]:+.3f} dB, tuned {margins[1]:+.3f} dB")
    if args.out is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
