#!/usr/bin/env python
"""Pretrain selfsr's starting point on the slice family and ship it with a model card.

Reads the training split of ../shared/data (never the validation images chris and
openms19), degrades planes of each HR T1w with random 2D acquisitions (slice factor 2–6,
thickness 0.6–1.1 × spacing, rect or gaussian profile, random stack axis; see
:mod:`bids_sr.selfsr.pretrain`), trains the per-scan CNN's architecture on them, and writes
``bids_sr/data/weights/selfsr_prior.safetensors`` with ``selfsr_prior.card.json`` and
``.md``. ``selfsr`` then starts every scan from these weights.

    python scripts/pretrain_selfsr.py --steps 10000 --acquisitions 6 [--width 128]
        [--unshuffle 2] [--seed 0] [--out DIR] [--init PRIOR] [--exclude NAME ...]

``--init`` continues from an earlier prior (its architecture; ``--width``/``--unshuffle`` are
then ignored) on fresh random acquisitions (use another ``--seed``); the card names it.
``--exclude`` leaves training images out (e.g. ``mni152``, whose T1w/T2w pair validates the
guided ``selfsr-t2w``): the card lists the subjects actually used.

``--guided`` pretrains the starting point of the guided per-scan CNN (``selfsr-t2w``,
``selfsr-flair``) instead: ``selfsr_guided_prior.safetensors``, the network with a third
input, the guide's plane, trained on each image's real registered references (openms07's
T2w and FLAIR) and contrast-randomised copies of its T1w (:mod:`bids_sr.selfsr.pretrain`).
With ``--init`` at the unguided prior it starts from what that computes.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bids_sr.cards.paths import WEIGHTS_DIR, card_path  # noqa: E402
from bids_sr.fileio import sha256_file, write_json_atomic, write_text_atomic  # noqa: E402
from bids_sr.image import load_volume  # noqa: E402
from bids_sr.selfsr.network import REFERENCE_GAIN, TrainSettings, state_to_numpy  # noqa: E402
from bids_sr.selfsr.pretrain import (  # noqa: E402
    FACTORS,
    MAX_SHIFT_VOXELS,
    PROFILES,
    REAL_REFERENCE_FRACTION,
    SYNTHETIC_BLUR,
    THICKNESS_RATIOS,
    pretrain_plane_net,
)
from bids_sr.selfsr.store import load_model, save_model  # noqa: E402
from bids_sr.training.splits import ixi_split  # noqa: E402

#: The training split (../shared/data/README.md): file, licence.
TRAINING = {
    "colin27": ("real_t1/colin27_ch2_T1w.nii.gz",
                "MNI/McConnell Brain Imaging Centre; permissive, copyright notice kept"),
    "brainchop": ("real_t1/brainchop_t1_crop_T1w.nii.gz", "MIT (brainchop)"),
    "openms07": ("real_multicontrast/openms_patient07_T1.nii.gz",
                 "CC-BY (Lesjak et al. 2018, Neuroinformatics 16:51)"),
    "mni152": ("real_multicontrast/mni152_T1_1mm_brain.nii.gz",
               "FSL/HCP templates, MNI ICBM152 copyright notice"),
}  # fmt: skip
#: Real registered references of the training images (the same grid as the T1w), for --guided.
REFERENCES = {
    "openms07": ("real_multicontrast/openms_patient07_T2.nii.gz",
                 "real_multicontrast/openms_patient07_FLAIR.nii.gz"),
    "mni152": ("real_multicontrast/mni152_T2_1mm_brain.nii.gz",),
}  # fmt: skip
STEM = "selfsr_prior"
#: ``--ixi``: the cohort prior of ``selfsr-fast``, trained on the IXI pool's pretraining part
#: too (never its validation part, bids_sr.training.splits)
FAST_STEM = "selfsr_fast_prior"
IXI_LICENCE = "CC BY-SA 3.0 (IXI, via NiChart; attribution, share-alike)"
GUIDED_STEM = "selfsr_guided_prior"


def validation_subjects(args: argparse.Namespace) -> list[str]:
    """The images that validate what starts from this prior (never trained on)."""
    if args.guided:
        return ["openms19", "mni152"]
    return ["chris", "openms19"] + (["the IXI pool's validation part"] if args.ixi else [])


def validation_note(args: argparse.Namespace) -> str:
    """Where the evidence for this prior is: the card of the method that uses it."""
    if args.guided:
        return ("per-scan fine-tuning from these weights is validated as the selfsr-t2w and "
                "selfsr-flair methods, against selfsr: see their cards (evidence, "
                "gain_over_mono)")  # fmt: skip
    if args.ixi:
        return ("these weights applied as they are (no per-scan training) are validated as "
                "the selfsr-fast method: see selfsr-fast.card.json (evidence)")  # fmt: skip
    return ("per-scan fine-tuning from these weights is validated as the selfsr method: see "
            "selfsr.card.json (evidence) and docs/benchmarks.md")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--acquisitions", type=int, default=3,
                        help="random acquisitions per training image")
    parser.add_argument("--width", type=int, default=TrainSettings.width, help="channels")
    parser.add_argument("--depth", type=int, default=TrainSettings.depth, help="layers")
    parser.add_argument("--unshuffle", type=int, default=TrainSettings.unshuffle,
                        help="pixel-unshuffle factor of the network (PlaneNet)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--init", type=Path,
                        help="an earlier prior (.safetensors with its .card.json) to continue")
    parser.add_argument("--exclude", nargs="+", default=[], choices=sorted(TRAINING),
                        help="training images to leave out")
    parser.add_argument("--guided", action="store_true",
                        help="pretrain the guided per-scan CNN's starting point instead")
    parser.add_argument("--ixi", type=int, metavar="N", default=0,
                        help="also train on N acquisitions of each subject of the IXI pool's "
                        "pretraining part, and write the selfsr-fast cohort prior")  # fmt: skip
    parser.add_argument("--max-factor", type=float, default=FACTORS[1],
                        help="largest slice factor drawn")  # fmt: skip
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    command = "python scripts/pretrain_selfsr.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    init = init_record = None
    if args.init is not None:
        try:
            init, _ = load_model(args.init)
        except (OSError, ValueError) as exc:
            print(f"--init: {exc}", file=sys.stderr)
            return 65
        earlier = card_path(args.init)
        init_record = {"file": args.init.name, "sha256": sha256_file(args.init)}
        if earlier.is_file():
            previous = json.loads(earlier.read_text())
            init_record.update({key: previous[key] for key in ("steps", "command", "init")
                                if previous.get(key) is not None})  # fmt: skip
    subjects = {name: entry for name, entry in TRAINING.items() if name not in args.exclude}
    if not subjects:
        print("--exclude: no training image left", file=sys.stderr)
        return 64
    counts = {name: args.acquisitions for name in subjects}
    if args.ixi:
        pool, _ = ixi_split(args.shared)
        if not pool:
            print(f"{args.shared}: no IXI pool for --ixi", file=sys.stderr)
            return 66
        for name, path in pool.items():
            subjects[name] = (str(path.relative_to(args.shared)), IXI_LICENCE)
            counts[name] = args.ixi
    volumes, references = [], []
    for name, (relative, _) in subjects.items():
        paths = [args.shared / relative]
        if args.guided:
            paths += [args.shared / r for r in REFERENCES.get(name, ())]
        missing = [p for p in paths if not p.exists()]
        if missing:
            print(f"{missing[0]}: training image missing", file=sys.stderr)
            return 66
        volumes.append(load_volume(paths[0]).data)
        references.append([load_volume(p).data for p in paths[1:]])
        print(f"loaded {name}: {volumes[-1].shape}, {len(references[-1])} real references",
              flush=True)  # fmt: skip
    net, summary = pretrain_plane_net(volumes, steps=args.steps, seed=args.seed,
                                      acquisitions_per_volume=list(counts.values()),
                                      factors=(FACTORS[0], args.max_factor),
                                      device=args.device, progress=True, init=init,
                                      references=references if args.guided else None,
                                      settings=TrainSettings(width=args.width, depth=args.depth,
                                                             unshuffle=args.unshuffle))  # fmt: skip
    stem = GUIDED_STEM if args.guided else (FAST_STEM if args.ixi else STEM)
    weights = args.out / f"{stem}.safetensors"
    save_model(state_to_numpy(net), weights, {"learner": "cnn", "role": "prior",
                                              "depth": net.depth, "width": net.width,
                                              "unshuffle": net.unshuffle,
                                              "inputs": net.inputs})  # fmt: skip
    inputs = "B-spline plane + slice phase" + (" + guide plane" if args.guided else "")
    role = "starting point of the " + ("guided " if args.guided else "") + "per-scan CNN"
    guide_note = {}
    if args.guided:
        guide_note = {"guides": {
            "real": {name: list(REFERENCES.get(name, ())) for name in subjects},
            "real_fraction": REAL_REFERENCE_FRACTION,
            "synthetic": "bids_sr.contrast.randomise_contrast of the T1w, blur up to "
                         f"{SYNTHETIC_BLUR:g} voxel",
            "misregistration_voxels": MAX_SHIFT_VOXELS,
            "input_gain": REFERENCE_GAIN}}  # fmt: skip
    card = {
        "method": "selfsr-t2w, selfsr-flair" if args.guided else (
            "selfsr-fast" if args.ixi else "selfsr"), "file": weights.name,
        "role": role,
        "architecture": f"PlaneNet (2D residual CNN, {net.depth} layers, {net.width} channels, "
                        f"pixel unshuffle {net.unshuffle}, inputs: {inputs})", **guide_note,
        "sha256": sha256_file(weights), "family": "slice",
        "degradation": {"family": "slice", "factor": [FACTORS[0], args.max_factor],
                        "thickness_ratio": list(THICKNESS_RATIOS), "profiles": list(PROFILES),
                        "stack_axis": "random", "model": "bids_sr.acquisition"},
        "training_subjects": list(subjects), "excluded_subjects": list(args.exclude),
        "data": {"license": "mixed: see participants", "participants": [
            {"participant_id": name, "file": rel, "licence": lic}
            for name, (rel, lic) in subjects.items()]},
        "validation_subjects": validation_subjects(args),
        "validation_note": validation_note(args),
        "steps": summary["steps"], "final_loss": summary["final_loss"],
        "train_wall_s": round(summary["train_s"], 1), "acquisitions": summary["acquisitions"],
        "seed": args.seed, "device": args.device, "command": command, "init": init_record,
        "weights_license": "Apache-2.0 (bids_sr); the training data's own terms are in data",
        "software": {"python": platform.python_version()},
    }  # fmt: skip
    write_json_atomic(card, args.out / f"{stem}.card.json")
    continued = ""
    if init_record:
        continued = f"- continued from {init_record['file']} (sha256 {init_record['sha256'][:12]}…)"
        if "command" in init_record:
            continued += f", itself {init_record['steps']} steps: `{init_record['command']}`"
        continued += "\n"
    write_text_atomic(
        f"# {weights.name}\n\n- {card['role']}: {card['architecture']}\n"
        f"- training subjects: {', '.join(subjects)}; random slice acquisitions "
        f"(factor {FACTORS[0]:g}–{args.max_factor:g}, thickness {THICKNESS_RATIOS[0]:g}–"
        f"{THICKNESS_RATIOS[1]:g} × spacing, {'/'.join(PROFILES)})\n"
        f"- {summary['steps']} steps, {summary['train_s']:.0f} s on {args.device}, final L1 "
        f"{summary['final_loss']:.4f}\n- command: `{command}`\n{continued}"
        f"- validation: {card['validation_note']}\n",
        args.out / f"{stem}.md",
    )
    print(json.dumps({k: card[k] for k in ("file", "sha256", "steps", "train_wall_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
