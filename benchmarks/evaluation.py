"""Evaluation table on the validation subjects of ../shared/data (not a timed test).

For each validation HR T1w (chris_T1w: whole head; openms_patient19_T1: skull-stripped),
simulate the LR image with a degradation preset, super-resolve it with the interpolation
baselines and any --methods, and print mean ± SD per method over the subjects, plus the
machine it ran on. Methods that fail (e.g. not yet available) are reported, not fatal.

    python benchmarks/evaluation.py [--scale 2] [--degradation gaussian] [--methods srrecnn]
                                    [--device auto] [--out-dir DIR]

With --out-dir the per-subject TSVs, the group TSV and the group HTML page are written there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402

from bids_sr.evaluation import METRIC_COLUMNS, evaluate_image, write_metrics_tsv  # noqa: E402
from bids_sr.image import load_volume  # noqa: E402
from bids_sr.reports.group import aggregate, build_group_report, write_group_tsv  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
VALIDATION = {
    "chris": "real_t1/chris_T1w.nii.gz",
    "openms19": "real_multicontrast/openms_patient19_T1.nii.gz",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--degradation", default="gaussian")
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--out-dir", type=Path)
    args = parser.parse_args(argv)

    rows = []
    for subject, relative in VALIDATION.items():
        path = args.data_dir / relative
        if not path.exists():
            print(f"skipping {subject}: {path} not found", file=sys.stderr)
            continue
        volume = load_volume(path)
        start = time.perf_counter()
        subject_rows = evaluate_image(
            volume.data,
            volume.affine,
            factors=args.scale,
            degradation=args.degradation,
            methods=args.methods,
            device=args.device,
            source=path.name,
            on_error="record",
        )
        print(f"{subject}: {len(subject_rows)} methods in {time.perf_counter() - start:.1f} s")
        for row in subject_rows:
            if row.get("error"):
                print(f"  {row['method']} FAILED: {row['error']}")
        rows += subject_rows
        if args.out_dir:
            write_metrics_tsv(subject_rows, args.out_dir / f"{subject}_desc-evaluation_metrics.tsv")
    if not rows:
        print("no validation data found", file=sys.stderr)
        return 1

    summary = aggregate(rows)
    print(f"\nEvaluation ×{args.scale:g} {args.degradation} on {len(VALIDATION)} validation images")
    print(f"machine: {machine()}\n")
    header = ["method"] + list(METRIC_COLUMNS) + ["runtime_s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    for method in methods:
        cells = [method]
        for metric in METRIC_COLUMNS:
            match = [s for s in summary if s["method"] == method and s["metric"] == metric]
            if not match:
                cells.append("n/a")
                continue
            s = match[0]
            text = f"{s['mean']:.4f} ± {s['sd']:.4f}" if s["sd"] is not None else f"{s['mean']:.4f}"
            if s["diff_mean"] is not None:
                text += f" (Δ {s['diff_mean']:+.4f})"
            cells.append(text)
        times = [
            r["runtime_s"] for r in rows if r["method"] == method and r["runtime_s"] is not None
        ]
        cells.append(f"{np.mean(times):.2f}" if times else "n/a")
        print("| " + " | ".join(cells) + " |")
    print("\nmean ± SD over images; Δ = paired mean difference to bspline.")
    if args.out_dir:
        write_group_tsv(summary, args.out_dir / "desc-evaluation_group.tsv")
        build_group_report(rows, args.out_dir / "desc-evaluation_group.html", summary=summary)
        print(f"tables and HTML written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
