#!/usr/bin/env python
"""Build a BIDS view (symlinks, no copies) of ../shared/data's training/validation splits.

The shipped weights are trained through the real ``bids_sr-train`` command, which reads
BIDS. This script lays the shared scans out as a BIDS dataset in an ignored folder
(default ``scratch/shared_bids``; never commit data):

* training: sub-colin27 (Colin27 T1w), sub-brainchop (brainchop T1w), sub-openms07
  (Open MS patient 07 T1w + T2w + FLAIR), sub-mni152 (MNI152 T1w + T2w templates);
* validation: sub-chris (chris T1w), sub-openms19 (Open MS patient 19 T1w + T2w + FLAIR).

The FLAIRs (the FLAIR-guided network's real pairs) share their T1w's grid, as the T2ws do;
MNI152 has no FLAIR, so the FLAIR-guided model is validated on openms19 only.

participants.tsv records each subject's split, source and licence; the model cards copy
those rows, so every card says which data (and which terms) the weights come from.

Usage: python scripts/shared_data_bids.py [--shared ../shared/data] [--out scratch/shared_bids]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SUBJECTS = {
    # label: (split, {suffix: path relative to shared/data}, source, licence)
    "colin27": ("train", {"T1w": "real_t1/colin27_ch2_T1w.nii.gz"},
                "Colin27 single-subject T1w (average of 27 scans), whole head, 1 mm",
                "MNI/McConnell Brain Imaging Centre; permissive, copyright notice kept"),
    "brainchop": ("train", {"T1w": "real_t1/brainchop_t1_crop_T1w.nii.gz"},
                  "brainchop conformed adult T1w, whole head, 1 mm", "MIT (brainchop)"),
    "openms07": ("train", {"T1w": "real_multicontrast/openms_patient07_T1.nii.gz",
                           "T2w": "real_multicontrast/openms_patient07_T2.nii.gz",
                           "FLAIR": "real_multicontrast/openms_patient07_FLAIR.nii.gz"},
                 "Open MS Data patient 07, N4-corrected, skull-stripped, MNI space, 1 mm",
                 "CC-BY (Lesjak et al. 2018, Neuroinformatics 16:51)"),
    "mni152": ("train", {"T1w": "real_multicontrast/mni152_T1_1mm_brain.nii.gz",
                         "T2w": "real_multicontrast/mni152_T2_1mm_brain.nii.gz"},
               "MNI152 T1/T2 templates (average brains), skull-stripped, 1 mm",
               "FSL/HCP templates, MNI ICBM152 copyright notice"),
    "chris": ("validate", {"T1w": "real_t1/chris_T1w.nii.gz"},
              "niivue demo adult T1w (C. Rorden), whole head, 0.88 mm",
              "CC BY-NC 4.0 (C. Rorden)"),
    "openms19": ("validate", {"T1w": "real_multicontrast/openms_patient19_T1.nii.gz",
                              "T2w": "real_multicontrast/openms_patient19_T2.nii.gz",
                              "FLAIR": "real_multicontrast/openms_patient19_FLAIR.nii.gz"},
                 "Open MS Data patient 19, N4-corrected, skull-stripped, MNI space, 1 mm",
                 "CC-BY (Lesjak et al. 2018, Neuroinformatics 16:51)"),
}


def build(shared: Path, out: Path) -> Path:
    """Create (or refresh) the symlink view; returns ``out``. Missing sources are an error."""
    missing = [str(shared / rel) for _, files, _, _ in SUBJECTS.values()
               for rel in files.values() if not (shared / rel).is_file()]
    if missing:
        raise FileNotFoundError(f"shared data missing: {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(json.dumps({
        "Name": "bids_sr training view of ../shared/data (symlinks)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "mixed: see participants.tsv (licence column) for each subject's terms",
        "GeneratedBy": [{"Name": "bids_sr scripts/shared_data_bids.py"}],
    }, indent=2) + "\n")
    rows = ["participant_id\tsplit\tsource\tlicence"]
    for label, (split, files, source, licence) in SUBJECTS.items():
        anat = out / f"sub-{label}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        for suffix, rel in files.items():
            link = anat / f"sub-{label}_{suffix}.nii.gz"
            target = (shared / rel).resolve()
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(target, link)
        rows.append(f"sub-{label}\t{split}\t{source}\t{licence}")
    (out / "participants.tsv").write_text("\n".join(rows) + "\n")
    (out / "README").write_text(
        "Symlink view of ../shared/data for bids_sr-train (see ../shared/data/README.md).\n"
        "Never commit these files.\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "scratch" / "shared_bids")
    args = parser.parse_args(argv)
    try:
        print(build(args.shared, args.out))
    except FileNotFoundError as exc:
        print(f"shared_data_bids: {exc}", file=sys.stderr)
        return 66
    return 0


if __name__ == "__main__":
    sys.exit(main())
