"""The self-supervised thick-slice method (bids_sr.selfsr) on synthetic 2D scans."""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from bids_sr.acquisition import Acquisition, enforce_consistency, project, simulated_acquisition
from bids_sr.interpolation import upsample
from bids_sr.metrics import psnr
from bids_sr.recipes import SELFSR
from bids_sr.selfsr import SelfSRError, super_resolve_selfsr
from bids_sr.selfsr.pairs import (
    degrade_axis,
    detailed_inplane_axes,
    inplane_orientations,
    phase_bins,
    slice_phase,
)
from bids_sr.selfsr.store import filters_from_tensors, load_model
from bids_sr.superresolve import super_resolve


def _blobs(shape=(48, 48, 48), seed=3) -> np.ndarray:
    """Random isotropic structure (smoothed noise, thresholded into tissue-like edges) in a
    zero background, so in-plane and through-plane statistics match."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    field = 0.5 + 0.5 * np.tanh(field / field.std() * 2.0)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (zz**2 + yy**2 + xx**2) < 0.8
    return np.where(head, 0.2 + 0.8 * field, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def scan():
    hr = _blobs()
    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, 3))
    lr = project(hr, acq, (48, 48, 16))
    return hr, lr, acq


def test_slice_phase_matches_the_grid_convention():
    # ×3: HR voxels 0, 1, 2 sit at -1/3, 0, +1/3 LR spacings from LR sample 0
    np.testing.assert_allclose(slice_phase(6, 2), [-1 / 3, 0, 1 / 3] * 2, atol=1e-6)
    assert phase_bins(slice_phase(6, 2), 3).tolist() == [0, 1, 2, 0, 1, 2]


def test_degrade_axis_applies_the_acquisition_model_along_one_axis(scan):
    hr, _, acq = scan
    degraded, target, n_lr = degrade_axis(hr, 0, 3.0, acq)
    assert n_lr == 16 and degraded.shape == target.shape == hr.shape
    np.testing.assert_array_equal(target, hr)
    # the same as acquiring 16 slices along axis 0 and B-spline-upsampling them back
    slices = project(hr, Acquisition((3.0, 1.0, 1.0), 0, 3.0), (16, 48, 48))
    np.testing.assert_allclose(degraded, upsample(slices, (3, 1, 1)), atol=1e-4)


@pytest.mark.slow
def test_selfsr_through_the_dispatcher_shape_determinism_and_uncertainty(tmp_path):
    hr = _blobs((24, 24, 24), seed=4)  # small: the CNN's minimum budget takes seconds
    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, 3))
    lr = project(hr, acq, (24, 24, 8))
    maps = {}
    out, report = super_resolve(lr, (1, 1, 3), "selfsr", acquisition=acq, seed=0, device="cpu",
                                model_dir=str(tmp_path / "a"), uncertainty=maps)
    assert out.shape == hr.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert report["learner"] == "cnn" and report["data_consistency_psnr"] >= 40
    unc = maps["map"]
    head = hr > 0
    assert unc.shape == hr.shape and unc.min() >= 0 and np.isfinite(unc[head]).all()
    assert unc[0, 0, 0] == 0 and unc[-1, -1, -1] == 0  # outside the head: both keep B-spline
    again, report2 = super_resolve(lr, (1, 1, 3), "selfsr", acquisition=acq, seed=0,
                                   device="cpu", model_dir=str(tmp_path / "b"))
    np.testing.assert_array_equal(out, again)
    assert report2["weights_sha256"] == report["weights_sha256"]
    assert len(report["weights_sha256"]) == 64 and report["model_reused"] is False


def test_selfsr_filters_beat_bspline_and_the_model_is_reused(scan, tmp_path):
    hr, lr, acq = scan
    head = hr > 0
    base, _ = super_resolve(lr, (1, 1, 3), "bspline", acquisition=acq)
    maps = {}
    first, report = super_resolve_selfsr(lr, (1, 1, 3), acq, learner="filters", seed=1,
                                         model_dir=tmp_path, uncertainty=maps)  # fmt: skip
    # the two orientations disagree somewhere in the head, nowhere far outside it
    assert maps["map"][head].max() > 0 and maps["map"][0, 0, 0] == 0
    sr = enforce_consistency(first, lr, acq)
    assert psnr(sr, hr, mask=head, data_range=1.0) > psnr(base, hr, mask=head, data_range=1.0)
    files = list(tmp_path.glob("selfsr-filters-*.safetensors"))
    assert len(files) == 1 and report["weights"] == str(files[0])
    tensors, metadata = load_model(files[0])
    model = filters_from_tensors(tensors, files[0])
    assert model.filters.shape[1] == model.patch[0] * model.patch[1]
    assert metadata["learner"] == "filters" and report["learn_s"] >= 0
    second, report2 = super_resolve_selfsr(lr, (1, 1, 3), acq, learner="filters", seed=1,
                                           model_dir=tmp_path)  # fmt: skip
    assert report2["model_reused"] is True and report2["weights_sha256"] == report["weights_sha256"]
    assert report2["learn_s"] == report["learn_s"]  # the learning time, kept beside the model
    np.testing.assert_array_equal(first, second)


@pytest.mark.slow
def test_selfsr_handles_gaps_and_non_integer_factors():
    hr = _blobs((20, 22, 25), seed=5)
    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, 2.5), thickness=2.0)  # 0.5 mm gap
    lr = project(hr, acq, (20, 22, 10))
    out, report = super_resolve(lr, (1, 1, 2.5), "selfsr", acquisition=acq, device="cpu")
    assert out.shape == (20, 22, 25) and np.isfinite(out).all()
    assert report["InputSliceGap"] == pytest.approx(0.5)


def test_selfsr_rejects_isotropic_inputs_and_corrupt_models(tmp_path):
    lr = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(SelfSRError, match="2D scans"):
        super_resolve_selfsr(lr, (2, 2, 2), Acquisition(spacing=(2.0, 2.0, 2.0)))
    with pytest.raises(SelfSRError, match="unknown selfsr learner"):
        super_resolve_selfsr(lr, (1, 1, 2), Acquisition((1.0, 1.0, 2.0), 2, 2.0), learner="x")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_model(bad)


def test_each_kept_inplane_axis_is_degraded_with_the_other_kept_sharp():
    assert inplane_orientations(2) == [(0, 1), (1, 0)]
    assert inplane_orientations(0) == [(1, 2), (2, 1)]
    assert inplane_orientations(0, [2]) == [(2, 1)]
    assert inplane_orientations(1, [0, 2]) == [(0, 2), (2, 0)]


@pytest.mark.slow
def test_an_inplane_axis_blurred_at_acquisition_gives_no_training_pairs():
    """A scan whose second in-plane axis was acquired coarser (blurred along it) trains on
    the sharp axis only; a scan sharp along both trains on both, and reports which."""
    from bids_sr.selfsr import network

    hr = _blobs((24, 24, 24), seed=5)
    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, 3))
    sharp = project(hr, acq, (24, 24, 8))
    assert detailed_inplane_axes(sharp, 2) == [0, 1]
    # in-plane axis 1 blurred as a 3 mm acquisition would blur it
    blurred = ndimage.gaussian_filter1d(sharp, 1.3, axis=1)
    assert detailed_inplane_axes(blurred, 2) == [0]
    assert detailed_inplane_axes(np.zeros((8, 8, 4), np.float32), 2) == [0, 1]
    settings = network.TrainSettings(iterations=20, patch=16)
    _, summary = network.train_plane_net(blurred, acq, 3.0, settings=settings)
    assert summary["training_axes"] == [0]
    _, summary = network.train_plane_net(sharp, acq, 3.0, settings=settings)
    assert summary["training_axes"] == [0, 1]


@pytest.mark.slow
def test_a_collapsed_network_is_detected_and_trained_again(monkeypatch):
    """A network whose residual died (it returns its B-spline input) scores 1.0 on its own
    pairs; train_plane_net then trains again at half the rate and reports the attempts."""
    import torch

    from bids_sr.selfsr import network

    hr = _blobs((24, 24, 24), seed=5)
    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, 3))
    training = project(hr, acq, (24, 24, 8))
    settings = network.TrainSettings(iterations=200, patch=16)
    pairs = network._pairs(training, acq, 3.0, settings.patch)
    dead = network.PlaneNet()
    torch.nn.init.zeros_(dead.body[-1].weight)
    assert network.self_check(dead, pairs, settings) == pytest.approx(1.0, abs=1e-6)

    rates = []
    real_fit = network.fit

    def fit_that_collapses_first(net, pairs, settings, steps, rng, **kwargs):
        rates.append(settings.lr)
        summary = real_fit(net, pairs, settings, steps, rng, **kwargs)
        if len(rates) == 1:
            torch.nn.init.zeros_(net.body[-1].weight)
        return summary

    monkeypatch.setattr(network, "fit", fit_that_collapses_first)
    net, summary = network.train_plane_net(training, acq, 3.0, settings=settings)
    assert rates == [settings.lr, settings.lr / 2]
    assert summary["attempts"] == 2 and summary["self_check_l1_ratio"] < SELFSR.collapsed_ratio


@pytest.mark.slow
def test_the_shipped_slice_family_prior_is_the_starting_point(scan, tmp_path):
    """selfsr fine-tunes the shipped prior (scripts/pretrain_selfsr.py): the file matches
    its card, loads into the per-scan network, is named in the report, and is part of the
    per-scan model's key (another prior → another model, never a stale reuse)."""
    import json

    from bids_sr.fileio import sha256_file
    from bids_sr.selfsr import method
    from bids_sr.selfsr.network import PlaneNet, net_from_numpy
    from bids_sr.selfsr.store import save_model

    prior = method.selfsr_prior(3.0)  # the longer-trained cohort prior (selfsr_prior)
    card = json.loads(prior.with_suffix(".card.json").read_text())
    assert card["sha256"] == sha256_file(prior) and card["training_subjects"]
    assert not {"chris", "openms19"} & set(card["training_subjects"])  # held out
    tensors, _ = load_model(prior)
    assert isinstance(net_from_numpy(tensors), PlaneNet)
    _, lr, acq = scan
    _, report = super_resolve_selfsr(lr, (1, 1, 3), acq, iterations=100, seed=0,
                                     model_dir=tmp_path)  # fmt: skip
    assert report["prior"] == prior.name == "selfsr_fast_prior_mid.safetensors"
    assert report["flip_average"] is True  # the fine-tuned network predicts the mirrors too
    first = set(tmp_path.glob("selfsr-*.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + np.float32(0.01)
    changed = tmp_path / "prior.safetensors"
    save_model(tensors, changed, {"learner": "cnn", "role": "prior"})
    super_resolve_selfsr(lr, (1, 1, 3), acq, iterations=100, seed=0, model_dir=tmp_path,
                         prior=changed)  # fmt: skip
    assert len(set(tmp_path.glob("selfsr-*.safetensors")) - first) == 1  # a new model


def _lineage_subjects(prior: Path) -> set[str]:
    """The training subjects of a shipped prior and of every prior it continued (its card's
    ``init`` chain)."""
    import json

    subjects: set[str] = set()
    while prior is not None:
        card = json.loads(prior.with_suffix(".card.json").read_text())
        subjects |= set(card["training_subjects"])
        prior = prior.parent / card["init"]["file"] if card.get("init") else None
    return subjects


@pytest.mark.parametrize("card_name", ["selfsr", "selfsr-fast", "selfsr-t2w", "selfsr-flair"])
def test_no_image_that_validates_a_selfsr_card_trained_the_prior(card_name):
    """Every selfsr method starts from a shipped prior, so an image that prior — or any prior
    it continued — was pretrained on cannot validate it at the record's slice factor: its
    held-out figures would be inflated (mni152, the guided methods' second T1w/T2w pair, was
    one of the slice-family prior's scans until 2026-12-03, and the cohort priors trained on
    it, so the guided records where selfsr starts from the mid prior are openms19's only)."""
    import json

    from bids_sr.selfsr import method

    card = json.loads((method.PRIOR.parent / f"{card_name}.card.json").read_text())
    validated = {image for record in card["evidence"] for image in record["gain_over_bspline"]}
    assert validated and set(card["validation_subjects"]) >= validated
    for record in card["evidence"]:
        factor = max(record["factors"])
        if card_name == "selfsr-fast":
            priors = [method.fast_prior(factor)]
        else:
            priors = [method.selfsr_prior(factor)]
        if card_name in ("selfsr-t2w", "selfsr-flair"):  # the guided network, of its lineage
            priors.append(method.guided_prior_of(priors[0]))
        for prior in priors:
            seen = set(record["gain_over_bspline"]) & _lineage_subjects(prior)
            assert not seen, (card_name, record["command"], prior.name, seen)


def test_the_guided_cards_were_made_with_the_starting_point_their_method_uses():
    """A guided selfsr method whose reference contrast is in GUIDED_PRIOR_CONTRASTS
    fine-tunes the shipped guided prior of its slice factor (that of the unguided twin's
    lineage, :func:`~bids_sr.selfsr.method.guided_prior_of`): each of its card's records
    names that prior (``guided_prior_sha256``, per image), so evidence made from another
    starting point cannot stand for the shipped method. A contrast outside it keeps the
    unguided prior, and its records name no guided prior."""
    import json

    from bids_sr.fileio import sha256_file
    from bids_sr.selfsr import method

    weights = method.PRIOR.parent
    for guided_prior, unguided in ((method.GUIDED_PRIOR, method.PRIOR),
                                   (method.GUIDED_MID_PRIOR, method.FAST_MID_PRIOR)):  # fmt: skip
        card = json.loads(guided_prior.with_suffix(".card.json").read_text())
        assert card["sha256"] == sha256_file(guided_prior)
        assert card["init"]["sha256"] == sha256_file(unguided)  # one lineage
        tensors, _ = load_model(guided_prior)
        assert tensors["body.0.weight"].shape[1] == 3 * 4  # image, phase, guide; unshuffled
    for name, contrast in (("selfsr-t2w", "T2w"), ("selfsr-flair", "FLAIR")):
        guided = json.loads((weights / f"{name}.card.json").read_text())
        for record in guided["evidence"]:
            named = record.get("guided_prior_sha256", {})
            unguided = method.selfsr_prior(max(record["factors"]))
            # without a guided prior of its lineage: the unguided one, guide input at zero
            shipped = sha256_file(method.guided_prior_of(unguided) or unguided)
            expected = ({image: shipped for image in record["gain_over_bspline"]}
                        if contrast in method.GUIDED_PRIOR_CONTRASTS else {})  # fmt: skip
            assert named == expected, record["command"]


def test_the_unguided_cards_were_made_with_the_prior_their_method_starts_from():
    """Every record of ``selfsr`` and ``selfsr-fast`` names the prior its per-scan networks
    started from (``prior_sha256``, written by ``bids_sr-train validate``): the one each
    method starts from today, so a prior retrained without re-validating fails here."""
    import json

    from bids_sr.fileio import sha256_file
    from bids_sr.selfsr import method

    for name, prior_for in (("selfsr", method.selfsr_prior),
                            ("selfsr-fast", method.fast_prior)):  # fmt: skip
        card = json.loads((method.PRIOR.parent / f"{name}.card.json").read_text())
        for record in card["evidence"]:
            shipped = sha256_file(prior_for(max(record["factors"])))
            assert record.get("prior_sha256") == shipped, (name, record["command"])


def test_the_guided_cards_compare_with_the_unguided_selfsr_that_ships():
    """A guided record's gain over mono is over ``selfsr`` as it ships: the record names,
    for each of its images, the unguided twin's starting point (``mono_prior_sha256``), and
    that is the prior ``selfsr`` starts from today at the record's slice factor."""
    import json

    from bids_sr.fileio import sha256_file
    from bids_sr.selfsr import method

    for name in ("selfsr-t2w", "selfsr-flair"):
        card = json.loads((method.PRIOR.parent / f"{name}.card.json").read_text())
        for record in card["evidence"]:
            prior = method.selfsr_prior(max(record["factors"]))
            named = record.get("mono_prior_sha256", {})
            assert set(named) == set(record["gain_over_bspline"]), record["command"]
            assert all(sha == sha256_file(prior) for sha in named.values()), record["command"]


def test_selfsr_fast_starts_from_the_prior_of_its_slice_factor():
    """The mid prior takes over above FAST_MID_ABOVE and the thick one above
    FAST_THICK_ABOVE (their records gain more there; at ×3 each lost to B-spline on
    openms19, and at ×4 the mid one gained less on chris and openms19)."""
    from bids_sr.selfsr import method

    assert method.fast_prior(3.0) == method.fast_prior(4.5) == method.FAST_PRIOR
    assert method.fast_prior(None) == method.FAST_PRIOR
    assert method.fast_prior(5.0) == method.fast_prior(7.0) == method.FAST_MID_PRIOR
    assert method.fast_prior(8.0) == method.fast_prior(13.0) == method.FAST_THICK_PRIOR


@pytest.mark.parametrize("factor", [3, 8])
def test_selfsr_starts_from_the_prior_of_its_slice_factor(factor):
    """Without a ``prior``, the per-scan network starts from selfsr_prior of the scan's slice
    factor (named in the report), with the guided twin's choice made the same way."""
    from bids_sr.selfsr import method

    hr = _blobs((40, 40, 8 * factor))
    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, factor))
    lr = project(hr, acq, (40, 40, 8))
    _, report = super_resolve_selfsr(lr, (1, 1, factor), acq, iterations=0, device="cpu")
    assert report["prior"] == method.selfsr_prior(factor).name
    assert report["prior"] == ("selfsr_fast_prior_mid.safetensors" if factor == 3
                               else "selfsr_fast_prior_thick.safetensors")  # fmt: skip


def test_the_guided_network_starts_from_the_guided_prior_of_the_unguided_ones_lineage():
    """The guide check compares the guided network with its unguided twin: both must descend
    from one prior, or the check measures the priors as much as the guide."""
    from bids_sr.selfsr import method

    assert method.guided_prior_of(method.FAST_MID_PRIOR) == method.GUIDED_MID_PRIOR
    assert method.guided_prior_of(method.PRIOR) == method.GUIDED_PRIOR
    # no guided prior of these lineages ships: the unguided prior, its guide input at zero
    for unguided in (method.FAST_THICK_PRIOR, method.FAST_PRIOR, None):
        assert method.guided_prior_of(unguided) is None


def test_selfsr_fine_tunes_the_longer_trained_cohort_priors():
    """The per-scan training starts from the mid prior up to ×7 and from the thick prior
    above, as selfsr-fast's do there (their records were made from them); from the
    slice-family prior only when the factor is unknown."""
    from bids_sr.selfsr import method

    for factor in (2.0, 3.0, 4.0, 7.0):
        assert method.selfsr_prior(factor) == method.FAST_MID_PRIOR
    for factor in (7.5, 8.0, 13.0):
        assert method.selfsr_prior(factor) == method.FAST_THICK_PRIOR
    assert method.selfsr_prior(None) == method.PRIOR


@pytest.mark.parametrize("unshuffle", [1, 2])
def test_widening_the_prior_keeps_its_output_and_adds_trainable_channels(unshuffle):
    """A per-scan network wider than its prior starts from it: widened, it computes exactly
    what the prior does, and its new channels receive gradients; the architecture (depth,
    width, pixel-unshuffle factor) is read back from the saved arrays."""
    import torch

    from bids_sr.selfsr.network import PlaneNet, net_from_numpy, state_to_numpy, widen_state

    torch.manual_seed(0)
    narrow = PlaneNet(width=32, unshuffle=unshuffle)
    for parameter in narrow.parameters():  # a trained-looking net: no near-zero output layer
        torch.nn.init.normal_(parameter, std=0.1)
    wide = PlaneNet(width=64, unshuffle=unshuffle)
    wide.load_state_dict(widen_state(narrow.state_dict(), 64))
    x = torch.rand(2, 2, 24, 24)
    torch.testing.assert_close(wide(x), narrow(x))
    torch.nn.functional.l1_loss(wide(x), torch.zeros(2, 1, 24, 24)).backward()
    last = wide.body[-1].weight.grad
    assert last is not None and float(last[:, 32:].abs().sum()) > 0  # the new channels learn
    loaded = net_from_numpy(state_to_numpy(wide))
    assert (loaded.depth, loaded.width, loaded.unshuffle) == (8, 64, unshuffle)
    with pytest.raises(ValueError, match="narrow"):
        widen_state(wide.state_dict(), 32)


def test_unshuffled_network_keeps_odd_planes_whole_and_starts_at_its_input():
    """Pixel-unshuffled by 2, the network takes planes of any size (odd ones are padded and
    cropped back), returns their shape, and an untrained one returns nearly its input (the
    B-spline plane), so training starts from the baseline; each output pixel depends on its
    own neighbourhood, not on where the plane was cut."""
    import torch

    from bids_sr.selfsr.network import PlaneNet

    torch.manual_seed(0)
    net = PlaneNet(width=16, unshuffle=2).eval()
    x = torch.rand(3, 2, 37, 51)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (3, 1, 37, 51)
    assert float((y - x[:, :1]).abs().max()) < 0.05
    for parameter in net.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    with torch.no_grad():
        whole, part = net(x), net(x[..., :36, :50])
    # away from the cut (receptive field: 2 × 8 layers), the part computes what the whole does
    torch.testing.assert_close(part[..., :12, :24], whole[..., :12, :24])


def test_pretraining_builds_the_requested_architecture_on_random_slice_acquisitions():
    """scripts/pretrain_selfsr.py's core trains a PlaneNet of the settings' depth, width and
    unshuffle factor on random slice-family acquisitions of the volumes, and reports them."""
    from bids_sr.selfsr.network import TrainSettings
    from bids_sr.selfsr.pretrain import FACTORS, pretrain_plane_net

    settings = TrainSettings(patch=16, batch=2, width=8, depth=4, unshuffle=2)
    net, summary = pretrain_plane_net([_blobs((24, 24, 24), seed=1)], steps=5, seed=0,
                                      acquisitions_per_volume=2, settings=settings)  # fmt: skip
    assert (net.depth, net.width, net.unshuffle) == (4, 8, 2)
    assert summary["steps"] == 5 and np.isfinite(summary["final_loss"])
    assert len(summary["acquisitions"]) == 2
    assert all(FACTORS[0] <= a["factor"] <= FACTORS[1] for a in summary["acquisitions"])


def test_pretraining_continues_from_an_earlier_prior():
    """``init`` (scripts/pretrain_selfsr.py --init): the network starts from the earlier
    prior's weights and keeps its architecture, whatever the settings ask for."""
    from bids_sr.selfsr.network import TrainSettings, state_to_numpy
    from bids_sr.selfsr.pretrain import pretrain_plane_net

    volumes = [_blobs((24, 24, 24), seed=1)]
    small = TrainSettings(patch=16, batch=2, width=8, depth=4, unshuffle=2)
    earlier, _ = pretrain_plane_net(volumes, steps=3, seed=0, acquisitions_per_volume=2,
                                    settings=small)  # fmt: skip
    start = state_to_numpy(earlier)
    frozen = TrainSettings(patch=16, batch=2, width=16, depth=6, unshuffle=1, lr=1e-12)
    net, summary = pretrain_plane_net(volumes, steps=3, seed=1, acquisitions_per_volume=2,
                                      settings=frozen, init=start)  # fmt: skip
    assert (net.depth, net.width, net.unshuffle) == (4, 8, 2)
    after = state_to_numpy(net)
    for name, value in start.items():  # no learning rate to speak of: still the earlier prior
        np.testing.assert_allclose(after[name], value, atol=1e-6)
    moved, _ = pretrain_plane_net(volumes, steps=3, seed=1, acquisitions_per_volume=2,
                                  settings=TrainSettings(patch=16, batch=2, lr=1e-2), init=start)
    assert any(not np.allclose(state_to_numpy(moved)[k], v) for k, v in start.items())


def test_guided_pretraining_starts_from_the_unguided_prior_and_draws_real_and_synthetic_guides():
    """scripts/pretrain_selfsr.py --guided: from an unguided prior the network gains the
    guide's input with zero weights (at a learning rate of nothing it still computes what
    the prior does, whatever the guide), and each acquisition gets a guide: the volume's
    real reference or a contrast-randomised copy of its T1w."""
    import torch

    from bids_sr.selfsr.network import TrainSettings, net_from_numpy, state_to_numpy
    from bids_sr.selfsr.pretrain import pretrain_plane_net

    volume = _blobs((24, 24, 24), seed=1)
    real = (1.0 - volume) * (volume > 0)  # a registered "T2w": the same edges, another contrast
    small = TrainSettings(patch=16, batch=2, width=8, depth=4, unshuffle=2)
    earlier, _ = pretrain_plane_net([volume], steps=3, seed=0, acquisitions_per_volume=1,
                                    settings=small)  # fmt: skip
    frozen = TrainSettings(patch=16, batch=2, lr=1e-12)
    net, summary = pretrain_plane_net([volume], steps=3, seed=2, acquisitions_per_volume=8,
                                      settings=frozen, init=state_to_numpy(earlier),
                                      references=[[real]])  # fmt: skip
    assert (net.inputs, net.depth, net.width, net.unshuffle) == (3, 4, 8, 2)
    kinds = [a["guide"] for a in summary["acquisitions"]]
    assert len(kinds) == 8 and set(kinds) == {"real0", "synthetic"}, kinds
    x, guide = torch.rand(2, 2, 16, 16), torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(torch.cat([x, guide], 1)), earlier.eval()(x),
                                   atol=1e-5, rtol=1e-4)  # fmt: skip
    # a volume with no real reference gets synthesised guides only; a guided prior goes on
    _, only_synthetic = pretrain_plane_net([volume], steps=3, seed=0, acquisitions_per_volume=2,
                                           settings=frozen, references=[[]],
                                           init=state_to_numpy(net))  # fmt: skip
    assert {a["guide"] for a in only_synthetic["acquisitions"]} == {"synthetic"}
    with pytest.raises(ValueError, match="reference's shape"):
        pretrain_plane_net([volume], steps=1, references=[[real[:-1]]], settings=small)
    with pytest.raises(ValueError, match="reference lists"):
        pretrain_plane_net([volume], steps=1, references=[], settings=small)
    with pytest.raises(ValueError, match="unguided prior cannot continue"):
        pretrain_plane_net([volume], steps=1, settings=small, init=state_to_numpy(net))
    assert net_from_numpy(state_to_numpy(net)).inputs == 3


def test_a_random_guide_is_the_real_reference_or_a_new_contrast_slightly_misregistered():
    from bids_sr.contrast import tissue_centres
    from bids_sr.selfsr.pretrain import MAX_SHIFT_VOXELS, random_guide

    volume = _blobs((24, 24, 24), seed=4)
    real = ndimage.gaussian_filter(volume, 1.0)
    rng = np.random.default_rng(0)
    head = volume > 0
    draws = [random_guide(volume, [real], tissue_centres(volume), rng) for _ in range(12)]
    assert {kind for _, kind in draws} == {"real0", "synthetic"}
    for guide, kind in draws:
        assert guide.shape == volume.shape and guide.dtype == np.float32
        if kind == "real0":  # the reference itself, moved by at most MAX_SHIFT_VOXELS
            assert np.abs(guide - real)[head].mean() < 0.1 * MAX_SHIFT_VOXELS
        else:  # a new contrast (maybe non-monotonic in the T1w's): neither T1w nor reference
            assert np.abs(guide - volume)[head].mean() > 0.01
            assert np.abs(guide - real)[head].mean() > 0.01


def test_an_unreadable_cached_model_is_discarded_and_learned_again(scan, tmp_path, caplog):
    """A truncated cache entry (a killed copy, a full disk) used to fail every rerun until
    the user found and deleted it (issue 43 item 8)."""
    _, lr, acq = scan
    run = dict(learner="filters", seed=1, model_dir=tmp_path)
    first, report = super_resolve_selfsr(lr, (1, 1, 3), acq, **run)
    cached = next(tmp_path.glob("selfsr-filters-*.safetensors"))
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="bids_sr"):
        again, report2 = super_resolve_selfsr(lr, (1, 1, 3), acq, **run)
    assert report2["model_reused"] is False
    assert report2["weights_sha256"] == report["weights_sha256"]  # the same model, rewritten
    np.testing.assert_array_equal(first, again)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(cached.name in m and "learning it again" in m for m in warned), warned
    assert load_model(cached)[1]["learner"] == "filters"


def test_selfsr_fast_applies_its_prior_without_per_scan_training(scan, monkeypatch):
    """``selfsr-fast`` (the cohort mode) runs the shipped prior with fast_iterations steps of
    fine-tuning — none today: no training step is taken, the scan's own pairs still check
    the prior (self_check_l1_ratio), and the result is the prior's, not B-spline's."""
    from bids_sr.selfsr import method, network
    from bids_sr.superresolve import super_resolve

    assert SELFSR.fast_iterations == 0

    def no_training(*args, **kwargs):
        raise AssertionError("selfsr-fast must not train")

    monkeypatch.setattr(network, "fit", no_training)
    hr, lr, acq = scan
    fast, report = super_resolve(lr, (1, 1, 3), "selfsr-fast", acquisition=acq,
                                 data_consistency=False, device="cpu")  # fmt: skip
    base, _ = super_resolve(lr, (1, 1, 3), "bspline", acquisition=acq, data_consistency=False)
    assert report["method"] == "selfsr-fast" and report["prior"] == method.fast_prior(3).name
    assert report["flip_average"] is True  # the prior alone also predicts the mirror images
    assert 0 < report["self_check_l1_ratio"] < 1.5
    assert fast.shape == hr.shape and not np.allclose(fast, base)
    again, _ = super_resolve(lr, (1, 1, 3), "selfsr-fast", acquisition=acq,
                             data_consistency=False, device="cpu")  # fmt: skip
    assert np.array_equal(fast, again)


def test_mirror_averaging_is_the_mean_of_the_plane_and_its_mirror_images_predictions(scan):
    """``flip_average`` predicts every plane and its mirror image along the in-plane axis
    (the row phases are unchanged by it) and averages them, the mirror flipped back; every
    per-scan CNN does it unless the recipe's ``flip_average`` is off."""
    from bids_sr.recipes import SelfSRRecipe
    from bids_sr.selfsr.method import fast_prior
    from bids_sr.selfsr.network import apply_plane_net, net_from_numpy

    hr, lr, acq = scan
    tensors, _ = load_model(fast_prior(3))
    net = net_from_numpy(tensors)
    base = upsample(lr, (1, 1, 3), order=3)
    plain = apply_plane_net(net, base, 2, 0, lr.shape[2])
    mirrored = apply_plane_net(net, np.ascontiguousarray(base[::-1]), 2, 0, lr.shape[2])[::-1]
    both = apply_plane_net(net, base, 2, 0, lr.shape[2], flip_average=True)
    assert not np.allclose(plain, mirrored)
    np.testing.assert_allclose(both, 0.5 * (plain + mirrored), atol=2e-2)
    assert np.abs(both - 0.5 * (plain + mirrored)).mean() < 2e-3
    off = SelfSRRecipe(flip_average=False)
    _, report = super_resolve(lr, (1, 1, 3), "selfsr-fast", acquisition=acq, device="cpu",
                              data_consistency=False, selfsr_recipe=off)  # fmt: skip
    assert report["flip_average"] is False


def test_a_prior_no_better_than_bspline_on_its_own_slices_is_not_called_bspline(
        scan, monkeypatch, caplog):  # fmt: skip
    """``selfsr-fast`` learns nothing, so a self-check above the collapse ratio (few in-plane
    pairs at very thick slices) warns about the prior and keeps the prior's output."""
    from bids_sr.selfsr import network
    from bids_sr.superresolve import super_resolve

    monkeypatch.setattr(network, "self_check", lambda *args, **kwargs: 1.07)
    hr, lr, acq = scan
    with caplog.at_level("WARNING"):
        fast, report = super_resolve(lr, (1, 1, 3), "selfsr-fast", acquisition=acq,
                                     data_consistency=False, device="cpu")  # fmt: skip
    base, _ = super_resolve(lr, (1, 1, 3), "bspline", acquisition=acq, data_consistency=False)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "no better than B-spline (1.070" in warned and "result is B-spline's" not in warned
    assert report["self_check_l1_ratio"] == 1.07 and not np.allclose(fast, base)
