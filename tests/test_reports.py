"""Reports: world-aligned slices, subject and group pages, group statistics, and rendering
in headless Chromium."""

import base64
import io
import re

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
from conftest import assert_renders_in_chromium
from scipy import ndimage

from bids_sr.evaluation import write_metrics_tsv
from bids_sr.image import upsampled_affine
from bids_sr.interpolation import upsample
from bids_sr.reports.figures import display_grid, edge_map, sample_plane
from bids_sr.reports.group import (
    aggregate,
    build_group_report,
    load_tables,
    mean_ci,
    write_group_tsv,
)
from bids_sr.reports.subject import build_subject_report, provenance

# LAS storage (x flipped), 2 mm: the display must still put the subject's right on the right
LR_AFFINE = np.array([[-2.0, 0, 0, 24], [0, 2.0, 0, -20], [0, 0, 2.0, -22], [0, 0, 0, 1]])


def _head(shape=(20, 22, 24), seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g * g for g in grids))
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 1.0)
    return (np.where(r < 0.85, 100 + 30 * texture, 5) + 60 * (r < 0.5)).astype(np.float32)


def _write(data, affine, path):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return str(path)


@pytest.fixture
def report_files(tmp_path):
    lr = _head()
    hr_affine = upsampled_affine(LR_AFFINE, (2, 2, 2))
    sr = upsample(lr, (2, 2, 2), order=3)
    truth = sr + np.random.default_rng(1).normal(0, 3, sr.shape).astype(np.float32)
    return {
        "input_path": _write(lr, LR_AFFINE, tmp_path / "sub-01_T1w.nii.gz"),
        "output_path": _write(sr, hr_affine, tmp_path / "sub-01_res-2_desc-bspline_T1w.nii.gz"),
        "truth_path": _write(truth, hr_affine, tmp_path / "truth.nii.gz"),
        "registered_reference_path": _write(truth.max() - truth, hr_affine,
                                            tmp_path / "t2w.nii.gz"),
    }


def test_planes_are_world_aligned():
    data = np.zeros((10, 12, 14), np.float32)
    data[1, 6, 7] = 1  # voxel x=1 in LAS storage is on the subject's right (world x > 0)
    grid, ras = display_grid(data, LR_AFFINE)
    assert grid.shape == (10, 12, 14) and np.all(np.diag(grid.affine)[:3] > 0)
    axial = sample_plane(ras, grid.affine, grid, "axial")  # rows = anterior, cols = right
    assert axial.shape == (12, 10)
    row, col = np.unravel_index(np.argmax(axial), axial.shape)
    assert col == 8  # near the right edge of the panel
    # sampling the original (non-canonical) array through its own affine gives the same plane
    np.testing.assert_array_equal(sample_plane(data, LR_AFFINE, grid, "axial"), axial)


def test_edge_map_finds_the_boundary():
    data = np.zeros((24, 24, 24), np.float32)
    data[6:18, 6:18, 6:18] = 100
    edges = edge_map(data, (1.0, 1.0, 1.0))
    assert edges.any() and not edges[12, 12, 12] and edges[6, 12, 12]


def test_provenance_puts_method_first():
    fields = provenance({"SkullStripped": False, "device": "cpu", "Method": "srrecnn"})
    assert list(fields) == ["Method", "device", "SkullStripped"]


def test_subject_report_is_self_contained(report_files, tmp_path):
    metrics = [{"method": "bspline", "degradation": "gaussian", "scale": "2", "psnr_brain": 30.5}]
    entry = {"title": "T1w ×2 bspline", "sidecar": {"Method": "bspline", "Device": "cpu"},
             "metrics": metrics, **report_files}  # fmt: skip
    out = build_subject_report("01", [entry], tmp_path / "sub-01.html")
    text = out.read_text()
    assert "<title>bids_sr report: sub-01</title>" in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2  # comparison figure + registration overlay
    figure = mpimg.imread(io.BytesIO(base64.b64decode(images[0])), format="png")
    assert figure.shape[0] > 300 and figure[..., :3].std() > 0.05  # 5 rows, not blank
    # the reference row has a grey window of its own: a T2w 1000× brighter is not saturated
    bright = _write(1000 * nib.load(report_files["registered_reference_path"]).get_fdata(),
                    upsampled_affine(LR_AFFINE, (2, 2, 2)), tmp_path / "bright.nii.gz")  # fmt: skip
    out = build_subject_report("01", [{**entry, "registered_reference_path": bright}],
                               tmp_path / "sub-01c.html")  # fmt: skip
    shown = re.findall(r'src="data:image/png;base64,([^"]+)"', out.read_text())[0]
    np.testing.assert_allclose(mpimg.imread(io.BytesIO(base64.b64decode(shown)), format="png"),
                               figure, atol=0.02)  # fmt: skip
    without = dict(report_files)
    del without["registered_reference_path"]
    out = build_subject_report("01", [{**entry, **without, "registered_reference_path": None}],
                               tmp_path / "sub-01b.html")  # fmt: skip
    fewer = re.findall(r'src="data:image/png;base64,([^"]+)"', out.read_text())
    assert len(fewer) == 1
    smaller = mpimg.imread(io.BytesIO(base64.b64decode(fewer[0])), format="png")
    assert figure.shape[0] - smaller.shape[0] > 150  # the reference (T2w) row
    assert "30.5" in text and 'src="http' not in text and "<script" not in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic, no tmp left
    with pytest.raises(ValueError, match="lacks output_path"):
        build_subject_report("01", [{"input_path": "x"}], tmp_path / "bad.html")


def test_a_flair_guided_output_is_reported_as_flair(report_files, tmp_path, monkeypatch):
    """The reference row, the registration heading and note and the overlay's title name
    the sidecar's reference contrast (FLAIR), not T2w; an older sidecar means T2w."""
    from bids_sr.reports import figures, subject

    assert subject.reference_suffix({"FLAIRReference": "x"}) == "FLAIR"
    assert subject.reference_suffix({"SpatialReference": "x"}) == "T2w"
    shown = {}

    def rows(layers, grid):
        shown["rows"] = [layer.label for layer in layers]
        return real_comparison(layers, grid)

    def overlay(*args, **kwargs):
        shown["title"] = kwargs["title"]
        return real_overlay(*args, **kwargs)

    real_comparison, real_overlay = subject.comparison_png, figures.overlay_png
    monkeypatch.setattr(subject, "comparison_png", rows)
    monkeypatch.setattr(figures, "overlay_png", overlay)
    sidecar = {"Method": "srrecnn-flair", "ReferenceSuffix": "FLAIR",
               "FLAIRReference": "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz",
               "RegistrationQualityNMI": 1.3, "RegistrationQualityThreshold": 1.05,
               "RegistrationUsable": True}  # fmt: skip
    del report_files["truth_path"]
    entry = {"title": "FLAIR-guided", "sidecar": sidecar, **report_files}
    text = subject.build_subject_report("01", [entry], tmp_path / "sub-01.html").read_text()
    assert shown["rows"][-1] == "reference (FLAIR)"
    assert shown["title"] == "registered FLAIR with T1w edges (red)"
    assert "<h3>FLAIR registration</h3>" in text and "over the FLAIR registered" in text
    assert "sub-01_FLAIR.nii.gz" in text and "T2w" not in text


def _hand_rows():
    psnr = {"bspline": [30.0, 31.0, 32.0], "fsrcnn": [31.0, 33.0, 32.0]}
    return [
        {"source": f"sub-0{i + 1}_T1w.nii.gz", "method": method, "degradation": "gaussian",
         "scale": "2", "psnr_brain": value, "ssim_brain": None}
        for method, values in psnr.items()
        for i, value in enumerate(values)
    ]  # fmt: skip


def test_mean_ci_known_values():
    mean, low, high = mean_ci([1.0, 2.0, 0.0])
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, df=2) · sd(=1) / sqrt(3)
    assert mean == 1.0 and low == pytest.approx(1 - half) and high == pytest.approx(1 + half)
    assert np.isnan(mean_ci([2.0])[1])


def test_group_aggregation_of_hand_made_rows(tmp_path):
    summary = aggregate(_hand_rows(), metrics=("psnr_brain", "ssim_brain"))
    assert [(s["method"], s["metric"]) for s in summary] == [
        ("bspline", "psnr_brain"),
        ("fsrcnn", "psnr_brain"),
    ]  # ssim_brain is all missing: no row
    bspline, fsrcnn = summary
    assert bspline["mean"] == 31.0 and bspline["sd"] == 1.0 and bspline["diff_mean"] is None
    assert fsrcnn["mean"] == 32.0 and fsrcnn["n"] == 3 and fsrcnn["n_paired"] == 3
    half = 4.302652729911275 / np.sqrt(3)
    assert fsrcnn["diff_mean"] == pytest.approx(1.0)
    assert fsrcnn["diff_ci_low"] == pytest.approx(1 - half)
    assert fsrcnn["diff_ci_high"] == pytest.approx(1 + half)

    # through the files: subject TSVs → load → group TSV + HTML
    rows = _hand_rows()
    for i in range(3):
        write_metrics_tsv([r for r in rows if r["source"].startswith(f"sub-0{i + 1}")],
                          tmp_path / f"sub-0{i + 1}_desc-evaluation_metrics.tsv")  # fmt: skip
    loaded = load_tables(sorted(tmp_path.glob("sub-*_metrics.tsv")))
    assert len(loaded) == 6
    again = aggregate(loaded)
    assert again[1]["diff_ci_high"] == pytest.approx(1 + half)
    tsv = write_group_tsv(again, tmp_path / "desc-evaluation_group.tsv")
    assert tsv.with_suffix(".json").exists()
    assert tsv.read_text().splitlines()[0].startswith("degradation\tscale\tmethod\tmetric")
    page = build_group_report(loaded, tmp_path / "group.html").read_text()
    assert "32 ± 1" in page and "+1 [" in page and page.count("data:image/png;base64,") == 1


# ----------------------------------------------------------------- headless Chromium
@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_files, tmp_path, chromium):
    entry = {"title": "T1w ×2 bspline", "sidecar": {"Method": "bspline"}, **report_files}
    report = build_subject_report("01", [entry], tmp_path / "sub-01.html")
    assert_renders_in_chromium(chromium, report, tmp_path, n_images=2)


def test_table_cells_show_structured_values_as_written():
    """A sidecar's dict or list in the provenance table keeps its characters (the sidecar's
    ``Resolution`` says "0.91×0.91×1 mm", not "0.91\\u00d70.91\\u00d71 mm")."""
    from bids_sr.reports.html import format_cell

    assert format_cell({"hi": "to 0.91×0.91×1 mm"}) == '{"hi": "to 0.91×0.91×1 mm"}'
    assert format_cell([1.0, 3]) == "[1.0, 3]" and format_cell(None) == "n/a"
