"""Degradation presets keep the grid convention of image.py."""

import numpy as np
import pytest

from bids_sr.degrade import PRESETS, crop_to_factor, degrade
from bids_sr.interpolation import upsample


def _smooth_volume(shape=(24, 22, 20)):
    grids = np.meshgrid(*[np.linspace(0, np.pi, n) for n in shape], indexing="ij")
    return (np.sin(grids[0]) * np.cos(grids[1] / 2) + 0.5 * np.sin(grids[2])).astype(np.float32)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 1, 4)])
def test_presets_shape_and_alignment(preset, factors):
    hr = crop_to_factor(_smooth_volume(), factors)
    lr = degrade(hr, factors, preset)
    assert lr.shape == tuple(n // f for n, f in zip(hr.shape, factors))
    back = upsample(lr, factors, order=3)
    assert back.shape == hr.shape
    inner = tuple(slice(4, -4) for _ in range(3))
    err = np.abs(back[inner] - hr[inner]).mean()
    # aligned presets reconstruct a smooth image closely; decimation is half a voxel off
    assert err < max(factors) * (0.03 if preset == "decimate" else 0.012)


def test_slice_preset_is_block_mean():
    rng = np.random.default_rng(0)
    hr = rng.random((4, 4, 8)).astype(np.float32)
    lr = degrade(hr, (1, 1, 4), "slice")
    np.testing.assert_allclose(lr[..., 1], hr[..., 4:8].mean(-1), rtol=1e-6)


def test_unknown_preset_and_misfit():
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(np.ones((4, 4, 4)), (2, 2, 2), "blur")
    with pytest.raises(ValueError, match="crop first"):
        degrade(np.ones((5, 4, 4)), (2, 2, 2), "gaussian")
