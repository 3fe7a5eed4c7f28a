"""Thick-slice benchmark: bspline, the shipped slice weights and selfsr on simulated 2D scans.

The validation T1ws of ../shared/data (chris, openms19; never used to train a shipped
model) are acquired with the ``slice`` model of :mod:`bids_sr.acquisition` at the settings
below and super-resolved back to 1 mm by each method through
:func:`bids_sr.evaluation.evaluate_image` — the protocol of a normal run, data consistency
on. Each (image, setting, method) runs in a fresh process so its peak RSS is its own (the
peak includes the evaluation's arrays and baselines: compare with the bspline row); the time
is the method's own (super-resolution and data consistency; for selfsr its per-scan learning
included, also when the model was reused from ``--model-dir``).

Prints per image and per setting: brain PSNR/SSIM, mean ± SD over the images, the paired
Δ to bspline with a 95 % t-interval, wall time and peak memory, and which method ``auto``
picks from the model cards for that input (its row repeats that method's scores).

    python benchmarks/thick_slice.py [--settings 1x1x3 1x1x5 5mm_gap1] [--methods ...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
VALIDATION = {
    "chris": "real_t1/chris_T1w.nii.gz",
    "openms19": "real_multicontrast/openms_patient19_T1.nii.gz",
}
#: name → (factors, slice thickness / slice spacing): 1×1×3, 1×1×5, 5 mm slices with 1 mm gaps
SETTINGS = {
    "1x1x3": ((1.0, 1.0, 3.0), 1.0),
    "1x1x5": ((1.0, 1.0, 5.0), 1.0),
    "5mm_gap1": ((1.0, 1.0, 5.0), 0.8),
}
SLICE_WEIGHTS = REPO / "bids_sr" / "data" / "weights" / "srrecnn_x1x1x4.safetensors"
#: label → (method, weights file or None)
METHODS = {
    "bspline": ("bspline", None),
    "srrecnn_x1x1x4": ("srrecnn", SLICE_WEIGHTS),
    "selfsr-filters": ("selfsr-filters", None),
    "selfsr": ("selfsr", None),
}


def _acquisition(zooms, factors, ratio):
    from bids_sr.acquisition import simulated_acquisition

    axis = int(np.argmax(factors))
    return simulated_acquisition(zooms, factors, thickness=ratio * zooms[axis] * factors[axis])


def _child(path: str, factors, ratio, method: str, weights, model_dir, queue) -> None:
    """Evaluate one method on one image in this (fresh) process; put its row on ``queue``."""
    import torch

    from bids_sr.evaluation import evaluate_image
    from bids_sr.image import load_volume

    torch.set_num_threads(2)
    volume = load_volume(path)
    start = time.perf_counter()
    rows = evaluate_image(
        volume.data, volume.affine, factors=factors, degradation="slice", methods=[method],
        weights={method: str(weights)} if weights else None, device="cpu",
        acquisition=_acquisition(volume.zooms, factors, ratio), model_dir=model_dir,
    )  # fmt: skip
    row = next(r for r in rows if r["method"] == method)
    row["wall_s"] = time.perf_counter() - start
    # the method's own time (super-resolution + data consistency), plus its learning time when
    # the per-scan model was reused from --model-dir (recorded when it was learned)
    row["method_s"] = row["runtime_s"] + (row.get("learn_s") or 0 if row.get("model_reused")
                                          else 0)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(row)


def run_one(path: Path, factors, ratio, method: str, weights, model_dir=None) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(str(path), factors, ratio, method, weights,
                                                   model_dir, queue))  # fmt: skip
    process.start()
    row = queue.get()
    process.join()
    return row


def _auto(factors) -> str:
    from bids_sr.planning import choose_auto

    return choose_auto(factors, "slice", None).method


def _summary(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return f"{arr.mean():6.2f} ± {sd:4.2f}"


def _delta(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return f"{arr.mean():+.2f}"
    half = stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / np.sqrt(arr.size)
    return f"{arr.mean():+.2f} [{arr.mean() - half:+.2f}, {arr.mean() + half:+.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--images", nargs="+", default=list(VALIDATION), choices=list(VALIDATION))
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--model-dir", help="where selfsr keeps its per-scan models: a rerun "
                        "(or a validate_shipped.py run with the same folder) reuses them, and "
                        "the time column then adds the recorded learning time")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"{args.data_dir}: shared data folder absent; nothing to benchmark")
        return 0
    methods = ["bspline", *[m for m in args.methods if m != "bspline"]]
    print(f"# thick-slice benchmark on {machine()}")
    print("# slice degradation (bids_sr.acquisition, rect profile), output 1 mm, data "
          "consistency on; brain PSNR (dB) / SSIM against the HR truth")  # fmt: skip
    for setting in args.settings:
        factors, ratio = SETTINGS[setting]
        auto = _auto(factors)
        results: dict[str, dict[str, dict]] = {}
        for image in args.images:
            for label in methods:
                method, weights = METHODS[label]
                row = run_one(args.data_dir / VALIDATION[image], factors, ratio, method, weights,
                              args.model_dir)  # fmt: skip
                results.setdefault(label, {})[image] = row
                gain = row["psnr_brain"] - results["bspline"][image]["psnr_brain"]
                print(f"{setting} {image:9s} {label:15s} PSNR {row['psnr_brain']:6.2f}  SSIM "
                      f"{row['ssim_brain']:.4f}  Δ {gain:+.2f}  {row['method_s']:6.1f} s  "
                      f"{row['peak_rss_mb']:6.0f} MB", flush=True)  # fmt: skip
        auto_label = next((lb for lb in methods if METHODS[lb][0] == auto), None)
        print(f"\n## {setting} (factors {factors}, thickness {ratio:g} × spacing); auto picks "
              f"{auto}\n")  # fmt: skip
        print("| method | " + " | ".join(args.images) + " | mean ± SD PSNR | mean ± SD SSIM | "
              "Δ PSNR to bspline [95 % CI] | time (s) | peak RSS (MB) |")  # fmt: skip
        print("|---" * (len(args.images) + 6) + "|")
        rows = [(lb, lb) for lb in methods]
        if auto_label:
            rows.append((f"auto (→ {auto})", auto_label))
        for name, label in rows:
            per = results[label]
            psnr = [per[i]["psnr_brain"] for i in args.images]
            ssim = [per[i]["ssim_brain"] for i in args.images]
            delta = [per[i]["psnr_brain"] - results["bspline"][i]["psnr_brain"]
                     for i in args.images]  # fmt: skip
            wall = np.mean([per[i]["method_s"] for i in args.images])
            peak = max(per[i]["peak_rss_mb"] for i in args.images)
            cells = " | ".join(f"{p:.2f}" for p in psnr)
            print(f"| {name} | {cells} | {_summary(psnr)} | {_summary(ssim).replace('  ', ' ')} "
                  f"| {_delta(delta)} | {wall:.0f} | {peak:.0f} |")  # fmt: skip
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
