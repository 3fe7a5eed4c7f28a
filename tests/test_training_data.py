"""Training data: exact LR/HR patch alignment, foreground sampling, augmentation rules,
contrast randomisation, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DEMO

from bids_sr.contrast import randomise_contrast, tissue_centres
from bids_sr.image import load_volume
from bids_sr.interpolation import upsample
from bids_sr.training.data import (
    PatchSampler,
    misregistration_margin,
    padded_block,
    prepare_volume,
    random_rigid,
    resample_rigid,
)

T1W = DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz"


@pytest.fixture(scope="module")
def t1w():
    return load_volume(T1W).data


@pytest.mark.parametrize("factors", [(4, 1, 1), (1, 1, 4)])
def test_lr_patch_is_block_mean_of_hr_patch(t1w, factors):
    """With the slice preset (rect profile, thickness = spacing) LR = block mean of HR along
    the slice axis, so aligned patches satisfy it exactly, flips included (jitter off)."""
    vol = prepare_volume("t", t1w, factors, "slice")
    sampler = PatchSampler([vol], 8, input_grid="lr", degradation="slice", jitter=0.0)
    assert sampler.flips and sampler.permute == (len(set(factors)) == 1)
    rng = np.random.default_rng(0)
    for _ in range(10):
        (lr,), hr = sampler.sample(rng)
        assert hr.shape == (8, 8, 8) and lr.shape == tuple(8 // f for f in factors)
        fz, fy, fx = factors
        blocks = hr.reshape(lr.shape[0], fz, lr.shape[1], fy, lr.shape[2], fx).mean((1, 3, 5))
        np.testing.assert_allclose(lr, blocks, atol=1e-5)


def test_hr_grid_input_is_cubic_upsampling_at_the_same_place(t1w):
    vol = prepare_volume("t", t1w, (2, 2, 2), "gaussian", hr_grid_input=True)
    np.testing.assert_array_equal(vol.ilr, upsample(vol.lr, (2, 2, 2), order=3))
    sampler = PatchSampler([vol], 12, input_grid="hr", degradation="gaussian", augment=False)
    (ilr,), hr = sampler.sample(np.random.default_rng(1))
    replay = np.random.default_rng(1)  # the same draws: subject, then the LR origin
    replay.choice(1, p=sampler.p)
    z, y, x = (2 * i for i in sampler._origin(vol, replay))
    np.testing.assert_array_equal(hr, vol.hr[z:z + 12, y:y + 12, x:x + 12])
    np.testing.assert_array_equal(ilr, vol.ilr[z:z + 12, y:y + 12, x:x + 12])


def test_patches_are_centred_in_the_head(t1w):
    vol = prepare_volume("t", t1w, (2, 2, 2), "gaussian")
    sampler = PatchSampler([vol], 8, input_grid="lr", degradation="gaussian", augment=False)
    rng = np.random.default_rng(2)
    centres = [sampler.sample(rng)[1][4, 4, 4] for _ in range(50)]
    background = np.mean(vol.hr[:4, :4, :4])
    assert np.mean(np.array(centres) > background + 0.1) > 0.9


def test_background_fraction_adds_patches_of_pure_background(t1w):
    """Head-only sampling never yields an empty patch; with --background-fraction 0.5 a
    good share of the patches lie wholly outside the head."""
    vol = prepare_volume("t", t1w, (2, 2, 2), "gaussian")
    counts = {}
    for fraction in (0.0, 0.5):
        sampler = PatchSampler([vol], 8, input_grid="lr", degradation="gaussian",
                               augment=False, background_fraction=fraction)
        rng = np.random.default_rng(3)
        targets = [sampler.sample(rng)[1] for _ in range(200)]
        counts[fraction] = sum(float(np.abs(t).max()) < 0.05 for t in targets)
    assert counts[0.0] == 0
    assert counts[0.5] >= 5
    with pytest.raises(ValueError, match="background_fraction"):
        PatchSampler([vol], 8, input_grid="lr", degradation="gaussian", background_fraction=1.0)


def test_decimate_gets_no_flips_and_anisotropic_no_permutations(t1w):
    vol = prepare_volume("t", t1w, (2, 2, 2), "decimate")
    assert not PatchSampler([vol], 8, input_grid="lr", degradation="decimate").flips
    vol4 = prepare_volume("t", t1w, (1, 1, 4), "gaussian")
    assert not PatchSampler([vol4], 8, input_grid="lr", degradation="gaussian").permute
    with pytest.raises(ValueError, match="multiple of the factors"):
        PatchSampler([vol4], 6, input_grid="lr", degradation="gaussian")


def test_sampling_is_reproducible(t1w):
    vol = prepare_volume("t", t1w, (2, 2, 2), "gaussian")
    sampler = PatchSampler([vol], 8, input_grid="lr", degradation="gaussian")
    a = sampler.batch(4, np.random.default_rng(9))
    b = sampler.batch(4, np.random.default_rng(9))
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.targets, b.targets)


def _grad(data):
    return np.sqrt(sum(g**2 for g in np.gradient(data)))


def test_contrast_randomisation_changes_intensities_but_keeps_edges(t1w):
    vol = prepare_volume("t", t1w, (2, 2, 2), "gaussian")
    centres = tissue_centres(vol.hr)
    assert np.all(np.diff(centres) > 0) and 0 < centres[0] < centres[-1] < 1.5
    rng = np.random.default_rng(0)
    a = randomise_contrast(vol.hr, rng, centres, noise=0.0)
    b = randomise_contrast(vol.hr, rng, centres, noise=0.0)
    head = vol.hr > 0.1
    assert not np.allclose(a, b)
    # intensities are remapped: the draws are far from the T1w and from each other
    assert abs(np.corrcoef(a[head], b[head])[0, 1]) < 0.99
    # edges stay where the T1w's are: strong-gradient voxels coincide
    g1 = _grad(vol.hr)
    strong = g1 > np.percentile(g1[head], 90)
    for synth in (a, b):
        gs = _grad(synth)
        assert np.corrcoef(gs[head], g1[head])[0, 1] > 0.35
        assert gs[strong].mean() > 1.4 * gs[head & ~strong].mean()  # unstructured: ~1


def test_contrast_randomisation_blur_softens_edges_and_is_off_by_default(t1w):
    vol = prepare_volume("t", t1w, (2, 2, 2), "gaussian")
    centres = tissue_centres(vol.hr)
    sharp = randomise_contrast(vol.hr, np.random.default_rng(3), centres, noise=0.0)
    # blur=0 draws nothing extra: the stream (and so every earlier run) is unchanged
    same = randomise_contrast(vol.hr, np.random.default_rng(3), centres, noise=0.0, blur=0.0)
    np.testing.assert_array_equal(sharp, same)
    soft = randomise_contrast(vol.hr, np.random.default_rng(3), centres, noise=0.0, blur=2.0)
    head = vol.hr > 0.1
    # the same map, softer: less gradient energy on the head, and edges still in place
    assert _grad(soft)[head].mean() < 0.9 * _grad(sharp)[head].mean()
    assert np.corrcoef(_grad(soft)[head], _grad(vol.hr)[head])[0, 1] > 0.3


def test_guided_sampler_synthesises_or_uses_the_real_reference(t1w):
    t2w = load_volume(T1W.with_name("sub-01_T2w.nii.gz")).data
    vol = prepare_volume("t", t1w, (2, 2, 2), "gaussian", hr_grid_input=True, reference=t2w)
    vol.extra["centres"] = tissue_centres(vol.hr)
    fn = lambda target, rng, v: randomise_contrast(target, rng, v.extra["centres"])  # noqa: E731
    real = PatchSampler([vol], 8, input_grid="hr", degradation="gaussian", augment=False,
                        reference_fn=fn, synth_probability=0.0)
    batch = real.fixed_batch(3, 0)
    assert batch.inputs.shape == (3, 2, 8, 8, 8)
    synth = PatchSampler([vol], 8, input_grid="hr", degradation="gaussian", augment=False,
                         reference_fn=fn, synth_probability=1.0)
    other = synth.fixed_batch(3, 0)
    # same first draw (subject, origin), so the same T1w patch; the reference differs
    np.testing.assert_array_equal(batch.inputs[0, 0], other.inputs[0, 0])
    assert not np.allclose(batch.inputs[0, 1], other.inputs[0, 1])
    real_t2w = vol.reference[tuple(slice(2 * o, 2 * o + 8) for o in _first_origin(real, vol))]
    np.testing.assert_array_equal(batch.inputs[0, 1], real_t2w)


def _first_origin(sampler, vol):
    replay = np.random.default_rng(0)
    replay.choice(1, p=sampler.p)
    return sampler._origin(vol, replay)


def test_checkpoint_round_trip_restores_everything(tmp_path):
    from bids_sr.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.rand(2, 1, 5, 5, 5)).mean().backward()
    opt.step()
    rng = np.random.default_rng(4)
    rng.random(3)
    save_checkpoint(tmp_path, step=7, modules={"model": model}, optimizers={"adam": opt},
                    rng=rng, history=[{"step": 7, "loss": 1.0}], config={"method": "x"})
    expected_draw, expected_torch = rng.random(), torch.rand(1)
    model2 = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    rng2 = np.random.default_rng(99)
    doc = load_checkpoint(tmp_path, modules={"model": model2}, optimizers={"adam": opt2},
                          rng=rng2)
    assert doc["step"] == 7 and doc["config"] == {"method": "x"}
    assert rng2.random() == expected_draw and torch.equal(torch.rand(1), expected_torch)
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k])
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 0.01
    for i in s1["state"]:
        for key, value in s1["state"][i].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2["state"][i][key]))
    (tmp_path / "checkpoint.safetensors").write_bytes(b"corrupt")
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path, modules={"model": model2}, optimizers={"adam": opt2}, rng=rng2)


def test_uninformative_references_are_noise_or_constant(t1w):
    """With uninformative_fraction, some guided patches get a reference that carries nothing
    (uniform noise or a constant) while the T1w input and the target stay as they were."""
    t2w = load_volume(T1W.with_name("sub-01_T2w.nii.gz")).data
    vol = prepare_volume("t", t1w, (2, 2, 2), "gaussian", hr_grid_input=True, reference=t2w)
    vol.extra["centres"] = tissue_centres(vol.hr)
    fn = lambda target, rng, v: randomise_contrast(target, rng, v.extra["centres"])  # noqa: E731
    sampler = PatchSampler([vol], 8, input_grid="hr", degradation="gaussian", augment=False,
                           reference_fn=fn, synth_probability=0.0, uninformative_fraction=0.5)
    rng = np.random.default_rng(0)
    kinds = []
    for _ in range(40):
        (ilr, ref), _ = sampler.sample(rng)
        real = np.array_equal(ref, vol.reference[tuple(
            slice(i, i + 8) for i in _origin_of(ilr, vol.ilr))])  # fmt: skip
        constant = np.ptp(ref) == 0
        kinds.append("real" if real else "constant" if constant else "noise")
        if kinds[-1] == "noise":
            assert 0 <= ref.min() and ref.max() <= 1 and ref.std() > 0.2
    assert {"real", "constant", "noise"} <= set(kinds)
    with pytest.raises(ValueError, match="uninformative_fraction"):
        PatchSampler([vol], 8, input_grid="hr", degradation="gaussian", reference_fn=fn,
                     uninformative_fraction=1.0)


def _origin_of(patch: np.ndarray, volume: np.ndarray) -> tuple[int, ...]:
    """Where an unaugmented patch was cut from (exhaustive search on a small volume)."""
    for idx in np.argwhere(np.isclose(volume, patch[0, 0, 0])):
        sl = tuple(slice(i, i + p) for i, p in zip(idx, patch.shape))
        if volume[sl].shape == patch.shape and np.array_equal(volume[sl], patch):
            return tuple(int(i) for i in idx)
    raise AssertionError("patch not found")


def test_zero_misregistration_gives_the_identical_patch():
    rng = np.random.default_rng(0)
    volume = rng.random((30, 30, 30), dtype=np.float32)
    spacing = (1.0, 1.2, 3.0)  # anisotropic: the margin is per axis
    margin = misregistration_margin((12, 12, 12), spacing, 1.0, 2.0)
    assert margin[0] > margin[2] >= 2  # fewer voxels along the coarse axis, at least linear's 1
    block = padded_block(volume, (5, 6, 7), (12, 12, 12), margin)
    patch = resample_rigid(block, margin, np.eye(3), np.zeros(3), spacing)
    np.testing.assert_array_equal(patch, volume[5:17, 6:18, 7:19])
    # at a face of the volume the block is padded with background
    corner = padded_block(volume, (0, 0, 0), (12, 12, 12), margin)
    assert corner.shape == tuple(12 + 2 * m for m in margin)
    assert not corner[: margin[0]].any()


@pytest.mark.parametrize(("spacing", "shift_voxels"), [((1.0, 1.0, 1.0), 1), ((0.5, 1, 1), 2)])
def test_a_1mm_translation_moves_a_step_edge_by_1mm(spacing, shift_voxels):
    step = np.zeros((40, 20, 20), np.float32)
    step[20:] = 1.0
    margin = misregistration_margin((16, 16, 16), spacing, 1.0, 0.0)
    block = padded_block(step, (12, 2, 2), (16, 16, 16), margin)
    still = resample_rigid(block, margin, np.eye(3), np.zeros(3), spacing)
    moved = resample_rigid(block, margin, np.eye(3), np.array([1.0, 0.0, 0.0]), spacing)
    edge = lambda patch: int(np.argmax(patch[:, 8, 8] > 0.5))  # noqa: E731
    assert edge(still) == 8 and edge(moved) == 8 - shift_voxels
    # a rotation of 2° about the patch centre leaves the centre's value in place
    rotation, _ = random_rigid(np.random.default_rng(1), 0.0, 2.0)
    turned = resample_rigid(block, margin, rotation, np.zeros(3), spacing)
    assert not np.array_equal(turned, still) and turned[8, 8, 8] == pytest.approx(still[8, 8, 8])


def test_random_rigid_stays_within_its_bounds():
    rng = np.random.default_rng(0)
    for _ in range(50):
        rotation, shift = random_rigid(rng, 1.0, 2.0)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        angle = np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))
        assert angle <= 2.0 + 1e-9 and np.linalg.norm(shift) <= 1.0 + 1e-12


def test_guided_sampler_misregisters_the_reference_only(t1w):
    """With misregistration the reference patch moves (real or synthesised), the T1w input
    and target do not; (0, 0) leaves the random stream and the patches unchanged."""
    t2w = load_volume(T1W.with_name("sub-01_T2w.nii.gz")).data
    vol = prepare_volume("t", t1w, (2, 2, 2), "gaussian", hr_grid_input=True, reference=t2w)
    vol.extra["centres"] = tissue_centres(vol.hr)
    fn = lambda target, rng, v: randomise_contrast(target, rng, v.extra["centres"])  # noqa: E731
    common = dict(input_grid="hr", degradation="gaussian", augment=False, reference_fn=fn)
    plain = PatchSampler([vol], 8, **common, synth_probability=0.0)
    off = PatchSampler([vol], 8, **common, synth_probability=0.0, misregistration=(0, 0))
    moved = PatchSampler([vol], 8, **common, synth_probability=0.0, misregistration=(1, 2))
    a, b = (s.batch(4, np.random.default_rng(3)) for s in (plain, off))
    np.testing.assert_array_equal(a.inputs, b.inputs)
    (ilr, ref), target = plain.sample(np.random.default_rng(3))  # the first draw of each
    (ilr_moved, ref_moved), target_moved = moved.sample(np.random.default_rng(3))
    np.testing.assert_array_equal(target, target_moved)
    np.testing.assert_array_equal(ilr, ilr_moved)
    assert ref_moved.shape == ref.shape and not np.allclose(ref, ref_moved)
    # the moved reference is still the T2w near the same place (a sub-voxel to 1-voxel shift)
    assert np.corrcoef(ref.ravel(), ref_moved.ravel())[0, 1] > 0.8
    synth = PatchSampler([vol], 8, **common, synth_probability=1.0, misregistration=(1, 2))
    assert synth.batch(2, np.random.default_rng(0)).inputs.shape == (2, 2, 8, 8, 8)
    # validation patches are never moved
    np.testing.assert_array_equal(moved.fixed_batch(2, 5).inputs, plain.fixed_batch(2, 5).inputs)
    with pytest.raises(ValueError, match="misregistration"):
        PatchSampler([vol], 8, **common, misregistration=(-1, 0))
