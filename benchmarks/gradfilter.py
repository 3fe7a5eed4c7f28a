"""Benchmark of the gradient-filter learner: learning cost, memory, applying speed, and PSNR
inside a head mask against interpolation on real images (train/validation split of
../shared/data/README.md), at ×2 with the gaussian degradation.

    python benchmarks/gradfilter.py [--max-samples-per-image N] [--save PATH] [--json PATH]

Prints figures and ratios and writes their record (:mod:`bids_sr.benchmark_record`) to
``benchmarks/results/gradfilter.json`` unless ``--json PATH`` says otherwise; never used by
the unit tests. The learned filters go to a temporary folder unless ``--save PATH`` keeps
them. Peak RSS is the process maximum (``resource.getrusage``), so it includes the
evaluation images loaded after training.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from bids_sr import benchmark_record as bench
from bids_sr.cards.paths import card_path
from bids_sr.degrade import crop_to_factor, degrade
from bids_sr.gradfilter import (
    apply_gradient_filters,
    learn_gradient_filters,
    save_filters,
)
from bids_sr.gradfilter.xp import cuda_available
from bids_sr.image import foreground_mask, load_volume, robust_normalisation
from bids_sr.interpolation import upsample
from bids_sr.training.gradfilter import LazyVolumes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"

TRAIN = ("real_t1/colin27_ch2_T1w.nii.gz", "real_t1/brainchop_t1_crop_T1w.nii.gz",
         "real_multicontrast/openms_patient07_T1.nii.gz")
VALIDATE = ("real_t1/chris_T1w.nii.gz", "real_multicontrast/openms_patient19_T1.nii.gz")
FACTORS = (2.0, 2.0, 2.0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def psnr(result: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR with data range 1 (normalised intensities) over the voxels of ``mask``."""
    mse = float(np.mean((np.asarray(result, np.float64) - reference)[mask] ** 2))
    return 10.0 * np.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--patch-size", type=int, default=7)
    parser.add_argument("--stride", type=int, default=3)
    parser.add_argument("--max-samples-per-image", type=int, default=None,
                        help="random subset of the strided voxels (for a busy machine)")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--regularisation", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--save", type=Path, help="keep the learned filters (and their card "
                        "with the validation scores) here (default: a temporary folder)")
    parser.add_argument("--apply-size", type=int, default=256, help="output edge for timing")
    bench.add_json_argument(parser, RESULTS / "gradfilter.json")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}; nothing to benchmark")
        return 1
    if args.save is not None:
        return run(args, argv)
    with tempfile.TemporaryDirectory(prefix="gradfilter-bench-") as folder:
        args.save = Path(folder) / "gradfilter_x2x2x2.safetensors"
        return run(args, argv)


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Learn, time the application, score; print and record the figures."""
    devices = ["cpu"] + (["cuda"] if cuda_available() and args.device == "cuda" else [])

    print(f"== learning ×2 gaussian on {len(TRAIN)} training images ({args.device}), "
          f"patch {args.patch_size}³, stride {args.stride}, "
          f"max samples/image {args.max_samples_per_image}, augment {not args.no_augment}")
    start = time.perf_counter()
    filterset = learn_gradient_filters(
        LazyVolumes([args.data / name for name in TRAIN]), FACTORS,
        patch_size=args.patch_size, stride=args.stride,
        max_samples_per_image=args.max_samples_per_image, augment=not args.no_augment,
        regularisation=args.regularisation, device=args.device, progress=False)
    total = time.perf_counter() - start
    info = filterset.info
    per_image = info["learn_per_image_s"]
    taps = args.patch_size**3
    print(f"threshold pass     : {info['threshold_pass_s']:.1f} s "
          f"({info['threshold_pass_s'] / len(TRAIN):.1f} s/image)")
    print("accumulation pass  : " + ", ".join(f"{t:.1f}" for t in per_image)
          + f" s/image (mean {np.mean(per_image):.1f} s)")
    print(f"solve              : {info['solve_s']:.1f} s; total {total:.1f} s")
    print(f"samples            : {info['training_samples']} strided, "
          f"{info['accumulated_samples']} accumulated (with augmentation)")
    print(f"buckets fallback   : {info['buckets_fallback']} / {filterset.n_buckets}")
    print(f"Q+V accumulators   : {info['accumulator_bytes'] / 1e6:.0f} MB (packed float64, "
          f"{taps} taps); dense float64 would be "
          f"{filterset.n_buckets * taps * taps * 8 / 1e6:.0f} MB; original 11³ dense 8200 MB")
    print(f"peak RSS after learning: {peak_rss_mb():.0f} MB")
    command = bench.command_line(__file__, argv)
    save_filters(filterset, args.save, card={"command": command, "training_split": list(TRAIN)})
    learning = {"threshold_pass_s": info["threshold_pass_s"],
                "accumulation_s_per_image": list(per_image), "solve_s": info["solve_s"],
                "total_s": total, "training_samples": info["training_samples"],
                "accumulated_samples": info["accumulated_samples"],
                "buckets_fallback": info["buckets_fallback"], "buckets": filterset.n_buckets,
                "accumulator_mb": info["accumulator_bytes"] / 1e6,
                "peak_rss_mb": peak_rss_mb()}  # fmt: skip
    print(f"filters written to {args.save}")

    applying = []
    print(f"\n== applying: {args.apply_size}³ output")
    lr_edge = args.apply_size // 2
    chris = load_volume(args.data / VALIDATE[0]).data
    lr = np.zeros((lr_edge,) * 3, np.float32)
    src = robust_normalisation(chris).apply(chris)[::2, ::2, ::2][:lr_edge, :lr_edge, :lr_edge]
    lr[: src.shape[0], : src.shape[1], : src.shape[2]] = src
    for device in devices:
        start = time.perf_counter()
        out, report = apply_gradient_filters(lr, FACTORS, weights=str(args.save), device=device)
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        upsample(lr, FACTORS, order=3)
        spline = time.perf_counter() - start
        applying.append({"device": device, "output_shape": list(out.shape), "wall_s": elapsed,
                         "mvox_per_s": out.size / elapsed / 1e6, "chunks": report["chunks"],
                         "buckets_used": report["buckets_used"], "bspline_s": spline})
        print(f"{device}: {elapsed:.1f} s for {out.shape} ({out.size / elapsed / 1e6:.2f} Mvox/s, "
              f"{report['chunks']} chunks, {report['buckets_used']} buckets used); "
              f"cubic B-spline {spline:.1f} s; ratio {elapsed / spline:.1f}×")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")

    print("\n== PSNR (dB, data range 1 after robust normalisation) inside the head mask "
          "(bids_sr.image.foreground_mask of the HR), ×2 gaussian, validation split")
    rows = []
    for name in VALIDATE:
        data = load_volume(args.data / name).data
        hr = crop_to_factor(robust_normalisation(data).apply(data), FACTORS)
        mask = foreground_mask(hr)
        lr = degrade(hr, FACTORS, "gaussian")
        scores = {
            "linear": psnr(upsample(lr, FACTORS, order=1), hr, mask),
            "bspline": psnr(upsample(lr, FACTORS, order=3), hr, mask),
            "cheap": psnr(upsample(lr, FACTORS, order=2, prefilter=False), hr, mask),
        }
        out, _ = apply_gradient_filters(lr, FACTORS, weights=str(args.save), device="cpu")
        scores["gradfilter"] = psnr(out, hr, mask)
        out, report = apply_gradient_filters(lr, FACTORS, weights=str(args.save),
                                             device="cpu", census_threshold=13)
        scores["gradfilter+census13"] = psnr(out, hr, mask)
        rows.append(scores)
        print(f"{name:48s} " + "  ".join(f"{k} {v:.2f}" for k, v in scores.items())
              + f"  (gain vs bspline {scores['gradfilter'] - scores['bspline']:+.2f} dB)")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print(f"{'mean':48s} " + "  ".join(f"{k} {v:.2f}" for k, v in mean.items())
          + f"  (gain vs bspline {mean['gradfilter'] - mean['bspline']:+.2f} dB)")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    card_file = card_path(args.save)
    card = json.loads(card_file.read_text())
    card["validation"] = {
        "images": list(VALIDATE), "degradation": "gaussian", "factors": list(FACTORS),
        "metric": "PSNR dB inside bids_sr.image.foreground_mask, data range 1 after "
                  "robust_normalisation",
        "per_image": dict(zip(VALIDATE, rows)), "mean": mean,
    }
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    print(f"validation scores added to {card_file}")
    bench.write_record(_record(args, command, learning, applying, rows, mean), args.json)
    return 0


def _record(args, command: str, learning: dict, applying: list[dict], rows: list[dict],
            mean: dict) -> dict:  # fmt: skip
    """The benchmark record: learning cost, applying speed, PSNR per validation image."""
    learn = bench.table(
        ["images", "patch", "stride", "max samples / image", "threshold pass (s)",
         "accumulation (s / image, mean)", "solve (s)", "total (s)", "samples accumulated",
         "fallback buckets", "Q+V accumulators (MB)", "peak RSS (MB)"],
        [[len(TRAIN), f"{args.patch_size}³", args.stride,
          args.max_samples_per_image or "all", f"{learning['threshold_pass_s']:.1f}",
          f"{np.mean(learning['accumulation_s_per_image']):.1f}", f"{learning['solve_s']:.1f}",
          f"{learning['total_s']:.1f}", learning["accumulated_samples"],
          f"{learning['buckets_fallback']} / {learning['buckets']}",
          f"{learning['accumulator_mb']:.0f}", f"{learning['peak_rss_mb']:.0f}"]],
        title="Learning (×2 gaussian, training split)")  # fmt: skip
    apply = bench.table(
        ["device", "output", "wall (s)", "Mvox/s", "cubic B-spline (s)", "gradfilter / B-spline"],
        [[a["device"], "×".join(map(str, a["output_shape"])), f"{a['wall_s']:.1f}",
          f"{a['mvox_per_s']:.2f}", f"{a['bspline_s']:.1f}",
          f"{a['wall_s'] / a['bspline_s']:.1f}×"] for a in applying],
        title="Applying the learned filters")  # fmt: skip
    methods = list(rows[0])
    names = [Path(name).name.split(".")[0] for name in VALIDATE]
    scores = bench.table(
        ["image", *methods, "gradfilter − bspline"],
        [[name, *[f"{r[m]:.2f}" for m in methods], f"{r['gradfilter'] - r['bspline']:+.2f}"]
         for name, r in [*zip(names, rows), ("mean", mean)]],
        title="PSNR inside the head mask (dB), validation split",
        note="cheap: quadratic B-spline without prefilter; gradfilter+census13: the census "
             "threshold 13 variant.")  # fmt: skip
    description = (
        "`benchmarks/gradfilter.py`: the gradient-filter learner (RAISR-style, "
        "`bids_sr.gradfilter`) trained at ×2 with the `gaussian` degradation on three "
        "training images of ../shared/data (colin27, brainchop crop, openms patient07): "
        "learning cost and memory, applying speed against cubic B-spline, and PSNR inside "
        "the head mask (data range 1 after robust normalisation) on the validation images "
        "chris_T1w and openms_patient19_T1 against linear, cubic and quadratic "
        "interpolation. Peak RSS is the process maximum."
    )
    figures = {"learning": learning, "applying": applying,
               "psnr": dict(zip(names, rows)), "psnr_mean": mean}  # fmt: skip
    return bench.make_record("gradfilter", title="Gradient filters (gradfilter), ×2 isotropic",
                       description=description, tables=[learn, apply, scores],
                       figures=figures, command=command)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
