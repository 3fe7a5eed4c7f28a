"""Evaluation table on the validation subjects of ../shared/data (not a timed test).

For each validation HR T1w (chris_T1w: whole head; openms_patient19_T1: skull-stripped),
simulate the LR image with a degradation preset, super-resolve it with the interpolation
baselines and any --methods, and print mean ± SD per method over the subjects, plus the
machine it ran on. Methods that fail (e.g. not yet available) are reported, not fatal.

    python benchmarks/evaluation.py [--scale 2] [--degradation gaussian] [--methods srrecnn]
                                    [--device auto] [--out-dir DIR] [--json PATH]

With --out-dir the per-subject TSVs, the group TSV and the group HTML page are written there.
The record of the figures (:mod:`bids_sr.benchmark_record`) goes to
``benchmarks/results/evaluation.json`` unless ``--json PATH`` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bids_sr import benchmark_record as bench
from bids_sr.evaluation import METRIC_COLUMNS, evaluate_image, write_metrics_tsv
from bids_sr.image import load_volume
from bids_sr.reports.group import aggregate, build_group_report, write_group_tsv

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
VALIDATION = {
    "chris": "real_t1/chris_T1w.nii.gz",
    "openms19": "real_multicontrast/openms_patient19_T1.nii.gz",
}


def _cell(summary_row: dict) -> str:
    """``mean ± SD (Δ paired difference to bspline)``, dB to 2 decimals, others to 3."""
    digits = 2 if summary_row["metric"].startswith("psnr") else 3
    text = f"{summary_row['mean']:.{digits}f}"
    if summary_row["sd"] is not None:
        text += f" ± {summary_row['sd']:.{digits}f}"
    if summary_row["diff_mean"] is not None:
        text += f" (Δ {summary_row['diff_mean']:+.{digits}f})"
    return text


def _cells(method: str, rows: list[dict], summary: list[dict]) -> list[str]:
    """One table row: the method, each metric's summary, its mean runtime."""
    cells = [method]
    for metric in METRIC_COLUMNS:
        match = [s for s in summary if s["method"] == method and s["metric"] == metric]
        cells.append(_cell(match[0]) if match else "n/a")
    times = [r["runtime_s"] for r in rows if r["method"] == method and r["runtime_s"] is not None]
    cells.append(f"{np.mean(times):.2f}" if times else "n/a")
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--degradation", default="gaussian")
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--out-dir", type=Path)
    bench.add_json_argument(parser, RESULTS / "evaluation.json")
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
    title = f"Evaluation protocol, ×{args.scale:g} {args.degradation}"
    print(f"\n{title} on {len(VALIDATION)} validation images")
    print(f"machine: {bench.machine()['description']}\n")
    header = ["method"] + list(METRIC_COLUMNS) + ["runtime_s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    cells_per_method = [_cells(method, rows, summary) for method in methods]
    for cells in cells_per_method:
        print("| " + " | ".join(cells) + " |")
    print("\nmean ± SD over images; Δ = paired mean difference to bspline.")
    images = sorted({row["source"] for row in rows})
    description = (
        f"`benchmarks/evaluation.py`: each validation image ({', '.join(images)}) degraded "
        f"with the `{args.degradation}` preset at ×{args.scale:g}, super-resolved by the "
        "interpolation baselines and the requested methods "
        "(`bids_sr.evaluation.evaluate_image`), scored against the truth; mean ± SD over "
        "the images, Δ = paired mean difference to bspline. A method that fails is reported, "
        "not fatal; `--out-dir DIR` also writes the per-image and group TSVs and the HTML page."
    )
    figures = {"per_image": [{k: v for k, v in row.items() if not isinstance(v, np.ndarray)}
                             for row in rows], "summary": summary}  # fmt: skip
    bench.write_record(bench.make_record("evaluation", title=title, description=description,
                             tables=[bench.table(header, cells_per_method)], figures=figures,
                             command=bench.command_line(__file__, argv)), args.json)  # fmt: skip
    if args.out_dir:
        write_group_tsv(summary, args.out_dir / "desc-evaluation_group.tsv")
        build_group_report(rows, args.out_dir / "desc-evaluation_group.html", summary=summary)
        print(f"tables and HTML written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
