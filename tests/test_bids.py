"""BIDS naming, selection and metadata."""

import json
from pathlib import Path

import pytest
from conftest import DEMO

from bids_sr.bids import (
    bids_uri,
    check_dataset,
    collect_t1w,
    dataset_description,
    derivative_path,
    load_layout,
    query_images,
    select_participants,
)
from bids_sr.errors import EXIT_MISSING, EXIT_NO_FILES, EXIT_VALIDATION, BIDSError


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "sub-01/ses-1/anat/sub-01_ses-1_acq-mprage_T1w.nii.gz",
            "sub-01/ses-1/anat/sub-01_ses-1_acq-mprage_res-hi_desc-bspline_T1w.nii.gz",
        ),
        (
            "sub-02/anat/sub-02_acq-fast_ce-gad_rec-norm_run-2_T1w.nii",
            # images are always written compressed: the name says so
            "sub-02/anat/sub-02_acq-fast_ce-gad_rec-norm_run-2_res-hi_desc-bspline_T1w.nii.gz",
        ),
        (
            "sub-03/anat/sub-03_desc-old_T1w.nii.gz",
            "sub-03/anat/sub-03_res-hi_desc-bspline_T1w.nii.gz",
        ),
    ],
)
def test_derivative_names_keep_entities(source, expected):
    assert derivative_path(source, desc="bspline").as_posix() == expected


def test_bids_uri_and_description(tmp_path):
    description = {"Name": "x", "BIDSVersion": "1.8.0"}
    (tmp_path / "dataset_description.json").write_text(json.dumps(description))
    uri = bids_uri(tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz", tmp_path)
    assert uri == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"
    desc = dataset_description(tmp_path)
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bids_sr"
    assert desc["DatasetLinks"]["raw"].startswith("file://")


def test_selection_on_demo():
    assert select_participants(DEMO, None) == ["01", "02", "03"]
    assert select_participants(DEMO, ["sub-02", "02"]) == ["02"]
    with pytest.raises(BIDSError) as info:
        select_participants(DEMO, ["07"])
    assert info.value.code == EXIT_NO_FILES and "07" in str(info.value)
    layout = load_layout(DEMO, ["02"])
    files = collect_t1w(layout, ["02"])["02"]
    assert [Path(f).name for f in files] == ["sub-02_ses-1_T1w.nii.gz", "sub-02_ses-2_T1w.nii.gz"]
    assert query_images(layout, "02", "T1w", sessions=["2"])[0].endswith("ses-2_T1w.nii.gz")
    # sub-01 is not indexed when only sub-02 was asked for
    assert layout.get(subject="01") == []


def test_participant_without_t1w(tmp_path):
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    (tmp_path / "sub-05" / "anat").mkdir(parents=True)
    (tmp_path / "sub-05" / "anat" / "sub-05_FLAIR.nii.gz").write_bytes(b"")
    layout = load_layout(tmp_path, ["05"], validate=False)
    with pytest.raises(BIDSError) as info:
        collect_t1w(layout, ["05"])
    assert info.value.code == EXIT_MISSING and "sub-05" in str(info.value)


def test_not_a_dataset(tmp_path):
    with pytest.raises(BIDSError) as info:
        check_dataset(tmp_path)
    assert info.value.code == EXIT_VALIDATION and "dataset_description.json" in str(info.value)


def test_participant_without_t1w_is_skipped_when_others_have_one(tmp_path, caplog):
    """A FLAIR-only participant of a clinical dataset: said in the log, the others go on."""
    import shutil

    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    (tmp_path / "sub-05" / "anat").mkdir(parents=True)
    (tmp_path / "sub-05" / "anat" / "sub-05_FLAIR.nii.gz").write_bytes(b"")
    (tmp_path / "sub-06" / "anat").mkdir(parents=True)
    demo_t1w = DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    shutil.copy(demo_t1w, tmp_path / "sub-06" / "anat" / "sub-06_T1w.nii.gz")
    layout = load_layout(tmp_path, ["05", "06"], validate=False)
    found = collect_t1w(layout, ["05", "06"])
    assert list(found) == ["06"]
    assert "sub-05: participant has no T1w image; skipped" in caplog.text
