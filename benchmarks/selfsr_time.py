"""Benchmark: wall time and peak memory of one per-scan ``selfsr`` run on a real 2D scan.

The figure a cohort is planned from: learn (per-scan fine-tuning of the shipped prior),
apply (both through-plane orientations), data consistency, on the scan's own grid and
acquisition (header voxel sizes; thickness from ``--slice-thickness`` or the spacing),
the default factors a participant run uses (isotropic at the finest voxel size). Each
budget runs in its own subprocess so its peak resident memory is its own. Prints one line
per budget and writes its record (:mod:`bids_sr.benchmark_record`: the figures, the machine,
date, commit and command) to ``benchmarks/results/selfsr_time.json``, or to ``--json PATH``.

    python benchmarks/selfsr_time.py \
        ../shared/data/clinical_thick_slice/sub-03/ses-2/anat/sub-03_ses-2_T1w.nii.gz
    python benchmarks/selfsr_time.py SCAN --budgets default fast --device cuda --json out.json
    python benchmarks/selfsr_time.py SCAN --precisions auto fp32   # bfloat16 vs float32

``--budgets``: ``default`` (the method's own step budget), ``fast`` (the ``selfsr-fast``
budget), or a number of fine-tuning steps (``0``: the prior alone). ``--precisions``: the
values of ``BIDS_SR_CPU_PRECISION`` to run each budget under (:mod:`bids_sr.precision`:
``auto`` is what a user gets, bfloat16 on CPUs with AMX).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bids_sr import benchmark_record as bench

RESULTS = Path(__file__).resolve().parent / "results"


def _run_one(scan: Path, budget: str, device: str) -> dict:
    """One selfsr run of ``scan`` in this process; its figures."""
    from bids_sr.acquisition import describe_acquisition
    from bids_sr.image import default_factors, load_volume, robust_normalisation
    from bids_sr.recipes import SELFSR
    from bids_sr.selfsr import super_resolve_selfsr
    from bids_sr.superresolve import _consistency

    volume = load_volume(scan)
    factors = default_factors(volume.affine)
    acquisition = describe_acquisition(volume.zooms)
    lr = robust_normalisation(volume.data).apply(volume.data)
    iterations = {"default": None, "fast": SELFSR.fast_iterations}.get(budget)
    if iterations is None and budget != "default":
        iterations = int(budget)
    start = time.perf_counter()
    hr, report = super_resolve_selfsr(lr, factors, acquisition, iterations=iterations,
                                      device=device)  # fmt: skip
    learned = time.perf_counter()
    _consistency(hr, lr, acquisition, True)
    end = time.perf_counter()
    return {"scan": scan.name, "shape": list(volume.data.shape), "budget": budget,
            "iterations": iterations, "device": report["device"],
            "precision": report["precision"],
            "factors": [round(f, 3) for f in factors], "output_shape": list(hr.shape),
            "learn_s": report["learn_s"], "apply_s": report["apply_s"],
            "selfsr_s": round(learned - start, 2), "consistency_s": round(end - learned, 2),
            "total_s": round(end - start, 2),
            "self_check_l1_ratio": report["self_check_l1_ratio"],
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def _record(rows: list[dict], command: str) -> dict:
    """The benchmark record: one row per budget."""
    cells = [[r["scan"], "×".join(map(str, r["shape"])), "×".join(map(str, r["output_shape"])),
              r["budget"], r["iterations"] if r["iterations"] is not None else "default",
              r["device"], r["precision"], f"{r['learn_s']}",
              f"{r['apply_s']}", f"{r['consistency_s']}",
              f"{r['total_s']:.1f}", f"{r['peak_rss_gb']:.2f}"] for r in rows]  # fmt: skip
    columns = ["scan", "input", "output", "budget", "steps", "device", "precision", "learn (s)",
               "apply (s)", "consistency (s)", "total (s)", "peak RSS (GB)"]  # fmt: skip
    description = (
        "`benchmarks/selfsr_time.py`: one per-scan `selfsr` run on a real 2D scan, the "
        "figure a cohort is planned from: learning (fine-tuning the shipped prior), applying "
        "(both through-plane orientations) and data consistency on the scan's own grid and "
        "acquisition, at the factors a participant run uses; each budget in its own process."
    )
    return bench.make_record("selfsr_time", title="Per-scan selfsr time", description=description,
                       tables=[bench.table(columns, cells)], figures=rows,
                       command=command)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan", type=Path, help="a 2D (thick-slice) NIfTI scan")
    parser.add_argument("--budgets", nargs="+", default=["default", "fast"])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--precisions", nargs="+", default=["auto"],
                        choices=("auto", "bf16", "fp32"),
                        help="BIDS_SR_CPU_PRECISION values to run each budget under")
    bench.add_json_argument(parser, RESULTS / "selfsr_time.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_run_one(args.scan, args.worker, args.device)))
        return 0
    if not args.scan.is_file():
        parser.error(f"{args.scan}: no such file")
    rows = []
    for budget in args.budgets:
        for precision in args.precisions:
            env = {**os.environ, "BIDS_SR_CPU_PRECISION": precision}
            done = subprocess.run([sys.executable, __file__, str(args.scan), "--device",
                                   args.device, "--worker", budget],
                                  capture_output=True, text=True, env=env)  # fmt: skip
            if done.returncode != 0:
                print(f"{budget}: failed: {done.stderr.strip().splitlines()[-1:]}",
                      file=sys.stderr)  # fmt: skip
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            _print_row(rows[-1])
    if len(rows) > 1:
        base = rows[0]
        for row in rows[1:]:
            print(f"{row['budget']} {row['precision']} / {base['budget']} {base['precision']}: "
                  f"{row['total_s'] / base['total_s']:.2f}")
    bench.write_record(_record(rows, bench.command_line(__file__, argv)), args.json)
    return 0


def _print_row(row: dict) -> None:
    print(f"{row['scan']} {row['shape']} → {row['output_shape']} budget {row['budget']} "
          f"({row['iterations']} steps) on {row['device']} in {row['precision']}: "
          f"{row['total_s']:.1f} s (learn {row['learn_s']} s, apply {row['apply_s']} s, "
          f"consistency {row['consistency_s']} s), peak RSS {row['peak_rss_gb']:.2f} GB",
          flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
