"""A 2D (thick-slice) T1w end to end: acquisition model options, data consistency, auto."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO

from bids_sr.acquisition import Acquisition, project
from bids_sr.recipes import SelfSRRecipe
from bids_sr.selfsr.store import checksum


@pytest.fixture(scope="module")
def thick_dataset(tmp_path_factory) -> Path:
    """The demo's sub-01 T1w (2 mm) acquired as 6 mm axial slices (2×2×6 mm)."""
    root = tmp_path_factory.mktemp("thick") / "bids"
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    for name in ("dataset_description.json", "README", "participants.tsv"):
        shutil.copy(DEMO / name, root / name)
    (root / "participants.tsv").write_text("participant_id\nsub-01\n")
    source = nib.load(DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    data = np.asarray(source.dataobj, dtype=np.float32)[:, :, :84]
    acquisition = Acquisition(spacing=(2.0, 2.0, 6.0), slice_axis=2, thickness=6.0)
    lr = project(data, acquisition, (data.shape[0], data.shape[1], 28))
    affine = source.affine.copy()
    affine[:3, 2] *= 3
    nib.save(nib.Nifti1Image(lr, affine), anat / "sub-01_T1w.nii.gz")
    (anat / "sub-01_T1w.json").write_text(json.dumps({"SliceThickness": 6.0}))
    return root


@pytest.mark.slow
def test_thick_slice_default_run_is_consistent_with_the_input(thick_dataset, tmp_path, run_cli):
    out = tmp_path / "out"
    code, err = run_cli(thick_dataset, out, "participant", "--output-resolution", "2",
                        "--skip-bids-validation", "-w", tmp_path / "w", "--plugin", "Linear")
    assert code == 0, err
    # the image (and, when auto chose selfsr, its uncertainty map beside it)
    sidecars = [p for p in out.glob("sub-01/anat/*_T1w.json") if "Uncertainty" not in p.name]
    assert len(sidecars) == 1
    meta = json.loads(sidecars[0].read_text())
    assert meta["AcquisitionModel"] == "slice" and meta["InputSliceAxis"] == 2
    assert meta["InputSliceThickness"] == 6.0 and meta["InputSliceGap"] == 0.0
    assert meta["DataConsistencyPSNR"] >= 40 > meta["DataConsistencyPSNRBefore"] - 20
    assert meta["OutputVoxelSize"] == pytest.approx([2.0, 2.0, 2.0])
    assert "auto chose" in meta["MethodChoice"]
    page = (out / "sub-01.html").read_text()
    assert f"returns the input: {meta['DataConsistencyPSNR']} dB" in page
    # projected back through the same acquisition model, the output returns the input
    sr = nib.load(sidecars[0].with_name(sidecars[0].name.replace(".json", ".nii.gz")))
    lr = nib.load(thick_dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz").get_fdata()
    back = project(sr.get_fdata().astype(np.float32), Acquisition((2, 2, 6), 2, 6.0), lr.shape)
    head = lr > 0.1 * np.percentile(lr[lr > 0], 99)
    assert np.abs(back - lr)[head].max() < 0.01 * lr.max()


def test_no_data_consistency_reports_without_correcting(thick_dataset, tmp_path, run_cli):
    out = tmp_path / "out"
    code, err = run_cli(thick_dataset, out, "participant", "--output-resolution", "2",
                        "--method", "bspline", "--no-data-consistency",
                        "--skip-bids-validation", "-w", tmp_path / "w", "--plugin", "Linear")
    assert code == 0, err
    meta = json.loads(next(out.glob("sub-01/anat/*_T1w.json")).read_text())
    assert meta["DataConsistency"] is False and meta["DataConsistencyPSNR"] < 40
    assert "DataConsistencyPSNRBefore" not in meta


@pytest.mark.parametrize(
    "options,message",
    [
        (["--slice-thickness", "0"], "--slice-thickness must be positive"),
        (["--slice-thickness", "-3"], "--slice-thickness must be positive"),
        (["--slice-thickness", "19"], "more than 3× the slice spacing"),
        (["--slice-profile", "sinc"], "invalid choice: 'sinc'"),
        (["--slice-gap", "1"], "--slice-gap is used only with --evaluate"),
    ],
)
def test_impossible_slice_options_stop_before_anything_is_written(
    thick_dataset, tmp_path, run_cli, options, message
):
    out = tmp_path / "out"
    code, err = run_cli(thick_dataset, out, "participant", "--skip-bids-validation",
                        "--output-resolution", "2", *options)  # fmt: skip
    assert code == 64, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_slice_thickness_on_an_isotropic_image_is_a_usage_error(tmp_path, run_cli):
    out = tmp_path / "out"
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "01",
                        "--skip-bids-validation", "--slice-thickness", "3")  # fmt: skip
    assert code == 64 and "sub-01_T1w.nii.gz" in err and "no coarse slice axis" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_selfsr_end_to_end_writes_its_uncertainty_map_and_reuses_its_model(
    thick_dataset, tmp_path, run_cli
):
    work = tmp_path / "w"
    args = [thick_dataset, tmp_path / "out", "participant", "--output-resolution", "2",
            "--method", "selfsr", "--skip-bids-validation", "-w", work, "--plugin", "Linear",
            "--random-seed", "3"]  # fmt: skip
    code, err = run_cli(*args)
    assert code == 0, err
    anat = tmp_path / "out" / "sub-01" / "anat"
    sr_file = anat / "sub-01_res-hi_desc-selfsr_T1w.nii.gz"
    map_file = anat / "sub-01_res-hi_desc-selfsrUncertainty_T1w.nii.gz"
    meta = json.loads(sr_file.with_name("sub-01_res-hi_desc-selfsr_T1w.json").read_text())
    assert meta["Method"] == "selfsr" and meta["DataConsistencyPSNR"] >= 40
    assert len(meta["WeightsSha256"]) == 64 and meta["ModelReused"] is False
    # the shipped cohort prior it fine-tuned at ×3 (bids_sr/data/weights, selfsr_prior)
    assert meta["Prior"] == "selfsr_fast_prior_mid.safetensors" and len(meta["PriorSha256"]) == 64
    # the per-scan model is kept in the work directory (reused by a rerun) and the sidecar
    # identifies it by checksum, not by a path there (users delete work directories)
    assert str(work) not in meta["Weights"] and "per-scan model" in meta["Weights"]
    kept = {checksum(path) for path in (work / "selfsr_models").rglob("*.safetensors")}
    assert meta["WeightsSha256"] in kept
    sr, unc = nib.load(sr_file), nib.load(map_file)
    assert unc.shape == sr.shape == (84, 102, 84)
    np.testing.assert_allclose(unc.affine, sr.affine)
    values = unc.get_fdata()
    assert values.min() >= 0 and values.max() > 0
    map_meta = json.loads(map_file.with_name(map_file.name.replace(".nii.gz", ".json")).read_text())
    assert "half the absolute difference" in map_meta["Description"]
    # the data-consistency score is the super-resolved image's, not the map's
    assert "DataConsistencyPSNR" not in map_meta and map_meta["Method"] == "selfsr"
    # another setting reruns the node: the per-scan model is found in the work directory
    code, err = run_cli(*args, "--no-data-consistency")
    assert code == 0, err
    again = json.loads(sr_file.with_name("sub-01_res-hi_desc-selfsr_T1w.json").read_text())
    assert again["ModelReused"] is True and again["WeightsSha256"] == meta["WeightsSha256"]


@pytest.mark.slow
def test_guided_selfsr_end_to_end_shows_what_the_t2w_contributed(
    thick_dataset, tmp_path, run_participant_with
):
    """``--method selfsr-t2w`` on the 2×2×6 mm T1w with the demo's 2 mm T2w (finer along
    the slice axis): registered, guided, compared with its mono twin selfsr, mapped (both
    per-scan networks at 120 steps: the wiring is tested here, the gain in test_selfsr_guided).
    At 120 steps from the shipped prior the guide lowers the scan's own error by about 3 %
    (0.723 against 0.747 of B-spline's), past the guide check's 1 % threshold; at 60 steps it
    did not (0.767 against 0.765), and the output was selfsr's."""
    budget = SelfSRRecipe(max_iterations=120)
    root = tmp_path / "bids"
    shutil.copytree(thick_dataset, root)
    for name in ("sub-01_T2w.nii.gz", "sub-01_T2w.json"):
        shutil.copy(DEMO / "sub-01" / "anat" / name, root / "sub-01" / "anat" / name)
    out, work = tmp_path / "out", tmp_path / "w"
    code, err = run_participant_with(root, out, "participant", "--output-resolution", "2",
                                     "--method", "selfsr-t2w", "--skip-bids-validation", "-w",
                                     work, "--plugin", "Linear",
                                     selfsr_recipe=budget)  # fmt: skip
    assert code == 0, err
    anat = out / "sub-01" / "anat"
    meta = json.loads((anat / "sub-01_res-hi_desc-selfsrT2w_T1w.json").read_text())
    assert meta["Method"] == "selfsr-t2w" and "FallbackFrom" not in meta
    # the run's recipe reached the node and the sidecar records it
    assert meta["RecipeSha256"] == budget.sha256 and meta["Recipe"]["MaxIterations"] == 120
    check = meta["GuideCheck"]  # the guide lowered the error on the scan's own slices
    assert check["Used"] is True and check["GuidedL1Ratio"] < check["MonoL1Ratio"]
    assert meta["T2wReference"] == "bids:raw:sub-01/anat/sub-01_T2w.nii.gz"
    assert meta["RegistrationUsable"] is True and meta["DataConsistencyPSNR"] >= 40
    twin = meta["GuidedMinusMono"]
    assert twin["MonoModel"] == "selfsr" and "Problem" not in twin
    assert twin["MonoWeights"] != meta["Weights"]  # two per-scan models, both kept
    assert 0 < twin["MeanAbsDifferencePercent"] < 100
    for desc in ("selfsrT2wUncertainty", "selfsrT2wGuidedMinusMono"):
        assert (anat / f"sub-01_res-hi_desc-{desc}_T1w.nii.gz").is_file(), desc
        map_meta = json.loads((anat / f"sub-01_res-hi_desc-{desc}_T1w.json").read_text())
        assert "DataConsistencyPSNR" not in map_meta, desc
    page = (out / "sub-01.html").read_text()
    assert "What the reference contributed" in page and "T2w registration" in page


def test_the_sidecar_says_what_a_per_scan_model_is():
    """``Weights`` of a per-scan method names what its model is, not a work-dir path;
    ``selfsr-fast`` learned nothing from the scan: its model is the shipped prior."""
    from bids_sr.interfaces.bids import weights_field

    kept = "/scratch/w/selfsr_models/selfsr-cnn-0123.safetensors"
    assert weights_field("srrecnn", "/x/srrecnn_x2x2x2.safetensors").endswith("x2.safetensors")
    trained = weights_field("selfsr", kept)
    assert "learned by selfsr from this image" in trained and "/scratch" not in trained
    fast = weights_field("selfsr-fast", kept)
    assert "no per-scan training" in fast and "learned" not in fast and "/scratch" not in fast


@pytest.mark.slow
def test_a_scan_of_6p5_mm_slices_at_0p5_mm_in_plane_gets_the_per_scan_method(tmp_path, run_cli):
    """A 0.5×0.5×6.5 mm 2D T1w (×13 to its in-plane size, the issue-40 case; the demo's 2 mm
    sub-01 resampled to 0.5 mm in-plane over a 40 mm × 40 mm field of view and acquired as
    6.5 mm slices) is brought to 0.5 mm isotropic by ``auto`` with ``selfsr`` (at ×13 its
    card shows a gain on every image, from the thick prior), over the input's field of view;
    the output projected back through the acquisition model returns the input."""
    from scipy import ndimage

    root = tmp_path / "bids"
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    shutil.copy(DEMO / "dataset_description.json", root)
    source = nib.load(DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    crop = np.asarray(source.dataobj, dtype=np.float32)[22:42, 40:60, 12:51]  # 40×40×78 mm
    fine = ndimage.zoom(crop, (4, 4, 4), order=1)  # 0.5 mm grid: 80×80×156
    acquisition = Acquisition(spacing=(0.5, 0.5, 6.5), slice_axis=2, thickness=6.5)
    lr = project(fine, acquisition, (80, 80, 12))
    affine = source.affine.copy()
    affine[:3, :3] = source.affine[:3, :3] / 4
    affine[:3, 3] = source.affine[:3, :3] @ (22 - 0.375, 40 - 0.375, 12 - 0.375) + affine[:3, 3]
    affine[:3, 3] += affine[:3, 2] * 6  # the first slice's centre: 6.5 mm slab, 0.5 mm voxels
    affine[:3, 2] *= 13
    nib.save(nib.Nifti1Image(lr, affine), anat / "sub-01_T1w.nii.gz")
    out = tmp_path / "out"
    code, err = run_cli(root, out, "participant", "--skip-bids-validation", "-w",
                        tmp_path / "w", "--plugin", "Linear")  # fmt: skip
    assert code == 0, err
    sidecar = out / "sub-01" / "anat" / "sub-01_res-hi_desc-selfsr_T1w.json"
    meta = json.loads(sidecar.read_text())
    assert meta["Method"] == "selfsr" and "×1x1x13" in meta["MethodChoice"], meta
    assert meta["Prior"] == "selfsr_fast_prior_thick.safetensors"
    assert meta["OutputVoxelSize"] == pytest.approx([0.5, 0.5, 0.5])
    sr = nib.load(sidecar.with_suffix("").with_suffix(".nii.gz"))
    assert sr.shape == (80, 80, 156)
    # the output's first plane is centred 3 mm before the first slice's centre
    np.testing.assert_allclose(sr.affine[:3, 3], affine[:3, 3] - affine[:3, 2] / 13 * 6,
                               atol=1e-4)  # fmt: skip
    back = project(sr.get_fdata().astype(np.float32), acquisition, lr.shape)
    head = lr > 0.1 * np.percentile(lr[lr > 0], 99)
    assert np.abs(back - lr)[head].max() < 0.01 * lr.max()
