"""Tissue segmentation and downstream agreement: Dice / GM volume error, Atropos, TSV columns."""

import logging
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from bids_sr import evaluation
from bids_sr.evaluation import (
    TISSUE_COLUMNS,
    evaluate_image,
    evaluation_columns,
    read_metrics_tsv,
    write_metrics_tsv,
)
from bids_sr.image import load_volume, robust_normalisation, voxel_sizes
from bids_sr.masks import brain_mask
from bids_sr.segmentation import TISSUES, atropos_available, dice, tissue_agreement

DEMO_T1W = Path(__file__).resolve().parents[1] / "bids_sr/data/demo/sub-01/anat/sub-01_T1w.nii.gz"
needs_atropos = pytest.mark.skipif(
    not atropos_available(), reason="antspyx not installed (pip install 'bids_sr[seg]')"
)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def test_dice_known_values():
    a = np.zeros((4, 4, 4), dtype=bool)
    b = np.zeros_like(a)
    a[:2] = True  # 32 voxels
    b[1:3] = True  # 32 voxels, 16 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0  # both empty: agree
    with pytest.raises(ValueError, match="shape"):
        dice(a, a[:2])


def test_tissue_agreement_on_synthetic_label_maps():
    truth = np.zeros((10, 10, 10), dtype=np.uint8)
    truth[:, :, 0:2] = TISSUES["csf"]  # 200 voxels
    truth[:, :, 2:6] = TISSUES["gm"]  # 400 voxels
    truth[:, :, 6:10] = TISSUES["wm"]  # 400 voxels
    assert tissue_agreement(truth, truth) == {
        "dice_gm": 1.0, "dice_wm": 1.0, "dice_csf": 1.0, "gm_volume_error": 0.0
    }  # fmt: skip
    # the result labels one WM slab as GM: GM 500 voxels (400 shared), WM 300 (all shared)
    result = truth.copy()
    result[:, :, 6] = TISSUES["gm"]
    scores = tissue_agreement(truth, result)
    assert scores["dice_gm"] == pytest.approx(2 * 400 / (400 + 500))
    assert scores["dice_wm"] == pytest.approx(2 * 300 / (400 + 300))
    assert scores["dice_csf"] == 1.0
    assert scores["gm_volume_error"] == pytest.approx(25.0)  # +100 of 400 voxels
    # GM shrinks: a negative error; no GM in the truth: no error
    assert tissue_agreement(truth, np.where(result == 2, 3, result))["gm_volume_error"] == -100
    assert tissue_agreement(np.zeros_like(truth), truth)["gm_volume_error"] is None


def _demo_t1w():
    volume = load_volume(DEMO_T1W)
    image = robust_normalisation(volume.data).apply(volume.data)
    spacing = voxel_sizes(volume.affine)
    return image, brain_mask(image, spacing), spacing


@pytest.mark.slow
@needs_atropos
def test_atropos_on_the_demo_t1w_self_dice_is_one_and_blur_lowers_it():
    from bids_sr.segmentation import segment_tissues

    image, mask, spacing = _demo_t1w()
    truth = segment_tissues(image, mask, spacing)
    assert set(np.unique(truth)) == {0, 1, 2, 3}
    assert not truth[~mask].any()
    # classes ordered by T1w intensity: CSF darkest, WM brightest
    means = [image[truth == TISSUES[t]].mean() for t in ("csf", "gm", "wm")]
    assert means[0] < means[1] < means[2]
    # the same image segments the same way (fixed seed): Dice 1, no volume error
    again = tissue_agreement(truth, segment_tissues(image, mask, spacing))
    assert again == {"dice_gm": 1.0, "dice_wm": 1.0, "dice_csf": 1.0, "gm_volume_error": 0.0}
    # a through-plane blur (what thick slices do) moves tissue boundaries: every Dice drops
    blurred = ndimage.gaussian_filter(image, (0, 0, 1.5))
    scores = tissue_agreement(truth, segment_tissues(blurred, mask, spacing))
    for name in ("dice_gm", "dice_wm", "dice_csf"):
        assert 0.3 < scores[name] < 0.99, scores
    assert scores["gm_volume_error"] != 0.0


def _small_demo_evaluation(**kwargs):
    volume = load_volume(DEMO_T1W)
    return evaluate_image(volume.data, volume.affine, factors=(1, 1, 2), degradation="slice",
                          methods=["bspline"], source=DEMO_T1W.name, tissues=True,
                          **kwargs)  # fmt: skip


def test_tsv_has_tissue_columns_na_without_antspyx(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(evaluation, "atropos_available", lambda: False)
    monkeypatch.setattr(evaluation, "_hint_logged", False)
    with caplog.at_level(logging.WARNING, logger="bids_sr.evaluation"):
        rows = _small_demo_evaluation()
        _small_demo_evaluation()
    hints = [r for r in caplog.records if "bids_sr[seg]" in r.getMessage()]
    assert len(hints) == 1  # said once, with how to get the columns
    path = write_metrics_tsv(rows, tmp_path / "sub-01_desc-evaluation_metrics.tsv")
    header = path.read_text().splitlines()[0].split("\t")
    assert [c for c in header if c in (*TISSUE_COLUMNS, "segmentation_s")] == [
        *TISSUE_COLUMNS, "segmentation_s"
    ]  # fmt: skip
    for row in read_metrics_tsv(path):
        assert all(row[c] is None for c in (*TISSUE_COLUMNS, "segmentation_s"))
    columns = evaluation_columns()
    for name in (*TISSUE_COLUMNS, "segmentation_s"):
        assert set(columns[name]) == {"LongName", "Description", "Units"}
    assert columns["gm_volume_error"]["Units"] == "%" and "Atropos" in columns["dice_gm"][
        "Description"]  # fmt: skip


@pytest.mark.slow
@needs_atropos
def test_tsv_tissue_columns_with_antspyx(tmp_path):
    rows = {row["method"]: row for row in _small_demo_evaluation()}
    for method in ("nearest", "linear"):  # not segmented (cost)
        assert rows[method]["dice_gm"] is None
    bspline = rows["bspline"]
    assert all(0.5 < bspline[c] <= 1.0 for c in ("dice_gm", "dice_wm", "dice_csf"))
    assert bspline["segmentation_s"] > 0 and np.isfinite(bspline["gm_volume_error"])
    path = write_metrics_tsv(list(rows.values()), tmp_path / "metrics.tsv")
    back = {row["method"]: row for row in read_metrics_tsv(path)}
    assert back["bspline"]["dice_gm"] == pytest.approx(bspline["dice_gm"], abs=1e-5)


def _agreement_rows():
    rows = []
    for i, (b, s) in enumerate([(0.80, 0.84), (0.78, 0.83)]):
        for method, gm in (("nearest", None), ("bspline", b), ("selfsr", s)):
            scores = dict.fromkeys((*TISSUE_COLUMNS, "segmentation_s"))
            if gm is not None:
                scores = {"dice_gm": gm, "dice_wm": gm + 0.1, "dice_csf": gm - 0.1,
                          "gm_volume_error": -10 * (1 - gm), "segmentation_s": 4.0}  # fmt: skip
            rows.append({"source": f"sub-0{i + 1}_T1w.nii.gz", "method": method,
                         "degradation": "slice", "scale": "1x1x3", "psnr_brain": 30.0 + i,
                         **scores})  # fmt: skip
    return rows


def test_group_summary_and_subject_report_show_tissue_agreement(tmp_path):
    from bids_sr.reports.group import aggregate, build_group_report
    from bids_sr.reports.subject import tissue_section

    rows = _agreement_rows()
    summary = {(s["method"], s["metric"]): s for s in aggregate(rows)}
    assert ("nearest", "dice_gm") not in summary  # not segmented: no group row
    selfsr = summary[("selfsr", "dice_gm")]
    assert selfsr["n"] == 2 and selfsr["n_paired"] == 2
    assert selfsr["mean"] == pytest.approx(0.835) and selfsr["diff_mean"] == pytest.approx(0.045)
    assert summary[("bspline", "gm_volume_error")]["mean"] == pytest.approx(-2.1)
    page = build_group_report(rows, tmp_path / "group.html").read_text()
    assert "dice_gm (higher is better)" in page
    assert "gm_volume_error (closer to 0 is better)" in page

    table = tissue_section(rows[:3])
    assert "Tissue segmentation agreement" in table and "0.84" in table and "0.8" in table
    assert "nearest" not in table
    empty = tissue_section([{**row, "dice_gm": None} for row in rows[:3]])
    assert "bids_sr[seg]" in empty and "<table" not in empty


def test_a_failing_segmentation_leaves_the_tissue_columns_na_and_the_evaluation_goes_on(
    monkeypatch, caplog
):
    """Atropos can fail on an odd image (it did on a small guided evaluation): the PSNR/SSIM
    rows still come back, the tissue columns are n/a and one warning says why."""

    def failing(*args, **kwargs):
        raise RuntimeError("Atropos exited with non-zero status 1")

    monkeypatch.setattr(evaluation, "atropos_available", lambda: True)
    monkeypatch.setattr(evaluation, "add_tissue_agreement", failing)
    with caplog.at_level(logging.WARNING, logger="bids_sr"):
        rows = _small_demo_evaluation()
    assert {row["method"] for row in rows} >= {"bspline", "nearest"}
    assert all(row["psnr_brain"] is not None for row in rows)
    assert all(row[c] is None for row in rows for c in (*TISSUE_COLUMNS, "segmentation_s"))
    assert any("tissue segmentation failed" in r.getMessage() for r in caplog.records)
