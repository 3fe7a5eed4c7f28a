"""Evaluation mode through the app: CLI end to end on the demo dataset, group aggregation,
the report in Chromium, method selection, brain-mask derivatives, and the interface."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO, assert_renders_in_chromium
from scipy import ndimage

from bids_sr.bids import find_brain_mask, load_derivative_layouts, run_validator
from bids_sr.config import Config, Execution, Workflow
from bids_sr.errors import EXIT_DATA, EXIT_USAGE, BIDSError
from bids_sr.evaluation import (
    TISSUE_COLUMNS,
    evaluate_image,
    evaluation_columns,
    read_metrics_tsv,
)
from bids_sr.segmentation import atropos_available

TSV = "sub-01/anat/sub-01_desc-evaluation_metrics.tsv"


@pytest.fixture(scope="module")
def evaluation_run(tmp_path_factory):
    """``--evaluate --method nearest bspline`` on sub-01, then the group level."""
    from bids_sr.cli.run import main

    root = tmp_path_factory.mktemp("evaluation_run")
    out = root / "out"
    argv = [str(DEMO), str(out), "participant", "--participant-label", "01", "--evaluate",
            "--method", "nearest", "bspline", "--scale", "2", "--degradation", "gaussian",
            "-w", str(root / "work"), "--nprocs", "2", "--skip-bids-validation"]  # fmt: skip
    assert main(argv) == 0
    assert main([str(DEMO), str(out), "group"]) == 0
    return out


def test_evaluation_table_and_sidecar(evaluation_run):
    out = evaluation_run
    rows = read_metrics_tsv(out / TSV)
    header = (out / TSV).read_text().splitlines()[0].split("\t")
    assert header == list(evaluation_columns())
    # the requested methods and the linear baseline, each once
    assert [row["method"] for row in rows] == ["nearest", "linear", "bspline"]
    for row in rows:
        assert row["source"] == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"
        assert row["degradation"] == "gaussian" and row["scale"] == "2"
        assert 10 < row["psnr_brain"] < 60 and 0 < row["ssim_brain"] < 1
    by = {row["method"]: row for row in rows}
    assert by["bspline"]["psnr_brain"] > by["nearest"]["psnr_brain"] + 0.5
    assert by["bspline"]["ssim_brain"] > by["nearest"]["ssim_brain"]
    sidecar = json.loads((out / TSV.replace(".tsv", ".json")).read_text())
    assert sidecar["psnr_brain"]["Units"] == "dB"
    assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
    assert sidecar["Degradation"] == "gaussian" and "brain_mask" in sidecar["Mask"]
    # downstream agreement: bspline segmented with antspyx, n/a without (sidecar says which)
    assert by["nearest"]["dice_gm"] is None and by["linear"]["dice_gm"] is None
    if atropos_available():
        assert 0.5 < by["bspline"]["dice_gm"] <= 1 and by["bspline"]["segmentation_s"] > 0
        assert sidecar["TissueSegmentation"].startswith("ANTs Atropos")
    else:
        assert all(by["bspline"][c] is None for c in TISSUE_COLUMNS)
        assert "bids_sr[seg]" in sidecar["TissueSegmentation"]
    # evaluation mode writes no image into the derivatives, and they stay valid BIDS
    assert not list(out.rglob("*.nii*"))
    assert run_validator(out) == []
    saved = Config.load(next(out.glob("logs/bids_sr_*.toml")))
    assert saved.workflow.evaluate and saved.workflow.methods == ["nearest", "bspline"]


def test_evaluation_group_level(evaluation_run):
    out = evaluation_run
    summary = read_metrics_tsv(out / "group_desc-evaluation_metrics.tsv")
    tissue = len(TISSUE_COLUMNS) if atropos_available() else 0  # bspline's, with antspyx
    assert len(summary) == 3 * 5 + tissue  # methods × metrics
    psnr = {s["method"]: s for s in summary if s["metric"] == "psnr_brain"}
    assert psnr["bspline"]["diff_mean"] is None and psnr["nearest"]["n_paired"] == 1
    assert psnr["nearest"]["diff_mean"] < 0  # nearest is worse than bspline on this image
    page = (out / "group_desc-evaluation_metrics.html").read_text()
    assert page.count("data:image/png;base64,") == 5 + tissue  # one box plot per metric
    assert (out / "group_summary.tsv").exists()  # the output summary is still written


@pytest.mark.slow
def test_evaluation_report_renders(evaluation_run, chromium, tmp_path):
    report = evaluation_run / "sub-01.html"
    page = report.read_text()
    assert "Evaluation metrics" in page and "psnr_brain" in page
    assert page.count('src="data:image/png;base64,') == 2  # nearest and bspline figures
    assert_renders_in_chromium(chromium, report, tmp_path, n_images=2)


# ----------------------------------------------------------------- choosing methods
def _config(tmp_path, **workflow):
    return Config(execution=Execution(bids_dir=DEMO, output_dir=tmp_path / "out"),
                  workflow=Workflow(**workflow))  # fmt: skip


T1W = {"01": [str(DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz")]}


def test_resolve_methods(tmp_path, monkeypatch, caplog):
    from bids_sr.cards import paths as card_paths
    from bids_sr.cli.run import resolve_methods

    monkeypatch.setattr(card_paths, "WEIGHTS_DIR", tmp_path)
    (tmp_path / "espcn_x2x2x2.safetensors").write_bytes(b"")
    (tmp_path / "srrecnn-t2w_x2x2x2.safetensors").write_bytes(b"")
    config = _config(tmp_path, methods=["all"])
    assert resolve_methods(config, T1W) == ["nearest", "linear", "bspline", "espcn"]
    config = _config(tmp_path, methods=["all"], scale=[3.0])  # no weights at ×3
    assert resolve_methods(config, T1W) == ["nearest", "linear", "bspline"]
    # a learned method without weights: an error normally, skipped when evaluating
    with pytest.raises(BIDSError, match="no shipped weights for fsrcnn") as error:
        resolve_methods(_config(tmp_path, methods=["fsrcnn", "bspline"]), T1W)
    assert error.value.code == EXIT_DATA
    config = _config(tmp_path, methods=["fsrcnn", "bspline"], evaluate=True)
    assert resolve_methods(config, T1W) == ["bspline"]
    assert "skipping fsrcnn" in caplog.text
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"")
    config = _config(tmp_path, methods=["fsrcnn", "srgan"], weights=weights)
    with pytest.raises(BIDSError, match="exactly one learned method") as error:
        resolve_methods(config, T1W)
    assert error.value.code == EXIT_USAGE
    config = _config(tmp_path, methods=["fsrcnn", "nearest"], weights=weights)
    assert resolve_methods(config, T1W) == ["fsrcnn", "nearest"]


def test_config_round_trip(tmp_path):
    config = _config(tmp_path, methods=["nearest", "srrecnn"], evaluate=True,
                     degradation="slice", derivatives=[tmp_path / "fmriprep"], scale=[1, 1, 4])
    loaded = Config.load(config.save(tmp_path / "config.toml"))
    assert loaded == config
    # files written before several methods were allowed still load
    text = (tmp_path / "config.toml").read_text()
    text = text.replace('methods = ["nearest", "srrecnn"]', 'method = "srrecnn"')
    (tmp_path / "old.toml").write_text(text)
    assert Config.load(tmp_path / "old.toml").workflow.methods == ["srrecnn"]


# ----------------------------------------------------------------- brain-mask derivatives
def test_find_brain_mask_matches_entities(tmp_path):
    (tmp_path / "dataset_description.json").write_text(json.dumps(
        {"Name": "masks", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))  # fmt: skip
    anat = tmp_path / "sub-01" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    names = ["sub-01_ses-1_desc-brain_mask.nii.gz", "sub-01_ses-1_run-02_desc-brain_mask.nii.gz",
             "sub-01_ses-1_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"]  # fmt: skip
    for name in names:
        (anat / name).write_bytes(b"")
    layouts = load_derivative_layouts([tmp_path])
    assert find_brain_mask(layouts, "sub-01_ses-1_T1w.nii.gz") == str(anat / names[0])
    assert find_brain_mask(layouts, "sub-01_ses-1_run-2_T1w.nii.gz") == str(anat / names[1])
    assert find_brain_mask(layouts, "sub-01_ses-1_acq-fast_T1w.nii.gz") is None
    assert find_brain_mask(layouts, "sub-01_T1w.nii.gz") is None
    with pytest.raises(BIDSError, match="not a derivatives dataset"):
        load_derivative_layouts([anat])


def _phantom(shape=(30, 32, 28)):
    rng = np.random.default_rng(3)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g * g for g in grids) < 0.6
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 1.2)
    return np.where(inside, 200 + 60 * texture / texture.std(), 4).astype(np.float32), inside


def test_interface_uses_a_mask_from_another_grid(tmp_path):
    from bids_sr.interfaces.evaluation import EvaluateSuperResolution

    data, inside = _phantom()
    affine = np.array([[1.0, 0, 0, -15], [0, 1.0, 0, -16], [0, 0, 1.0, -14], [0, 0, 0, 1]])
    t1w = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), t1w)
    # the same mask stored flipped along x with a 2-voxel margin: another grid, same world
    flipped = np.pad(inside[::-1], ((2, 2), (0, 0), (0, 0))).astype(np.uint8)
    mask_affine = affine @ np.array([[-1.0, 0, 0, 31], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    mask = tmp_path / "sub-01_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(flipped, mask_affine), mask)

    node = EvaluateSuperResolution(in_file=str(t1w), mask_file=str(mask), methods=["nearest"],
                                   scale=[2.0], source="sub-01_T1w.nii.gz")  # fmt: skip
    (tmp_path / "node").mkdir()
    result = node.run(cwd=str(tmp_path / "node"))
    rows = read_metrics_tsv(result.outputs.out_tsv)
    expected = evaluate_image(data, affine, factors=2, degradation="gaussian",
                              methods=["nearest"], mask=inside)  # fmt: skip
    assert [r["method"] for r in rows] == ["nearest", "linear", "bspline"]
    for row, want in zip(rows, expected, strict=True):
        assert row["psnr_brain"] == pytest.approx(want["psnr_brain"], rel=1e-5)
    sidecar = json.loads(open(result.outputs.out_json).read())
    assert sidecar["Mask"] == str(mask)
    report = json.loads(open(result.outputs.out_report).read())
    truth = nib.load(report["truth"])
    assert truth.shape == (30, 32, 28) and set(report["sr"]) == {"nearest", "linear", "bspline"}
    assert nib.load(report["input"]).shape == (15, 16, 14)
    # a mask that misses the image is refused with the file's name
    far = mask_affine.copy()
    far[0, 3] += 500.0
    nib.save(nib.Nifti1Image(flipped, far), mask)
    (tmp_path / "node2").mkdir()
    with pytest.raises(ValueError, match="does not overlap"):
        EvaluateSuperResolution(in_file=str(t1w), mask_file=str(mask), methods=["nearest"]).run(
            cwd=str(tmp_path / "node2"))  # fmt: skip
