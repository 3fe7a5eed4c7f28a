#!/usr/bin/env python3
"""Build the bundled demo BIDS dataset (bids_sr/data/demo) from Colin27's 1 mm T1w.

Source: ``ch2.nii.gz`` and ``ch2bet.nii.gz`` from Debian's ``mricron-data`` package (Colin
Holmes' 27-scan average, MNI/McConnell Brain Imaging Centre; permissive licence whose notice
the dataset README keeps). The script finds them installed, or fetches the package with
``apt-get download`` and unpacks it with ``dpkg -x`` (no root needed).

What it makes (all at 2 mm, so the 1 mm original is not bundled):
- sub-01: T1w = the 1 mm scan, Gaussian-blurred (σ = 1 mm) and resampled to 2 mm
  (bids_sr.degrade's ``gaussian`` preset), plus Rician-like noise; and a synthetic T2w-like
  image made from a 3-class tissue segmentation (CSF bright, WM dark), labelled synthetic.
- sub-02: two sessions; each T1w is the 1 mm scan moved by a small rigid transform (a few
  degrees and mm, different per session), degraded the same way, with different noise.
- sub-03: a clinical-style 2D T1w: axial slices 4 mm apart, 3.6 mm thick (0.4 mm gap, rect
  profile, bids_sr.acquisition's slice model), 1×1 mm in plane, with Rician noise; its
  sidecar says SliceThickness and MRAcquisitionType 2D, as a scanner's would. It shows the
  thick-slice path (``auto`` → the self-supervised ``selfsr``).

Usage: python scripts/make_demo_dataset.py [--source-dir DIR] [--out bids_sr/data/demo]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_sr.acquisition import simulated_acquisition
from bids_sr.degrade import crop_to_factor, degrade
from bids_sr.image import upsampled_affine

FACTORS = (2, 2, 2)
#: sub-03's 2D acquisition: axial slices every 4 mm, 3.6 mm thick, 1×1 mm in plane
THICK_FACTORS = (1, 1, 4)
THICK_SLICE_MM = 3.6
INSTALLED = Path("/usr/share/mricron/templates")

COPYRIGHT = """\
Colin27 ("ch2") single-subject T1w template.
Copyright (C) 1993-2004 Colin Holmes, Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University.
Permission to use, copy, modify, and distribute this data and its documentation for any
purpose and without fee is hereby granted, provided that the above copyright notice appear
in all copies. The authors and McGill University make no representations about the
suitability of this data for any purpose. It is provided "as is" without express or implied
warranty.
Reference: Holmes CJ, Hoge R, Collins L, Woods R, Toga AW, Evans AC. Enhancement of MR
images using registration for signal averaging. J Comput Assist Tomogr 1998;22(2):324-333.
Obtained from Debian's mricron-data package (ch2.nii.gz, ch2bet.nii.gz; packaging
BSD-3-clause, Chris Rorden, Michael Hanke)."""


def find_sources(source_dir: Path | None) -> Path:
    """Folder holding ch2.nii.gz and ch2bet.nii.gz (installed, given, or fetched with apt)."""
    for folder in [source_dir, INSTALLED]:
        if folder and (folder / "ch2.nii.gz").exists() and (folder / "ch2bet.nii.gz").exists():
            return folder
    tmp = Path(tempfile.mkdtemp(prefix="mricron_data_"))
    subprocess.run(["apt-get", "download", "mricron-data"], cwd=tmp, check=True)
    deb = next(tmp.glob("mricron-data_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(tmp / "root")], check=True)
    return tmp / "root" / INSTALLED.relative_to("/")


def rigid_resample(data: np.ndarray, degrees: tuple[float, float, float], shift_mm) -> np.ndarray:
    """Rotate (about the volume centre) and shift a 1 mm image with cubic interpolation."""
    rx, ry, rz = np.deg2rad(degrees)
    rot_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    rot_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    rot_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    rotation = rot_z @ rot_y @ rot_x
    centre = (np.asarray(data.shape) - 1) / 2.0
    offset = centre - rotation @ (centre + np.asarray(shift_mm))
    return ndimage.affine_transform(data, rotation, offset=offset, order=3, mode="constant")


def add_noise(data: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of complex Gaussian noise: Rician, as in real magnitude images."""
    real = data + rng.normal(0, sigma, data.shape)
    imag = rng.normal(0, sigma, data.shape)
    return np.sqrt(real**2 + imag**2)


def synthetic_t2w(t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """A T2w-like contrast from a 3-class (CSF/GM/WM) intensity segmentation of the T1w."""
    values = t1[brain]
    csf_gm, gm_wm = np.percentile(values, [18, 55])
    t2 = np.zeros_like(t1)
    t2[brain & (t1 < csf_gm)] = 1.0  # CSF
    t2[brain & (t1 >= csf_gm) & (t1 < gm_wm)] = 0.62  # GM
    t2[brain & (t1 >= gm_wm)] = 0.38  # WM
    head = (t1 > 0.08 * t1.max()) & ~brain
    t2[head] = 0.45 * t1[head] / t1.max()  # scalp and skull: dim, structure kept
    return ndimage.gaussian_filter(t2, 0.6) * 255.0


def to_int16_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.clip(np.round(data), 0, 32767).astype(np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def lr_affine(hr_affine: np.ndarray, hr_crop_start, factors) -> np.ndarray:
    """Affine of the LR grid whose upsampled grid is the cropped HR grid."""
    crop = np.eye(4)
    crop[:3, 3] = hr_crop_start
    cropped = hr_affine @ crop
    return cropped @ np.linalg.inv(upsampled_affine(np.eye(4), factors))


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def make_dataset(source: Path, out: Path) -> None:
    t1_img = nib.load(str(source / "ch2.nii.gz"))
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(str(source / "ch2bet.nii.gz")).dataobj) > 0
    # crop the 1 mm grid to the brain plus 12 mm (scalp and skull) to keep the dataset small
    head = np.argwhere(brain)
    low = np.maximum(head.min(axis=0) - 12, 0)
    high = np.minimum(head.max(axis=0) + 13, t1.shape)
    t1, brain = (a[tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))]
                 for a in (t1, brain))
    cropped = crop_to_factor(t1, FACTORS)
    start = [lo + (n - c) // 2 for lo, n, c in zip(low, t1.shape, cropped.shape, strict=True)]
    affine = lr_affine(t1_img.affine, start, FACTORS)
    rng = np.random.default_rng(20261122)

    if out.exists():
        shutil.rmtree(out)
    (out / "sub-01" / "anat").mkdir(parents=True)
    subjects = {
        "sub-01/anat/sub-01_T1w.nii.gz": ((0, 0, 0), (0, 0, 0), 1.0),
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz": ((2.0, -1.5, 1.0), (1.5, -2.0, 1.0), 1.5),
        "sub-02/ses-2/anat/sub-02_ses-2_T1w.nii.gz": ((-1.0, 2.5, -2.0), (-2.5, 1.0, 2.0), 2.0),
    }
    sidecar_t1 = {
        "Description": "Colin27 1 mm T1w, Gaussian-blurred (sigma 1 mm) and resampled to 2 mm "
        "by bids_sr's make_demo_dataset.py, with Rician noise; sub-02 also rigidly moved.",
        "MRAcquisitionType": "3D",
    }
    for relative, (degrees, shift, noise) in subjects.items():
        moved = rigid_resample(t1, degrees, shift) if any(degrees) else t1
        lr = degrade(crop_to_factor(moved, FACTORS), FACTORS, "gaussian")
        lr = add_noise(np.clip(lr, 0, None), noise, rng)
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(to_int16_image(lr, affine), str(path))
        write_json(path.with_name(path.name.replace(".nii.gz", ".json")), sidecar_t1)

    t2 = synthetic_t2w(t1, brain)
    t2_lr = add_noise(np.clip(degrade(crop_to_factor(t2, FACTORS), FACTORS, "gaussian"), 0, None),
                      1.0, rng)
    nib.save(to_int16_image(t2_lr, affine), str(out / "sub-01/anat/sub-01_T2w.nii.gz"))
    write_json(
        out / "sub-01/anat/sub-01_T2w.json",
        {
            "Description": "SYNTHETIC T2w-like image: not an acquisition. Made from a 3-class "
            "tissue segmentation of the Colin27 T1w (CSF bright, GM mid, WM dark), blurred "
            "and resampled to 2 mm, with Rician noise.",
            "Synthetic": True,
            "MRAcquisitionType": "3D",
        },
    )

    thick = crop_to_factor(t1, THICK_FACTORS)
    thick_start = [lo + (n - c) // 2 for lo, n, c in zip(low, t1.shape, thick.shape, strict=True)]
    acquisition = simulated_acquisition((1.0, 1.0, 1.0), THICK_FACTORS, thickness=THICK_SLICE_MM)
    thick_lr = add_noise(np.clip(degrade(thick, THICK_FACTORS, "slice", acquisition=acquisition),
                                 0, None), 1.5, rng)  # fmt: skip
    path = out / "sub-03/anat/sub-03_T1w.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(to_int16_image(thick_lr, lr_affine(t1_img.affine, thick_start, THICK_FACTORS)),
             str(path))  # fmt: skip
    write_json(path.with_name("sub-03_T1w.json"), {
        "Description": "Colin27 1 mm T1w as a 2D scan: axial slices 4 mm apart, 3.6 mm thick "
        "(rect profile), 1x1 mm in plane, made by bids_sr's make_demo_dataset.py with the "
        "acquisition model, with Rician noise.",
        "MRAcquisitionType": "2D", "SliceThickness": THICK_SLICE_MM, "SpacingBetweenSlices": 4.0,
    })  # fmt: skip

    write_json(
        out / "dataset_description.json",
        {
            "Name": "bids_sr demo: Colin27 at 2 mm and as a 2D scan",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "License": "Colin27 notice (see README): free use with copyright notice retained",
            "Authors": ["bids_sr developers (derived data)", "Colin Holmes", "Louis Collins"],
            "ReferencesAndLinks": [
                "Holmes CJ et al. J Comput Assist Tomogr 1998;22(2):324-333",
            ],
            "GeneratedBy": [{"Name": "bids_sr make_demo_dataset.py"}],
        },
    )
    (out / "participants.tsv").write_text("participant_id\tsex\tnote\n"
                                          "sub-01\tM\tColin27\n"
                                          "sub-02\tM\tColin27, rigidly moved, two sessions\n"
                                          "sub-03\tM\tColin27, 2D scan: 4 mm axial slices\n")
    write_json(
        out / "participants.json",
        {
            "sex": {"Description": "sex of the participant", "Levels": {"M": "male"}},
            "note": {"Description": "how this participant was derived"},
        },
    )
    (out / "README").write_text(
        "bids_sr demo dataset\n====================\n\nThree participants derived from one "
        "real scan (Colin27) for trying bids_sr quickly. sub-01's and sub-02's T1w are at 2 mm "
        "(the 1 mm original blurred and resampled); sub-02 is the same brain rigidly moved, "
        "with different noise, in two sessions. sub-03's T1w is a clinical-style 2D scan: "
        "axial slices 4 mm apart and 3.6 mm thick, 1x1 mm in plane. sub-01's T2w is "
        "SYNTHETIC (see its sidecar).\n"
        "Regenerate with `python scripts/make_demo_dataset.py`.\n\nSource and copyright\n"
        "--------------------\n\n" + COPYRIGHT + "\n"
    )
    (out / "CHANGES").write_text("1.1.0 2026-12-01\n  - sub-03: a 2D (thick-slice) T1w.\n"
                                 "1.0.0 2026-11-22\n  - Initial demo dataset.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, help="folder with ch2.nii.gz and ch2bet.nii.gz")
    parser.add_argument("--out", type=Path, default=Path("bids_sr/data/demo"))
    args = parser.parse_args()
    make_dataset(find_sources(args.source_dir), args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
