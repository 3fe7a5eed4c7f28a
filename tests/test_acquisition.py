"""The acquisition model of a scan (bids_sr.acquisition) against hand-computed slices."""

import numpy as np
import pytest

from bids_sr.acquisition import (
    Acquisition,
    AcquisitionError,
    axis_matrix,
    backproject,
    coarse_axis,
    consistency_psnr,
    describe_acquisition,
    enforce_consistency,
    project,
    simulated_acquisition,
)
from bids_sr.degrade import degrade
from bids_sr.image import voxel_sizes
from bids_sr.interpolation import upsample


def _ramp(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


def test_rect_slices_average_their_footprint():
    # 2 LR slices of 3 HR voxels each, thickness = spacing: block means
    np.testing.assert_allclose(axis_matrix(2, 6, "rect", 1.0) @ _ramp(6), [1.0, 4.0])
    # thickness 2/3 of the spacing (1 mm gap at 3 mm): the central 2 HR voxels, edges half
    weights = axis_matrix(2, 6, "rect", 2 / 3)
    np.testing.assert_allclose(weights[0], [0.25, 0.5, 0.25, 0, 0, 0])
    # overlap (thickness 5/3 spacing): each slice reaches one HR voxel into its neighbour's
    # block; the part beyond the field of view is dropped (rows still sum to 1)
    weights = axis_matrix(2, 6, "rect", 5 / 3)
    np.testing.assert_allclose(weights, [[0.25] * 4 + [0, 0], [0, 0] + [0.25] * 4], atol=1e-12)


def test_non_integer_factor_splits_hr_voxels():
    # 2 LR slices onto 5 HR voxels (×2.5): HR voxel 2 straddles both slices
    weights = axis_matrix(2, 5, "rect", 1.0)
    np.testing.assert_allclose(weights, [[0.4, 0.4, 0.2, 0, 0], [0, 0, 0.2, 0.4, 0.4]])


def test_gaussian_profile_is_symmetric_and_wider_than_rect():
    weights = axis_matrix(3, 9, "gaussian", 1.0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    centre = weights[1]
    np.testing.assert_allclose(centre, centre[::-1], atol=1e-12)
    assert centre[4] == centre.max() and centre[2] > 0 and centre[6] > 0
    # FWHM = thickness: the voxels at ±1.5 HR voxels (the rect edge) weigh half the centre
    fine = axis_matrix(3, 300, "gaussian", 1.0)[1]
    half = fine[150 - 50 : 150 + 50]
    assert abs(half[0] / fine[149:151].mean() - 0.5) < 0.03


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_each_axis_can_be_the_slice_axis(axis):
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = 4.0
    acq = describe_acquisition(spacing)
    assert acq.slice_axis == axis and acq.thickness == 4.0 and acq.gap == 0.0
    shape_hr = [6, 6, 6]
    shape_hr[axis] = 12
    shape_lr = [6, 6, 6]
    shape_lr[axis] = 3
    hr = np.moveaxis(np.broadcast_to(_ramp(12), (6, 6, 12)), 2, axis).astype(np.float32)
    lr = project(hr, acq, shape_lr)
    expected = np.moveaxis(np.broadcast_to([1.5, 5.5, 9.5], (6, 6, 3)), 2, axis)
    np.testing.assert_allclose(lr, expected, atol=1e-5)


def test_oblique_affine_finds_the_slice_axis():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])  # fmt: skip
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 5.0, 0.9])  # slices along array axis 1
    acq = describe_acquisition(voxel_sizes(affine), sidecar_thickness=4.0)
    assert acq.slice_axis == 1 and acq.thickness == 4.0 and acq.gap == pytest.approx(1.0)
    assert coarse_axis([1.0, 1.1, 1.2]) is None


def test_bad_parameters_are_refused():
    with pytest.raises(AcquisitionError, match="positive"):
        describe_acquisition([1, 1, 3], slice_thickness=0)
    with pytest.raises(AcquisitionError, match="more than 3"):
        describe_acquisition([1, 1, 3], slice_thickness=9.5)
    with pytest.raises(AcquisitionError, match="unknown slice profile"):
        describe_acquisition([1, 1, 3], profile="sinc")
    with pytest.raises(AcquisitionError, match="no coarse slice axis"):
        describe_acquisition([1, 1, 1], slice_thickness=3)
    # implausible sidecar metadata is ignored, not fatal
    assert describe_acquisition([1, 1, 3], sidecar_thickness=-2).thickness == 3.0


def test_adjoint_matches_projection():
    rng = np.random.default_rng(0)
    acq = Acquisition(spacing=(1, 2, 5.5), slice_axis=2, thickness=4.5, profile="gaussian")
    hr = rng.random((5, 8, 11)).astype(np.float32)
    lr = rng.random((5, 4, 2)).astype(np.float32)
    lhs = float((project(hr, acq, lr.shape) * lr).sum())
    rhs = float((hr * backproject(lr, acq, hr.shape)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_slice_degradation_takes_thickness_gap_profile_and_non_integer_factors():
    rng = np.random.default_rng(1)
    hr = rng.random((8, 8, 22)).astype(np.float32)
    # default: block mean, as before
    np.testing.assert_allclose(
        degrade(hr[..., :20], (1, 1, 4), "slice"),
        hr[..., :20].reshape(8, 8, 5, 4).mean(axis=-1), atol=1e-6,
    )  # fmt: skip
    gap = simulated_acquisition((1, 1, 1), (1, 1, 4), gap=2.0)
    assert gap.thickness == 2.0
    lr = degrade(hr[..., :20], (1, 1, 4), "slice", acquisition=gap)
    np.testing.assert_allclose(lr[..., 0], hr[..., 1:3].mean(axis=-1), atol=1e-6)
    lr = degrade(hr, (1, 1, 5.5), "slice")  # 5.5 mm slices from 1 mm: 22 → 4
    assert lr.shape == (8, 8, 4)
    np.testing.assert_allclose(lr[..., 0], hr[..., :5].sum(-1) / 5.5 + hr[..., 5] * 0.5 / 5.5,
                               atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="apply to the 'slice' degradation"):
        degrade(hr[..., :20], (1, 1, 4), "gaussian", acquisition=gap)


@pytest.mark.parametrize("profile,thickness", [("rect", 3.0), ("rect", 2.0), ("gaussian", 4.5)])
def test_enforced_consistency_reproduces_the_input(profile, thickness):
    from scipy import ndimage

    rng = np.random.default_rng(2)
    hr = ndimage.gaussian_filter(rng.random((24, 24, 36)), 2).astype(np.float32)
    acq = Acquisition(spacing=(1, 1, 3), slice_axis=2, thickness=thickness, profile=profile)
    lr = project(hr, acq, (24, 24, 12))
    data_range = float(lr.max() - lr.min())
    sr = upsample(lr, (1, 1, 3))
    before = consistency_psnr(sr, lr, acq, data_range=data_range)
    fixed = enforce_consistency(sr, lr, acq)
    after = consistency_psnr(fixed, lr, acq, data_range=data_range)
    assert before < 60 and after > 80
    # the correction brings the result closer to the truth, not only to the input
    assert np.abs(fixed - hr).mean() < np.abs(sr - hr).mean()
