"""Combining 2D scans of one contrast (bids_sr.combine): two orthogonal thick-slice scans of
a smooth phantom on a real (oblique) scanner grid."""

import numpy as np
import pytest
from scipy import ndimage

from bids_sr.acquisition import Acquisition, consistency_psnr, project
from bids_sr.bids import combined_path
from bids_sr.combine import CombineError, Scan, combine_scans
from bids_sr.image import foreground_mask, robust_normalisation, upsampled_affine
from bids_sr.metrics import psnr
from bids_sr.superresolve import super_resolve

FACTOR = 4
SHAPE = (48, 52, 48)


def _oblique_affine() -> np.ndarray:
    """A 1.2 mm grid rotated 10° about the scanner's z axis, with a real-looking origin."""
    angle = np.radians(10.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0],
                         [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])  # fmt: skip
    affine = np.eye(4)
    affine[:3, :3] = rotation * 1.2
    affine[:3, 3] = [-28.0, -35.0, -20.0]
    return affine


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """A head-like phantom: smooth random texture (σ 1.5 voxels) inside an ellipsoid."""
    rng = np.random.default_rng(7)
    texture = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1.5)
    texture = (texture - texture.min()) / np.ptp(texture)
    grid = np.indices(SHAPE, dtype=float)
    centre = (np.asarray(SHAPE, dtype=float) - 1) / 2
    radius = np.sqrt(sum(((g - c) / (0.42 * n)) ** 2 for g, c, n in zip(grid, centre, SHAPE)))
    head = ndimage.gaussian_filter((radius < 1).astype(float), 1.0)
    return (100.0 + 400.0 * texture) * head, _oblique_affine()


def _scan(truth, affine, axis, name, scale=1.0) -> Scan:
    """A thick-slice scan of ``truth`` along ``axis`` (rect, thickness = spacing), bspline."""
    factors = [1, 1, 1]
    factors[axis] = FACTOR
    acquisition = Acquisition(tuple(1.2 * f for f in factors), axis, 1.2 * FACTOR)
    lr = scale * project(truth, acquisition, [n // f for n, f in zip(SHAPE, factors)])
    lr_affine = affine @ np.linalg.inv(upsampled_affine(np.eye(4), factors))
    norm = robust_normalisation(lr)
    sr, _ = super_resolve(norm.apply(lr), factors, "bspline", acquisition=acquisition)
    return Scan(name, lr, lr_affine, acquisition, norm.restore(sr),
                upsampled_affine(lr_affine, factors))  # fmt: skip


@pytest.fixture(scope="module")
def scans(phantom):
    truth, affine = phantom
    return [_scan(truth, affine, 2, "axial"), _scan(truth, affine, 0, "sagittal")]


@pytest.fixture(scope="module")
def combined(scans):
    return combine_scans(scans, iterations=3)


def _score(data, truth):
    norm = robust_normalisation(truth)
    return psnr(norm.apply(data), norm.apply(truth), data_range=1.0, mask=foreground_mask(truth))


def test_combination_is_closer_to_the_truth_than_either_run(phantom, scans, combined):
    truth, _ = phantom
    singles = [_score(scan.sr, truth) for scan in scans]
    assert _score(combined.average, truth) > max(singles)
    assert _score(combined.data, truth) > max(singles) + 3.0, singles


def test_combination_honours_every_acquisition(scans, combined):
    for scan, record in zip(scans, combined.runs, strict=True):
        assert record["Run"] == scan.name and record["Used"]
        assert record["DataConsistencyPSNR"] > record["DataConsistencyPSNRAverage"] + 10
        assert record["DataConsistencyPSNR"] >= 45
    # the reference is met exactly, measured here independently of the module's bookkeeping
    axial = scans[0]
    value = consistency_psnr(combined.data, axial.lr, axial.acquisition,
                             mask=foreground_mask(axial.lr), data_range=float(np.ptp(axial.lr)))
    assert value > 80


def test_combination_keeps_the_reference_geometry(scans, combined):
    assert combined.data.shape == scans[0].sr.shape
    np.testing.assert_allclose(combined.affine, scans[0].sr_affine)
    np.testing.assert_allclose(combined.affine[:3, :3], _oblique_affine()[:3, :3], atol=1e-9)
    assert combined.reference == "axial"
    registration = combined.runs[1]
    assert registration["RegistrationUsable"] and registration["RegistrationTranslationMM"] < 0.5
    summary = combined.summary()
    assert summary["CombinationIterations"] == 3 and len(summary["CombinedRuns"]) == 2


def test_a_run_on_another_intensity_scale_is_mapped_onto_the_reference(phantom, scans, combined):
    truth, affine = phantom
    rescaled = _scan(truth, affine, 0, "sagittal", scale=3.0)
    result = combine_scans([scans[0], rescaled], iterations=3)
    assert result.runs[1]["Used"]
    # the run's scale is undone: the same intensity map onto the reference as at scale 1 ...
    np.testing.assert_allclose(result.runs[1]["IntensityMap"], combined.runs[1]["IntensityMap"],
                               atol=1e-4)  # fmt: skip
    # ... and the same result, in the reference's units, up to what the registration of the
    # two runs does (inputs equal up to rounding still converge to rotations 0.1° apart)
    head = foreground_mask(truth)
    np.testing.assert_allclose(np.median(result.data[head] / combined.data[head]), 1.0, atol=1e-3)
    assert _score(result.data, truth) > _score(combined.data, truth) - 0.1
    assert np.percentile(np.abs(result.data - combined.data), 99) < 2e-3 * float(truth.max())


def test_a_run_that_does_not_overlap_is_refused(scans):
    far = scans[1]
    moved = far.sr_affine.copy()
    moved[:3, 3] += 400.0
    lr_moved = far.lr_affine.copy()
    lr_moved[:3, 3] += 400.0
    away = Scan("away", far.lr, lr_moved, far.acquisition, far.sr, moved)
    with pytest.raises(CombineError, match="away: .*(overlap|registered|covers)"):
        combine_scans([scans[0], away], iterations=1)


def test_one_scan_is_not_a_combination(scans):
    with pytest.raises(CombineError, match="at least two"):
        combine_scans(scans[:1])


def test_combined_path_keeps_shared_entities_only():
    runs = ["/d/sub-01/ses-2/anat/sub-01_ses-2_acq-ax_run-1_T1w.nii.gz",
            "/d/sub-01/ses-2/anat/sub-01_ses-2_acq-sag_run-1_T1w.nii.gz"]  # fmt: skip
    path = combined_path(runs, "bsplineCombined")
    assert path.as_posix() == ("sub-01/ses-2/anat/"
                               "sub-01_ses-2_run-1_res-hi_desc-bsplineCombined_T1w.nii.gz")

