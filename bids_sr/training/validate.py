"""``bids_sr-train validate``: score shipped weights on held-out scans and record the evidence
in their model cards.

``auto`` chooses a learned method only from these records (see :mod:`bids_sr.cards.evidence`).
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

    bids_sr-train validate bids_sr/data/weights/srrecnn_x1x1x4.safetensors \\
        --degradation slice --scale 1 1 3 --write
    bids_sr-train validate W.safetensors --degradation gaussian --scale 2 --write

A method that learns per scan and ships no weights (``selfsr``) is named instead of a
weights file; its card is ``bids_sr/data/weights/<method>.card.json`` (``"weights": null``),
created on the first ``--write``:

    bids_sr-train validate selfsr --degradation slice --scale 1 1 3 --write
    bids_sr-train validate selfsr-t2w --degradation slice --scale 1 1 3 \\
        --images openms19 mni152 --write

``--write`` replaces the card's record of the same family, degradation, factors and slice
parameters (:func:`record_key`); without it the records are only printed. Records made
before this subcommand existed name their command ``python scripts/validate_shipped.py ...``
(its former form, same options).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bids_sr.acquisition import simulated_acquisition
from bids_sr.cards.paths import WEIGHTS_DIR, card_path
from bids_sr.cards.read import card_reference_suffix
from bids_sr.cards.write import write_markdown
from bids_sr.errors import EXIT_MISSING, EXIT_USAGE
from bids_sr.evaluation import evaluate_image
from bids_sr.fileio import write_json_atomic
from bids_sr.guidance import mono_twin, reference_only_structure_check
from bids_sr.image import load_volume, voxel_sizes
from bids_sr.reports.group import mean_ci
from bids_sr.superresolve import REFERENCE_SUFFIXES, SELF_SUPERVISED_METHODS
from bids_sr.training.splits import IXI_FOLDER, ixi_split

#: Held-out scans (never in any shipped model's training split): the T1w and the references
#: of the same space, by BIDS suffix (a guided model is scored where its contrast exists).
#: openms19's T1w and T2w were resampled to MNI space from 3 mm axial slices: along axis 2
#: they hold little fine detail (experiments/truth_sharpness.py), so a slice model is also
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
#: ``../shared/data`` beside the source checkout this module runs from (an editable
#: install); elsewhere give ``--shared``.
DEFAULT_SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


class ValidationInputError(Exception):
    """A target or an image that cannot be validated; the message is one line."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _ixi_validation(shared: Path, count: int | None) -> dict[str, tuple[str, dict]]:
    """The IXI validation subjects (the first ``count`` by name) as VALIDATION entries."""
    _, validation = ixi_split(shared)
    names = sorted(validation)[:count] if count else sorted(validation)
    return {name: (f"{IXI_FOLDER}/{validation[name].name}", {}) for name in names}


def summary(gains: dict[str, float]) -> dict[str, Any]:
    """Mean gain over images with its 95 % interval (t distribution), the worst image."""
    mean, low, high = mean_ci(list(gains.values()))
    worst = min(gains, key=gains.get)
    out = {"n": len(gains), "mean": round(mean, 3), "worst": round(gains[worst], 3),
           "worst_image": worst}  # fmt: skip
    if len(gains) > 1:
        out["ci95"] = [round(low, 3), round(high, 3)]
    return out


def record_key(record: dict[str, Any]) -> tuple:
    """What makes two records the same setting: a new record replaces the old one."""
    return (record["family"], record["degradation"], tuple(record["factors"]),
            record.get("thickness_ratio"), record.get("profile"))  # fmt: skip


def weightless_card(method: str) -> dict[str, Any]:
    """The card of a method that ships no weights, before any evidence."""
    suffix = REFERENCE_SUFFIXES.get(method)
    guide = f", guided by a registered HR {suffix}" if suffix else ""
    fast = method == "selfsr-fast"
    what = ("applies the shipped slice-family prior with no per-scan training, the cohort "
            "mode" if fast else f"learns per scan from the scan's own in-plane data{guide}")
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


def target_card(target: Path, weights_dir: Path = WEIGHTS_DIR
                ) -> tuple[Path, dict[str, Any], Path | None]:  # fmt: skip
    """The card file, the card and the weights file (None for a weightless method) of a
    target: a weights file with its card beside it, or a per-scan method's name (its card
    in ``weights_dir``). :class:`ValidationInputError` (exit 64, usage) for anything else."""
    if str(target) in SELF_SUPERVISED_METHODS:
        card_file = Path(weights_dir) / f"{target}.card.json"
        card = json.loads(card_file.read_text()) if card_file.exists() else weightless_card(
            str(target))
        return card_file, card, None
    card_file = card_path(target)
    if not Path(target).is_file() or not card_file.is_file():
        what = "no such weights file" if not Path(target).is_file() else (
            f"no model card {card_file.name} beside it")
        raise ValidationInputError(
            f"{target}: {what}; name a weights file with its card or a per-scan method "
            f"({', '.join(SELF_SUPERVISED_METHODS)})", EXIT_USAGE)
    return card_file, json.loads(card_file.read_text()), Path(target)


def validation_images(names: list[str], shared: Path,
                      ixi_count: int | None = None) -> dict[str, tuple[str, dict]]:
    """The images named by ``--images`` (``ixi`` expanded), each checked to exist under
    ``shared``: name → (T1w path relative to ``shared``, references by suffix).
    :class:`ValidationInputError`: exit 64 for an unknown name, 66 for a missing file."""
    unknown = [name for name in names if name not in VALIDATION and name != IXI_GROUP]
    if unknown:
        raise ValidationInputError(
            f"unknown validation image(s) {', '.join(unknown)}; choose from "
            f"{', '.join([*VALIDATION, IXI_GROUP])}", EXIT_USAGE)
    images: dict[str, tuple[str, dict]] = {}
    for name in names:
        images.update(_ixi_validation(shared, ixi_count) if name == IXI_GROUP
                      else {name: VALIDATION[name]})  # fmt: skip
    if IXI_GROUP in names and not any(n not in VALIDATION for n in images):
        raise ValidationInputError(f"{shared / IXI_FOLDER}: no IXI validation subjects "
                                   "found (give --shared DIR)", EXIT_MISSING)  # fmt: skip
    for name, (t1w, _) in images.items():
        if not (shared / t1w).is_file():
            raise ValidationInputError(f"{name}: {shared / t1w} not found (give --shared DIR, "
                                       "the folder of the validation images)",
                                       EXIT_MISSING)  # fmt: skip
    return images


def _acquisition(zooms, factors: tuple[float, ...], args: argparse.Namespace):
    """The simulated 2D acquisition of a ``slice`` validation (None for ``gaussian``)."""
    if args.degradation != "slice":
        return None
    axis = int(np.argmax(factors))
    thickness = args.thickness_ratio * zooms[axis] * factors[axis]
    return simulated_acquisition(zooms, factors, thickness=thickness, profile=args.profile)


def validate_target(target: Path, args: argparse.Namespace, command: str,
                    images: dict[str, tuple[str, dict]]) -> dict[str, Any]:  # fmt: skip
    """One evidence record for ``target`` (a weights file or a weightless method's name),
    scored on ``images`` (:func:`validation_images`); one progress line per image."""
    _, card, weights_file = target_card(target)
    method, suffix = card["method"], card_reference_suffix(card)
    guided = suffix is not None
    twin = mono_twin(method) if guided else None
    factors = tuple(args.scale * 3 if len(args.scale) == 1 else args.scale)
    record: dict[str, Any] = {
        "family": "slice" if args.degradation == "slice" else "isotropic",
        "degradation": args.degradation, "factors": [float(f) for f in factors],
        "data_consistency": True, "gain_over_bspline": {}, "psnr_brain": {},
        "psnr_brain_bspline": {},
    }  # fmt: skip
    if args.degradation == "slice":
        record.update(thickness_ratio=args.thickness_ratio, profile=args.profile)
    if guided:
        record.update(gain_over_mono={}, reference_only_transfer={})
    setting = f"×{'x'.join(f'{f:g}' for f in factors)} {args.degradation}"
    for index, (name, (t1w_rel, references)) in enumerate(images.items(), start=1):
        prefix = f"[{index}/{len(images)}] {target.name} {name} {setting}"
        if guided and suffix not in references:
            print(f"{prefix}: no {suffix}, skipped", flush=True)
            continue
        print(f"{prefix}: evaluating {method}...", flush=True)
        volume = load_volume(args.shared / t1w_rel)
        reference = load_volume(args.shared / references[suffix]).data if guided else None
        methods = [method] + ([twin] if guided else [])
        arrays: dict = {}
        rows = evaluate_image(
            volume.data, volume.affine, factors=factors, degradation=args.degradation,
            methods=methods, weights={method: str(weights_file)} if weights_file else None,
            reference=reference, device=args.device, source=name,
            acquisition=_acquisition(volume.zooms, factors, args),
            model_dir=args.model_dir, arrays=arrays if guided else None,
        )  # fmt: skip
        psnr = {row["method"]: row["psnr_brain"] for row in rows}
        scored = next(row for row in rows if row["method"] == method)
        computed = scored.get("precision")
        if computed:  # a per-scan network: float32, or bfloat16 on CPUs with AMX
            record.setdefault("precision", {})[name] = computed
        prior = scored.get("prior_sha256")
        if prior and not guided:  # the unguided per-scan network's starting point: a
            record["prior_sha256"] = prior  # record made from another one is stale
        record["psnr_brain"][name] = round(psnr[method], 3)
        record["psnr_brain_bspline"][name] = round(psnr["bspline"], 3)
        record["gain_over_bspline"][name] = round(psnr[method] - psnr["bspline"], 3)
        if guided:
            record["gain_over_mono"][name] = round(psnr[method] - psnr[twin], 3)
            # a per-scan guided model is used only where it beat the unguided one on the
            # scan's own slices (bids_sr.selfsr.method.GUIDE_MIN_IMPROVEMENT)
            check = scored.get("guide_check")
            if check is not None:
                record.setdefault("guide_used", {})[name] = bool(check["used"])
                # the guided network's starting point (bids_sr.selfsr.method.GUIDED_PRIOR):
                # a record made from another one no longer describes the shipped method
                record.setdefault("guided_prior_sha256", {})[name] = check.get(
                    "guided_prior_sha256")
                # and its unguided twin's (bids_sr.selfsr.method.selfsr_prior)
                record.setdefault("mono_prior_sha256", {})[name] = check.get(
                    "mono_prior_sha256")
            leak = reference_only_structure_check(
                arrays["input"], factors, arrays["reference"], method=method,
                weights=str(weights_file) if weights_file else None, mask=arrays["mask"],
                device=args.device, zooms=voxel_sizes(arrays["hr_affine"]),
                acquisition=arrays["acquisition"], model_dir=args.model_dir,
            )  # fmt: skip
            record["reference_only_transfer"][name] = round(leak["transfer"], 4)
        print(f"{prefix}: {method} {psnr[method]:.2f} dB, bspline {psnr['bspline']:.2f} dB",
              flush=True)  # fmt: skip
    if len(record["gain_over_bspline"]) > 2:
        record["summary_over_bspline"] = summary(record["gain_over_bspline"])
    record["command"] = command
    return record


def write_record(target: Path, record: dict[str, Any]) -> Path:
    """Store ``record`` in the target's card (replacing the record of the same
    :func:`record_key`), add its images to the validation subjects and re-render the
    card's markdown beside it; the card file."""
    card_file, card, _ = target_card(target)
    kept = [r for r in card.get("evidence", []) if record_key(r) != record_key(record)]
    card["validation_subjects"] = sorted(set(card.get("validation_subjects", []))
                                         | set(record["gain_over_bspline"]))  # fmt: skip
    card["evidence"] = sorted([*kept, record], key=record_key)
    write_json_atomic(card, card_file)
    write_markdown(card, card_file)
    return card_file


def run_validation(args: argparse.Namespace, command: str) -> int:
    """Validate every target of ``args`` (see the module docstring); print each record as
    JSON and, with ``--write``, store it. Bad input raises :class:`ValidationInputError`
    before any image is scored."""
    for target in args.weights:
        target_card(target)
    images = validation_images(args.images, args.shared, args.ixi_count)
    for target in args.weights:
        record = validate_target(target, args, command, images)
        print(json.dumps(record, indent=1))
        if args.write:
            card_file = write_record(target, record)
            print(f"{target.name}: record written to {card_file}", flush=True)
    return 0
