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

from bids_sr.fileio import card_path, sha256_file, write_json_atomic, write_text_atomic  # noqa: E402
from bids_sr.image import load_volume  # noqa: E402
from bids_sr.selfsr.network import TrainSettings, state_to_numpy  # noqa: E402
from bids_sr.selfsr.pretrain import (  # noqa: E402
    FACTORS,
    PROFILES,
    THICKNESS_RATIOS,
    pretrain_plane_net,
)
from bids_sr.selfsr.store import load_model, save_model  # noqa: E402
from bids_sr.weights_lookup import WEIGHTS_DIR  # noqa: E402

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
STEM = "selfsr_prior"


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
    volumes = []
    for name, (relative, _) in subjects.items():
        path = args.shared / relative
        if not path.exists():
            print(f"{path}: training image missing", file=sys.stderr)
            return 66
        volumes.append(load_volume(path).data)
        print(f"loaded {name}: {volumes[-1].shape}", flush=True)
    net, summary = pretrain_plane_net(volumes, steps=args.steps, seed=args.seed,
                                      acquisitions_per_volume=args.acquisitions,
                                      device=args.device, progress=True, init=init,
                                      settings=TrainSettings(width=args.width, depth=args.depth,
                                                             unshuffle=args.unshuffle))  # fmt: skip
    weights = args.out / f"{STEM}.safetensors"
    save_model(state_to_numpy(net), weights, {"learner": "cnn", "role": "prior",
                                              "depth": net.depth, "width": net.width,
                                              "unshuffle": net.unshuffle})  # fmt: skip
    card = {
        "method": "selfsr", "file": weights.name, "role": "starting point of the per-scan CNN",
        "architecture": f"PlaneNet (2D residual CNN, {net.depth} layers, {net.width} channels, "
                        f"pixel unshuffle {net.unshuffle}, inputs: B-spline plane + slice phase)",
        "sha256": sha256_file(weights), "family": "slice",
        "degradation": {"family": "slice", "factor": list(FACTORS),
                        "thickness_ratio": list(THICKNESS_RATIOS), "profiles": list(PROFILES),
                        "stack_axis": "random", "model": "bids_sr.acquisition"},
        "training_subjects": list(subjects), "excluded_subjects": list(args.exclude),
        "data": {"license": "mixed: see participants", "participants": [
            {"participant_id": name, "file": rel, "licence": lic}
            for name, (rel, lic) in subjects.items()]},
        "validation_subjects": ["chris", "openms19"],
        "validation_note": "per-scan fine-tuning from these weights is validated as the selfsr "
                      "method: see selfsr.card.json (evidence) and the README's thick-slice "
                      "table",
        "steps": summary["steps"], "final_loss": summary["final_loss"],
        "train_wall_s": round(summary["train_s"], 1), "acquisitions": summary["acquisitions"],
        "seed": args.seed, "device": args.device, "command": command, "init": init_record,
        "weights_license": "Apache-2.0 (bids_sr); the training data's own terms are in data",
        "software": {"python": platform.python_version()},
    }  # fmt: skip
    write_json_atomic(card, args.out / f"{STEM}.card.json")
    continued = ""
    if init_record:
        continued = f"- continued from {init_record['file']} (sha256 {init_record['sha256'][:12]}…)"
        if "command" in init_record:
            continued += f", itself {init_record['steps']} steps: `{init_record['command']}`"
        continued += "\n"
    write_text_atomic(
        f"# {weights.name}\n\n- {card['role']}: {card['architecture']}\n"
        f"- training subjects: {', '.join(subjects)}; random slice acquisitions "
        f"(factor {FACTORS[0]:g}–{FACTORS[1]:g}, thickness {THICKNESS_RATIOS[0]:g}–"
        f"{THICKNESS_RATIOS[1]:g} × spacing, {'/'.join(PROFILES)})\n"
        f"- {summary['steps']} steps, {summary['train_s']:.0f} s on {args.device}, final L1 "
        f"{summary['final_loss']:.4f}\n- command: `{command}`\n{continued}"
        f"- validation: {card['validation_note']}\n",
        args.out / f"{STEM}.md",
    )
    print(json.dumps({k: card[k] for k in ("file", "sha256", "steps", "train_wall_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
