"""scripts/pretrain_selfsr.py as a user runs it: training images read from a shared-data
folder, ``--exclude`` leaves some out and the card says which were used."""

from __future__ import annotations

import importlib.util
import json

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO
from scipy import ndimage

SCRIPT = REPO / "scripts" / "pretrain_selfsr.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("pretrain_selfsr", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shared(tmp_path, script):
    """A shared-data folder holding a small head-like image at every training path and at
    every path of a real reference (--guided)."""
    rng = np.random.default_rng(0)
    paths = [relative for relative, _ in script.TRAINING.values()]
    paths += [relative for group in script.REFERENCES.values() for relative in group]
    for index, relative in enumerate(paths):
        volume = ndimage.gaussian_filter(rng.random((24, 24, 24)), 2.0) * 1000.0
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        affine[:3, 3] = [-12.0, -12.0, -12.0 + index]
        path = tmp_path / "shared" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), path)
    return tmp_path / "shared"


def test_exclude_leaves_a_training_image_out_and_the_card_says_so(script, shared, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code = script.main(["--steps", "5", "--acquisitions", "1", "--width", "8", "--depth", "2",
                        "--unshuffle", "1", "--exclude", "mni152", "--shared", str(shared),
                        "--out", str(out)])  # fmt: skip
    assert code == 0
    card = json.loads((out / "selfsr_prior.card.json").read_text())
    assert card["training_subjects"] == ["colin27", "brainchop", "openms07"]
    assert card["excluded_subjects"] == ["mni152"]
    assert [p["participant_id"] for p in card["data"]["participants"]] == card["training_subjects"]
    assert len(card["acquisitions"]) == 3  # one per image used
    subjects = (out / "selfsr_prior.md").read_text().split("training subjects:")[1].split(";")[0]
    assert subjects.strip() == "colin27, brainchop, openms07"


def test_excluding_every_training_image_is_refused(script, shared, tmp_path, capsys):
    code = script.main(["--exclude", *script.TRAINING, "--shared", str(shared),
                        "--out", str(tmp_path)])  # fmt: skip
    assert code != 0 and "no training image left" in capsys.readouterr().err
    assert not (tmp_path / "selfsr_prior.safetensors").exists()


def test_guided_pretraining_reads_real_references_and_writes_its_own_prior(
    script, shared, tmp_path
):
    """--guided writes selfsr_guided_prior (never the unguided prior): three inputs, the
    real references it read, and the guide each acquisition got, in the card."""
    from bids_sr.selfsr.store import load_model

    out = tmp_path / "out"
    out.mkdir()
    code = script.main(["--guided", "--steps", "3", "--acquisitions", "2", "--width", "8",
                        "--depth", "2", "--unshuffle", "1", "--exclude", "mni152", "--shared",
                        str(shared), "--out", str(out)])  # fmt: skip
    assert code == 0 and not (out / "selfsr_prior.safetensors").exists()
    card = json.loads((out / "selfsr_guided_prior.card.json").read_text())
    tensors, _ = load_model(out / "selfsr_guided_prior.safetensors")
    assert tensors["body.0.weight"].shape[1] == 3  # image, phase, guide
    assert card["guides"]["real"] == {"colin27": [], "brainchop": [],
                                      "openms07": list(script.REFERENCES["openms07"])}
    assert len(card["acquisitions"]) == 6 and all("guide" in a for a in card["acquisitions"])
    assert "mni152" not in card["training_subjects"]


def test_guided_pretraining_without_a_reference_file_stops_with_its_name(
    script, shared, tmp_path, capsys
):
    missing = shared / script.REFERENCES["openms07"][1]
    missing.unlink()
    code = script.main(["--guided", "--steps", "3", "--shared", str(shared),
                        "--out", str(tmp_path)])  # fmt: skip
    assert code == 66 and f"{missing}: training image missing" in capsys.readouterr().err
    assert not list(tmp_path.glob("selfsr_guided_prior*"))


def test_ixi_pretrains_the_cohort_prior_on_the_pretraining_part_only(script, shared, tmp_path):
    """--ixi N adds the IXI pool's pretraining subjects (never its validation ones) and
    writes the selfsr-fast prior, whose card lists them with the pool's licence."""
    from bids_sr.training.splits import split_subjects

    rng = np.random.default_rng(1)
    pool = [f"IXI{n:03d}" for n in range(100, 134)]  # 34 subjects: 4 pretrain, 30 validate
    for subject in pool:
        volume = ndimage.gaussian_filter(rng.random((24, 24, 24)), 2.0) * 100.0
        path = shared / "ixi_t1_2mm" / f"{subject}-HH-1000_T1.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    pretraining, validation = split_subjects(pool)
    out = tmp_path / "out"
    out.mkdir()
    code = script.main(["--steps", "3", "--acquisitions", "1", "--width", "8", "--depth", "2",
                        "--unshuffle", "1", "--exclude", "mni152", "--ixi", "1",
                        "--max-factor", "8", "--shared", str(shared), "--out", str(out)])
    assert code == 0
    card = json.loads((out / "selfsr_fast_prior.card.json").read_text())
    assert card["method"] == "selfsr-fast" and card["degradation"]["factor"] == [2.0, 8.0]
    ixi = [s for s in card["training_subjects"] if s.startswith("IXI")]
    assert ixi == pretraining and not set(ixi) & set(validation)
    assert len(card["acquisitions"]) == 3 + len(pretraining)
    assert (out / "selfsr_fast_prior.safetensors").is_file()
    # its evidence is selfsr-fast's (the prior applied as it is), on the IXI validation part too
    assert "selfsr-fast.card.json" in card["validation_note"]
    assert card["validation_subjects"][-1] == "the IXI pool's validation part"
