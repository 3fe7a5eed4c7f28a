"""What a reference contributes to a guided result (bids_sr.guidance, MonoTwin, the report).

Synthetic phantoms only (fast, the core suite); the shipped guided models on real data are
checked in test_guided_reference_shared.py, and the whole path through the CLI on the demo in
test_t2w_guided.py (``test_guided_output_shows_what_the_reference_contributed``).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import tiny_weights
from scipy import ndimage

from bids_sr.guidance import (
    guided_minus_mono,
    insert_structures,
    mono_twin,
    mono_twin_weights,
    reference_only_structure_check,
    structure_transfer,
)


def _phantom(shape=(40, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    """A T1w-like head (bright 'white matter' core, darker shell) and a T2w-like inverse."""
    grid = np.indices(shape, dtype=np.float32)
    radius = np.sqrt(sum((g - (n - 1) / 2) ** 2 for g, n in zip(grid, shape, strict=True)))
    t1w = np.where(radius < 17, 0.6, 0.0) + np.where(radius < 11, 0.4, 0.0)
    t1w = ndimage.gaussian_filter(t1w.astype(np.float32), 0.7)
    t2w = np.where(radius < 17, 1.0 - 0.6 * (t1w > 0.8), 0.0).astype(np.float32)
    return t1w, t2w


# ------------------------------------------------------------------------- mono twin
def test_mono_twin_and_its_weights(tmp_path, monkeypatch):
    from bids_sr.cards import paths as card_paths

    assert mono_twin("srrecnn-t2w") == "srrecnn"
    with pytest.raises(ValueError, match="not a guided method"):
        mono_twin("srrecnn")
    # the shipped naming pairs: srrecnn-t2w_<suffix> → srrecnn_<suffix> beside it
    guided = tmp_path / "srrecnn-t2w_x1x1x4.safetensors"
    paired = tiny_weights(tmp_path / "srrecnn_x1x1x4.safetensors", "srrecnn")
    assert mono_twin_weights("srrecnn-t2w", str(guided), (1, 1, 4)) == paired
    # otherwise the twin's shipped weights for the factors; none at all: FileNotFoundError
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(card_paths, "WEIGHTS_DIR", empty)
    with pytest.raises(FileNotFoundError, match="no shipped weights for srrecnn"):
        mono_twin_weights("srrecnn-t2w", str(tmp_path / "mine.safetensors"), (2, 2, 2))
    monkeypatch.setattr(card_paths, "WEIGHTS_DIR", tmp_path)
    assert mono_twin_weights("srrecnn-t2w", None, (1, 1, 3)) == paired  # closest factors


def test_guided_minus_mono_numbers():
    mono, _ = _phantom()
    mono = 200.0 * mono + 10.0
    numbers = guided_minus_mono(mono, mono)
    assert numbers["mean_abs_difference"] == 0 and numbers["psnr_db"] == 999.0
    # a change of +8 over a block inside the brain: its share of the brain, of the range
    guided = mono.copy()
    guided[16:24, 16:24, 16:24] += 8.0
    numbers = guided_minus_mono(guided, mono)
    from bids_sr.masks import brain_mask

    brain = brain_mask(mono)
    expected = 8.0 * 512 / brain.sum()
    assert numbers["mean_abs_difference"] == pytest.approx(expected, rel=1e-4)
    span = numbers["intensity_range"]
    assert 150 < span <= 200
    assert numbers["mean_abs_difference_percent"] == pytest.approx(100 * expected / span)
    assert numbers["max_abs_difference"] == pytest.approx(8.0)
    assert numbers["psnr_db"] == pytest.approx(10 * np.log10(span**2 / (64 * 512 / brain.sum())))
    with pytest.raises(ValueError, match="differs from mono shape"):
        guided_minus_mono(guided[:-1], mono)


# -------------------------------------------------------------- reference-only structures
def test_inserted_structures_are_spheres_inside_the_brain():
    _, t2w = _phantom()
    mask = t2w > 0
    altered, spheres = insert_structures(t2w, mask, (1.0, 1.0, 1.0), count=2, diameter_mm=6.0)
    assert len(spheres) == 2 and not (spheres[0] & spheres[1]).any()
    changed = altered != t2w
    union = spheres[0] | spheres[1]
    assert not changed[~union].any() and changed[union].mean() > 0.5
    for sphere in spheres:
        assert 100 <= sphere.sum() <= 125  # 4/3 π 3³ = 113 voxels
        # centres a diameter inside the mask: every sphere voxel a radius (3 mm) inside it
        assert ndimage.distance_transform_edt(mask)[sphere].min() >= 3.0
        values = np.unique(altered[sphere])
        assert len(values) == 1 and values[0] in np.percentile(t2w[mask], [1.0, 99.0])
    # anisotropic voxels: the same sphere in millimetres
    _, wide = insert_structures(t2w, mask, (1.0, 1.0, 2.0), count=1, diameter_mm=6.0)
    extent = [np.flatnonzero(wide[0].any(axis=tuple({0, 1, 2} - {a}))).size for a in range(3)]
    assert extent == [7, 7, 3]  # 6 mm: 7 voxels of 1 mm, 3 slices of 2 mm
    with pytest.raises(ValueError, match="room for"):
        insert_structures(t2w, mask, count=50, diameter_mm=8.0)


def test_structure_transfer_tells_ignoring_from_copying():
    t1w, t2w = _phantom()
    altered, spheres = insert_structures(t2w, t2w > 0, count=3, diameter_mm=6.0, seed=1)
    ignores = structure_transfer(lambda ref: t1w, t2w, altered, spheres)
    assert ignores["transfer"] == 0 and ignores["transfer_db"] == -240.0
    blends = structure_transfer(lambda ref: t1w + 0.3 * ref, t2w, altered, spheres)
    assert blends["transfer"] == pytest.approx(0.3, rel=1e-4)
    assert blends["transfer_max"] == pytest.approx(0.3, rel=1e-4)
    assert blends["transfer_db"] == pytest.approx(20 * np.log10(0.3), abs=1e-3)

    def copy_edges(ref):  # the 'copy the reference edges' guide the check must catch
        return t1w + 0.5 * (ref - ndimage.gaussian_filter(ref, 1.0))

    copies = structure_transfer(copy_edges, t2w, altered, spheres)
    assert 0.06 < copies["transfer"] < 0.5 and copies["spheres"] == 3


def test_reference_only_check_runs_the_guided_method(tmp_path):
    """The whole check with a (tiny, untrained) guided network and data consistency, and
    with bspline, which ignores the reference: its transfer is exactly 0."""
    t1w, t2w = _phantom()
    lr = ndimage.zoom(t1w, 0.5, order=1)
    weights = tiny_weights(tmp_path / "g.safetensors", "srrecnn-t2w")
    options = {"mask": t2w > 0, "count": 2, "diameter_mm": 6.0}
    result = reference_only_structure_check(lr, (2, 2, 2), t2w, method="srrecnn-t2w",
                                            weights=str(weights), **options)  # fmt: skip
    assert result["method"] == "srrecnn-t2w" and result["spheres"] == 2
    assert 0 < result["transfer"] < 10 and result["transfer_max"] >= result["transfer"]
    plain = reference_only_structure_check(lr, (2, 2, 2), t2w, method="bspline", **options)
    assert plain["transfer"] == 0


# --------------------------------------------------------------------- MonoTwin node
def _guided_report(tmp_path: Path, **fields) -> tuple[Path, Path]:
    t1w, _ = _phantom((20, 20, 20))
    image = tmp_path / "t1w.nii.gz"
    nib.save(nib.Nifti1Image(100 * t1w, np.diag([2.0, 2.0, 2.0, 1.0])), image)
    report = tmp_path / "guided.json"
    report.write_text(json.dumps({"method": "srrecnn-t2w", "factors": [2.0, 2.0, 2.0],
                                  **fields}))  # fmt: skip
    return image, report


def test_mono_twin_node_skips_a_fallback_and_reports_missing_weights(tmp_path, monkeypatch):
    from bids_sr.cards import paths as card_paths
    from bids_sr.interfaces.guidance import MonoTwin

    monkeypatch.chdir(tmp_path)
    image, report = _guided_report(tmp_path, method="bspline", fallback_from="srrecnn-t2w")
    result = MonoTwin(in_file=str(image), guided_file=str(image), guided_report=str(report),
                      method="srrecnn-t2w", scale=[2.0], device="cpu").run()  # fmt: skip
    assert json.loads(Path(result.outputs.merged_report).read_text()) == json.loads(
        report.read_text())  # the fallback already ran the unguided model: nothing to compare
    assert result.outputs.difference_file == "" and not list(tmp_path.rglob("*_sr.nii.gz"))

    monkeypatch.setattr(card_paths, "WEIGHTS_DIR", tmp_path)  # no srrecnn weights here
    image, report = _guided_report(tmp_path, weights=str(tmp_path / "own.safetensors"))
    result = MonoTwin(in_file=str(image), guided_file=str(image), guided_report=str(report),
                      scale=[2.0], device="cpu").run()  # fmt: skip
    merged = json.loads(Path(result.outputs.merged_report).read_text())
    assert merged["guided_minus_mono"]["MonoModel"] == "srrecnn"
    assert "no shipped weights for srrecnn" in merged["guided_minus_mono"]["Problem"]
    assert result.outputs.difference_file == ""


def test_the_difference_map_is_written_only_when_a_twin_ran(tmp_path):
    """The guided − mono sink writes the map and its sidecar; given '' (no twin ran), it
    writes nothing and removes the map an earlier run left, so none contradicts the output."""
    from bids_sr.workflows.outputs import init_ds_guided_minus_mono_wf

    source = tmp_path / "raw" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    source.parent.mkdir(parents=True)
    image, report = _guided_report(tmp_path)
    source.write_bytes(image.read_bytes())
    wf = init_ds_guided_minus_mono_wf(
        bids_dir=tmp_path / "raw", output_dir=tmp_path / "out", source_file=str(source),
        method="srrecnn-flair", reference_suffix="FLAIR", reference="bids:raw:x_FLAIR.nii.gz",
    )  # fmt: skip
    sink = wf.get_node("ds_guided_minus_mono").interface
    sink.inputs.source_file = str(source)
    sink.inputs.report_json = str(report)
    sink.inputs.in_file = str(image)
    result = sink.run(cwd=str(tmp_path))
    written = tmp_path / "out/sub-01/anat/sub-01_res-hi_desc-srrecnnFlairGuidedMinusMono_T1w"
    assert result.outputs.out_file == f"{written}.nii.gz"
    meta = json.loads(Path(f"{written}.json").read_text())
    assert meta["FLAIRReference"] == "bids:raw:x_FLAIR.nii.gz"
    assert meta["ReferenceSuffix"] == "FLAIR"
    assert meta["Sources"][0] == "bids::sub-01/anat/sub-01_res-hi_desc-srrecnnFlair_T1w.nii.gz"
    assert "What the FLAIR reference contributed" in meta["Description"]
    sink.inputs.in_file = ""
    sink.run(cwd=str(tmp_path))
    assert not list((tmp_path / "out").rglob("*GuidedMinusMono*"))


# ----------------------------------------------------------------------- the report
def test_report_shows_the_difference_row_and_sentence(tmp_path):
    from bids_sr.interfaces.bids import build_sidecar
    from bids_sr.reports.figures import Layer, comparison_png, difference_limit, display_grid
    from bids_sr.reports.subject import guided_sentence

    t1w, _ = _phantom()
    planes = [np.array([[-3.0, 0.0], [1.0, 2.0]])]
    assert difference_limit(planes) == pytest.approx(np.percentile([3, 1, 2], 99.5))
    assert difference_limit([np.zeros((2, 2))]) == 1.0
    grid, _ = display_grid(t1w, np.eye(4))
    png = comparison_png([Layer("t1w", t1w, np.eye(4)),
                          Layer("guided − mono", t1w - 0.5, np.eye(4), kind="difference")],
                         grid)  # fmt: skip
    assert png.startswith(b"\x89PNG")
    numbers = {"MonoModel": "srrecnn", "MeanAbsDifference": 1.234, "MeanAbsDifferencePercent":
               0.617, "MaxAbsDifference": 9.0, "IntensityRange": 200.0, "PSNR": 41.5}  # fmt: skip
    sentence = guided_sentence({"GuidedMinusMono": numbers})
    assert "0.62% of the T1w's brain intensity range" in sentence and "41.5 dB" in sentence
    missing = guided_sentence({"GuidedMinusMono": {"MonoModel": "srrecnn", "Problem": "none"}})
    assert missing == "No guided − mono comparison: none."
    # the sidecar carries the comparison under GuidedMinusMono
    source = tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"")
    sidecar = build_sidecar(str(source), str(tmp_path), "srrecnnT2w", "hi",
                            {"method": "srrecnn-t2w", "guided_minus_mono": numbers})
    assert sidecar["GuidedMinusMono"] == numbers
    # a guided selfsr whose guide did not help on the scan's own slices: said, with its figures
    check = {"guided_l1_ratio": 0.334, "mono_l1_ratio": 0.329, "used": False}
    sidecar = build_sidecar(str(source), str(tmp_path), "selfsrT2w", "hi",
                            {"method": "selfsr", "fallback_from": "selfsr-t2w",
                             "fallback_reason": "the reference did not help; ran selfsr",
                             "guide_check": check})  # fmt: skip
    assert sidecar["Method"] == "selfsr" and sidecar["FallbackFrom"] == "selfsr-t2w"
    assert sidecar["GuideCheck"] == {"GuidedL1Ratio": 0.334, "MonoL1Ratio": 0.329, "Used": False}
    assert "selfsr, in place of selfsr-t2w" in sidecar["Description"]


def test_only_a_guided_workflow_has_a_mono_twin_with_the_same_settings():
    from nipype.interfaces.base import isdefined

    from bids_sr.workflows.anatomical import init_anat_sr_wf

    common = {"scale": [1.0, 1.0, 3.0], "device": "cpu", "seed": 3,
              "slice_thickness": 5.0, "data_consistency": False}  # fmt: skip
    for method, guided in (("srrecnn", False), ("bspline", False), ("srrecnn-t2w", False)):
        wf = init_anat_sr_wf(method=method, guided=guided, **common)
        assert "mono_twin" not in wf.list_node_names()
    wf = init_anat_sr_wf(method="srrecnn-t2w", guided=True, fallback_method="srrecnn", **common)
    guided, twin = wf.get_node("super_resolve").inputs, wf.get_node("mono_twin").inputs
    assert guided.fallback_method == "srrecnn" and not isdefined(twin.fallback_method)
    for name in ("scale", "device", "seed", "slice_thickness", "slice_profile",
                 "data_consistency", "tile_size", "amp"):  # fmt: skip
        assert getattr(twin, name) == getattr(guided, name), name
    edges = {(u.name, v.name): d["connect"] for u, v, d in wf._graph.edges(data=True)}
    assert ("merged_report", "report_json") in edges[("mono_twin", "outputnode")]
    assert ("out_file", "guided_file") in edges[("super_resolve", "mono_twin")]
