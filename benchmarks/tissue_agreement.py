"""Downstream agreement on a held-out image: Dice of GM/WM/CSF and GM volume error vs the truth.

Simulates 2D thick-slice scans of one validation T1w (default chris_T1w, never trained on)
at each --settings (1×1×3 and 1×1×5: slices along array axis 2, thickness = spacing),
super-resolves each with bspline and --methods through
:func:`bids_sr.evaluation.evaluate_image` (exactly what ``--evaluate`` runs), segments the
truth and every result with ANTs Atropos (bids_sr.segmentation; needs ``antspyx``) and
prints, per setting and method, PSNR in the brain, the Dice of each tissue against the
truth's segmentation, the GM volume error and the segmentation time (wall and CPU).

    OMP_NUM_THREADS=1 python benchmarks/tissue_agreement.py [--methods selfsr] \\
        [--settings 1x1x3 1x1x5] [--image PATH] [--out-dir DIR] [--json PATH]

With --out-dir each setting's evaluation TSV (+ sidecar) is written there. The record of the
figures (:mod:`bids_sr.benchmark_record`) goes to ``benchmarks/results/tissue_agreement.json``
unless ``--json PATH`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from bids_sr import benchmark_record as bench
from bids_sr.evaluation import TISSUE_COLUMNS, evaluate_image, write_metrics_tsv
from bids_sr.image import load_volume
from bids_sr.segmentation import INSTALL_HINT, atropos_available

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGE = SHARED / "real_t1" / "chris_T1w.nii.gz"
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=IMAGE)
    parser.add_argument("--methods", nargs="*", default=["selfsr"])
    parser.add_argument("--settings", nargs="+", default=["1x1x3", "1x1x5"])
    parser.add_argument("--model-dir", help="where selfsr keeps its per-scan models (reused)")
    parser.add_argument("--out-dir", type=Path)
    bench.add_json_argument(parser, RESULTS / "tissue_agreement.json")
    args = parser.parse_args(argv)
    if not atropos_available():
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    if not args.image.exists():
        print(f"{args.image}: not found", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    volume = load_volume(args.image)
    header = ("method", "psnr_brain", *TISSUE_COLUMNS, "runtime_s", "segmentation_s",
              "segmentation_cpu_s")  # fmt: skip
    print(f"machine: {bench.machine()['description']}")
    cells, measured = [], {}
    for setting in args.settings:
        factors = [float(f) for f in setting.split("x")]
        start = time.perf_counter()
        rows = evaluate_image(
            volume.data, volume.affine, factors=factors, degradation="slice",
            methods=args.methods, source=args.image.name,
            model_dir=f"{args.model_dir}/{setting}" if args.model_dir else None, tissues=True,
        )  # fmt: skip
        print(f"\n{args.image.name} simulated {setting} slices "
              f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
        print("\t".join(header))
        for row in rows:
            if row.get("dice_gm") is None:
                continue
            cells.append([setting, *["n/a" if row.get(k) is None else
                                     (f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]))
                                     for k in header]])  # fmt: skip
            print("\t".join(cells[-1][1:]))
        measured[setting] = [{k: v for k, v in row.items() if not isinstance(v, np.ndarray)}
                             for row in rows]  # fmt: skip
        if args.out_dir:
            write_metrics_tsv(rows, args.out_dir / f"{setting}_desc-evaluation_metrics.tsv")
    description = (
        f"`benchmarks/tissue_agreement.py`: the `--evaluate` protocol on {args.image.name} "
        "simulated as 2D scans (rect slices along axis 2, thickness = spacing, data "
        "consistency on); the truth and each result segmented into CSF/GM/WM with ANTs "
        "Atropos (`bids_sr.segmentation`; k-means, 3 classes, inside the evaluation's brain "
        "mask, fixed seed) and each result's labels compared with the truth's: Dice per "
        "tissue and the GM volume error; the segmentation's wall and CPU time."
    )
    bench.write_record(bench.make_record("tissue_agreement", title="Downstream agreement (tissue "
                             "segmentation)", description=description,
                             tables=[bench.table(["setting", *header], cells)], figures=measured,
                             command=bench.command_line(__file__, argv)), args.json)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
