"""``bids_sr-train validate``: the evidence records ``auto`` reads, written into model cards.

A real (small) validation: a centre crop of the held-out chris_T1w with its real affine,
the shipped ×2 gradient filters (copied, so the shipped card stays as it is), the run's own
evaluation protocol; then the record in the card, the record it replaced and the rendered
markdown. Bad input stops before any image is scored, with one line and a BIDS-App code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import centre_crop

from bids_sr.cards.paths import WEIGHTS_DIR
from bids_sr.errors import EXIT_MISSING, EXIT_USAGE
from bids_sr.training.cli import main
from bids_sr.training.validate import (
    VALIDATION,
    record_key,
    summary,
    target_card,
    weightless_card,
)

STEM = "gradfilter_x2x2x2"


def _crop_into(source: Path, target: Path, size: int = 64) -> None:
    """The central ``size``³ block of ``source`` with the affine that keeps it in place."""
    image = nib.load(source)
    data = np.asarray(image.dataobj, dtype=np.float32)
    starts = [(n - size) // 2 for n in data.shape[:3]]
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ np.asarray(starts, float) + image.affine[:3, 3]
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(centre_crop(data, size), affine), target)


@pytest.fixture
def small_shared(tmp_path: Path, shared_data: Path) -> Path:
    """A validation folder laid out as ../shared/data, holding a 64³ crop of chris."""
    folder = tmp_path / "shared"
    relative = VALIDATION["chris"][0]
    _crop_into(shared_data / relative, folder / relative)
    return folder


@pytest.fixture
def weights_copy(tmp_path: Path) -> Path:
    """The shipped ×2 gradient filters and their card, copied to a writable folder."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for suffix in (".safetensors", ".card.json", ".md"):
        shutil.copy2(WEIGHTS_DIR / f"{STEM}{suffix}", folder / f"{STEM}{suffix}")
    return folder / f"{STEM}.safetensors"


@pytest.mark.shared_data
def test_validate_writes_a_record_replacing_the_same_setting(
        small_shared: Path, weights_copy: Path, capsys: pytest.CaptureFixture[str]):  # fmt: skip
    card_file = weights_copy.with_name(f"{STEM}.card.json")
    before = json.loads(card_file.read_text())
    argv = ["validate", str(weights_copy), "--degradation", "gaussian", "--scale", "2",
            "--images", "chris", "--shared", str(small_shared), "--write"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    prefix = f"[1/1] {STEM}.safetensors chris ×2x2x2 gaussian"
    assert f"{prefix}: evaluating gradfilter..." in out  # progress before the image
    assert f"{prefix}: gradfilter " in out and " dB, bspline " in out

    card = json.loads(card_file.read_text())
    new = [r for r in card["evidence"] if r["command"].startswith("bids_sr-train validate ")]
    assert len(new) == 1
    record = new[0]
    assert record["command"] == "bids_sr-train validate " + " ".join(argv[1:])
    assert record_key(record) == ("isotropic", "gaussian", (2.0, 2.0, 2.0), None, None)
    # the shipped record of the same setting is replaced, not kept beside the new one
    assert len(card["evidence"]) == len(before["evidence"])
    assert [record_key(r) for r in card["evidence"]].count(record_key(record)) == 1
    assert set(record["gain_over_bspline"]) == {"chris"}
    assert record["gain_over_bspline"]["chris"] == pytest.approx(
        record["psnr_brain"]["chris"] - record["psnr_brain_bspline"]["chris"], abs=2e-3)
    assert record["data_consistency"] is True and "summary_over_bspline" not in record
    assert card["validation_subjects"] == sorted(set(before["validation_subjects"]) | {"chris"})
    markdown = weights_copy.with_name(f"{STEM}.md").read_text()
    assert "## Evidence `auto` reads (bids_sr-train validate)" in markdown
    # the printed record is the stored one
    printed = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert printed == record


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["no_such.safetensors"], EXIT_USAGE, "no_such.safetensors: no such weights file"),
        (["selfsr", "--images", "chris", "nope"], EXIT_USAGE,
         "unknown validation image(s) nope; choose from chris, openms19, mni152, ixi"),
        (["selfsr", "--shared", "{tmp}/empty"], EXIT_MISSING,
         "chris: {tmp}/empty/real_t1/chris_T1w.nii.gz not found"),
        (["selfsr", "--scale", "1", "3"], EXIT_USAGE, "--scale takes one factor or three, got 2"),
    ],
    ids=["unknown-target", "unknown-image", "missing-image", "two-factors"],
)
def test_bad_input_is_one_line_and_a_bids_app_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args, code, message):  # fmt: skip
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--scale" not in args:
        args += ["--scale", "1", "1", "3"]
    assert main(["validate", *args, "--degradation", "slice", "--write"]) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bids_sr-train validate: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]
    assert "evaluating" not in captured.out  # stopped before scoring anything


def test_weightless_target_starts_from_an_empty_card(tmp_path: Path):
    card_file, card, weights = target_card(Path("selfsr-t2w"), weights_dir=tmp_path)
    assert card_file == tmp_path / "selfsr-t2w.card.json" and weights is None
    assert card == weightless_card("selfsr-t2w")
    assert card["weights"] is None and card["reference_suffix"] == "T2w" and card["needs_t2w"]
    assert card["evidence"] == [] and card["validation_subjects"] == sorted(VALIDATION)


def test_summary_over_many_images():
    from bids_sr.reports.group import mean_ci

    gains = {"a": 0.5, "b": 0.9, "c": 0.1, "d": 0.7}
    result = summary(gains)
    mean, low, high = mean_ci(list(gains.values()))
    assert result == {"n": 4, "mean": round(mean, 3), "worst": 0.1, "worst_image": "c",
                      "ci95": [round(low, 3), round(high, 3)]}  # fmt: skip
    assert "ci95" not in summary({"a": 0.5})


def test_train_help_points_to_validate(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    text = capsys.readouterr().out
    for option in ("--degradation", "--scale", "--thickness-ratio", "--profile", "--images",
                   "--ixi-count", "--shared", "--device", "--write", "--model-dir"):
        assert option in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "bids_sr-train validate --help" in capsys.readouterr().out
