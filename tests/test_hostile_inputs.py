"""Inputs and arguments a careful or hostile user tries (issue 43, items 7 and 9–15): each is
refused up front in one line naming the file, or run with a warning that the log and the
output sidecar both carry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO, REPO

SUB01_T1W = "sub-01/anat/sub-01_T1w.nii.gz"


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("bids_sr: error:")]


def _refused(result, code: int, *fragments: str, out: Path) -> str:
    """The run stopped before writing anything, with one error line holding ``fragments``."""
    got, err = result
    assert got == code, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bids_sr: error: "), err
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert "Traceback" not in err and not out.exists()
    return lines[0]


def _replace_data(path: Path, data: np.ndarray) -> None:
    """Rewrite the image at ``path`` with ``data`` (its own dtype), keeping the affine."""
    img = nib.load(path)
    nib.save(nib.Nifti1Image(data, img.affine), path)


def _bspline(run_cli, bids_dir: Path, out: Path, work: Path, label: str, *extra):
    return run_cli(bids_dir, out, "participant", "--participant-label", label, "--method",
                   "bspline", "-w", work, "--skip-bids-validation", *extra)  # fmt: skip


# ----------------------------------------------------------------- 7. a node fails

# a method whose output is NaN (interpolation patched before the forked workers start)
_FAILING_NODE_SCRIPT = """
import sys
import numpy as np
from bids_sr import superresolve
from bids_sr.image import hr_shape

def nan_interpolate(lr, factors, method):
    return np.full(hr_shape(lr.shape, factors), np.nan, dtype=np.float32)

superresolve.interpolate = nan_interpolate
from bids_sr.cli.run import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_failed_node_is_one_line_on_the_console_and_its_traceback_is_in_the_log(tmp_path):
    """Before: Nipype printed the traceback three times (80–110 lines, on stdout and stderr)
    before the one line, which did not name the input."""
    out = tmp_path / "out"
    argv = [DEMO, out, "participant", "--participant-label", "01", "--method", "nearest",
            "-w", tmp_path / "w", "--nprocs", "2", "--skip-bids-validation"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", _FAILING_NODE_SCRIPT, *map(str, argv)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert proc.returncode == 65, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console and "could not run node" not in console, console
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "ERROR" not in console, console
    assert "NaN or Inf" in errors[0] and str(DEMO / SUB01_T1W) in errors[0], errors[0]
    crash = Path(errors[0].split("crash file ")[1].rstrip(")"))
    assert crash.is_file() and "Traceback" in crash.read_text()
    logs = list((out / "logs").glob("bids_sr_*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text() and "NaN" in logs[0].read_text()


def test_crash_input_names_the_raw_file_a_node_worked_on(tmp_path):
    from bids_sr.cli.failures import crash_input

    crash = tmp_path / "crash.txt"
    crash.write_text("Node: x\n\nNode inputs:\n\nin_file = /work/sr.nii.gz\n"
                     "method = nearest\nsource_file = /data/sub-01_T1w.nii.gz\n\n"
                     "Traceback (most recent call last):\n  t1w_file = /elsewhere\n")  # fmt: skip
    assert crash_input(crash) == "/data/sub-01_T1w.nii.gz"
    crash.write_text("Node inputs:\n\nin_file = <undefined>\n")
    assert crash_input(crash) is None
    assert crash_input(tmp_path / "absent.txt") is None


# ----------------------------------------------------------------- 9. constant image


def test_a_constant_image_is_refused_before_running(tmp_path, run_cli, demo_copy):
    """Before: the checks passed, the super-resolution node failed with "mask selects no
    voxels" (exit 1, no file named; auto trained selfsr for 2 minutes first)."""
    t1w = demo_copy / SUB01_T1W
    _replace_data(t1w, np.full(nib.load(t1w).shape, 100, np.int16))
    out = tmp_path / "out"
    result = _bspline(run_cli, demo_copy, out, tmp_path / "w", "01")
    _refused(result, 65, str(t1w), "constant (every voxel is 100)", out=out)


# ----------------------------------------------------------------- 11. complex data


def test_complex_data_is_refused_naming_the_file(tmp_path, run_cli, demo_copy):
    """Before: exit 0 with only numpy ComplexWarnings, the imaginary part silently dropped.
    Refused rather than turned into a magnitude: a phase-rotated complex image could be a
    reconstruction step the user did not mean to skip; the line says what to give."""
    t1w = demo_copy / SUB01_T1W
    magnitude = np.asarray(nib.load(t1w).dataobj, dtype=np.float32)
    _replace_data(t1w, (magnitude * np.exp(0.3j)).astype(np.complex64))
    out = tmp_path / "out"
    result = _bspline(run_cli, demo_copy, out, tmp_path / "w", "01")
    _refused(result, 65, str(t1w), "complex-valued", "magnitude", out=out)


def test_a_constant_guide_still_loads_but_not_as_an_image_to_super_resolve(tmp_path):
    """A constant reference is harmless (the guided methods find it carries nothing); a
    constant image to super-resolve has no head to find."""
    from bids_sr.image import ImageError, load_volume

    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.full((6, 6, 6), 3.0, np.float32), np.eye(4)), path)
    assert load_volume(path).data.max() == 3.0
    with pytest.raises(ImageError, match=r"flat\.nii\.gz: image is constant"):
        load_volume(path, reject_constant=True)


# ----------------------------------------------------------------- 15. tiles below the field


@pytest.mark.parametrize(
    "methods, tile, fragment",
    [
        (["srrecnn"], "1", "below the 24 voxels that srrecnn's receptive field needs"),
        (["espcn", "bspline"], "7", "below the 8 voxels that espcn's"),
        (["auto"], "30", "below the 42 voxels that srgan's"),
    ],
)
def test_a_tile_smaller_than_the_receptive_field_is_a_usage_error(tmp_path, run_cli, methods,
                                                                  tile, fragment):  # fmt: skip
    """Before: --tile-size 1 was silently enlarged to 24, into ~8000 tiles (120 s, not 6 s)."""
    out = tmp_path / "out"
    result = run_cli(DEMO, out, "participant", "--participant-label", "01", "-w", tmp_path / "w",
                     "--method", *methods, "--tile-size", tile)  # fmt: skip
    _refused(result, 64, fragment, f"at least {fragment.split()[2]}", out=out)


def test_tile_sizes_the_networks_accept_pass_the_parser(tmp_path):
    from bids_sr.cli.parser import parse_args

    base = [str(DEMO), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w")]
    assert parse_args([*base, "--method", "espcn", "--tile-size", "8"]).workflow.tile_size == 8
    assert parse_args([*base, "--method", "bspline", "--tile-size", "1"]).workflow.tile_size == 1
    assert parse_args([*base, "--tile-size", "42"]).workflow.tile_size == 42


# ----------------------------------------------------------------- 10. acquisition metadata


@pytest.mark.parametrize("value", [0, -1, 1000, "4mm", float("nan"), True, [3.6]])
def test_an_invalid_sidecar_thickness_falls_back_on_the_spacing_and_says_so(value):
    from bids_sr.acquisition import describe_acquisition

    acq = describe_acquisition((1.0, 1.0, 4.0), sidecar_thickness=value)
    assert acq.thickness == 4.0
    source = acq.describe()["InputSliceThicknessSource"]
    assert source.startswith(f"slice spacing (sidecar SliceThickness {value!r} is invalid"), source


def test_the_thickness_source_names_the_option_the_sidecar_or_the_spacing():
    from bids_sr.acquisition import describe_acquisition

    spacing = (1.0, 1.0, 4.0)
    assert describe_acquisition(spacing, sidecar_thickness=3.6).thickness_source == "sidecar"
    assert describe_acquisition(spacing, sidecar_thickness="3.6").thickness == 3.6
    chosen = describe_acquisition(spacing, slice_thickness=2.0, sidecar_thickness=3.6)
    assert (chosen.thickness, chosen.thickness_source) == (2.0, "option")
    assert describe_acquisition(spacing).describe()["InputSliceThicknessSource"] == "slice spacing"
    assert "InputSliceThicknessSource" not in describe_acquisition((1.0, 1.0, 1.2)).describe()


def _small_2d_scan(bids_dir: Path, **sidecar) -> Path:
    """sub-03's 2D scan (1×1×4 mm) cut to 48×48×12 voxels, with ``sidecar`` fields."""
    t1w = bids_dir / "sub-03/anat/sub-03_T1w.nii.gz"
    img = nib.load(t1w)
    data = np.asarray(img.dataobj)[60:108, 80:128, 15:27]
    nib.save(nib.Nifti1Image(data, img.affine), t1w)
    sidecar_file = t1w.with_name("sub-03_T1w.json")
    sidecar_file.write_text(json.dumps({**json.loads(sidecar_file.read_text()), **sidecar}))
    return t1w


def test_invalid_thickness_and_a_3d_label_on_a_2d_scan_are_warned_and_recorded(
    tmp_path, run_cli, demo_copy, caplog
):  # fmt: skip
    """Before: "SliceThickness": "4mm" was replaced by the spacing without a word, and a
    sidecar saying 3D for 1×1×4 mm voxels was not questioned."""
    _small_2d_scan(demo_copy, SliceThickness="4mm", MRAcquisitionType="3D")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="bids_sr"):
        code, err = _bspline(run_cli, demo_copy, out, tmp_path / "w", "03")
    assert code == 0, err
    warned = " | ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "sub-03_T1w.nii.gz: sidecar SliceThickness '4mm' is invalid" in warned, warned
    assert "taken as the slice spacing, 4 mm" in warned, warned
    assert "MRAcquisitionType 3D, but the voxel sizes 1×1×4 mm" in warned, warned
    assert "modelled as a 2D scan, slices 4 mm thick" in warned, warned
    sidecar = json.loads(next(out.glob("sub-03/anat/*desc-bspline_T1w.json")).read_text())
    assert sidecar["AcquisitionModel"] == "slice" and sidecar["InputSliceThickness"] == 4.0
    assert sidecar["InputSliceThicknessSource"].startswith(
        "slice spacing (sidecar SliceThickness '4mm' is invalid")


# ----------------------------------------------------------------- 13. another session's guide


SES2_T2W = ("--participant-label", "02", "--session-label", "2", "--method", "srrecnn-t2w")


def _two_session_guide(bids_dir: Path) -> None:
    """sub-02 gets a T2w in ses-1 only (sub-01's on a 1 mm grid, finer than the T1w, as a
    stand-in): ses-2's T1w has none."""
    target = bids_dir / "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz"
    t2w = nib.load(bids_dir / "sub-01/anat/sub-01_T2w.nii.gz")
    fine = np.kron(np.asarray(t2w.dataobj), np.ones((2, 2, 2), np.int16))
    nib.save(nib.Nifti1Image(fine, t2w.affine @ np.diag([0.5, 0.5, 0.5, 1.0])), target)
    target.with_name("sub-02_ses-1_T2w.json").write_text('{"MRAcquisitionType": "3D"}')


def _build_only(monkeypatch, run_cli, bids_dir: Path, tmp_path: Path, *argv):
    """Run the CLI up to the workflow (built, not run): (exit code, stderr, sidecar fields of
    every output)."""
    from bids_sr.cli import run as cli_run
    from bids_sr.workflows.base import init_bids_sr_wf

    built = []

    def build_only(config, plan, t1w_by_subject, brain_masks, runner):
        built.append(init_bids_sr_wf(config=config, t1w_by_subject=t1w_by_subject,
                                     brain_masks=brain_masks, plan=plan))  # fmt: skip
        return 0.0

    monkeypatch.setattr(cli_run, "_run_workflow", build_only)
    code, err = run_cli(bids_dir, tmp_path / "out", "participant", "-w", tmp_path / "w",
                        "--skip-bids-validation", *argv)  # fmt: skip
    metadata = []
    for workflow in built:
        for node in workflow._get_all_nodes():
            fields = getattr(node.inputs, "extra_metadata", None)
            if isinstance(fields, dict) and fields:
                metadata.append(fields)
    return code, err, metadata


def test_a_guide_from_another_session_is_warned_about_and_recorded(
    tmp_path, run_cli, demo_copy, monkeypatch, caplog
):  # fmt: skip
    """Before: only an INFO line said that ses-2's T1w was guided by ses-1's T2w."""
    _two_session_guide(demo_copy)
    with caplog.at_level("WARNING", logger="bids_sr"):
        code, err, metadata = _build_only(monkeypatch, run_cli, demo_copy, tmp_path, *SES2_T2W)
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("sub-02_ses-2_T1w.nii.gz: its T2w comes from another session (ses-1)" in m
               and "--reference-session same" in m for m in warned), warned  # fmt: skip
    guided = [m for m in metadata if "T2wReference" in m and "ReferenceSession" in m]
    assert guided and guided[0]["ReferenceSession"] == "1", metadata  # the output's sidecar
    assert "lesions" in guided[0]["ReferenceSessionWarning"]


def test_reference_session_same_forbids_a_guide_from_another_session(
    tmp_path, run_cli, demo_copy, monkeypatch, caplog
):  # fmt: skip
    _two_session_guide(demo_copy)
    with caplog.at_level("WARNING", logger="bids_sr"):
        code, err, metadata = _build_only(monkeypatch, run_cli, demo_copy, tmp_path, *SES2_T2W,
                                          "--reference-session", "same")  # fmt: skip
    assert code == 0, err
    assert not [m for m in metadata if "T2wReference" in m or "ReferenceSession" in m], metadata
    assert not any("another session" in r.getMessage() for r in caplog.records)
    # forced, the missing same-session guide stops the run before anything is written
    out = tmp_path / "forced"
    result = run_cli(demo_copy, out, "participant", "--participant-label", "02",
                     "--session-label", "2", "-w", tmp_path / "w2", "--skip-bids-validation",
                     "--reference-suffix", "T2w", "--reference-session", "same")  # fmt: skip
    _refused(result, 66, "sub-02_ses-2_T1w.nii.gz: no T2w", out=out)



# ----------------------------------------------------------------- 14. evaluation and outputs


def _warnings(caplog) -> str:
    return " | ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_evaluating_on_a_thick_slice_scan_is_warned_about(tmp_path, run_cli, monkeypatch, caplog):
    """Before: sub-03's 1×1×4 mm scan was taken as the truth without a word."""
    with caplog.at_level("WARNING", logger="bids_sr"):
        code, err, _ = _build_only(monkeypatch, run_cli, DEMO, tmp_path, "--participant-label",
                                   "03", "--evaluate", "--method", "bspline")  # fmt: skip
    assert code == 0, err
    assert ("sub-03_T1w.nii.gz: --evaluate takes it as the truth, but its voxel sizes "
            "1×1×4 mm are those of a 2D scan") in _warnings(caplog)  # fmt: skip
    caplog.clear()
    with caplog.at_level("WARNING", logger="bids_sr"):
        _build_only(monkeypatch, run_cli, DEMO, tmp_path / "iso", "--participant-label", "01",
                    "--evaluate", "--method", "bspline")  # fmt: skip
    assert "as the truth" not in _warnings(caplog)


def test_a_brain_mask_on_another_grid_is_warned_about(tmp_path, run_cli, monkeypatch, caplog):
    """Before: a mask on a 1 mm grid for a 2 mm T1w was resampled without a word."""
    derivatives = tmp_path / "masks"
    anat = derivatives / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (derivatives / "dataset_description.json").write_text(json.dumps(
        {"Name": "masks", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))  # fmt: skip
    t1w = nib.load(DEMO / SUB01_T1W)
    inside = (np.asarray(t1w.dataobj) > 100).astype(np.uint8)
    fine = np.kron(inside, np.ones((2, 2, 2), np.uint8))
    mask = anat / "sub-01_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(fine, t1w.affine @ np.diag([0.5, 0.5, 0.5, 1.0])), mask)
    argv = ("--participant-label", "01", "--evaluate", "--method", "bspline", "--derivatives",
            derivatives)  # fmt: skip
    with caplog.at_level("WARNING", logger="bids_sr"):
        code, err, _ = _build_only(monkeypatch, run_cli, DEMO, tmp_path, *argv)
    assert code == 0, err
    assert (f"{mask}: brain mask on another grid than sub-01_T1w.nii.gz ((168, 204, 168) "
            "voxels of 1×1×1 mm against the T1w's (84, 102, 84) of 2×2×2 mm)") in _warnings(
        caplog)  # fmt: skip
    nib.save(nib.Nifti1Image(inside, t1w.affine), mask)  # the T1w's own grid: nothing to say
    caplog.clear()
    with caplog.at_level("WARNING", logger="bids_sr"):
        _build_only(monkeypatch, run_cli, DEMO, tmp_path / "same", *argv)
    assert "another grid" not in _warnings(caplog)


def test_an_output_folder_of_another_bids_sr_version_is_not_relabelled(tmp_path, run_cli):
    """Before: its GeneratedBy was rewritten to this version, the old files kept."""
    from bids_sr.__about__ import __version__

    out = tmp_path / "out"
    old_run = out / "sub-01" / "anat" / "sub-01_res-hi_desc-bspline_T1w.json"
    old_run.parent.mkdir(parents=True)
    old_run.write_text("{}")
    description = {"Name": "bids_sr outputs", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                   "GeneratedBy": [{"Name": "bids_sr", "Version": "0.0.9"}]}  # fmt: skip
    (out / "dataset_description.json").write_text(json.dumps(description))
    code, err = _bspline(run_cli, DEMO, out, tmp_path / "w", "01")
    assert code == 73, err
    assert _error_lines(err) == [err.strip()], err
    assert f"{out}: holds the derivatives of bids_sr 0.0.9, and this is {__version__}" in err
    assert json.loads((out / "dataset_description.json").read_text()) == description
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "dataset_description.json", old_run.name]


def test_an_evaluation_slice_gap_above_the_spacing_is_a_usage_error(tmp_path, run_cli):
    """Before: the evaluation node failed ("slice thickness must be positive, got -1 mm"),
    exit 1, after a 77-line traceback."""
    out = tmp_path / "out"
    result = run_cli(DEMO, out, "participant", "--participant-label", "01", "--evaluate",
                     "--degradation", "slice", "--scale", "1", "1", "3", "--slice-gap", "7",
                     "--method", "bspline", "-w", tmp_path / "w",
                     "--skip-bids-validation")  # fmt: skip
    _refused(result, 64, str(DEMO / SUB01_T1W), "slice thickness must be positive, got -1 mm",
             out=out)  # fmt: skip
