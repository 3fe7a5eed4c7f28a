"""The BIDS App end to end on the demo dataset, and every bad input of issue #2."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO

from bids_sr.bids import run_validator
from bids_sr.image import upsampled_affine


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One participant-level (two methods) + group run on the demo dataset, shared by tests."""
    from bids_sr.cli.run import main

    root = tmp_path_factory.mktemp("demo_run")
    out, work = root / "out", root / "work"
    argv = [str(DEMO), str(out), "participant", "--participant-label", "01", "sub-02",
            "--method", "nearest", "bspline", "--scale", "2", "-w", str(work), "--nprocs", "2"]
    assert main(argv) == 0
    assert main([str(DEMO), str(out), "group"]) == 0
    return out, work, argv


def test_participant_outputs_geometry_and_sidecars(demo_run):
    out, _, _ = demo_run
    images = sorted(out.glob("sub-*/**/anat/*_res-hi_desc-bspline_T1w.nii.gz"))
    assert [p.name for p in images] == [
        "sub-01_res-hi_desc-bspline_T1w.nii.gz",
        "sub-02_ses-1_res-hi_desc-bspline_T1w.nii.gz",
        "sub-02_ses-2_res-hi_desc-bspline_T1w.nii.gz",
    ]
    for image in images:
        source = DEMO / image.relative_to(out).as_posix().replace("_res-hi_desc-bspline", "")
        src = nib.load(source)
        sr = nib.load(image)
        assert sr.shape == tuple(2 * n for n in src.shape)
        np.testing.assert_allclose(sr.affine, upsampled_affine(src.affine, (2, 2, 2)), atol=1e-4)
        assert sr.get_data_dtype() == np.float32
        sidecar = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Sources"] == [f"bids:raw:{source.relative_to(DEMO).as_posix()}"]
        assert sidecar["SkullStripped"] is False
        assert sidecar["OutputVoxelSize"] == [1.0, 1.0, 1.0]
        assert sidecar["Method"] == "bspline" and sidecar["RunTime"] > 0
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert list(out.glob("logs/bids_sr_*.toml"))


def test_derivatives_indexed_by_pybids_and_valid(demo_run):
    from bids.layout import BIDSLayout

    out, _, _ = demo_run
    layout = BIDSLayout(str(DEMO), derivatives=str(out), validate=False)
    found = layout.derivatives["bids_sr"].get(suffix="T1w", desc="bspline", extension=".nii.gz")
    assert len(found) == 3
    assert {f.entities["res"] for f in found} == {"hi"}
    assert run_validator(out) == []


def test_group_summary(demo_run):
    out, _, _ = demo_run
    rows = (out / "group_summary.tsv").read_text().strip().splitlines()
    assert len(rows) == 7 and rows[0].startswith("participant_id\t")  # 3 T1w × 2 methods
    assert "sub-02\tses-2" in rows[5] and "\tbspline\t" in rows[5]
    page = (out / "group_summary.html").read_text()
    assert page.count("data:image/png;base64,") == 6
    assert not list(out.glob("group_desc-evaluation_*"))  # no evaluation tables to aggregate


def test_several_methods_each_write_a_derivative_and_the_report(demo_run):
    out, _, _ = demo_run
    for method in ("nearest", "bspline"):
        images = sorted(out.glob(f"sub-*/**/anat/*_res-hi_desc-{method}_T1w.nii.gz"))
        assert len(images) == 3
        sidecar = json.loads(images[0].with_name(images[0].name[:-7] + ".json").read_text())
        assert sidecar["Method"] == method
    nearest = nib.load(out / "sub-01/anat/sub-01_res-hi_desc-nearest_T1w.nii.gz").get_fdata()
    bspline = nib.load(out / "sub-01/anat/sub-01_res-hi_desc-bspline_T1w.nii.gz").get_fdata()
    assert nearest.shape == bspline.shape and not np.allclose(nearest, bspline)
    # nearest upsampling repeats each input voxel in 2×2×2 blocks
    np.testing.assert_array_equal(nearest[::2, ::2, ::2], nearest[1::2, 1::2, 1::2])
    # one self-contained report per participant, one figure per derivative
    for subject, n_figures in (("sub-01", 2), ("sub-02", 4)):
        page = (out / f"{subject}.html").read_text()
        assert page.count('src="data:image/png;base64,') == n_figures
        assert "desc-nearest" in page and "desc-bspline" in page and "Provenance" in page
        assert "Evaluation metrics" not in page


@pytest.mark.slow
def test_rerun_reuses_work_directory(demo_run):
    from bids_sr.cli.run import main

    out, work, argv = demo_run
    results = sorted(work.rglob("super_resolve/result_super_resolve.pklz"))
    assert len(results) == 6
    before = [p.stat().st_mtime_ns for p in results]
    assert main(argv) == 0
    assert [p.stat().st_mtime_ns for p in results] == before


def test_version_and_help():
    proc = subprocess.run([sys.executable, "-m", "bids_sr", "--version"], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.startswith("bids_sr ")
    proc = subprocess.run([sys.executable, "-m", "bids_sr", "--help"], capture_output=True,
                          text=True, check=True)
    for group in ("Selecting data", "Super-resolution", "Performance and execution"):
        assert group in proc.stdout
    assert "(default: auto)" in proc.stdout


def _assert_clean_failure(code, err, expected_code, fragment, out):
    assert code == expected_code, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert fragment in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, code, fragment",
    [
        (["--participant-label", "07"], 18, "07"),
        (["--session-label", "9"], 18, "9"),
        (["--method", "magic"], 64, "magic"),
        (["--method", "bspline", "magic"], 64, "magic"),
        (["--evaluate", "--output-resolution", "1"], 64, "--output-resolution"),
        (["--derivatives", "."], 64, "--evaluate"),
        (["--method", "fsrcnn", "--scale", "3"], 65, "no shipped weights for fsrcnn"),
        (["--scale", "0.5"], 64, "0.5"),
        (["--scale", "two"], 64, "two"),
        (["--scale", "2", "2"], 64, "three"),
    ],
)
def test_bad_selection_and_options(tmp_path, run_cli, extra, code, fragment):
    out = tmp_path / "out"
    result = run_cli(DEMO, out, "participant", "-w", tmp_path / "w", *extra)
    _assert_clean_failure(*result, code, fragment, out)


def test_missing_and_non_bids_dirs(tmp_path, run_cli):
    out = tmp_path / "out"
    _assert_clean_failure(*run_cli(tmp_path / "nope", out, "participant"), 64, "nope", out)
    (tmp_path / "empty").mkdir()
    _assert_clean_failure(*run_cli(tmp_path / "empty", out, "participant"), 16, "empty", out)


def test_output_equal_to_input_and_unwritable(tmp_path, run_cli, demo_copy):
    code, err = run_cli(demo_copy, demo_copy, "participant")
    assert code == 64 and "must not be the bids_dir" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "out"
    code, err = run_cli(demo_copy, out, "participant", "-w", tmp_path / "w")
    assert code == 73 and str(out) in err and len(err.strip().splitlines()) == 1


def test_participant_without_t1w(tmp_path, run_cli, demo_copy):
    for t1w in (demo_copy / "sub-01" / "anat").glob("sub-01_T1w*"):
        t1w.unlink()
    out = tmp_path / "out"
    result = run_cli(demo_copy, out, "participant", "--participant-label", "01",
                     "--skip-bids-validation", "-w", tmp_path / "w")
    _assert_clean_failure(*result, 66, "no T1w", out)


def _replace_t1w(dataset, data=None, raw_bytes=None):
    target = dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    if raw_bytes is not None:
        target.write_bytes(raw_bytes)
    else:
        nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.diag([2, 2, 2, 1])), target)
    return target


@pytest.mark.parametrize(
    "data, raw_bytes, fragment",
    [
        (np.ones((8, 8, 8, 3)), None, "3D"),
        (np.ones((8, 8)), None, "3D"),
        (np.zeros((8, 8, 8)), None, "all zeros"),
        (np.full((8, 8, 8), np.inf), None, "NaN or Inf"),
        (None, b"\x1f\x8b\x08\x00broken", "cannot read"),
    ],
)
def test_bad_t1w_images(tmp_path, run_cli, demo_copy, data, raw_bytes, fragment):
    _replace_t1w(demo_copy, data, raw_bytes)
    out = tmp_path / "out"
    result = run_cli(demo_copy, out, "participant", "--participant-label", "01",
                     "--skip-bids-validation", "-w", tmp_path / "w")
    _assert_clean_failure(*result, 65, "sub-01_T1w.nii.gz", out)
    assert fragment in result[1]


def test_validation_runs_and_fails_on_broken_dataset(tmp_path, run_cli, demo_copy):
    (demo_copy / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{not json")
    out = tmp_path / "out"
    result = run_cli(demo_copy, out, "participant", "-w", tmp_path / "w")
    _assert_clean_failure(*result, 16, "BIDS validation failed", out)


def test_learned_method_without_weights_stops_before_running(tmp_path, run_cli):
    out = tmp_path / "out"
    result = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method",
                     "espcn", "--scale", "3", "-w", tmp_path / "w")
    _assert_clean_failure(*result, 65, "--weights", out)


@pytest.mark.slow
def test_network_through_cli_with_given_weights(tmp_path, run_cli):
    """A learned method runs end to end with --weights (here an untrained ESPCN file)."""
    import torch

    from bids_sr.models.registry import get_spec
    from bids_sr.models.weights import save_weights

    torch.manual_seed(0)
    spec = get_spec("espcn")
    config = {**spec.default_config, "factors": [2, 2, 2]}
    weights = save_weights(spec.build(config), tmp_path / "espcn_test.safetensors",
                           method="espcn", config=config, factors=(2, 2, 2),
                           card={"note": "untrained, test fixture"})
    out = tmp_path / "out"
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method",
                        "espcn", "--weights", weights, "--device", "cpu", "-w", tmp_path / "w",
                        "--skip-bids-validation")
    assert code == 0, err
    image = out / "sub-01" / "anat" / "sub-01_res-hi_desc-espcn_T1w.nii.gz"
    assert nib.load(image).shape == (168, 204, 168)
    sidecar = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Device"] == "cpu" and len(sidecar["WeightsSha256"]) == 64
