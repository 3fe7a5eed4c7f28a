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

Opt-in external row ``eclare`` (``--methods ... eclare --eclare-command PATH``): ECLARE
(Remedios et al., self-supervised thick-slice SR; PyPI ``eclare``, GPL-3) is never imported:
its ``run-eclare`` console script, installed anywhere (e.g. its own virtualenv), runs as an
external command on the same simulated LR volume, written as NIfTI with its LR affine. It is
given the simulated slice profile (``--relative-slice-thickness`` = thickness / HR spacing,
``rect`` profile: no ESPRESO estimate) and a reduced training budget (``--eclare-patches``;
its default of 10⁶ patches is meant for a GPU; on 2 CPU cores its inference over the whole
volume, two in-plane angles of a 16-block 256-channel WDSR, takes 15-30 min per image). Its
output is scored against the same truth and brain mask as every other row, as is (row
``eclare``) and after our data consistency step (row ``eclare+dc``,
:func:`bids_sr.acquisition.enforce_consistency`, as every other row has).
Its time is the command's wall time (+ the consistency step for ``eclare+dc``) and its peak
RSS that of the largest process of the command (``RUSAGE_CHILDREN``).

    python benchmarks/thick_slice.py [--settings 1x1x3 1x1x5 5mm_gap1] [--methods ...] [--threads N]
        [--eclare-command .../bin/run-eclare --eclare-patches 8192] [--json PATH]

The record of the figures (:mod:`bids_sr.benchmark_record`) goes to
``benchmarks/results/thick_slice.json`` unless ``--json PATH`` says otherwise.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_sr import benchmark_record as bench
from bids_sr.cards.paths import WEIGHTS_DIR
from bids_sr.reports.group import mean_ci

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
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
SLICE_WEIGHTS = WEIGHTS_DIR / "srrecnn_x1x1x4.safetensors"
#: label → (method, weights file or None)
METHODS = {
    "bspline": ("bspline", None),
    "srrecnn_x1x1x4": ("srrecnn", SLICE_WEIGHTS),
    "selfsr-filters": ("selfsr-filters", None),
    "selfsr-fast": ("selfsr-fast", None),
    "selfsr": ("selfsr", None),
}
#: opt-in external method (``--methods ... eclare``) → the rows it adds
EXTERNAL = {"eclare": ("eclare", "eclare+dc")}


def _acquisition(zooms, factors, ratio):
    from bids_sr.acquisition import simulated_acquisition

    axis = int(np.argmax(factors))
    return simulated_acquisition(zooms, factors, thickness=ratio * zooms[axis] * factors[axis])


def _child(path: str, factors, ratio, method: str, weights, model_dir, threads: int,
           queue) -> None:  # fmt: skip
    """Evaluate one method on one image in this (fresh) process, on ``threads`` torch
    threads; put its row on ``queue``."""
    import torch

    from bids_sr.evaluation import evaluate_image
    from bids_sr.image import load_volume

    torch.set_num_threads(threads)
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


@dataclass(frozen=True)
class EclareOptions:
    """How the external ECLARE command runs: its path, training budget and time limit."""

    command: str
    patches: int
    batch_size: int
    timeout_s: float
    gpu_id: int = -1
    threads: int = 2  # torch threads of the process that scores it (--threads)


def _eclare_grid(path: Path, shape, affine: np.ndarray) -> tuple[np.ndarray, bool]:
    """ECLARE's output on the truth's grid (``shape``, ``affine``), and whether it needed
    resampling: ECLARE writes its own affine, equal to ours when both centre the HR slices
    on the LR slabs the same way; otherwise the project's cubic resampler pulls it over."""
    import nibabel as nib

    image = nib.load(path)
    if tuple(image.shape) == tuple(shape) and np.allclose(image.affine, affine, atol=1e-3):
        return np.asarray(image.get_fdata(), dtype=np.float32), False
    import SimpleITK as sitk

    from bids_sr.registration import resample_to_grid

    return resample_to_grid(path, sitk.Transform(3, sitk.sitkIdentity), shape, affine,
                            clip=False), True  # fmt: skip


def _run_eclare(lr: np.ndarray, lr_affine: np.ndarray, relative_thickness: float,
                options: EclareOptions, workdir: Path) -> tuple[Path, float]:
    """Write ``lr`` as NIfTI, run the ECLARE command on it, return its output and wall time.

    Raises RuntimeError with the command's last output line when it fails or times out."""
    import nibabel as nib

    source = workdir / "lr.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(lr, dtype=np.float32), lr_affine), source)
    command = [options.command, "--in-fpath", str(source), "--out-dir", str(workdir / "out"),
               "--n-patches", str(options.patches), "--batch-size", str(options.batch_size),
               "--relative-slice-thickness", f"{relative_thickness:g}",
               "--relative-slice-profile-type", "rect",
               "--gpu-id", str(options.gpu_id)]  # fmt: skip
    log = workdir / "eclare.log"
    start = time.perf_counter()
    with log.open("w") as stream:
        try:
            done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT,
                                  timeout=options.timeout_s, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {options.timeout_s:g} s") from None
    elapsed = time.perf_counter() - start
    output = workdir / "out" / "lr_eclare.nii.gz"
    if done.returncode != 0 or not output.is_file():
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        raise RuntimeError(f"exit {done.returncode}: {lines[-1] if lines else 'no output'}")
    return output, elapsed


def _eclare_child(path: str, factors, ratio, options: EclareOptions, queue) -> None:
    """Score ECLARE on one image in this (fresh) process: rows ``eclare`` and ``eclare+dc``
    (or ``{"error": ...}``) on ``queue``. The simulated input, truth and mask come from
    :func:`evaluate_image` itself (its baselines run too), so they are the other rows' own."""
    try:
        import torch

        from bids_sr.acquisition import enforce_consistency
        from bids_sr.evaluation import DATA_RANGE, evaluate_image
        from bids_sr.image import load_volume
        from bids_sr.metrics import compute_metrics

        torch.set_num_threads(options.threads)
        volume = load_volume(path)
        acquisition = _acquisition(volume.zooms, factors, ratio)
        arrays: dict = {}
        evaluate_image(volume.data, volume.affine, factors=factors, degradation="slice",
                       methods=[], device="cpu", acquisition=acquisition,
                       arrays=arrays)  # fmt: skip
        truth, lr, mask = arrays["truth"], arrays["input"], arrays["mask"]
        axis = int(np.argmax(factors))
        # ECLARE's slice thickness is in units of the in-plane (here: HR) voxel size
        relative = acquisition.thickness / (acquisition.spacing[axis] / factors[axis])
        with tempfile.TemporaryDirectory(prefix="eclare-") as tmp:
            output, elapsed = _run_eclare(lr, arrays["lr_affine"], relative, options, Path(tmp))
            sr, resampled = _eclare_grid(output, truth.shape, arrays["hr_affine"])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        start = time.perf_counter()
        corrected = enforce_consistency(sr, lr, acquisition)
        dc_s = time.perf_counter() - start
        rows = {}
        for label, image, seconds in (("eclare", sr, elapsed), ("eclare+dc", corrected,
                                                                 elapsed + dc_s)):  # fmt: skip
            scores = compute_metrics(image, truth, mask=mask, data_range=DATA_RANGE)
            rows[label] = {"method": label, "method_s": seconds, "peak_rss_mb": peak,
                           "resampled": resampled, **scores}  # fmt: skip
        queue.put(rows)
    except Exception as exc:  # reported by the parent as one line
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_eclare(path: Path, factors, ratio, options: EclareOptions) -> dict[str, dict]:
    """Rows ``eclare`` and ``eclare+dc`` for one image, from a fresh process; RuntimeError
    with a one-line message when ECLARE cannot run."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_eclare_child, args=(str(path), factors, ratio, options,
                                                          queue))  # fmt: skip
    process.start()
    rows = queue.get()
    process.join()
    if "error" in rows:
        raise RuntimeError(rows["error"])
    return rows


def _eclare_options(parser: argparse.ArgumentParser, args) -> EclareOptions | None:
    """The ECLARE options when ``eclare`` is asked for (a parser error when its command is
    missing), else None."""
    if "eclare" not in args.methods:
        return None
    if not args.eclare_command:
        parser.error("--methods eclare needs --eclare-command PATH (ECLARE's run-eclare)")
    command = shutil.which(args.eclare_command)
    if command is None:
        parser.error(f"--eclare-command {args.eclare_command}: no such executable")
    return EclareOptions(command, args.eclare_patches, args.eclare_batch_size,
                         args.eclare_timeout, args.eclare_gpu_id, args.threads)  # fmt: skip


def run_one(path: Path, factors, ratio, method: str, weights, model_dir=None,
            threads: int = 2) -> dict:  # fmt: skip
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(str(path), factors, ratio, method, weights,
                                                   model_dir, threads, queue))  # fmt: skip
    process.start()
    row = queue.get()
    process.join()
    return row


def _auto(factors) -> str:
    from bids_sr.planning.auto import choose_auto

    return choose_auto(factors, "slice", None).method


def _summary(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return f"{arr.mean():6.2f} ± {sd:4.2f}"


def _delta(values: list[float]) -> str:
    """Mean paired difference with its 95 % t-interval (the mean alone for one image)."""
    mean, low, high = mean_ci(values)
    if len(values) < 2:
        return f"{mean:+.2f}"
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        choices=[*METHODS, *EXTERNAL])  # fmt: skip
    parser.add_argument("--images", nargs="+", default=list(VALIDATION), choices=list(VALIDATION))
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--model-dir", help="where selfsr keeps its per-scan models: a rerun "
                        "(or a bids_sr-train validate run with the same folder) reuses them, and "
                        "the time column then adds the recorded learning time")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads of each method's process (default 2, this "
                        "machine's cores; give 1 to two benchmarks run side by side)")  # fmt: skip
    parser.add_argument("--eclare-command", help="ECLARE's run-eclare console script (for "
                        "--methods ... eclare); it runs as an external command")  # fmt: skip
    parser.add_argument("--eclare-patches", type=int, default=8192,
                        help="ECLARE's training patches (its --n-patches; 8192 train in "
                        "~2.5 min on 2 CPU cores; at 2048 one of its sub-pixel phases can stay "
                        "dead, every third output slice at the image minimum)")  # fmt: skip
    parser.add_argument("--eclare-batch-size", type=int, default=32)
    parser.add_argument("--eclare-timeout", type=float, default=3600.0,
                        help="seconds one ECLARE run may take")  # fmt: skip
    parser.add_argument("--eclare-gpu-id", type=int, default=-1,
                        help="ECLARE's --gpu-id (default -1: CPU)")  # fmt: skip
    bench.add_json_argument(parser, RESULTS / "thick_slice.json")
    args = parser.parse_args(argv)
    eclare = _eclare_options(parser, args)
    if not args.data_dir.is_dir():
        print(f"{args.data_dir}: shared data folder absent; nothing to benchmark")
        return 0
    methods = ["bspline", *[m for m in args.methods if m != "bspline"]]
    print(f"# thick-slice benchmark on {bench.machine()['description']}")
    print("# slice degradation (bids_sr.acquisition, rect profile), output 1 mm, data "
          "consistency on; brain PSNR (dB) / SSIM against the HR truth")  # fmt: skip
    if eclare:
        print(f"# eclare: {eclare.command} (external), --n-patches {eclare.patches}, "
              f"--batch-size {eclare.batch_size}, --gpu-id {eclare.gpu_id}, given the rect "
              "slice profile; row eclare without data consistency, eclare+dc with ours; "
              "its peak RSS is the command's own")  # fmt: skip
    tables, figures = [], {}
    for setting in args.settings:
        factors, ratio = SETTINGS[setting]
        auto = _auto(factors)
        results: dict[str, dict[str, dict]] = {}
        for image in args.images:
            path = args.data_dir / VALIDATION[image]
            for label in methods:
                if label in EXTERNAL:
                    try:
                        scored = run_eclare(path, factors, ratio, eclare)
                    except RuntimeError as exc:
                        print(f"thick_slice.py: error: ECLARE on {image} {setting}: {exc}",
                              file=sys.stderr)  # fmt: skip
                        return 1
                else:
                    method, weights = METHODS[label]
                    scored = {label: run_one(path, factors, ratio, method, weights,
                                             args.model_dir, args.threads)}  # fmt: skip
                for name, row in scored.items():
                    results.setdefault(name, {})[image] = row
                    gain = row["psnr_brain"] - results["bspline"][image]["psnr_brain"]
                    note = "  (resampled to the truth grid)" if row.get("resampled") else ""
                    print(f"{setting} {image:9s} {name:15s} PSNR {row['psnr_brain']:6.2f}  SSIM "
                          f"{row['ssim_brain']:.4f}  Δ {gain:+.2f}  {row['method_s']:6.1f} s  "
                          f"{row['peak_rss_mb']:6.0f} MB{note}", flush=True)  # fmt: skip
        auto_label = next((lb for lb in methods if lb in METHODS and METHODS[lb][0] == auto),
                          None)  # fmt: skip
        print(f"\n## {setting} (factors {factors}, thickness {ratio:g} × spacing); auto picks "
              f"{auto}\n")  # fmt: skip
        print("| method | " + " | ".join(args.images) + " | mean ± SD PSNR | mean ± SD SSIM | "
              "Δ PSNR to bspline [95 % CI] | time (s) | peak RSS (MB) |")  # fmt: skip
        print("|---" * (len(args.images) + 6) + "|")
        rows = [(name, name) for lb in methods for name in EXTERNAL.get(lb, (lb,))]
        if auto_label:
            rows.append((f"auto (→ {auto})", auto_label))
        cells_per_row = []
        for name, label in rows:
            per = results[label]
            psnr = [per[i]["psnr_brain"] for i in args.images]
            ssim = [per[i]["ssim_brain"] for i in args.images]
            delta = [per[i]["psnr_brain"] - results["bspline"][i]["psnr_brain"]
                     for i in args.images]  # fmt: skip
            wall = np.mean([per[i]["method_s"] for i in args.images])
            peak = max(per[i]["peak_rss_mb"] for i in args.images)
            cells = [name, *[f"{p:.2f}" for p in psnr], _summary(psnr).strip(),
                     _summary(ssim).replace("  ", " ").strip(), _delta(delta), f"{wall:.0f}",
                     f"{peak:.0f}"]  # fmt: skip
            cells_per_row.append(cells)
            print("| " + " | ".join(cells) + " |")
        print(flush=True)
        tables.append(bench.table(
            ["method", *args.images, "mean ± SD PSNR", "mean ± SD SSIM",
             "Δ PSNR to bspline [95 % CI]", "time (s)", "peak RSS (MB)"], cells_per_row,
            title=f"{'×'.join(f'{f:g}' for f in factors)} (thickness {ratio:g} × spacing); "
                  f"`auto` picks `{auto}`"))  # fmt: skip
        figures[setting] = {"factors": factors, "thickness_ratio": ratio, "auto": auto,
                            "rows": results}  # fmt: skip
    bench.write_record(_record(tables, figures, bench.command_line(__file__, argv)), args.json)
    return 0


def _record(tables: list[dict], figures: dict, command: str) -> dict:
    description = (
        "`benchmarks/thick_slice.py`: each validation image (chris, openms19) degraded as a "
        "2D scan (rect slices along axis 2, openms19's blurred axis), super-resolved by each "
        "method with data consistency (`bids_sr.evaluation.evaluate_image`), brain PSNR / "
        "SSIM against the truth, paired Δ to bspline with its 95 % t-interval (n = 2 images, "
        "so the intervals are wide). Each (image, setting, method) runs in a fresh process; "
        "the time is the method's own (for selfsr its per-scan learning included), the peak "
        "RSS that of the process evaluating one scan, baselines included. The `auto` row "
        "repeats the scores of the method `auto` picks from the model cards."
    )
    return bench.make_record("thick_slice", title="Thick-slice (2D) scans", description=description,
                       tables=tables, figures=figures, command=command)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
