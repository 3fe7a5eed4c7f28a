#!/usr/bin/env python
"""Validate shipped weights on held-out scans and record the evidence in their model cards.

``auto`` chooses a learned method only from these records (see :mod:`bids_sr.evidence`).
For each weights file and each requested setting this runs the evaluation protocol of a
normal run (:func:`bids_sr.evaluation.evaluate_image`: degrade with the acquisition model,
super-resolve, data consistency, brain PSNR) on the validation scans, which no shipped
model was trained on, and stores per image the gain over cubic B-spline — and, for a
guided model, over its mono twin (:func:`bids_sr.guidance.mono_twin`: the shipped ``srrecnn``
weights for the same factors, or ``selfsr`` for ``selfsr-t2w``/``selfsr-flair``) and
``reference_only_transfer``: the fraction of the contrast of spheres inserted only into the
reference that reaches the T1w output (:func:`bids_sr.guidance.reference_only_structure_check`;
0 = the guide's structure is not imported).

Usage (from the repository root, with ../shared/data present):

    python scripts/validate_shipped.py bids_sr/data/weights/srrecnn_x1x1x4.safetensors \\
        --degradation slice --scale 1 1 3 --write
    python scripts/validate_shipped.py W.safetensors --degradation gaussian --scale 2 --write

A method that learns per scan and ships no weights (``selfsr``) is named instead of a
weights file; its card is ``bids_sr/data/weights/<method>.card.json`` (``"weights": null``),
created on the first ``--write``:

    python scripts/validate_shipped.py selfsr --degradation slice --scale 1 1 3 --write
    python scripts/validate_shipped.py selfsr-t2w --degradation slice --scale 1 1 3 \
        --images openms19 mni152 --write

``--write`` replaces the card's record of the same family, degradation, factors and slice
parameters; without it the records are only printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bids_sr.acquisition import simulated_acquisition  # noqa: E402
from bids_sr.evaluation import evaluate_image  # noqa: E402
from bids_sr.evidence import card_reference_suffix  # noqa: E402
from bids_sr.fileio import card_path, write_json_atomic  # noqa: E402
from bids_sr.guidance import mono_twin, reference_only_structure_check  # noqa: E402
from bids_sr.image import load_volume, voxel_sizes  # noqa: E402
from bids_sr.reports.group import mean_ci  # noqa: E402
from bids_sr.superresolve import REFERENCE_SUFFIXES, SELF_SUPERVISED_METHODS  # noqa: E402
from bids_sr.training.card import render_markdown  # noqa: E402
from bids_sr.training.splits import IXI_FOLDER, ixi_split  # noqa: E402
from bids_sr.weights_lookup import WEIGHTS_DIR  # noqa: E402

#: Held-out scans (never in any shipped model's training split): the T1w and the references
#: of the same space, by BIDS suffix (a guided model is scored where its contrast exists).
#: openms19's T1w and T2w were resampled to MNI space from 3 mm axial slices: along axis 2
#: they hold little fine detail (benchmarks/truth_sharpness.py), so a slice model is also
#: validated on it with slices along axis 0 (``--scale 3 1 1 --images openms19``).
VALIDATION = {
    "chris": ("real_t1/chris_T1w.nii.gz", {}),
    "openms19": ("real_multicontrast/openms_patient19_T1.nii.gz",
                 {"T2w": "real_multicontrast/openms_patient19_T2.nii.gz",
                  "FLAIR": "real_multicontrast/openms_patient19_FLAIR.nii.gz"}),
    # held out of the guided slice model's training only (the mono models saw it): ask for
    # it with --images for guided checks, where it can only favour the mono twin (no FLAIR)
    "mni152": ("real_multicontrast/mni152_T1_1mm_brain.nii.gz",
               {"T2w": "real_multicontrast/mni152_T2_1mm_brain.nii.gz"}),
}  # fmt: skip
DEFAULT_IMAGES = ("chris", "openms19")
#: ``--images ixi``: the validation part of the IXI pool (bids_sr.training.splits; 2 mm T1w
#: of one site, the sharp left-right axis is array axis 2), ``--ixi-count`` of them.
IXI_GROUP = "ixi"


def _ixi_validation(shared: Path, count: int | None) -> dict[str, tuple[str, dict]]:
    """The IXI validation subjects (the first ``count`` by name) as VALIDATION entries."""
    _, validation = ixi_split(shared)
    names = sorted(validation)[:count] if count else sorted(validation)
    return {name: (f"{IXI_FOLDER}/{validation[name].name}", {}) for name in names}


def summary(gains: dict[str, float]) -> dict:
    """Mean gain over images with its 95 % interval (t distribution), the worst image."""
    mean, low, high = mean_ci(list(gains.values()))
    worst = min(gains, key=gains.get)
    out = {"n": len(gains), "mean": round(mean, 3), "worst": round(gains[worst], 3),
           "worst_image": worst}  # fmt: skip
    if len(gains) > 1:
        out["ci95"] = [round(low, 3), round(high, 3)]
    return out


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", type=Path,
                        help="weights files, or the name of a method that ships no weights "
                        f"({', '.join(SELF_SUPERVISED_METHODS)})")  # fmt: skip
    parser.add_argument("--degradation", choices=["gaussian", "slice"], required=True)
    parser.add_argument("--scale", nargs="+", type=float, required=True)
    parser.add_argument("--thickness-ratio", type=float, default=1.0,
                        help="slice thickness / slice spacing of the simulated 2D scan")
    parser.add_argument("--profile", choices=["rect", "gaussian"], default="rect")
    parser.add_argument("--images", nargs="+", default=list(DEFAULT_IMAGES),
                        choices=[*VALIDATION, IXI_GROUP],
                        help=f"held-out images; {IXI_GROUP!r}: the IXI pool's validation "
                        "subjects (bids_sr.training.splits)")  # fmt: skip
    parser.add_argument("--ixi-count", type=int, help="with --images ixi: only the first N "
                        "validation subjects (by name)")  # fmt: skip
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", action="store_true", help="store the records in the cards")
    parser.add_argument("--model-dir", help="where a per-scan method keeps its models (a rerun "
                        "with the same inputs reuses them)")  # fmt: skip
    return parser.parse_args(argv)


def _record_key(record: dict) -> tuple:
    return (record["family"], record["degradation"], tuple(record["factors"]),
            record.get("thickness_ratio"), record.get("profile"))  # fmt: skip


def weightless_card(method: str) -> dict:
    """The card of a method that ships no weights, before any evidence."""
    suffix = REFERENCE_SUFFIXES.get(method)
    guide = f", guided by a registered HR {suffix}" if suffix else ""
    fast = method == "selfsr-fast"
    what = ("applies the shipped slice-family prior with no per-scan training (the cohort "
            "mode)" if fast else f"learns per scan from the scan's own in-plane data{guide}")
    return {
        "method": method, "weights": None, "needs_t2w": suffix == "T2w",
        "reference_suffix": suffix, "family": "slice", **({"speed": "fast"} if fast else {}),
        "description": f"self-supervised thick-slice super-resolution: {what} (no shipped "
        "weights; see bids_sr.selfsr)",
        "validation_subjects": sorted(VALIDATION),
        "data": {"license": "no training data ships: each scan trains its own model; "
                 "validation images: see ../shared/data/README.md"},
        "evidence": [],
    }  # fmt: skip


def target_card(target: Path) -> tuple[Path, dict, Path | None]:
    """The card file, the card and the weights file (None for a weightless method)."""
    if str(target) in SELF_SUPERVISED_METHODS:
        card_file = WEIGHTS_DIR / f"{target}.card.json"
        card = json.loads(card_file.read_text()) if card_file.exists() else weightless_card(
            str(target))
        return card_file, card, None
    card_file = card_path(target)
    return card_file, json.loads(card_file.read_text()), target


def validate(weights: Path, args: argparse.Namespace, command: str) -> dict:
    """One evidence record for ``weights`` (a file or a weightless method's name)."""
    _, card, weights_file = target_card(weights)
    method, suffix = card["method"], card_reference_suffix(card)
    guided = suffix is not None
    twin = mono_twin(method) if guided else None
    factors = tuple(args.scale * 3 if len(args.scale) == 1 else args.scale)
    record = {
        "family": "slice" if args.degradation == "slice" else "isotropic",
        "degradation": args.degradation, "factors": [float(f) for f in factors],
        "data_consistency": True, "gain_over_bspline": {}, "psnr_brain": {},
        "psnr_brain_bspline": {},
    }  # fmt: skip
    if args.degradation == "slice":
        record.update(thickness_ratio=args.thickness_ratio, profile=args.profile)
    if guided:
        record.update(gain_over_mono={}, reference_only_transfer={})
    images = {}
    for name in args.images:
        images.update(_ixi_validation(args.shared, args.ixi_count) if name == IXI_GROUP
                      else {name: VALIDATION[name]})  # fmt: skip
    for name, (t1w_rel, references) in images.items():
        if guided and suffix not in references:
            print(f"{weights.name} {name}: no {suffix}, skipped", flush=True)
            continue
        volume = load_volume(args.shared / t1w_rel)
        reference = load_volume(args.shared / references[suffix]).data if guided else None
        acquisition = None
        if args.degradation == "slice":
            hr_spacing = volume.zooms
            axis = int(np.argmax(factors))
            thickness = args.thickness_ratio * hr_spacing[axis] * factors[axis]
            acquisition = simulated_acquisition(
                hr_spacing, factors, thickness=thickness, profile=args.profile
            )
        methods = [method] + ([twin] if guided else [])
        arrays: dict = {}
        rows = evaluate_image(
            volume.data, volume.affine, factors=factors, degradation=args.degradation,
            methods=methods, weights={method: str(weights_file)} if weights_file else None,
            reference=reference, device=args.device, source=name, acquisition=acquisition,
            model_dir=args.model_dir, arrays=arrays if guided else None,
        )  # fmt: skip
        psnr = {row["method"]: row["psnr_brain"] for row in rows}
        record["psnr_brain"][name] = round(psnr[method], 3)
        record["psnr_brain_bspline"][name] = round(psnr["bspline"], 3)
        record["gain_over_bspline"][name] = round(psnr[method] - psnr["bspline"], 3)
        if guided:
            record["gain_over_mono"][name] = round(psnr[method] - psnr[twin], 3)
            # a per-scan guided model is used only where it beat the unguided one on the
            # scan's own slices (bids_sr.selfsr.method.GUIDE_MIN_IMPROVEMENT)
            check = next(row for row in rows if row["method"] == method).get("guide_check")
            if check is not None:
                record.setdefault("guide_used", {})[name] = bool(check["used"])
                # the guided network's starting point (bids_sr.selfsr.method.GUIDED_PRIOR):
                # a record made from another one no longer describes the shipped method
                record.setdefault("guided_prior_sha256", {})[name] = check.get(
                    "guided_prior_sha256")
            leak = reference_only_structure_check(
                arrays["input"], factors, arrays["reference"], method=method,
                weights=str(weights_file) if weights_file else None, mask=arrays["mask"],
                device=args.device, zooms=voxel_sizes(arrays["hr_affine"]),
                acquisition=arrays["acquisition"], model_dir=args.model_dir,
            )  # fmt: skip
            record["reference_only_transfer"][name] = round(leak["transfer"], 4)
        print(f"{weights.name} {name} ×{'x'.join(f'{f:g}' for f in factors)} "
              f"{args.degradation}: {method} {psnr[method]:.2f} dB, bspline "
              f"{psnr['bspline']:.2f} dB", flush=True)  # fmt: skip
    if len(record["gain_over_bspline"]) > 2:
        record["summary_over_bspline"] = summary(record["gain_over_bspline"])
    record["command"] = command
    return record


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    command = "python scripts/validate_shipped.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    for weights in args.weights:
        record = validate(weights, args, command)
        print(json.dumps(record, indent=1))
        if args.write:
            card_file, card, _ = target_card(weights)
            kept = [r for r in card.get("evidence", []) if _record_key(r) != _record_key(record)]
            card["validation_subjects"] = sorted(set(card.get("validation_subjects", []))
                                                 | set(record["gain_over_bspline"]))  # fmt: skip
            card["evidence"] = sorted([*kept, record], key=_record_key)
            write_json_atomic(card, card_file)
            card_file.with_name(card_file.name.replace(".card.json", ".md")).write_text(
                render_markdown(card)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
