"""Downstream agreement on a held-out image: Dice of GM/WM/CSF and GM volume error vs the truth.

Simulates 2D thick-slice scans of one validation T1w (default chris_T1w, never trained on)
at each --settings (1×1×3 and 1×1×5: slices along array axis 2, thickness = spacing),
super-resolves each with bspline and --methods through
:func:`bids_sr.evaluation.evaluate_image` (exactly what ``--evaluate`` runs), segments the
truth and every result with ANTs Atropos (bids_sr.segmentation; needs ``antspyx``) and
prints, per setting and method, PSNR in the brain, the Dice of each tissue against the
truth's segmentation, the GM volume error and the segmentation time (wall and CPU).

    OMP_NUM_THREADS=1 python benchmarks/tissue_agreement.py [--methods selfsr] \\
        [--settings 1x1x3 1x1x5] [--image PATH] [--out-dir DIR]

With --out-dir each setting's evaluation TSV (+ sidecar) is written there.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402

from bids_sr.evaluation import TISSUE_COLUMNS, evaluate_image, write_metrics_tsv  # noqa: E402
from bids_sr.image import load_volume  # noqa: E402
from bids_sr.segmentation import INSTALL_HINT, atropos_available  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
IMAGE = SHARED / "real_t1" / "chris_T1w.nii.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=IMAGE)
    parser.add_argument("--methods", nargs="*", default=["selfsr"])
    parser.add_argument("--settings", nargs="+", default=["1x1x3", "1x1x5"])
    parser.add_argument("--model-dir", help="where selfsr keeps its per-scan models (reused)")
    parser.add_argument("--out-dir", type=Path)
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
    print(f"machine: {machine()}")
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
            print("\t".join("n/a" if row.get(k) is None else
                            (f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]))
                            for k in header))  # fmt: skip
        if args.out_dir:
            write_metrics_tsv(rows, args.out_dir / f"{setting}_desc-evaluation_metrics.tsv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
