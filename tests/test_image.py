"""Geometry of the upsampled grid, NIfTI round trips and intensity normalisation."""

import nibabel as nib
import numpy as np
import pytest

from bids_sr.image import (
    ImageError,
    as_factors,
    effective_factors,
    factors_for_resolution,
    hr_shape,
    load_volume,
    requested_factors,
    robust_normalisation,
    save_volume,
    upsampled_affine,
)
from bids_sr.interpolation import interpolate


def _oblique_affine():
    angle = np.deg2rad(12.0)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([2.0, 1.5, 3.0])
    affine[:3, 3] = [-90.0, -120.0, -60.0]
    return affine


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 1, 4), (3, 2, 1)])
def test_nearest_block_average_returns_lr(factors):
    rng = np.random.default_rng(0)
    lr = rng.random((6, 5, 4)).astype(np.float32)
    hr = interpolate(lr, factors, "nearest")
    assert hr.shape == hr_shape(lr.shape, factors)
    blocks = hr.reshape(6, factors[0], 5, factors[1], 4, factors[2]).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(blocks, lr, atol=1e-6)


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 1, 4), (3, 2, 1)])
def test_hr_block_centres_land_on_lr_centres(factors):
    lr_affine = _oblique_affine()
    hr_affine = upsampled_affine(lr_affine, factors)
    s = np.asarray(factors)
    for lr_index in [(0, 0, 0), (3, 1, 2)]:
        ranges = [np.arange(i * f, (i + 1) * f) for i, f in zip(lr_index, s)]
        block = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
        world = nib.affines.apply_affine(hr_affine, block).mean(axis=0)
        np.testing.assert_allclose(world, nib.affines.apply_affine(lr_affine, lr_index), atol=1e-9)


def test_field_of_view_preserved():
    lr_affine = _oblique_affine()
    shape = (7, 9, 5)
    for factors in [(2, 2, 2), (1.5, 2.5, 1.3)]:
        eff = effective_factors(shape, factors)
        hr_affine = upsampled_affine(lr_affine, eff)
        hshape = hr_shape(shape, factors)
        # the outer corner of voxel (-0.5) and (n - 0.5) in both grids coincide
        for corner_lr, corner_hr in [
            (np.full(3, -0.5), np.full(3, -0.5)),
            (np.asarray(shape) - 0.5, np.asarray(hshape) - 0.5),
        ]:
            np.testing.assert_allclose(
                nib.affines.apply_affine(lr_affine, corner_lr),
                nib.affines.apply_affine(hr_affine, corner_hr),
                atol=1e-9,
            )


def test_factor_parsing_and_resolution():
    assert as_factors(2) == (2.0, 2.0, 2.0)
    assert as_factors([1, 1, 4]) == (1.0, 1.0, 4.0)
    with pytest.raises(ValueError):
        as_factors(0.5)
    with pytest.raises(ValueError):
        as_factors([1, 2])
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    assert factors_for_resolution(affine, 1.0) == (1.0, 1.0, 3.0)
    assert factors_for_resolution(affine, 0.5) == (2.0, 2.0, 6.0)


def test_default_factors_make_2d_scans_isotropic_and_double_3d_scans():
    """Without --scale or --output-resolution: a 2D scan (any axis the coarse one, oblique
    affine too) goes to its finest voxel size on every axis; a 3D scan (even a mildly
    anisotropic one) is doubled; an explicit scale or resolution still wins."""
    clinical = np.diag([0.9, 0.9, 3.0, 1.0])
    assert requested_factors(clinical) == pytest.approx((1.0, 1.0, 3.0 / 0.9))
    assert requested_factors(clinical, []) == requested_factors(clinical)
    rounded = np.diag([0.9121, 0.9115, 3.0, 1.0])  # one in-plane size, stored twice
    assert requested_factors(rounded) == pytest.approx((1.0, 1.0, 3.0 / 0.9115))
    assert requested_factors(np.diag([0.5, 0.6, 4.0, 1.0])) == pytest.approx((1.0, 1.2, 8.0))
    sagittal = np.diag([4.0, 1.0, 1.2, 1.0])
    assert requested_factors(sagittal) == pytest.approx((4.0, 1.0, 1.2))
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    oblique = np.eye(4)
    oblique[:3, :3] = rotation @ np.diag([1.0, 5.0, 1.0])
    assert requested_factors(oblique) == pytest.approx((1.0, 5.0, 1.0))
    assert requested_factors(np.diag([1.0, 1.0, 1.3, 1.0])) == (2.0, 2.0, 2.0)
    assert requested_factors(clinical, [2.0]) == (2.0, 2.0, 2.0)
    assert requested_factors(clinical, None, 0.45) == pytest.approx((2.0, 2.0, 3.0 / 0.45))


def test_normalisation_round_trip():
    rng = np.random.default_rng(1)
    data = np.zeros((20, 20, 20), np.float32)
    data[5:15, 5:15, 5:15] = rng.normal(800, 50, (10, 10, 10))
    norm = robust_normalisation(data)
    scaled = norm.apply(data)
    assert abs(float(np.median(scaled[data > 0])) - 0.8) < 0.25
    np.testing.assert_allclose(norm.restore(scaled), data, rtol=1e-5, atol=1e-3)


def test_save_keeps_codes_and_affine(tmp_path):
    affine = _oblique_affine()
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=4)
    src = tmp_path / "in.nii.gz"
    nib.save(img, src)
    vol = load_volume(src)
    hr_affine = upsampled_affine(vol.affine, (2, 2, 2))
    out = save_volume(vol.data * 2, hr_affine, tmp_path / "o.nii.gz", vol.header)
    back = nib.load(out)
    assert back.get_data_dtype() == np.float32
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 4
    np.testing.assert_allclose(back.affine, upsampled_affine(affine, (2, 2, 2)), atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "data, message",
    [
        (np.zeros((4, 4, 4)), "all zeros"),
        (np.full((4, 4, 4), np.nan), "NaN"),
        (np.ones((4, 4, 4, 2)), "3D"),
        (np.ones((4, 4)), "3D"),
    ],
)
def test_bad_images_raise_with_file_name(tmp_path, data, message):
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4)), path)
    with pytest.raises(ImageError, match=message) as info:
        load_volume(path)
    assert "bad.nii.gz" in str(info.value)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(ImageError, match="corrupt.nii.gz"):
        load_volume(path)


def test_command_line_default_grid_is_per_image_and_evaluation_keeps_x2(tmp_path):
    """The parser leaves the grid to :func:`bids_sr.image.default_factors` when neither
    --scale nor --output-resolution is given; evaluation mode simulates ×2."""
    from bids_sr.cli.parser import parse_args

    bids_dir = tmp_path / "bids"
    bids_dir.mkdir()
    out = str(tmp_path / "out")
    assert parse_args([str(bids_dir), out, "participant"]).workflow.scale == []
    assert parse_args([str(bids_dir), out, "participant", "--evaluate"]).workflow.scale == [2.0]
    given = parse_args([str(bids_dir), out, "participant", "--scale", "1", "1", "4"])
    assert given.workflow.scale == [1.0, 1.0, 4.0]
