#!/usr/bin/env python
"""How much a per-scan T2w → T1w synthesis could add to the ×2 guided network (issue 14 (a)).

Issue 14 case (a) asks the ×2 guided model (T1w ×2 Gaussian, T2w at 1 mm) to beat its mono
twin by +1.0 dB brain PSNR on each held-out pair; the shipped `srrecnn-t2w_x2x2x2` gives
+0.53 (openms19) / +0.30 (mni152). This experiment measures one candidate, per scan and
without any truth in the learning:

1. learn a small 3D CNN that maps the T2w to the T1w *at the T1w's resolution*: input the
   T2w degraded exactly as the T1w was (×2 Gaussian, then B-spline back to the HR grid),
   target the B-spline-upsampled LR T1w; both live on the HR grid, so only their sharpness
   differs from what the network meets next;
2. apply it to the sharp 1 mm T2w: a synthetic T1w carrying the T2w's fine edges;
3. replace a fraction ``w`` of a network output's high-pass (above a Gaussian of ``sigma``
   voxels) by the synthetic T1w's, inside the brain, then restore data consistency.

It prints, per pair, the gain over the mono network for each base output (mono, guided),
``sigma`` and ``w``. ``w`` is chosen here by looking at the truth: the figures are an
**upper bound** for the approach, not a validated method (a method would pick ``w`` per scan
without the truth, e.g. one octave down). Throwaway-grade: one thread pair, a few minutes
per 600 steps on two CPU cores.

Usage: python experiments/guide_synthesis.py [--steps 600] [--pairs mni152 openms19]
       [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from bids_sr.acquisition import enforce_consistency
from bids_sr.degrade import degrade
from bids_sr.evaluation import DATA_RANGE, evaluate_image
from bids_sr.image import load_volume
from bids_sr.metrics import psnr
from bids_sr.superresolve import super_resolve

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FOLDER = "real_multicontrast"
PAIRS = {
    "mni152": ("mni152_T1_1mm_brain.nii.gz", "mni152_T2_1mm_brain.nii.gz"),
    "openms19": ("openms_patient19_T1.nii.gz", "openms_patient19_T2.nii.gz"),
}
FACTORS = (2, 2, 2)
PATCH, BATCH, MARGIN = 24, 8, 4


def _synthesis_net(width: int = 32, layers: int = 6) -> torch.nn.Module:
    body: list[torch.nn.Module] = []
    for i in range(layers):
        body += [torch.nn.Conv3d(1 if i == 0 else width, width, 3, padding=1), torch.nn.ReLU()]
    return torch.nn.Sequential(*body, torch.nn.Conv3d(width, 1, 3, padding=1))


def learn_synthesis(source: np.ndarray, target: np.ndarray, mask: np.ndarray, steps: int,
                    seed: int = 0) -> tuple[torch.nn.Module, float]:  # fmt: skip
    """Fit source → target on random brain patches (L1, Adam 1e-3); returns the net and
    its last batch loss."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _synthesis_net()
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    x_all = torch.from_numpy(source[None, None].astype(np.float32))
    y_all = torch.from_numpy(target[None, None].astype(np.float32))
    brain = np.argwhere(mask)
    low, high = brain.min(0), np.maximum(brain.max(0) - PATCH, brain.min(0))
    inner = (Ellipsis, *[slice(MARGIN, -MARGIN)] * 3)
    loss = torch.zeros(())
    for _ in range(steps):
        corners = [[rng.integers(lo, hi + 1) for lo, hi in zip(low, high, strict=True)]
                   for _ in range(BATCH)]  # fmt: skip
        window = [(slice(None), slice(None), *(slice(c, c + PATCH) for c in corner))
                  for corner in corners]  # fmt: skip
        x = torch.cat([x_all[w] for w in window])
        y = torch.cat([y_all[w] for w in window])
        loss = torch.nn.functional.l1_loss(net(x)[inner], y[inner])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net, float(loss.detach())


def measure(pair: str, steps: int, shared: Path = SHARED) -> None:
    t1_file, t2_file = PAIRS[pair]
    volume = load_volume(shared / FOLDER / t1_file)
    arrays: dict = {}
    rows = evaluate_image(volume.data, volume.affine, factors=FACTORS, degradation="gaussian",
                          methods=["srrecnn", "srrecnn-t2w"], device="cpu", arrays=arrays,
                          reference=load_volume(shared / FOLDER / t2_file).data)  # fmt: skip
    scores = {row["method"]: row["psnr_brain"] for row in rows}
    truth, lr, mask = arrays["truth"], arrays["input"], arrays["mask"]
    guide, model = arrays["reference"], arrays["acquisition"]

    def upsampled(image: np.ndarray) -> np.ndarray:
        return super_resolve(image, FACTORS, "bspline", acquisition=model,
                             data_consistency=False)[0]  # fmt: skip

    started = time.time()
    net, loss = learn_synthesis(upsampled(degrade(guide, FACTORS, "gaussian")), upsampled(lr),
                                mask, steps)  # fmt: skip
    with torch.no_grad():
        synthetic = net(torch.from_numpy(guide[None, None].astype(np.float32)))[0, 0].numpy()
    print(f"{pair}: synthesis {steps} steps in {time.time() - started:.0f} s (last L1 "
          f"{loss:.4f}); mono {scores['srrecnn']:.2f} dB, guided network − mono "
          f"{scores['srrecnn-t2w'] - scores['srrecnn']:+.2f} dB", flush=True)  # fmt: skip
    for base_name in ("srrecnn", "srrecnn-t2w"):
        base = arrays["sr"][base_name]
        for sigma in (0.7, 1.0):
            detail = synthetic - ndimage.gaussian_filter(synthetic, sigma)
            own = base - ndimage.gaussian_filter(base, sigma)
            gains = []
            for w in (0.1, 0.25, 0.5, 0.75):
                out = enforce_consistency(base + w * (detail - own) * mask, lr, model)
                gain = psnr(out, truth, data_range=DATA_RANGE, mask=mask) - scores["srrecnn"]
                gains.append(f"w {w}: {gain:+.2f}")
            print(f"  {base_name} + synthetic detail (sigma {sigma}), over mono: "
                  + ", ".join(gains), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=sorted(PAIRS))
    parser.add_argument("--shared", type=Path, default=SHARED,
                        help="the shared data folder (default: ../shared/data)")
    args = parser.parse_args()
    folder = args.shared / FOLDER
    missing = [f for p in args.pairs for f in PAIRS[p] if not (folder / f).exists()]
    if missing:
        raise SystemExit(f"guide_synthesis: {folder / missing[0]} is absent (--shared)")
    for pair in args.pairs:
        measure(pair, args.steps, args.shared)


if __name__ == "__main__":
    main()
