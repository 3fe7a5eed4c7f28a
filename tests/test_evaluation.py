"""Evaluation mode: protocol, rows, TSV + sidecar, and that B-spline beats nearest."""

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA
from scipy import ndimage

from bids_sr import evaluation
from bids_sr.evaluation import (
    METRIC_COLUMNS,
    evaluate_image,
    evaluation_columns,
    read_metrics_tsv,
    write_metrics_tsv,
)
from bids_sr.image import upsampled_affine

SHARED = SHARED_DATA
AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 1.0, -72], [0, 0, 0, 1]])


def _head_like(shape=(33, 34, 32), seed=0):
    """Smooth random 'tissue' texture inside an ellipsoid, dark outside: real-like spectrum."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    texture = 0.6 + 0.25 * texture / texture.std()
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = (grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2) < 0.7
    return np.where(inside, texture, 0.02).astype(np.float32) * 300


def _by_method(rows):
    return {row["method"]: row for row in rows}


def test_baselines_rows_and_bspline_beats_nearest():
    arrays = {}
    rows = evaluate_image(
        _head_like(),
        AFFINE,
        factors=2,
        degradation="gaussian",
        methods=["bspline"],
        source="sub-01_T1w.nii.gz",
        arrays=arrays,
    )
    assert [row["method"] for row in rows] == ["nearest", "linear", "bspline"]
    for row in rows:
        assert row["degradation"] == "gaussian" and row["scale"] == "2"
        assert row["source"] == "sub-01_T1w.nii.gz" and row["device"] == "cpu"
        assert all(np.isfinite(row[c]) for c in METRIC_COLUMNS) and row["runtime_s"] >= 0
        assert row["psnr_brain"] != row["psnr_whole"]
    by = _by_method(rows)
    assert by["bspline"]["psnr_brain"] > by["nearest"]["psnr_brain"] + 1.0
    assert by["bspline"]["ssim_brain"] > by["nearest"]["ssim_brain"]
    assert by["bspline"]["gradient_error_brain"] < by["nearest"]["gradient_error_brain"]
    # the kept arrays describe the cropped grid and its LR grid
    truth = arrays["truth"]
    assert truth.shape == (32, 34, 32) and arrays["input"].shape == (16, 17, 16)
    assert arrays["mask"].shape == truth.shape and arrays["mask"].any()
    assert set(arrays["sr"]) == {"nearest", "linear", "bspline"}
    np.testing.assert_allclose(
        upsampled_affine(arrays["lr_affine"], (2, 2, 2)), arrays["hr_affine"]
    )
    # the centred crop dropped the last x voxel: the origin is unchanged
    np.testing.assert_allclose(arrays["hr_affine"], AFFINE)


def test_given_mask_anisotropic_factors_and_recorded_failure(monkeypatch):
    real = evaluation.super_resolve

    def failing(lr, factors, method, **kwargs):
        if method == "fsrcnn":
            raise RuntimeError("weights not found")
        return real(lr, factors, method, **kwargs)

    monkeypatch.setattr(evaluation, "super_resolve", failing)
    hr = _head_like((24, 24, 35))
    mask = hr > 100
    arrays = {}
    rows = evaluate_image(
        hr,
        AFFINE,
        factors=(1, 1, 4),
        degradation="slice",
        methods=["fsrcnn"],
        mask=mask,
        on_error="record",
        arrays=arrays,
    )
    # 35 slices crop to 32 starting at slice 1: the origin moves 1 mm along z
    np.testing.assert_allclose(arrays["hr_affine"][:3, 3], AFFINE[:3, 3] + [0, 0, 1.0])
    assert arrays["mask"].shape == (24, 24, 32) and "fsrcnn" not in arrays["sr"]
    by = _by_method(rows)
    assert by["linear"]["scale"] == "1x1x4"
    assert by["fsrcnn"]["psnr_brain"] is None
    assert by["fsrcnn"]["error"] == "RuntimeError: weights not found"
    with pytest.raises(RuntimeError, match="weights"):
        evaluate_image(hr, AFFINE, factors=2, degradation="gaussian", methods=["fsrcnn"])
    with pytest.raises(ValueError, match="mask shape"):
        evaluate_image(hr, AFFINE, factors=2, degradation="gaussian", methods=[], mask=mask[:-1])


def test_tsv_and_sidecar_round_trip(tmp_path):
    rows = [
        {"source": "a.nii.gz", "method": "bspline", "degradation": "gaussian", "scale": "2",
         "psnr_brain": 31.234567891, "ssim_brain": 0.9, "psnr_whole": 35.0, "ssim_whole": 0.95,
         "gradient_error_brain": 0.3, "runtime_s": 0.12, "device": "cpu", "error": "ignored"},
        {"source": "a.nii.gz", "method": "fsrcnn", "degradation": "gaussian", "scale": "2",
         "psnr_brain": None, "ssim_brain": None, "psnr_whole": None, "ssim_whole": None,
         "gradient_error_brain": None, "runtime_s": None, "device": None},
    ]  # fmt: skip
    path = write_metrics_tsv(rows, tmp_path / "sub-01_desc-evaluation_metrics.tsv")
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(evaluation_columns())
    # metrics, runtime, device, DC, tissue agreement + segmentation time, auto
    assert lines[2].split("\t")[4:] == ["n/a"] * 14
    assert "31.2346" in lines[1] and "ignored" not in path.read_text()
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert set(sidecar) == set(lines[0].split("\t"))
    for column in sidecar.values():
        assert {"LongName", "Description", "Units"} <= set(column)
    assert sidecar["psnr_brain"]["Units"] == "dB"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sub-01_desc-evaluation_metrics.json",
        "sub-01_desc-evaluation_metrics.tsv",
    ]  # no temporary files left behind
    back = read_metrics_tsv(path)
    assert back[0]["psnr_brain"] == pytest.approx(31.2346) and back[0]["scale"] == "2"
    assert back[1]["psnr_brain"] is None and back[1]["device"] is None
    with pytest.raises(ValueError, match=r"\.tsv"):
        write_metrics_tsv(rows, tmp_path / "metrics.csv")


@pytest.mark.shared_data
def test_bspline_beats_nearest_on_a_real_t1w():
    path = SHARED / "real_t1" / "colin27_ch2_T1w.nii.gz"
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    img = nib.load(str(path))
    hr = np.asarray(img.dataobj, np.float32)[60:108, 80:128, 70:118]  # 48³ through the brain
    rows = evaluate_image(hr, img.affine, factors=2, degradation="gaussian", methods=[])
    by = _by_method(rows)
    assert by["bspline"]["psnr_brain"] > by["linear"]["psnr_brain"] > by["nearest"]["psnr_brain"]
    assert by["bspline"]["ssim_brain"] > by["nearest"]["ssim_brain"]
