"""The guided self-supervised method (``selfsr-t2w``/``selfsr-flair``) on synthetic 2D scans:
the guide's channel starts ignored, helps where the guide shares the T1w's edges, and is
ignored when it carries nothing (noise, a constant)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from bids_sr.acquisition import project, simulated_acquisition
from bids_sr.guidance import mono_twin, mono_twin_weights
from bids_sr.masks import brain_mask
from bids_sr.metrics import psnr
from bids_sr.planning.fallback import fallback_for
from bids_sr.recipes import SelfSRRecipe
from bids_sr.selfsr import SelfSRError, super_resolve_selfsr
from bids_sr.selfsr.network import PlaneNet, _architecture, add_reference_input, net_from_numpy
from bids_sr.superresolve import GUIDED_METHODS, REFERENCE_SUFFIXES, super_resolve

SHAPE = (40, 40, 40)
FACTORS = (1, 1, 4)
STEPS = 240  # the CNN's budget here: seconds on one core
BUDGET = SelfSRRecipe(min_iterations=STEPS, max_iterations=STEPS)
#: a smaller budget for the tests of which model is learned and reused, not of its gain
TINY = SelfSRRecipe(min_iterations=20, max_iterations=20)


def _tissue(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A T1w-like and a T2w-like image of one synthetic head: the same tissue boundaries
    (thresholded smooth noise), with a non-monotonic map between their intensities."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1.5)
    field /= field.std()
    labels = np.digitize(field, [-0.6, 0.4])  # three tissues
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    head = (zz**2 + yy**2 + xx**2) < 0.85
    t1 = np.where(head, np.array([0.35, 0.9, 0.6])[labels], 0.0)
    t2 = np.where(head, np.array([0.8, 0.3, 0.55])[labels], 0.0)
    smooth = lambda a: ndimage.gaussian_filter(a, 0.6).astype(np.float32)  # noqa: E731
    return smooth(t1), smooth(t2)


@pytest.fixture(scope="module")
def pair():
    t1, t2 = _tissue()
    acq = simulated_acquisition((1.0, 1.0, 1.0), FACTORS)
    lr = project(t1, acq, (40, 40, 10))
    return t1, t2, lr, acq, brain_mask(t1)


def _run(pair, reference, folder):
    t1, _, lr, acq, mask = pair
    method = "selfsr" if reference is None else "selfsr-t2w"
    out, report = super_resolve(lr, FACTORS, method, reference=reference, acquisition=acq,
                                seed=0, device="cpu", model_dir=str(folder),
                                selfsr_recipe=BUDGET)  # fmt: skip
    return psnr(out[mask], t1[mask], data_range=1.0), report


@pytest.fixture(scope="module")
def mono(pair, tmp_path_factory):
    """Brain PSNR of the unguided selfsr at the same budget (the guided models' twin)."""
    return _run(pair, None, tmp_path_factory.mktemp("mono"))[0]


@pytest.mark.parametrize("unshuffle", [1, 2])
def test_adding_the_reference_input_keeps_the_networks_output(unshuffle):
    torch.manual_seed(0)
    mono = PlaneNet(depth=4, width=8, unshuffle=unshuffle)
    for p in mono.parameters():  # a trained-looking network, not the near-zero start
        torch.nn.init.normal_(p, std=0.2)
    state = add_reference_input(mono.state_dict())
    arch = _architecture(state)
    assert (arch.depth, arch.width, arch.unshuffle, arch.inputs) == (4, 8, unshuffle, 3)
    guided = net_from_numpy({k: v.numpy() for k, v in state.items()})
    x = torch.rand(2, 2, 13, 11)
    reference = torch.rand(2, 1, 13, 11)
    with torch.no_grad():
        expected = mono(x)
        torch.testing.assert_close(guided(torch.cat([x, reference], 1)), expected)
        torch.testing.assert_close(guided(torch.cat([x, 1 - reference], 1)), expected)
    with pytest.raises(ValueError, match="unguided"):
        add_reference_input(state)


@pytest.mark.slow
def test_a_guide_with_the_t1ws_edges_helps(pair, mono, tmp_path):
    guided, report = _run(pair, pair[1], tmp_path)
    assert report["guided"] is True and report["method"] == "selfsr-t2w"
    check = report["guide_check"]  # it earned its place on the scan's own pairs
    assert check["used"] and check["guided_l1_ratio"] < 0.99 * check["mono_l1_ratio"]
    # the T2w-like guide has every boundary the thick slices blurred: a clear gain
    print(f"guided {guided:.2f} dB, mono {mono:.2f} dB")
    assert guided > mono + 1.0, (guided, mono)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["noise", "constant"])
def test_a_guide_that_carries_nothing_costs_at_most_0_2_db(pair, mono, tmp_path, kind):
    rng = np.random.default_rng(1)
    reference = (rng.random(SHAPE) if kind == "noise" else np.full(SHAPE, 0.5)).astype(np.float32)
    guided, report = _run(pair, reference, tmp_path)
    print(f"{kind}: guided {guided:.2f} dB, mono {mono:.2f} dB")
    assert guided > mono - 0.2, (guided, mono)
    # here the guided network did not beat the unguided one on the scan's own pairs, so the
    # unguided result was returned and the report says so (guide_min_improvement)
    assert report["guide_check"]["used"] is False and report["guided"] is False
    assert report["method"] == "selfsr" and report["fallback_from"] == "selfsr-t2w"
    assert "did not help" in report["fallback_reason"]


@pytest.mark.slow
def test_guided_models_are_keyed_by_their_guide(pair, tmp_path):
    _, t2, lr, acq, _ = pair
    run = dict(acquisition=acq, seed=0, device="cpu", model_dir=str(tmp_path), recipe=TINY)
    _, first = super_resolve_selfsr(lr, FACTORS, **run, reference=t2)
    _, again = super_resolve_selfsr(lr, FACTORS, **run, reference=t2)
    _, other = super_resolve_selfsr(lr, FACTORS, **run, reference=1 - t2)
    _, mono = super_resolve_selfsr(lr, FACTORS, **run)
    # one model per guide, and the unguided one each guided run is checked against
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    assert again["model_reused"] and again["weights"] == first["weights"]
    assert again["guide_check"]["guided_model_reused"]
    assert not other["guide_check"]["guided_model_reused"]
    assert (first["guide_check"]["guided_weights_sha256"]
            != other["guide_check"]["guided_weights_sha256"])  # fmt: skip
    assert mono["guided"] is False and mono["model_reused"]  # the guided runs trained it
    assert mono["guide_check"] is None


def test_guided_selfsr_input_errors(pair):
    _, t2, lr, acq, _ = pair
    with pytest.raises(ValueError, match="needs a registered T2w"):
        super_resolve(lr, FACTORS, "selfsr-t2w", acquisition=acq, device="cpu")
    with pytest.raises(SelfSRError, match="differs from the output grid"):
        super_resolve_selfsr(lr, FACTORS, acq, reference=t2[:-1])
    with pytest.raises(SelfSRError, match="CNN only"):
        super_resolve_selfsr(lr, FACTORS, acq, reference=t2, learner="filters")


def test_guided_selfsr_is_wired_as_a_guided_method_with_selfsr_as_its_twin():
    assert {"selfsr-t2w", "selfsr-flair"} <= set(GUIDED_METHODS)
    assert REFERENCE_SUFFIXES["selfsr-flair"] == "FLAIR"
    assert mono_twin("selfsr-flair") == "selfsr"
    assert mono_twin_weights("selfsr-t2w", None, FACTORS) is None  # learns per scan
    fallback = fallback_for(FACTORS, "selfsr-t2w")
    assert fallback.method == "selfsr" and "without the reference" in fallback.note


@pytest.mark.slow
def test_a_guided_model_starts_from_the_guided_prior_and_is_keyed_by_it(pair, tmp_path):
    """The guided per-scan network fine-tunes the guided prior of the unguided one's lineage
    (:func:`bids_sr.selfsr.method.guided_prior_of`; scripts/pretrain_selfsr.py --guided)
    when one ships, else the unguided prior (:func:`~bids_sr.selfsr.method.selfsr_prior` of
    the slice factor) with the guide's weights at zero; the twin keeps the unguided prior.
    The prior is part of each model's key, so another guided prior trains another guided
    model and reuses the twin."""
    from bids_sr.selfsr import method
    from bids_sr.selfsr.store import checksum, load_model, save_model

    _, t2, lr, acq, _ = pair
    run = dict(acquisition=acq, seed=0, device="cpu", model_dir=str(tmp_path), reference=t2,
               reference_contrast="T2w", recipe=TINY)  # fmt: skip
    super_resolve_selfsr(lr, FACTORS, **run, guided_prior=tmp_path / "absent.safetensors")
    before = set(tmp_path.glob("selfsr-*.safetensors"))
    unguided = method.selfsr_prior(FACTORS[2])
    assert {load_model(p)[1]["prior"] for p in before} == {checksum(unguided)}
    tensors, _ = load_model(unguided)
    state = add_reference_input({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()})
    guided_prior = tmp_path / "guided_prior.safetensors"
    save_model({k: v.numpy() for k, v in state.items()}, guided_prior, {"role": "prior"})
    run["guided_prior"] = guided_prior
    _, report = super_resolve_selfsr(lr, FACTORS, **run)
    new = set(tmp_path.glob("selfsr-*.safetensors")) - before
    assert len(new) == 1 and not report["guide_check"]["guided_model_reused"]
    assert load_model(new.pop())[1]["prior"] == checksum(guided_prior)
    if report["guided"]:
        assert report["prior"] == guided_prior.name
        assert report["prior_sha256"] == checksum(guided_prior)
    # a contrast whose guided method was not validated with the guided prior (not in
    # GUIDED_PRIOR_CONTRASTS: a PD guide) keeps the unguided one
    assert "PD" not in method.GUIDED_PRIOR_CONTRASTS
    _, pd = super_resolve_selfsr(lr, FACTORS, **{**run, "reference_contrast": "PD"})
    assert pd["guide_check"]["guided_prior_sha256"] == checksum(unguided)
    assert pd["guide_check"]["guided_model_reused"]  # the first run's guided model
