"""The report's first screen says what a reader needs to trust each output (issue 42): the
method, why it was chosen, the validated gain over B-spline from the model card, the
per-scan self-check, the uncertainty map with its colour scale, and what data consistency
guarantees (the ~150 dB is by construction; the before-correction figure). The group
summary has one row per super-resolved image and the uncertainty maps in a column."""

from __future__ import annotations

import csv
import json
import re

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_sr.image import upsampled_affine
from bids_sr.interfaces.reports import derivative_entries
from bids_sr.interpolation import upsample
from bids_sr.reports import figures
from bids_sr.reports.subject import build_subject_report
from bids_sr.reports.summary import write_group_summary
from bids_sr.reports.trust import card_evidence

# a 2D-like T1w: 1 × 1 mm in plane, 4 mm slices along the last axis (selfsr's kind of input)
LR_AFFINE = np.diag([1.0, 1.0, 4.0, 1.0])
FACTORS = (1, 1, 4)
SELFSR_CHOICE = ("auto chose selfsr because its model card (selfsr.card.json) validates it on "
                 "slice inputs at ×1x1x4: at least +1.53 dB brain PSNR over bspline on each "
                 "held-out image (chris, openms19)")  # fmt: skip
BSPLINE_CHOICE = ("auto chose bspline (cubic B-spline interpolation) because no shipped model "
                  "card validates a gain over bspline for isotropic inputs at ×3")  # fmt: skip


def _head(shape=(24, 26, 8), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g * g for g in grids))
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 1.0)
    return (np.where(r < 0.85, 100 + 30 * texture, 5) + 60 * (r < 0.5)).astype(np.float32)


def _save(data, affine, path) -> str:
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return str(path)


def _selfsr_like(folder, name="sub-01"):
    """A slice-family input, its B-spline ×1x1x4 as the "selfsr" output, an uncertainty map
    (bright at the head's edge), and the sidecar selfsr writes."""
    lr = _head()
    hr_affine = upsampled_affine(LR_AFFINE, FACTORS)
    sr = upsample(lr, FACTORS, order=3)
    spread = np.abs(ndimage.sobel(sr, axis=2)) / 50.0
    anat = folder / name / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    paths = {
        "input_path": _save(lr, LR_AFFINE, folder / f"{name}_T1w.nii.gz"),
        "output_path": _save(sr, hr_affine, anat / f"{name}_res-hi_desc-selfsr_T1w.nii.gz"),
        "uncertainty_path": _save(spread, hr_affine,
                                  anat / f"{name}_res-hi_desc-selfsrUncertainty_T1w.nii.gz"),
    }  # fmt: skip
    sidecar = {
        "Method": "selfsr", "RequestedMethod": "auto", "MethodChoice": SELFSR_CHOICE,
        "ScaleFactor": list(FACTORS), "AcquisitionModel": "slice", "InputSliceThickness": 4.0,
        "DataConsistency": True, "DataConsistencyPSNR": 151.37,
        "DataConsistencyPSNRBefore": 38.42, "SelfCheckL1Ratio": 0.7134,
        "Weights": "selfsr_models/abc.safetensors", "Device": "cpu",
    }  # fmt: skip
    return paths, sidecar, float(np.percentile(spread[spread > 0], 99.5))


def _first_section(text: str) -> str:
    """The report's first section, which must come before every per-output section."""
    match = re.search(r'<section id="trust">(.*?)</section>', text, re.S)
    assert match, "the report has no first (trust) section"
    assert text.index('<section id="trust">') < text.index("<h2>", text.index("</section>"))
    body = text[text.index("<body>"):match.start()]
    assert "<h2>" not in body and "<img" not in body  # nothing comes before it
    return match.group(1)


def _rows(section: str) -> dict[str, str]:
    cells = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", section, re.S)
    return {question: answer for question, answer in cells}


def test_the_card_backs_selfsr_on_slice_inputs_at_x4():
    """The fixture's figures are the shipped card's (the demo's sub-03 gets this choice)."""
    sidecar = {"Method": "selfsr", "ScaleFactor": [1, 1, 4], "AcquisitionModel": "slice"}
    evidence = card_evidence(sidecar)
    assert evidence is not None and evidence.weights.name == "selfsr.card.json"
    assert evidence.gain == pytest.approx(0.726, abs=0.005)  # the worst of 32 images
    assert card_evidence({**sidecar, "AcquisitionModel": "isotropic"}) is None
    assert card_evidence({"Method": "bspline", "ScaleFactor": [2, 2, 2]}) is None


def test_first_screen_of_a_selfsr_output(tmp_path, monkeypatch):
    paths, sidecar, limit = _selfsr_like(tmp_path)
    bars = []
    real_bar = figures._colour_bar
    monkeypatch.setattr(figures, "_colour_bar", lambda fig, ax, image, vmax, signed=True: (
        bars.append((vmax, signed)), real_bar(fig, ax, image, vmax, signed))[1])  # fmt: skip
    entry = {"title": "selfsr", "sidecar": sidecar, **paths}
    text = build_subject_report("01", [entry], tmp_path / "sub-01.html").read_text()
    first = _first_section(text)
    rows = _rows(first)
    assert list(rows) == ["Method", "Why this method", "Validated gain over B-spline",
                          "Self-check on this scan", "Data consistency"]  # fmt: skip
    assert rows["Method"] == "selfsr (requested: auto)"
    assert rows["Why this method"].startswith("Auto chose selfsr because its model card")
    gain = rows["Validated gain over B-spline"]
    assert gain.startswith("At least +0.73 dB brain PSNR over bspline on every held-out image "
                           "(chris, openms19, 30 IXI subjects)")  # fmt: skip
    assert "chris, openms19" in gain and "slice inputs at ×1x1x4" in gain
    assert "selfsr.card.json" in gain
    check = rows["Self-check on this scan"]
    assert "0.713 of B-spline&#x27;s" in check and "29% less error" in check
    consistency = rows["Data consistency"]
    assert "re-acquired through the acquisition model" in consistency
    assert "returns the input: 151.37 dB" in consistency
    assert "by construction" in consistency and "not a measure of quality" in consistency
    assert "Before the correction, the method&#x27;s own output reproduced the input at " \
           "38.42 dB" in consistency  # fmt: skip
    # the uncertainty map: a figure with a non-negative colour scale up to its 99.5th pct
    assert first.count("<img") == 1 and "sub-01_res-hi_desc-selfsrUncertainty_T1w" in first
    assert "colour bar" in first and "intensity units" in first
    assert len(bars) == 1 and bars[0][1] is False
    assert bars[0][0] == pytest.approx(limit, rel=0.2)  # of the centre planes shown
    # the rest of the report follows: slices and provenance
    assert text.index("<h3>Provenance</h3>") > text.index("</section>")


def test_first_screen_of_a_bspline_output_and_of_a_guided_one(tmp_path):
    lr = _head((16, 18, 20))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    sr = upsample(lr, (3, 3, 3), order=3)
    paths = {"input_path": _save(lr, affine, tmp_path / "sub-01_T1w.nii.gz"),
             "output_path": _save(sr, upsampled_affine(affine, (3, 3, 3)),
                                  tmp_path / "sub-01_res-hi_desc-bspline_T1w.nii.gz")}  # fmt: skip
    sidecar = {"Method": "bspline", "RequestedMethod": "auto", "MethodChoice": BSPLINE_CHOICE,
               "ScaleFactor": [3, 3, 3], "AcquisitionModel": "isotropic",
               "DataConsistency": True, "DataConsistencyPSNR": 148.9,
               "DataConsistencyPSNRBefore": 45.1}  # fmt: skip
    text = build_subject_report("01", [{"sidecar": sidecar, **paths}],
                                tmp_path / "sub-01.html").read_text()  # fmt: skip
    first = _first_section(text)
    rows = _rows(first)
    assert rows["Method"] == "bspline (requested: auto)"
    assert rows["Why this method"].startswith("Auto chose bspline (cubic B-spline")
    assert "the baseline the learned methods are measured against" in \
        rows["Validated gain over B-spline"]  # fmt: skip
    assert "bspline is an interpolation; it learns nothing" in rows["Self-check on this scan"]
    assert "148.9 dB" in rows["Data consistency"] and "by construction" in rows["Data consistency"]
    assert "45.1 dB" in rows["Data consistency"]
    assert "<img" not in first  # no uncertainty map for bspline
    # a learned method asked for outside its card (×3), without the correction
    asked = {**sidecar, "Method": "fsrcnn", "RequestedMethod": None, "MethodChoice": None,
             "MethodWarning": "no shipped model card of fsrcnn validates a gain",
             "DataConsistency": False, "DataConsistencyPSNR": 41.2}  # fmt: skip
    text = build_subject_report("01", [{"sidecar": asked, **paths}],
                                tmp_path / "sub-01b.html").read_text()  # fmt: skip
    rows = _rows(_first_section(text))
    assert rows["Why this method"].startswith("fsrcnn was requested (--method). Warning: no")
    assert rows["Validated gain over B-spline"].startswith("Not validated")
    assert rows["Data consistency"].startswith("Off (--no-data-consistency)")
    assert "does not learn from the scan; its evidence is the model card" in \
        rows["Self-check on this scan"]  # fmt: skip
    assert "by construction" not in rows["Data consistency"]
    # a selfsr-t2w self-check with its guide check
    paths_g, guided, _ = _selfsr_like(tmp_path, "sub-02")
    guided.update(Method="selfsr-t2w", GuideCheck={"GuidedL1Ratio": 0.61, "MonoL1Ratio": 0.71,
                                                   "MinImprovement": 0.01, "Used": True})
    text = build_subject_report("02", [{"sidecar": guided, **paths_g}],
                                tmp_path / "sub-02.html").read_text()  # fmt: skip
    check = _rows(_first_section(text))["Self-check on this scan"]
    assert "With the reference: 0.610, without: 0.710; the reference was used." in check
    from bids_sr.reports.trust import self_check_text

    assert "no self-check" in self_check_text({"Method": "selfsr"})  # the filters learner
    # the cohort mode's prior that barely beats B-spline on this scan points to selfsr
    # where selfsr's card validates it (×3), and nowhere else (×20: no selfsr record)
    thick = {"Method": "selfsr-fast", "SelfCheckL1Ratio": 0.958, "AcquisitionModel": "slice"}
    poor = self_check_text({**thick, "ScaleFactor": [1.0, 1.0, 3.0]})
    assert "0.958 of B-spline's: 4% less error" in poor and "--method selfsr" in poor
    beyond = self_check_text({**thick, "ScaleFactor": [1.0, 1.0, 20.0]})
    assert "--method selfsr" not in beyond and "no method that trains on the scan" in beyond
    # the prior alone learns nothing, so its output is never "B-spline's"
    worse = self_check_text({**thick, "SelfCheckL1Ratio": 1.07, "ScaleFactor": [1, 1, 13]})
    assert "no better than B-spline" in worse and "result is B-spline's" not in worse
    assert "--method selfsr" not in self_check_text({"Method": "selfsr-fast",
                                                     "SelfCheckL1Ratio": 0.72})  # fmt: skip
    assert "--method selfsr" not in self_check_text({"Method": "selfsr", "SelfCheckL1Ratio": 0.95})
    # learned nothing: at or above the collapse threshold of the recipe the sidecar records
    # (the shipped recipe's, 0.995, for a sidecar without one)
    assert "learned nothing" in self_check_text({"Method": "selfsr", "SelfCheckL1Ratio": 0.996})
    recorded = {"Method": "selfsr", "SelfCheckL1Ratio": 0.95, "Recipe": {"CollapsedRatio": 0.9}}
    assert "learned nothing" in self_check_text(recorded)
    assert "5% less error" in self_check_text({**recorded, "Recipe": {}})


def test_report_node_gets_the_uncertainty_map(tmp_path):
    paths, sidecar, _ = _selfsr_like(tmp_path)
    (tmp_path / "s.json").write_text(json.dumps(sidecar))
    entries = derivative_entries([paths["input_path"]] * 2, [paths["output_path"]] * 2,
                                 [str(tmp_path / "s.json")] * 2,
                                 uncertainty_maps=[paths["uncertainty_path"], ""])  # fmt: skip
    assert entries[0]["uncertainty_path"] == paths["uncertainty_path"]
    assert "uncertainty_path" not in entries[1]
    with pytest.raises(ValueError, match="1 uncertainty maps"):
        derivative_entries([paths["input_path"]] * 2, [paths["output_path"]] * 2,
                           [str(tmp_path / "s.json")] * 2, uncertainty_maps=[""])


def test_group_summary_puts_uncertainty_maps_in_their_own_column(tmp_path):
    out = tmp_path / "out"
    paths, sidecar, _ = _selfsr_like(out)
    for key in ("output_path", "uncertainty_path"):
        meta = sidecar if key == "output_path" else {"Description": "Uncertainty", "Units": "a"}
        (out / "sub-01" / "anat" / (paths[key].rsplit("/", 1)[1][:-7] + ".json")).write_text(
            json.dumps(meta))
    bspline = out / "sub-01" / "anat" / "sub-01_res-hi_desc-bspline_T1w"
    _save(nib.load(paths["output_path"]).get_fdata(), LR_AFFINE, f"{bspline}.nii.gz")
    bspline.with_suffix(".json").write_text(json.dumps({"Method": "bspline"}))
    minus = out / "sub-01" / "anat" / "sub-01_res-hi_desc-selfsrT2wGuidedMinusMono_T1w"
    _save(np.zeros((2, 2, 2)), LR_AFFINE, f"{minus}.nii.gz")
    minus.with_suffix(".json").write_text("{}")
    tsv, page = write_group_summary(out)
    rows = list(csv.DictReader(tsv.open(), delimiter="\t"))
    assert [row["method"] for row in rows] == ["bspline", "selfsr"]  # one row per image
    assert all("Uncertainty" not in row["file"] and "Minus" not in row["file"] for row in rows)
    by_method = {row["method"]: row for row in rows}
    assert by_method["selfsr"]["uncertainty_map"] == \
        "sub-01/anat/sub-01_res-hi_desc-selfsrUncertainty_T1w.nii.gz"  # fmt: skip
    assert by_method["bspline"]["uncertainty_map"] == "n/a"
    assert by_method["selfsr"]["self_check_l1_ratio"] == "0.7134"
    assert by_method["selfsr"]["data_consistency_psnr_before"] == "38.42"
    text = page.read_text()
    assert "2 super-resolved image(s)" in text and "<th>uncertainty_map</th>" in text


@pytest.mark.slow  # headless browser
def test_first_screen_renders_in_headless_chromium(tmp_path, chromium):
    from conftest import assert_renders_in_chromium

    paths, sidecar, _ = _selfsr_like(tmp_path)
    report = build_subject_report("01", [{"sidecar": sidecar, **paths}], tmp_path / "sub-01.html")
    assert_renders_in_chromium(chromium, report, tmp_path, n_images=2)  # uncertainty + slices
