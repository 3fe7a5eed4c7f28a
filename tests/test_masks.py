"""The brain mask finds the brain of a synthetic head and a plausible volume on a real scan."""


import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA

from bids_sr.image import voxel_sizes
from bids_sr.masks import brain_mask, largest_component, otsu_threshold

SHARED = SHARED_DATA


def _synthetic_head(shape=(48, 48, 48), zoom=2.0, seed=0):
    """Brain ball (r = 30 mm, WM core, 'ventricle' hole) inside dark CSF/skull and a bright
    3 mm scalp shell joined to the brain by a thin bridge; Rician-like noise on air."""
    rng = np.random.default_rng(seed)
    centre = (np.asarray(shape) - 1) / 2
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r = np.sqrt(sum(((g - c) * zoom) ** 2 for g, c in zip(grids, centre)))
    data = np.zeros(shape, np.float32)
    brain = r <= 30
    data[brain] = 0.6
    data[r <= 18] = 0.85  # white matter
    data[r <= 5] = 0.1  # ventricle (dark, enclosed)
    data[(r > 30) & (r <= 36)] = 0.08  # CSF + skull: dark
    scalp = (r > 36) & (r <= 42)
    data[scalp] = 0.9
    bridge = (np.abs((grids[1] - centre[1]) * zoom) < 2) & (
        np.abs((grids[2] - centre[2]) * zoom) < 2
    )
    data[bridge & (r > 30) & (r <= 36)] = 0.7  # a thin vessel-like bridge to the scalp
    data += np.abs(rng.normal(0, 0.03, shape)).astype(np.float32)
    return data, brain, scalp


def test_otsu_separates_two_classes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 5000), rng.normal(0.8, 0.05, 3000)])
    assert 0.3 < otsu_threshold(values) < 0.7


def test_largest_component():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 1:3, 1:3] = True
    mask[5:9, 5:9, 5:9] = True
    out = largest_component(mask)
    assert out.sum() == 64 and not out[1, 1, 1]


def test_synthetic_head_gives_the_brain_not_the_scalp():
    data, brain, scalp = _synthetic_head()
    mask = brain_mask(data, (2.0, 2.0, 2.0))
    assert mask.dtype == bool and mask.shape == data.shape
    dice = 2 * (mask & brain).sum() / (mask.sum() + brain.sum())
    assert dice > 0.95
    assert (mask & scalp).sum() < 0.01 * scalp.sum()  # scalp detached despite the bridge
    centre = tuple(n // 2 for n in data.shape)
    assert mask[centre]  # the dark ventricle is filled


def test_brain_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="constant"):
        brain_mask(np.ones((8, 8, 8)))
    with pytest.raises(ValueError, match="3D"):
        brain_mask(np.ones((8, 8)))


@pytest.mark.slow
@pytest.mark.shared_data
def test_colin27_brain_volume_is_plausible():
    path = SHARED / "real_t1" / "colin27_ch2_T1w.nii.gz"
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    img = nib.load(str(path))
    zooms = voxel_sizes(img.affine)
    mask = brain_mask(np.asarray(img.dataobj, np.float32), zooms)
    litres = mask.sum() * np.prod(zooms) / 1e6
    # Colin27 is a whole-head scan: an adult brain with cerebellum and brainstem is 1.2–2.0 L,
    # the whole head about 4 L; the mask must be the brain, not the head
    assert 1.2 < litres < 2.2, litres
