"""--combine-runs end to end: the demo T1w acquired as an axial and a sagittal 2D scan."""

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO

from bids_sr.acquisition import Acquisition, project
from bids_sr.image import upsampled_affine

FACTOR = 3
RUNS = {"ax": 2, "sag": 0}  # acq- label → slice axis


def _write_scan(truth: nib.Nifti1Image, axis: int, path: Path, shift_mm: float = 0.0) -> None:
    """``truth`` acquired as 2D slices along ``axis`` (FACTOR × its voxel size, rect)."""
    data = np.asarray(truth.dataobj, dtype=np.float32)
    factors = [1, 1, 1]
    factors[axis] = FACTOR
    data = data[tuple(slice(0, n - n % f) for n, f in zip(data.shape, factors))]
    spacing = tuple(2.0 * f for f in factors)
    lr = project(data, Acquisition(spacing, axis, spacing[axis]),
                 [n // f for n, f in zip(data.shape, factors)])  # fmt: skip
    affine = truth.affine @ np.linalg.inv(upsampled_affine(np.eye(4), factors))
    affine[:3, 3] += shift_mm
    nib.save(nib.Nifti1Image(lr, affine), path)
    path.with_name(path.name.replace(".nii.gz", ".json")).write_text(
        json.dumps({"SliceThickness": spacing[axis]})
    )


def _dataset(root: Path, far_sagittal: bool = False) -> Path:
    """sub-01: an axial and a sagittal scan of the demo T1w; sub-02: one axial scan only."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dataset_description.json", "README"):
        shutil.copy(DEMO / name, root / name)
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    # the demo T1w's central 60×78×60 voxels (2 mm): the brain, small enough for seconds
    truth = nib.load(DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz").slicer[12:72, 12:90, 12:72]
    for subject, runs in (("01", RUNS), ("02", {"ax": 2})):
        anat = root / f"sub-{subject}" / "anat"
        anat.mkdir(parents=True)
        for label, axis in runs.items():
            shift = 500.0 if far_sagittal and label == "sag" else 0.0
            _write_scan(truth, axis, anat / f"sub-{subject}_acq-{label}_T1w.nii.gz", shift)
    return root


@pytest.fixture(scope="module")
def combined_run(tmp_path_factory):
    """One run of ``--method bspline --combine-runs`` on the two-run dataset."""
    from bids_sr.cli.run import main

    base = tmp_path_factory.mktemp("combine")
    bids = _dataset(base / "bids")
    out = base / "out"
    logger = logging.getLogger("bids_sr")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        code = main([str(bids), str(out), "participant", "--method", "bspline",
                     "--combine-runs", "--output-resolution", "2", "--skip-bids-validation",
                     "-w", str(base / "work"), "--plugin", "Linear", "--nprocs", "1"])  # fmt: skip
    finally:
        logger.removeHandler(handler)
    return code, bids, out, [r.getMessage() for r in records]


def test_combination_is_written_with_a_sensible_sidecar(combined_run):
    code, bids, out, _ = combined_run
    assert code == 0
    image = out / "sub-01" / "anat" / "sub-01_res-hi_desc-bsplineCombined_T1w.nii.gz"
    meta = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
    assert meta["Sources"] == [f"bids:raw:sub-01/anat/sub-01_acq-{label}_T1w.nii.gz"
                               for label in sorted(RUNS)]  # fmt: skip
    assert meta["SpatialReference"] == "bids:raw:sub-01/anat/sub-01_acq-ax_T1w.nii.gz"
    assert meta["Method"] == "bspline"
    assert meta["CombinationReference"] == "sub-01_acq-ax_T1w.nii.gz"
    runs = {r["Run"]: r for r in meta["CombinedRuns"]}
    assert set(runs) == {f"sub-01_acq-{label}_T1w.nii.gz" for label in RUNS}
    for record in runs.values():
        assert record["Used"] and record["AcquisitionModel"] == "slice"
        assert record["DataConsistencyPSNR"] >= 40 > record["DataConsistencyPSNRAverage"]
    sagittal = runs["sub-01_acq-sag_T1w.nii.gz"]
    assert sagittal["InputSliceAxis"] == 0 and sagittal["RegistrationUsable"]
    assert sagittal["RegistrationTransform"]["TranslationMM"] is not None
    # on the axial run's output grid (its super-resolved derivative's geometry)
    axial = nib.load(out / "sub-01" / "anat" / "sub-01_acq-ax_res-hi_desc-bspline_T1w.nii.gz")
    result = nib.load(image)
    assert result.shape == axial.shape
    np.testing.assert_allclose(result.affine, axial.affine, atol=1e-5)
    # sharper than the axial run alone: it reproduces the sagittal scan far better
    sag_lr = nib.load(bids / "sub-01" / "anat" / "sub-01_acq-sag_T1w.nii.gz")
    sag_acq = Acquisition((2.0 * FACTOR, 2.0, 2.0), 0, 2.0 * FACTOR)

    def sagittal_error(data: np.ndarray) -> float:
        back = project(data.astype(np.float32), sag_acq, sag_lr.shape)
        return float(np.abs(back - sag_lr.get_fdata()).mean())

    assert sagittal_error(result.get_fdata()) < 0.5 * sagittal_error(axial.get_fdata())


def test_single_run_session_warns_and_is_not_combined(combined_run):
    code, _, out, messages = combined_run
    assert code == 0
    assert any("sub-02_acq-ax_T1w.nii.gz: --combine-runs: the only T1w" in m for m in messages)
    assert list((out / "sub-02" / "anat").glob("*Combined*")) == []
    assert len(list((out / "sub-02" / "anat").glob("*desc-bspline_T1w.nii.gz"))) == 1


def test_report_has_a_row_for_the_combination(combined_run):
    _, _, out, _ = combined_run
    page = (out / "sub-01.html").read_text()
    assert "sub-01_res-hi_desc-bsplineCombined_T1w.nii.gz" in page
    assert "<h3>Combined runs</h3>" in page and "DC combined (dB)" in page


def test_runs_that_do_not_overlap_stop_with_one_line(tmp_path, run_cli):
    bids = _dataset(tmp_path / "bids", far_sagittal=True)
    out = tmp_path / "out"
    code, err = run_cli(bids, out, "participant", "--participant-label", "01", "--method",
                        "bspline", "--combine-runs", "--output-resolution", "2",
                        "--skip-bids-validation", "-w", tmp_path / "w", "--plugin", "Linear")
    lines = [line for line in err.strip().splitlines() if line.startswith("bids_sr: error")]
    assert code == 65, err
    assert len(lines) == 1 and "sub-01_acq-sag_T1w.nii.gz" in lines[0]
    assert "do not overlap" in lines[0]
    assert list(out.glob("sub-01/anat/*Combined*")) == []


def test_combine_runs_is_refused_in_evaluation_mode(tmp_path, run_cli):
    code, err = run_cli(DEMO, tmp_path / "out", "participant", "--evaluate", "--combine-runs")
    assert code == 64 and "--combine-runs" in err
