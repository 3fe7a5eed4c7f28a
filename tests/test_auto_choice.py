"""``auto`` decides from the model cards' evidence (bids_sr.cards.evidence), per input."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO

from bids_sr.config import Config, Execution, Workflow
from bids_sr.image import factors_for_resolution
from bids_sr.planning.auto import choose_auto
from bids_sr.planning.inputs import t1w_acquisition
from bids_sr.planning.plan import plan_methods
from bids_sr.planning.references import reference_problem
from bids_sr.recipes import AUTO_POLICY, AutoPolicy


def _card(folder: Path, stem: str, method: str, records: list[dict]) -> None:
    (folder / f"{stem}.safetensors").write_bytes(b"")  # planning never loads weights
    card = {"method": method, "needs_t2w": method.endswith("-t2w"), "evidence": records}
    (folder / f"{stem}.card.json").write_text(json.dumps(card))


def _record(family, factors, gains, over_mono=None):
    record = {"family": family, "factors": factors, "data_consistency": True,
              "gain_over_bspline": gains}  # fmt: skip
    if over_mono is not None:
        record["gain_over_mono"] = over_mono
    return record


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    from bids_sr.cards import paths as card_paths

    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(card_paths, "WEIGHTS_DIR", folder)
    _card(folder, "srrecnn_x2x2x2", "srrecnn", [_record("isotropic", [2, 2, 2], {"a": 3.0})])
    _card(folder, "srrecnn_x1x1x4", "srrecnn", [
        _record("slice", [1, 1, 3], {"a": 0.4, "b": 0.6}),
        _record("slice", [1, 1, 5], {"a": 0.3, "b": 0.2}),
    ])  # fmt: skip
    _card(folder, "gradfilter_x1x1x4", "gradfilter", [
        _record("slice", [1, 1, 4], {"a": 0.9, "b": -0.1}),  # one image lost: not validated
    ])  # fmt: skip
    _card(folder, "srrecnn-t2w_x1x1x3", "srrecnn-t2w", [
        _record("slice", [1, 1, 3], {"a": 2.0, "b": 1.9}, over_mono={"a": 1.6, "b": 1.3}),
    ])  # fmt: skip
    _card(folder, "srrecnn-t2w_x2x2x2", "srrecnn-t2w", [
        _record("isotropic", [2, 2, 2], {"a": 3.1}, over_mono={"a": -0.1}),  # not over mono
    ])  # fmt: skip
    _card(folder, "srrecnn-t2w_x1x1x5", "srrecnn-t2w", [  # over mono by noise only
        _record("slice", [1, 1, 5], {"a": 2.5, "b": 2.4}, over_mono={"a": 0.8, "b": 0.02}),
    ])  # fmt: skip
    return folder


def _image(path: Path, zooms, shape=(20, 20, 12)) -> str:
    affine = np.diag([*zooms, 1.0])
    data = np.ones(shape, np.float32)
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


def _choose(t1w: str, t2w: str | None, resolution: float | None = None, scale=(2, 2, 2),
            policy: AutoPolicy = AUTO_POLICY):  # fmt: skip
    affine = nib.load(t1w).affine
    factors = factors_for_resolution(affine, resolution) if resolution else scale
    config = Config(execution=Execution(bids_dir=Path("."), output_dir=Path("out")))
    family = t1w_acquisition(config, t1w).family
    problem = reference_problem(t1w, t2w, factors) if t2w else None
    return choose_auto(factors, family, t2w, reference_problem=problem, policy=policy)


def test_auto_choices_for_a_table_of_inputs(tmp_path, weights_dir):
    iso = _image(tmp_path / "iso_T1w.nii.gz", (2, 2, 2))
    thick = _image(tmp_path / "thick_T1w.nii.gz", (1, 1, 3))
    t2w_3d = _image(tmp_path / "3d_T2w.nii.gz", (1, 1, 1), shape=(20, 20, 36))
    t2w_thick = _image(tmp_path / "thick_T2w.nii.gz", (0.6, 0.6, 3.3))
    table = [
        # (T1w, T2w, output resolution, scale) → method, weights stem
        ((iso, None, None, (2, 2, 2)), ("srrecnn", "srrecnn_x2x2x2")),
        # a 3D T2w at 2 mm is not finer; the guided ×2 card shows no gain over mono anyway
        ((iso, t2w_3d, None, (2, 2, 2)), ("srrecnn", "srrecnn_x2x2x2")),
        ((iso, None, None, (3, 3, 3)), ("bspline", None)),  # no evidence at ×3
        ((thick, None, 1.0, None), ("srrecnn", "srrecnn_x1x1x4")),
        ((thick, t2w_3d, 1.0, None), ("srrecnn-t2w", "srrecnn-t2w_x1x1x3")),
        ((thick, t2w_thick, 1.0, None), ("srrecnn", "srrecnn_x1x1x4")),
        ((thick, None, 0.5, None), ("bspline", None)),  # in-plane upsampling: no evidence
    ]
    for (t1w, t2w, resolution, scale), (method, stem) in table:
        choice = _choose(t1w, t2w, resolution, scale)
        label = f"{Path(t1w).name} + {t2w and Path(t2w).name} at {resolution or scale}"
        assert choice.method == method, (label, choice.sentence)
        expected = weights_dir / f"{stem}.safetensors" if stem else None
        assert choice.weights == expected, label
    # the sentences say which evidence decided
    assert "at ×1x1x3: at least +0.40 dB" in _choose(thick, None, 1.0).sentence
    four = _image(tmp_path / "four_T1w.nii.gz", (1, 1, 4))  # bracketed by ×3 and ×5: the min
    assert "at ×1x1x3, ×1x1x5: at least +0.20 dB" in _choose(four, None, 1.0).sentence
    guided = _choose(thick, t2w_3d, 1.0)
    assert "+1.30 dB over the mono model" in guided.sentence
    assert guided.fallback.method == "srrecnn"
    skipped = _choose(thick, t2w_thick, 1.0).sentence
    assert "thick_T2w.nii.gz is not used: it is not finer than the T1w along array axis 2" in (
        skipped
    )
    assert "no shipped model card validates" in _choose(iso, None, None, (3, 3, 3)).sentence


def test_a_guided_margin_within_noise_does_not_choose_the_guided_model(tmp_path, weights_dir):
    """At ×5 the guided card beats its mono twin by 0.8 and 0.02 dB: the second is within
    run-to-run noise (AutoPolicy.min_gain_over_mono), so auto keeps the mono model there."""
    thick = _image(tmp_path / "thick5_T1w.nii.gz", (1, 1, 5))
    t2w_3d = _image(tmp_path / "3d_T2w.nii.gz", (1, 1, 1), shape=(20, 20, 60))
    assert _choose(thick, t2w_3d, 1.0).method == "srrecnn"
    lenient = AutoPolicy(min_gain_over_mono=0.0)
    assert _choose(thick, t2w_3d, 1.0, policy=lenient).weights == (
        weights_dir / "srrecnn-t2w_x1x1x5.safetensors"
    )


def test_factor_outside_the_validated_range_is_bspline(tmp_path, weights_dir):
    coarse = _image(tmp_path / "coarse_T1w.nii.gz", (1, 1, 6.5))
    assert _choose(coarse, None, 1.0).method == "bspline"  # ×6.5 beyond ×5 + tolerance
    # a policy that lets a record validate factors 2 away from its own reaches it
    assert _choose(coarse, None, 1.0, policy=AutoPolicy(factor_tolerance=2.0)).method == "srrecnn"


def test_explicit_method_outside_its_range_warns(tmp_path, weights_dir, caplog):
    thick = _image(tmp_path / "sub-01_T1w.nii.gz", (1, 1, 3))
    config = Config(
        execution=Execution(bids_dir=tmp_path, output_dir=tmp_path / "out"),
        workflow=Workflow(methods=["gradfilter", "auto"], scale=[1.0, 1.0, 4.0]),
    )
    plan = plan_methods(config, {"01": [thick]})
    assert plan.methods[thick] == ["gradfilter", "srrecnn"]
    assert "no shipped model card of gradfilter validates" in plan.warnings[thick]["gradfilter"]
    assert "srrecnn" not in plan.warnings.get(thick, {})
    assert "gradfilter" in caplog.text


def test_evaluation_mode_decides_for_the_simulated_input(tmp_path, weights_dir):
    iso_truth = _image(tmp_path / "sub-01_T1w.nii.gz", (1, 1, 1), shape=(24, 24, 24))
    config = Config(
        execution=Execution(bids_dir=tmp_path, output_dir=tmp_path / "out"),
        workflow=Workflow(methods=["auto", "bspline"], scale=[1.0, 1.0, 3.0], evaluate=True,
                          degradation="slice"),
    )  # fmt: skip
    plan = plan_methods(config, {"01": [iso_truth]})
    assert plan.auto_methods[iso_truth] == "srrecnn"
    assert plan.weights_for(iso_truth, "srrecnn") == weights_dir / "srrecnn_x1x1x4.safetensors"


def test_a_per_scan_method_is_chosen_from_a_card_without_weights(tmp_path, weights_dir):
    card = {"method": "selfsr", "weights": None, "needs_t2w": False, "evidence": [
        _record("slice", [1, 1, 3], {"a": 2.1, "b": 1.7}),
        _record("slice", [1, 1, 5], {"a": 1.6, "b": -0.2}),  # one image lost at ×5
    ]}  # fmt: skip
    (weights_dir / "selfsr.card.json").write_text(json.dumps(card))
    thick = _image(tmp_path / "thick_T1w.nii.gz", (1, 1, 3))
    choice = _choose(thick, None, 1.0)
    assert choice.method == "selfsr" and choice.weights is None
    assert "its model card (selfsr.card.json)" in choice.sentence
    assert "at least +1.70 dB" in choice.sentence
    # not where an image lost, and never for isotropic inputs
    five = _image(tmp_path / "five_T1w.nii.gz", (1, 1, 5))
    assert _choose(five, None, 1.0).method == "srrecnn"
    iso = _image(tmp_path / "iso_T1w.nii.gz", (2, 2, 2))
    assert _choose(iso, None).method == "srrecnn"
    # a card that names a weights file which is absent still validates nothing
    (weights_dir / "selfsr.card.json").write_text(json.dumps({**card, "weights": "x"}))
    assert _choose(thick, None, 1.0).method == "srrecnn"


def test_guided_selfsr_needs_a_finer_t2w_and_falls_back_to_selfsr(tmp_path, weights_dir):
    """selfsr-t2w's card (no weights, reference T2w) wins where it shows the larger gain over
    bspline and a gain over selfsr; its fallback is then selfsr, and without a finer T2w
    selfsr itself is chosen."""
    mono = {"method": "selfsr", "weights": None, "needs_t2w": False, "evidence": [
        _record("slice", [1, 1, 3], {"a": 2.1, "b": 1.7})]}  # fmt: skip
    guided = {"method": "selfsr-t2w", "weights": None, "reference_suffix": "T2w",
              "evidence": [_record("slice", [1, 1, 3], {"b": 3.4}, over_mono={"b": 1.7})]}
    (weights_dir / "selfsr.card.json").write_text(json.dumps(mono))
    (weights_dir / "selfsr-t2w.card.json").write_text(json.dumps(guided))
    thick = _image(tmp_path / "thick_T1w.nii.gz", (1, 1, 3))
    fine = _image(tmp_path / "fine_T2w.nii.gz", (1, 1, 1), shape=(20, 20, 36))
    choice = _choose(thick, fine, 1.0)
    assert choice.method == "selfsr-t2w" and choice.weights is None
    assert choice.fallback.method == "selfsr" and "+1.70 dB over the mono model" in choice.sentence
    coarse = _image(tmp_path / "coarse_T2w.nii.gz", (1, 1, 3))  # same thick slices
    assert _choose(thick, coarse, 1.0).method == "selfsr"
    assert _choose(thick, None, 1.0).method == "selfsr"


def test_every_record_at_the_chosen_factor_must_show_the_gain(tmp_path, weights_dir):
    """Records of one factor for several slice thicknesses all count (the smallest gain):
    a loss at one thickness is not hidden by a gain at another listed first."""
    gap = {**_record("slice", [1, 1, 3], {"a": 2.0, "b": 1.8}), "thickness_ratio": 0.8}
    full = {**_record("slice", [1, 1, 3], {"a": 1.2, "b": 0.9}), "thickness_ratio": 1.0}
    card = {"method": "selfsr", "weights": None, "needs_t2w": False, "evidence": [gap, full]}
    (weights_dir / "selfsr.card.json").write_text(json.dumps(card))
    thick = _image(tmp_path / "thick_T1w.nii.gz", (1, 1, 3))
    choice = _choose(thick, None, 1.0)
    assert choice.method == "selfsr" and "at least +0.90 dB" in choice.sentence
    assert choice.sentence.count("×1x1x3") == 1
    full["gain_over_bspline"] = {"a": 1.2, "b": -0.1}
    (weights_dir / "selfsr.card.json").write_text(json.dumps(card))
    assert _choose(thick, None, 1.0).method == "srrecnn"  # the lost image counts


def test_all_skips_selfsr_on_isotropic_inputs_and_explicit_selfsr_stops(tmp_path, weights_dir):
    from bids_sr.errors import BIDSError

    iso = _image(tmp_path / "iso_T1w.nii.gz", (2, 2, 2))
    thick = _image(tmp_path / "thick_T1w.nii.gz", (1, 1, 3))
    config = Config(execution=Execution(bids_dir=Path("."), output_dir=Path("out")),
                    workflow=Workflow(methods=["all"], output_resolution=1.0))  # fmt: skip
    plan = plan_methods(config, {"01": [iso, thick]})
    assert "selfsr" not in plan.methods[iso] and "selfsr" in plan.methods[thick]
    config.workflow.methods = ["selfsr"]
    with pytest.raises(BIDSError, match="iso_T1w.nii.gz: selfsr super-resolves 2D"):
        plan_methods(config, {"01": [iso]})


def test_the_demo_2d_scan_takes_the_thick_slice_path(tmp_path):
    """The bundled demo's sub-03 (axial slices 4 mm apart, 3.6 mm thick) is planned as a 2D
    scan with the shipped cards: its acquisition comes from the sidecar, and ``auto`` picks
    the self-supervised thick-slice method — what `make demo` shows — or, with ``--fast``,
    its cohort mode."""
    t1w = str(DEMO / "sub-03" / "anat" / "sub-03_T1w.nii.gz")
    config = Config(execution=Execution(bids_dir=DEMO, output_dir=tmp_path / "out"),
                    workflow=Workflow(methods=["auto"], output_resolution=1.0))  # fmt: skip
    acquisition = t1w_acquisition(config, t1w)
    assert acquisition.family == "slice" and acquisition.slice_axis == 2
    assert acquisition.thickness == pytest.approx(3.6)
    plan = plan_methods(config, {"03": [t1w]})
    # both selfsr and its cohort mode are validated at ×4: the per-scan training runs by
    # default, the prior alone with --fast
    assert plan.auto_methods[t1w] == "selfsr"
    config.workflow.fast = True
    assert plan_methods(config, {"03": [t1w]}).auto_methods[t1w] == "selfsr-fast"


def test_a_fast_cohort_mode_ranks_last_unless_speed_is_asked_for(tmp_path, weights_dir):
    """A card with ``"speed": "fast"`` is chosen only where nothing slower is validated —
    even with the larger worst-image gain — and first with ``fast`` (``--fast``)."""
    def weightless(method, records, **extra):
        card = {"method": method, "weights": None, "family": "slice", "evidence": records}
        (weights_dir / f"{method}.card.json").write_text(json.dumps({**card, **extra}))

    weightless("selfsr", [_record("slice", [1, 1, 3], {"a": 1.0, "b": 0.7})])
    weightless("selfsr-fast", [_record("slice", [1, 1, 3], {"a": 1.2, "b": 0.9}),
                               _record("slice", [1, 1, 8], {"a": 0.4, "b": 0.3})],
               speed="fast")  # fmt: skip
    thick = _image(tmp_path / "thick_T1w.nii.gz", (1, 1, 3))
    factors = factors_for_resolution(nib.load(thick).affine, 1.0)
    assert choose_auto(factors, "slice", None).method == "selfsr"
    fast = choose_auto(factors, "slice", None, fast=True)
    assert fast.method == "selfsr-fast" and "+0.90 dB" in fast.sentence
    eight = _image(tmp_path / "eight_T1w.nii.gz", (1, 1, 8))  # only the fast mode is validated
    assert choose_auto(factors_for_resolution(nib.load(eight).affine, 1.0), "slice",
                       None).method == "selfsr-fast"  # fmt: skip
    iso = _image(tmp_path / "iso_T1w.nii.gz", (2, 2, 2))  # no fast mode for 3D: unchanged
    assert choose_auto((2, 2, 2), "isotropic", None, fast=True).method == "srrecnn"
    assert _choose(iso, None).method == "srrecnn"


@pytest.mark.parametrize(("zooms", "method"), [
    ((0.9, 0.9, 5.5), "selfsr"), ((1.0, 1.0, 6.0), "selfsr"),  # selfsr's records reach ×8
    ((0.9, 0.9, 6.5), "selfsr"), ((1.0, 1.0, 8.0), "selfsr"),
    ((0.5, 0.5, 6.5), "selfsr"),  # ×13: from the thick prior, every image gains
    ((0.4, 0.4, 8.0), "selfsr-fast"),  # ×20: only the prior alone has a record
])  # fmt: skip
def test_clinical_slice_thicknesses_up_to_8_mm_get_a_per_scan_method(tmp_path, zooms, method):
    """With the shipped cards, a 2D T1w of 5.5–8 mm slices made isotropic at its in-plane
    size gets a self-supervised method (records bracket factors 5–20), not B-spline: the
    per-scan training where its records show a gain on every image (up to ×13), the prior
    alone beyond."""
    t1w = _image(tmp_path / "clinical_T1w.nii.gz", zooms)
    choice = _choose(t1w, None, min(zooms))
    assert choice.method == method, choice.sentence
    assert "selfsr" in choice.sentence and "dB" in choice.sentence
