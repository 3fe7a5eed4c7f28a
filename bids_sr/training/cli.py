"""``bids_sr-train METHOD BIDS_DIR OUT_DIR``: train or fine-tune one method on HR T1w images;
``bids_sr-train validate WEIGHTS ...``: record the evidence ``auto`` reads in model cards.

Reads the HR T1w (and T2w for the guided network) of the training participants with
pybids, simulates LR inputs with a :mod:`bids_sr.degrade` preset, trains (supervised L2 for
fsrcnn/espcn/srrecnn/srrecnn-t2w, LSGAN for srgan, the filter learner for gradfilter),
checkpoints, and writes ``OUT_DIR/<method>_x<factors>.safetensors`` with its model card
(``.card.json`` + ``.md``), scored on the held-out validation participants with the
project's evaluation protocol. The ``validate`` subcommand (:mod:`bids_sr.training.validate`)
scores shipped weights on held-out scans and writes the evidence records of their cards.
Exit codes follow the BIDS Apps execution spec (see
:mod:`bids_sr.errors`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from bids_sr import __version__
from bids_sr.bids import (
    check_dataset,
    load_layout,
    parse_entities,
    query_images,
    select_participants,
)
from bids_sr.degrade import PRESETS
from bids_sr.errors import (
    EXIT_CANT_CREATE,
    EXIT_DATA,
    EXIT_FAILURE,
    EXIT_MISSING,
    EXIT_USAGE,
    BIDSError,
    UsageError,
)
from bids_sr.image import ImageError, as_factors
from bids_sr.superresolve import REFERENCE_SUFFIXES, SELF_SUPERVISED_METHODS
from bids_sr.training.defaults import DEFAULTS, METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids_sr-train",
        description="Train or fine-tune a bids_sr super-resolution method on the HR T1w "
        "images of a BIDS dataset (LR inputs are simulated with a degradation preset).",
        epilog="`bids_sr-train validate --help`: score shipped weights on held-out scans and "
        "record the evidence `auto` reads in their model cards.",
    )
    parser.add_argument("method", choices=METHODS, help="method to train")
    parser.add_argument("bids_dir", type=Path, help="BIDS dataset with high-resolution T1w")
    parser.add_argument("output_dir", type=Path, help="folder for weights, card, log, checkpoints")
    parser.add_argument("--scale", nargs="+", type=float, default=[2.0], metavar="S",
                        help="one factor (isotropic) or three per-axis factors, e.g. 1 1 4")
    parser.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                        help="training participants (default: all but the validation ones)")
    parser.add_argument("--validation-label", "--validation_label", nargs="+", metavar="LABEL",
                        help="held-out participants for validation scores (never trained on)")
    parser.add_argument("--degradation", choices=PRESETS, default="gaussian",
                        help="how the LR input is simulated (default: gaussian)")
    parser.add_argument("--init", type=Path, metavar="WEIGHTS",
                        help="start from these weights (fine-tuning; same method)")
    parser.add_argument("--iterations", type=int, help="optimisation steps (networks)")
    parser.add_argument("--pretrain-iterations", type=int,
                        help="srgan: content-only generator steps first (default 75%%)")
    parser.add_argument("--batch-size", type=int, help="patches per step")
    parser.add_argument("--patch-size", type=int,
                        help="HR patch edge in voxels (networks; a multiple of the factors) or "
                        "the filter edge (gradfilter, odd)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (generator for srgan)")
    parser.add_argument("--loss-margin", type=int, default=0, metavar="N",
                        help="output voxels left out of the loss at each patch face: they see "
                             "zero padding, which tiled inference never does (default 0)")
    parser.add_argument("--background-fraction", type=float, default=0.0, metavar="F",
                        help="share of training patches placed anywhere in the volume rather "
                             "than on the head, so the network learns to keep empty background "
                             "at zero (default 0: head only)")
    parser.add_argument("--uninformative-reference-fraction", type=float, default=0.0,
                        metavar="F",
                        help="guided models: share of patches whose reference is pure noise or "
                             "a constant (target unchanged), so the network learns to ignore "
                             "a reference that carries nothing (default 0)")
    parser.add_argument("--reference-misregistration", nargs=2, type=float, default=[1.0, 2.0],
                        metavar=("MM", "DEG"),
                        help="guided models: each reference patch is moved by a random rigid "
                             "transform of up to MM mm translation and DEG degrees rotation "
                             "about the patch centre, as a registration error would (default "
                             "1 2; 0 0 disables)")
    parser.add_argument("--reference-blur", type=float, default=0.0, metavar="SD",
                        help="guided models: each synthesised reference is blurred by a "
                             "Gaussian of SD ~U(0, SD) voxels, as a reference smoother than "
                             "the T1w (a template, a lower-resolution T2w) would be (default 0)")
    parser.add_argument("--smoothed-copies", nargs="+", type=float, default=[], metavar="SD",
                        help="train also on copies of every training participant whose T1w "
                             "(and reference) is smoothed by a Gaussian of each SD (voxels), "
                             "sharing half of its sampling weight: template-like images (an "
                             "average brain such as MNI152 is smoother than any single scan)")
    parser.add_argument("--config", type=json.loads, default={}, metavar="JSON",
                        help='network config overrides, e.g. \'{"features": 32}\'')
    parser.add_argument("--subject-weight", nargs="+", default=[], metavar="LABEL=W",
                        help="relative sampling weight of a training participant (default 1)")
    parser.add_argument("--sample-stride", type=int, default=3,
                        help="gradfilter: sample every n-th voxel (default 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:n]")
    parser.add_argument("--nthreads", type=int, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT_DIR/checkpoints (if any)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps in this invocation, leaving a checkpoint "
                        "(for time-limited jobs; continue with --resume)")
    parser.add_argument("--val-every", type=int, default=50, help="validation PSNR interval")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint interval")
    parser.add_argument("--output-name", help="file stem (default <method>_x<factors>)")
    parser.add_argument("--no-evaluate", action="store_true",
                        help="skip the full-volume evaluation on the validation participants")
    parser.add_argument("--note", action="append", default=[],
                        help="a note to record in the model card (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--version", action="version", version=f"bids_sr {__version__}")
    return parser


def build_validate_parser() -> argparse.ArgumentParser:
    """The arguments of ``bids_sr-train validate`` (see :mod:`bids_sr.training.validate`)."""
    from bids_sr.training.validate import DEFAULT_IMAGES, DEFAULT_SHARED, IXI_GROUP, VALIDATION

    parser = argparse.ArgumentParser(
        prog="bids_sr-train validate",
        description="Validate shipped weights on held-out scans and record the evidence in "
        "their model cards (the records `auto` decides from).",
    )
    parser.add_argument("weights", nargs="+", type=Path,
                        help="weights files, or the name of a method that ships no weights "
                        f"({', '.join(SELF_SUPERVISED_METHODS)})")  # fmt: skip
    parser.add_argument("--degradation", choices=["gaussian", "slice"], required=True)
    parser.add_argument("--scale", nargs="+", type=float, required=True)
    parser.add_argument("--thickness-ratio", type=float, default=1.0,
                        help="slice thickness / slice spacing of the simulated 2D scan")
    parser.add_argument("--profile", choices=["rect", "gaussian"], default="rect")
    parser.add_argument("--images", nargs="+", default=list(DEFAULT_IMAGES), metavar="IMAGE",
                        help=f"held-out images, of {', '.join([*VALIDATION, IXI_GROUP])} "
                        f"(default: {' '.join(DEFAULT_IMAGES)}); {IXI_GROUP!r}: the IXI pool's "
                        "validation subjects (bids_sr.training.splits)")  # fmt: skip
    parser.add_argument("--ixi-count", type=int, help="with --images ixi: only the first N "
                        "validation subjects (by name)")  # fmt: skip
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                        help="folder of the validation images (default: ../shared/data "
                        "beside the repository)")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", action="store_true", help="store the records in the cards")
    parser.add_argument("--model-dir", help="where a per-scan method keeps its models (a rerun "
                        "with the same inputs reuses them)")  # fmt: skip
    return parser


def validate_main(argv: list[str]) -> int:
    """``bids_sr-train validate ARGS``: one-line errors, BIDS-App exit codes."""
    from bids_sr.training.validate import ValidationInputError, run_validation

    args = build_validate_parser().parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["bids_sr-train", "validate", *argv])
    if len(args.scale) not in (1, 3):
        print(f"bids_sr-train validate: error: --scale takes one factor or three, got "
              f"{len(args.scale)}", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        return run_validation(args, command)
    except ValidationInputError as exc:
        print(f"bids_sr-train validate: error: {exc}", file=sys.stderr)
        return exc.code
    except ImageError as exc:
        print(f"bids_sr-train validate: {exc}", file=sys.stderr)
        return EXIT_DATA


# --------------------------------------------------------------------------- arguments
def check_arguments(args: argparse.Namespace) -> tuple[float, float, float]:
    """Validate arguments that argparse cannot; return the per-axis factors."""
    if len(args.scale) not in (1, 3):
        raise UsageError(f"--scale takes one factor or three, got {len(args.scale)}")
    try:
        factors = as_factors(args.scale)
    except ValueError as exc:
        raise UsageError(f"--scale: {exc}") from None
    ints = [round(f) for f in factors]
    integer = all(abs(f - i) < 1e-6 for f, i in zip(factors, ints))
    if args.method != "gradfilter" and not integer:
        raise UsageError(
            f"{args.method} is trained on aligned LR/HR blocks and needs integer per-axis "
            f"factors, got {tuple(factors)}"
        )
    if args.degradation == "decimate" and not integer:
        raise UsageError(f"the {args.degradation} degradation needs integer factors")
    if max(factors) == 1:
        raise UsageError("--scale 1 leaves nothing to super-resolve")
    for name in ("iterations", "batch_size", "patch_size", "stop_after", "pretrain_iterations",
                 "nthreads"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "pretrain_iterations" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.val_every < 1 or args.checkpoint_every < 1:
        raise UsageError("--val-every and --checkpoint-every must be positive")
    for name in ("background_fraction", "uninformative_reference_fraction"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must lie in [0, 1), got "
                             f"{getattr(args, name)}")
    if min(args.reference_misregistration) < 0:
        raise UsageError("--reference-misregistration MM DEG must not be negative, got "
                         f"{' '.join(f'{v:g}' for v in args.reference_misregistration)}")
    if not 0.0 <= args.reference_blur <= 3.0:
        raise UsageError(f"--reference-blur must lie in [0, 3] voxels, got {args.reference_blur}")
    if any(not 0.0 < sd <= 3.0 for sd in args.smoothed_copies):
        raise UsageError("--smoothed-copies SDs must lie in (0, 3] voxels, got "
                         f"{' '.join(f'{v:g}' for v in args.smoothed_copies)}")
    if not isinstance(args.config, dict):
        raise UsageError("--config must be a JSON object")
    if args.method == "gradfilter":
        if args.patch_size is not None and args.patch_size % 2 == 0:
            raise UsageError(f"gradfilter filters have an odd edge, got --patch-size "
                             f"{args.patch_size}")
        if args.init is not None:
            raise UsageError("gradfilter learns in closed form; --init does not apply")
        if args.smoothed_copies:
            raise UsageError("--smoothed-copies applies to the networks, not to gradfilter")
    else:
        patch = args.patch_size or DEFAULTS[args.method]["patch_size"]
        bad = [f for f in ints if patch % f]
        if bad:
            raise UsageError(f"--patch-size {patch} must be a multiple of every factor {ints}")
        if not 0 <= args.loss_margin < patch / 2:
            raise UsageError(f"--loss-margin must lie in [0, {(patch - 1) // 2}] for "
                             f"--patch-size {patch}, got {args.loss_margin}")
    if args.init is not None and not args.init.is_file():
        raise UsageError(f"{args.init}: --init weights file not found")
    if args.resume and args.init is not None:
        raise UsageError("--resume and --init exclude each other")
    return factors


def subject_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        label, sep, value = item.partition("=")
        try:
            weights[label.removeprefix("sub-")] = float(value)
            if not sep or float(value) <= 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"--subject-weight expects LABEL=W with W > 0, got {item!r}") from None
    return weights


# --------------------------------------------------------------------------- BIDS query
def _session(path: str) -> str | None:
    return parse_entities(path)[0].get("ses")


def _same_grid(a_path: str, b_path: str) -> bool:
    # late: only guided methods compare grids; nibabel need not load for the others
    import nibabel as nib
    import numpy as np

    a, b = nib.load(a_path), nib.load(b_path)
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=1e-3)


def collect_images(layout, subjects: list[str], *, reference_suffix: str | None = None,
                   need_reference: bool = False) -> list[dict[str, Any]]:
    """One entry per T1w: label, t1w path, and (for a guided network) the same-session
    reference of ``reference_suffix`` (T2w, FLAIR) on the T1w grid under ``reference``.

    Without such a reference a training subject gets the contrast-randomised synthetic one;
    a validation subject (``need_reference``) stops the run (exit 66)."""
    entries = []
    for subject in subjects:
        t1ws = query_images(layout, subject, "T1w")
        if not t1ws:
            raise BIDSError(f"{layout.root}/sub-{subject}: participant has no T1w image",
                            EXIT_MISSING)
        for t1w in t1ws:
            entry: dict[str, Any] = {"label": subject, "t1w": t1w, "reference": None,
                                     "reference_suffix": reference_suffix}
            if reference_suffix:
                ses = _session(t1w)
                refs = query_images(layout, subject, reference_suffix, [ses] if ses else None)
                usable = [t for t in refs if _same_grid(t1w, t)]
                if usable:
                    entry["reference"] = usable[0]
                elif need_reference:
                    what = (f"no {reference_suffix}" if not refs else
                            f"no {reference_suffix} on the T1w grid (register it first)")
                    raise BIDSError(
                        f"{t1w}: {what}; validating a {reference_suffix}-guided network needs a "
                        f"real T1w/{reference_suffix} pair",
                        EXIT_MISSING,
                    )
            entries.append(entry)
    return entries


# --------------------------------------------------------------------------- main
def _setup(args: argparse.Namespace, factors) -> dict[str, Any]:
    bids_dir = args.bids_dir
    check_dataset(bids_dir)
    validation = select_participants(bids_dir, args.validation_label) if args.validation_label \
        else []
    if args.participant_label:
        training = select_participants(bids_dir, args.participant_label)
        both = sorted(set(training) & set(validation))
        if both:
            raise UsageError(
                f"validation participant(s) {', '.join(both)} are also in the training set; "
                "the validation split is by participant and must be disjoint"
            )
    else:
        training = [s for s in select_participants(bids_dir, None) if s not in validation]
        if not training:
            raise UsageError("no training participants left after the validation split")
    weights = subject_weights(args.subject_weight)
    unknown = sorted(set(weights) - set(training))
    if unknown:
        raise UsageError(f"--subject-weight names non-training participant(s): {unknown}")
    layout = load_layout(bids_dir, training + validation, validate=False)
    suffix = REFERENCE_SUFFIXES.get(args.method)
    train_images = collect_images(layout, training, reference_suffix=suffix)
    val_images = collect_images(layout, validation, reference_suffix=suffix,
                                need_reference=suffix is not None)
    for entry in train_images:
        entry["weight"] = weights.get(entry["label"], 1.0)
    return {"training": training, "validation": validation, "train_images": train_images,
            "val_images": val_images}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["validate"]:
        return validate_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["bids_sr-train", *argv])
    try:
        factors = check_arguments(args)
        if args.output_dir.resolve() == args.bids_dir.resolve():
            raise UsageError("output_dir must differ from bids_dir")
        selection = _setup(args, factors)
        try:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"bids_sr-train: {args.output_dir}: cannot create output folder ({exc})",
                  file=sys.stderr)
            return EXIT_CANT_CREATE
        # late: the training imports torch (about 2 s); --help and argument errors need none
        from bids_sr.training.run import train

        result = train(args, factors, selection, command)
    except UsageError as exc:
        print(f"bids_sr-train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BIDSError as exc:
        print(f"bids_sr-train: {exc}", file=sys.stderr)
        return exc.code
    except ImageError as exc:
        print(f"bids_sr-train: {exc}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print("bids_sr-train: interrupted (the last checkpoint is kept; use --resume)",
              file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # report, never a bare traceback for expected failures
        from bids_sr.models.weights import WeightsError  # late: torch (see above)
        from bids_sr.training.checkpoint import CheckpointError

        if isinstance(exc, (WeightsError, CheckpointError)):
            print(f"bids_sr-train: {exc}", file=sys.stderr)
            return EXIT_DATA
        raise
    if result is not None:
        print(result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
