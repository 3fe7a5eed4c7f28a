"""T2w-guided super-resolution wired for a user: planning (auto, all, fallbacks), the
fallback inside the SuperResolve node, evaluation with a guide, and the CLI end to end on the
demo dataset (sub-01 has a synthetic T2w in the T1w's space; sub-02 has none).

No weights ship yet, and the ones that will must not change these results: every test that
plans runs against an empty weights folder (``no_shipped_weights``), and the learned model
is an untrained two-layer srrecnn-t2w written to a temporary file (a test fixture, not a model).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO, tiny_weights

from bids_sr.bids import derivative_path, desc_label
from bids_sr.config import Config, Execution, Workflow
from bids_sr.errors import BIDSError
from bids_sr.planning.plan import plan_methods
from bids_sr.recipes import RegistrationQC

SUB01 = str(DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
SUB01_T2W = str(DEMO / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
SUB02 = [str(DEMO / "sub-02" / f"ses-{s}" / "anat" / f"sub-02_ses-{s}_T1w.nii.gz") for s in (1, 2)]
T1W = {"01": [SUB01], "02": SUB02}
T2W = {SUB01: SUB01_T2W}


def _weights_dirs(monkeypatch, folder: Path) -> None:
    """Point every shipped-weights lookup at ``folder``."""
    from bids_sr.cards import paths as card_paths

    monkeypatch.setattr(card_paths, "WEIGHTS_DIR", folder)


def _demo_t2w_guides(monkeypatch) -> None:
    """Let the demo's T2w guide: it is as coarse as the T1w (2 mm), which planning rejects
    (a reference must be finer along the SR axes); the tests that exercise registration and
    guided inference accept an equal resolution instead."""
    from bids_sr.planning import references

    monkeypatch.setattr(references, "REFERENCE_FINER", 1.01)


@pytest.fixture
def demo_t2w_guides(monkeypatch):
    _demo_t2w_guides(monkeypatch)


@pytest.fixture
def no_shipped_weights(tmp_path, monkeypatch):
    folder = tmp_path / "no_weights"
    folder.mkdir()
    _weights_dirs(monkeypatch, folder)
    return folder


def write_evidence_card(folder: Path, method: str, family: str, factors: list[float],
                        gains: dict[str, float], over_mono: dict[str, float] | None = None,
                        ) -> Path:  # fmt: skip
    """A weights file (empty: planning never loads it) and a card with one evidence record."""
    stem = f"{method}_x{'x'.join(f'{f:g}' for f in factors)}"
    (folder / f"{stem}.safetensors").write_bytes(b"")
    record = {"family": family, "degradation": "slice" if family == "slice" else "gaussian",
              "factors": factors, "data_consistency": True, "gain_over_bspline": gains}
    if over_mono is not None:
        record["gain_over_mono"] = over_mono
    card = {"method": method, "needs_t2w": method == "srrecnn-t2w", "evidence": [record]}
    (folder / f"{stem}.card.json").write_text(json.dumps(card))
    return folder / f"{stem}.safetensors"


def _config(tmp_path, **workflow) -> Config:
    return Config(execution=Execution(bids_dir=DEMO, output_dir=tmp_path / "out"),
                  workflow=Workflow(**workflow))  # fmt: skip


def _sidecar(out: Path, t1w: str, method: str) -> dict:
    image = out / derivative_path(t1w, desc=desc_label(method))
    return json.loads(image.with_name(image.name.split(".")[0] + ".json").read_text())


# ------------------------------------------------------------------------------ planning
def test_desc_label_is_bids_alphanumeric():
    assert desc_label("srrecnn-t2w") == "srrecnnT2w"
    assert desc_label("bspline") == "bspline"
    assert re.fullmatch(r"[0-9a-zA-Z]+", desc_label("srrecnn-t2w"))


def test_auto_picks_validated_mono_or_bspline_per_t1w(tmp_path, no_shipped_weights):
    plan = plan_methods(_config(tmp_path, methods=["auto"]), T1W, T2W)
    assert {t1w: m for t1w, m in plan.methods.items()} == {t: ["bspline"] for t in [SUB01, *SUB02]}
    assert "no shipped model card validates a gain over bspline" in plan.choices[SUB01]
    # the demo T2w is as coarse as the T1w: never a guide, and the sentence says why
    assert "is not used: it is not finer than the T1w" in plan.choices[SUB01]
    assert plan.reference_files == {}  # no guided method runs: nothing to register
    # validated weights for both models: the demo's 2 mm T2w still cannot guide
    write_evidence_card(no_shipped_weights, "srrecnn", "isotropic", [2, 2, 2], {"a": 1.0})
    write_evidence_card(no_shipped_weights, "srrecnn-t2w", "isotropic", [2, 2, 2], {"a": 2.0},
                        over_mono={"a": 1.0})  # fmt: skip
    plan = plan_methods(_config(tmp_path, methods=["auto"]), T1W, T2W)
    assert plan.methods[SUB01] == ["srrecnn"] and plan.methods[SUB02[1]] == ["srrecnn"]
    assert plan.weights_for(SUB01, "srrecnn") == no_shipped_weights / "srrecnn_x2x2x2.safetensors"
    assert "validates it on isotropic inputs at ×2x2x2: at least +1.00 dB" in plan.choices[SUB01]
    # --t2w-reference none: no guide anywhere, and the sentence says so
    plan = plan_methods(_config(tmp_path, methods=["auto"], t2w_reference="none"), T1W, {})
    assert plan.methods[SUB01] == ["srrecnn"]
    assert "--t2w-reference none" in plan.choices[SUB01]


def test_all_guided_fallback_and_weights_rules(tmp_path, no_shipped_weights, demo_t2w_guides):
    (no_shipped_weights / "srrecnn-t2w_x2x2x2.safetensors").write_bytes(b"")
    plan = plan_methods(_config(tmp_path, methods=["all"]), T1W, T2W)
    assert plan.methods[SUB01] == ["nearest", "linear", "bspline", "srrecnn-t2w"]
    assert plan.methods[SUB02[0]] == ["nearest", "linear", "bspline"]  # no T2w: not guided
    # named explicitly on a T1w without T2w: kept, falls back (mono model has no weights)
    plan = plan_methods(_config(tmp_path, methods=["srrecnn-t2w"]), T1W, T2W)
    assert plan.methods[SUB02[0]] == ["srrecnn-t2w"]
    assert plan.fallback(SUB02[0], "srrecnn-t2w").method == "bspline"
    assert "srrecnn has no shipped weights" in plan.fallback(SUB02[0], "srrecnn-t2w").note
    # evaluating: a guided method without a T2w is skipped instead
    plan = plan_methods(_config(tmp_path, methods=["srrecnn-t2w"], evaluate=True), T1W, T2W)
    assert plan.methods == {SUB01: ["srrecnn-t2w"], SUB02[0]: [], SUB02[1]: []}
    # --weights with auto: the method the file was made for
    weights = tiny_weights(tmp_path / "mine.safetensors")
    plan = plan_methods(_config(tmp_path, methods=["auto"], weights=weights), T1W, T2W)
    assert plan.all_methods == ["srrecnn-t2w"] and "method of --weights" in plan.choices[SUB01]
    (tmp_path / "junk.safetensors").write_bytes(b"not weights")
    with pytest.raises(BIDSError, match="must name their method"):
        plan_methods(_config(tmp_path, methods=["auto"], weights=tmp_path / "junk.safetensors"),
                     T1W, T2W)  # fmt: skip


# ------------------------------------------------------------- fallback inside the node
def _guided_run_of_sub01(tmp_path: Path, run_cli, **recipes) -> tuple[Path, dict]:
    """``--method srrecnn-t2w`` (tiny weights, ×1.5) on demo participant 01: the output
    folder and the guided output's sidecar. ``recipes``: run with these instead of the
    shipped ones (``run_cli`` is then the ``run_participant_with`` fixture)."""
    weights = tiny_weights(tmp_path / "g.safetensors")
    out = tmp_path / "out"
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method",
                        "srrecnn-t2w", "--weights", weights, "--scale", "1.5", "--device", "cpu",
                        "-w", tmp_path / "w", "--skip-bids-validation", "--plugin", "Linear",
                        **recipes)  # fmt: skip
    assert code == 0, err
    return out, _sidecar(out, SUB01, "srrecnn-t2w")


def _small_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A 16³ LR 'T1w' (2 mm) and an HR 'T2w' on its ×2 grid (inverted contrast)."""
    from bids_sr.image import upsampled_affine

    rng = np.random.default_rng(0)
    grid = np.indices((16, 16, 16)).astype(np.float32)
    ball = (((grid - 7.5) ** 2).sum(0) < 36).astype(np.float32)
    lr = 100 * ball + rng.normal(0, 2, ball.shape).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    t1w, t2w = tmp_path / "t1w.nii.gz", tmp_path / "t2w_on_grid.nii.gz"
    nib.save(nib.Nifti1Image(lr, affine), t1w)
    hr = np.kron(1.0 - ball, np.ones((2, 2, 2), np.float32)) * 80
    nib.save(nib.Nifti1Image(hr.astype(np.float32), upsampled_affine(affine, (2, 2, 2))), t2w)
    return t1w, t2w


def test_superresolve_falls_back_when_the_registration_fails(tmp_path, monkeypatch):
    from bids_sr.interfaces.superresolve import SuperResolve

    monkeypatch.chdir(tmp_path)
    t1w, t2w = _small_pair(tmp_path)
    weights = tiny_weights(tmp_path / "g.safetensors")
    summary = {"RegistrationQualityNMI": 1.01, "RegistrationQualityThreshold": 1.028,
               "RegistrationUsable": False}  # fmt: skip
    common = dict(in_file=str(t1w), method="srrecnn-t2w", scale=[2.0], weights=str(weights),
                  device="cpu", fallback_method="bspline", fallback_note="bspline (test)")
    guided = SuperResolve(reference_file=str(t2w), reference_summary={**summary,
                          "RegistrationUsable": True}, **common).run()  # fmt: skip
    report = json.loads(Path(guided.outputs.report_json).read_text())
    assert report["method"] == "srrecnn-t2w" and "fallback_from" not in report
    assert report["weights_sha256"] and report["registration"]["RegistrationUsable"] is True

    failed = SuperResolve(reference_file=str(t2w), reference_usable=False,
                          reference_summary=summary, **common).run()  # fmt: skip
    report = json.loads(Path(failed.outputs.report_json).read_text())
    assert report["method"] == "bspline" and report["fallback_from"] == "srrecnn-t2w"
    assert "1.01 < 1.028" in report["fallback_reason"]
    assert "bspline (test)" in report["fallback_reason"]
    assert "weights" not in report  # the guided weights were not used
    # bspline's result, exactly: the unusable guide had no influence
    plain = SuperResolve(in_file=str(t1w), method="bspline", scale=[2.0]).run()
    np.testing.assert_array_equal(nib.load(failed.outputs.out_file).get_fdata(),
                                  nib.load(plain.outputs.out_file).get_fdata())  # fmt: skip
    # no reference at all, and no fallback planned: a clear error, not a silent result
    with pytest.raises(ValueError, match="needs a T2w: no T2w reference"):
        SuperResolve(in_file=str(t1w), method="srrecnn-t2w", scale=[2.0],
                     weights=str(weights)).run()  # fmt: skip


def test_evaluation_leaves_out_guided_methods_when_the_registration_fails(tmp_path, monkeypatch):
    from bids_sr.interfaces.evaluation import EvaluateSuperResolution
    from bids_sr.workflows.evaluation import init_evaluation_wf

    monkeypatch.chdir(tmp_path)
    hr = np.zeros((32, 32, 32), np.float32)
    hr[6:26, 6:26, 6:26] = 100
    hr[12:20, 12:20, 12:20] = 40
    nib.save(nib.Nifti1Image(hr, np.eye(4)), tmp_path / "t1w.nii.gz")
    nib.save(nib.Nifti1Image(120 - hr, np.eye(4)), tmp_path / "t2w.nii.gz")
    weights = tiny_weights(tmp_path / "g.safetensors")
    settings = dict(in_file=str(tmp_path / "t1w.nii.gz"), methods=["srrecnn-t2w"], device="cpu",
                    weights={"srrecnn-t2w": str(weights)},
                    reference_file=str(tmp_path / "t2w.nii.gz"),
                    reference_summary={"RegistrationQualityNMI": 1.5})  # fmt: skip
    result = EvaluateSuperResolution(**settings).run()
    methods = [row.split("\t")[1] for row in Path(result.outputs.out_tsv).read_text().splitlines()]
    assert "srrecnn-t2w" in methods
    result = EvaluateSuperResolution(reference_usable=False, **settings).run()
    methods = [row.split("\t")[1] for row in Path(result.outputs.out_tsv).read_text().splitlines()]
    assert "srrecnn-t2w" not in methods and "bspline" in methods
    meta = json.loads(Path(result.outputs.out_json).read_text())
    assert "srrecnn-t2w" in meta["SkippedMethods"] and meta["RegistrationQualityNMI"] == 1.5
    # the evaluation workflow registers the T2w to the T1w (the truth) and feeds the result
    wf = init_evaluation_wf(t1w_file=str(tmp_path / "t1w.nii.gz"), methods=["srrecnn-t2w"],
                            scale=[2.0], guided=True)  # fmt: skip
    edges = {(u.name, v.name): d["connect"] for u, v, d in wf._graph.edges(data=True)}
    assert ("registered_t2w", "reference_file") in edges[("register_reference", "evaluate")]
    assert ("usable", "reference_usable") in edges[("register_reference", "evaluate")]


# ------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def guided_run(tmp_path_factory):
    """sub-01 (T2w) and sub-02 (no T2w) with --method srrecnn-t2w and tiny weights (and
    tiny weights of its mono twin beside them, ``srrecnn_tiny``, which MonoTwin pairs).
    A guided − mono map of an earlier run lies where sub-02's (no T2w) would go.

    Linear plugin: earlier tests of this file run torch in this process, and a process
    forked after torch's OpenMP pool started can hang (MultiProc forks)."""
    from bids_sr.cli.run import main

    root = tmp_path_factory.mktemp("guided")
    (root / "no_weights").mkdir()
    weights = tiny_weights(root / "srrecnn-t2w_tiny.safetensors")
    tiny_weights(root / "srrecnn_tiny.safetensors", "srrecnn")
    out = root / "out"
    stale = out / derivative_path(SUB02[0], desc="srrecnnT2wGuidedMinusMono")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's map")
    argv = [str(DEMO), str(out), "participant", "--participant-label", "01", "02", "--method",
            "srrecnn-t2w", "--weights", str(weights), "--device", "cpu", "--scale", "1.5",
            "-w", str(root / "work"), "--plugin", "Linear", "--skip-bids-validation"]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        _weights_dirs(patch, root / "no_weights")
        _demo_t2w_guides(patch)
        assert main(argv) == 0
    return out, weights


def test_guided_output_sidecar_and_transform(guided_run):
    out, weights = guided_run
    image = out / "sub-01" / "anat" / "sub-01_res-hi_desc-srrecnnT2w_T1w.nii.gz"
    assert nib.load(image).shape == (126, 153, 126)
    meta = _sidecar(out, SUB01, "srrecnn-t2w")
    assert meta["Method"] == "srrecnn-t2w" and "FallbackFrom" not in meta
    assert meta["T2wReference"] == "bids:raw:sub-01/anat/sub-01_T2w.nii.gz"
    assert meta["RegistrationUsable"] is True
    assert meta["RegistrationQualityNMI"] > meta["RegistrationQualityThreshold"]
    assert meta["Weights"] == str(weights.resolve())
    # the transform: BIDS-named, ITK text, near identity (the synthetic T2w is in T1w space)
    xfm = out / "sub-01" / "anat" / "sub-01_from-T2w_to-T1w_mode-image_xfm.txt"
    from bids_sr.registration import read_itk_transform

    transform = read_itk_transform(xfm)
    assert np.abs(np.asarray(transform.GetTranslation())).max() < 0.5
    assert xfm.read_text().startswith("#Insight Transform File")
    assert not list(out.glob("sub-02/**/*_xfm.txt"))  # no T2w, no registration


def test_missing_t2w_falls_back_and_says_so(guided_run):
    out, _ = guided_run
    for t1w in SUB02:
        meta = _sidecar(out, t1w, "srrecnn-t2w")
        assert meta["Method"] == "bspline" and meta["FallbackFrom"] == "srrecnn-t2w"
        assert meta["RequestedMethod"] == "srrecnn-t2w" and "T2wReference" not in meta
        assert "no T2w reference" in meta["FallbackReason"]
        assert "srrecnn has no shipped weights" in meta["FallbackReason"]
        assert "in place of srrecnn-t2w" in meta["Description"]


def test_guided_derivatives_are_valid_bids_and_reported(guided_run):
    from bids_sr.bids import run_validator, validator_command

    out, _ = guided_run
    page = (out / "sub-01.html").read_text()
    assert "T2w registration" in page and "normalised mutual information" in page
    assert page.count("data:image/png;base64,") == 2  # the comparison and the overlay
    page = (out / "sub-02.html").read_text()
    assert "T2w registration" not in page and page.count("bspline ran instead") == 2
    if validator_command():
        assert run_validator(out) == []


def test_guided_output_shows_what_the_reference_contributed(guided_run):
    """The mono twin ran once, for the guided output only; the sidecar's GuidedMinusMono
    numbers are those of the written images; the report shows the difference row; the map
    is a derivative beside the guided output (none where the guided method fell back)."""
    from bids_sr.guidance import guided_minus_mono
    from bids_sr.image import load_volume

    out, weights = guided_run
    meta = _sidecar(out, SUB01, "srrecnn-t2w")["GuidedMinusMono"]
    assert meta["MonoModel"] == "srrecnn" and "Problem" not in meta
    assert meta["MonoWeights"] == str(weights.with_name("srrecnn_tiny.safetensors").resolve())
    assert 0 < meta["MonoDataConsistencyPSNR"] < 999  # the twin ran with data consistency
    work = out.parent / "work" / "bids_sr_wf"
    twins = sorted(work.glob("single_subject_*_wf/*/mono_twin/*_sr.nii.gz"))
    assert [p.parts[-3] for p in twins] == ["anat_t1w_srrecnn_t2w_wf"]  # sub-01 only
    assert not list(work.glob("single_subject_02_wf/**/mono_twin"))
    guided = load_volume(out / derivative_path(SUB01, desc="srrecnnT2w"))
    mono = load_volume(twins[0])
    numbers = guided_minus_mono(guided.data, mono.data, guided.zooms)
    assert meta["MeanAbsDifference"] == pytest.approx(numbers["mean_abs_difference"], abs=1e-3)
    assert meta["PSNR"] == pytest.approx(numbers["psnr_db"], abs=0.01)
    assert 0 < meta["MeanAbsDifferencePercent"] < 100 and 0 < meta["PSNR"] < 999
    page = (out / "sub-01.html").read_text()
    assert "What the reference contributed" in page
    assert f"{meta['MeanAbsDifferencePercent']:.2f}% of the T1w" in page
    assert f"{meta['PSNR']} dB" in page
    # the map is a derivative of its own beside the guided output: guided − mono
    name = "srrecnnT2wGuidedMinusMono"
    difference = load_volume(out / derivative_path(SUB01, desc=name))
    np.testing.assert_allclose(difference.data, guided.data - mono.data, atol=1e-4)
    np.testing.assert_allclose(difference.affine, guided.affine)
    assert np.abs(difference.data).max() > 0
    map_meta = json.loads((out / derivative_path(SUB01, desc=name, extension=".json")).read_text())
    assert map_meta["Sources"] == ["bids::sub-01/anat/sub-01_res-hi_desc-srrecnnT2w_T1w.nii.gz",
                                   "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]  # fmt: skip
    assert "minus that of its mono twin srrecnn" in map_meta["Description"]
    assert map_meta["T2wReference"] == "bids:raw:sub-01/anat/sub-01_T2w.nii.gz"
    assert map_meta["ReferenceSuffix"] == "T2w" and map_meta["Units"].endswith("intensity)")
    assert map_meta["GuidedMinusMono"] == meta  # the mono model, its weights, the numbers
    for t1w in SUB02:  # fell back: no mono run, no comparison, no map (an old one removed)
        assert "GuidedMinusMono" not in _sidecar(out, t1w, "srrecnn-t2w")
        assert not (out / derivative_path(t1w, desc=name)).exists()
    assert "What the reference contributed" not in (out / "sub-02.html").read_text()


def test_auto_without_weights_is_bspline_and_says_why(tmp_path, run_cli, no_shipped_weights):
    out = tmp_path / "out"
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "01", "--scale", "1.5",
                        "--t2w-reference", "none", "-w", tmp_path / "w", "--skip-bids-validation",
                        "--plugin", "Linear")  # fmt: skip
    assert code == 0, err
    meta = _sidecar(out, SUB01, "bspline")
    assert meta["Method"] == "bspline"
    assert meta["MethodChoice"] == (
        "auto chose bspline (cubic B-spline interpolation) because no shipped model card "
        "validates a gain over bspline for isotropic inputs at ×1.5x1.5x1.5; "
        "--t2w-reference none"
    )
    assert meta["DataConsistencyPSNR"] >= 40 and meta["AcquisitionModel"] == "isotropic"
    assert "T2wReference" not in meta and not list(out.glob("**/*_xfm.txt"))


def test_t2w_reference_option_is_checked(tmp_path, run_cli):
    code, err = run_cli(DEMO, tmp_path / "out", "participant", "--t2w-reference",
                        tmp_path / "absent.nii.gz")  # fmt: skip
    assert code == 64 and "--t2w-reference" in err and "does not exist" in err
    pattern = str(tmp_path / "refs" / "sub-{subject}_T2w.nii.gz")
    code, err = run_cli(DEMO, tmp_path / "out", "participant", "--participant-label", "01",
                        "--t2w-reference", pattern, "--skip-bids-validation")  # fmt: skip
    assert code == 66 and "sub-01_T2w.nii.gz" in err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_failed_registration_falls_back_end_to_end(tmp_path, run_participant_with,
                                                   no_shipped_weights, demo_t2w_guides):
    """A registration below the quality threshold (forced: no NMI reaches 1.99) keeps the
    T2w out: bspline runs (srrecnn has no weights), and the sidecar and report say why."""
    strict = RegistrationQC(min_nmi=1.99)
    out, meta = _guided_run_of_sub01(tmp_path, run_participant_with, registration_qc=strict)
    assert meta["RegistrationQCSha256"] == strict.sha256
    assert meta["Method"] == "bspline" and meta["FallbackFrom"] == "srrecnn-t2w"
    assert meta["RegistrationUsable"] is False and meta["RegistrationQualityThreshold"] == 1.99
    assert f"{meta['RegistrationQualityNMI']} < 1.99" in meta["FallbackReason"]
    assert meta["T2wReference"] == "bids:raw:sub-01/anat/sub-01_T2w.nii.gz"
    assert (out / "sub-01" / "anat" / "sub-01_from-T2w_to-T1w_mode-image_xfm.txt").exists()
    page = (out / "sub-01.html").read_text()
    assert "bspline ran instead of srrecnn-t2w" in page and ": not usable." in page


def test_evaluation_graph_registers_the_t2w_of_guided_t1w_only(tmp_path, no_shipped_weights):
    from bids_sr.workflows.base import init_bids_sr_wf

    weights = tiny_weights(tmp_path / "g.safetensors")
    config = _config(tmp_path, methods=["srrecnn-t2w"], evaluate=True, weights=weights)
    plan = plan_methods(config, T1W, T2W)
    workflow = init_bids_sr_wf(config=config, t1w_by_subject=T1W, plan=plan)
    nodes = {node.fullname: node for node in workflow._create_flat_graph().nodes()}
    registrations = [name for name in nodes if name.endswith("register_reference")]
    assert registrations == ["bids_sr_wf.single_subject_01_wf.eval_t1w_wf.register_reference"]
    inputnode = workflow.get_node("single_subject_01_wf.eval_t1w_wf.inputnode")
    assert inputnode.inputs.t2w == SUB01_T2W
    evaluations = {name: n for name, n in nodes.items() if name.endswith(".evaluate")}
    assert len(evaluations) == 3
    sub02 = [n for name, n in evaluations.items() if "single_subject_02" in name]
    assert all(n.inputs.methods == ["bspline"] for n in sub02)  # guided skipped: no T2w


def test_a_t2w_no_finer_than_the_t1w_does_not_guide(tmp_path, run_cli, no_shipped_weights):
    """The demo's T2w (2 mm, like its T1w) brings nothing along the SR axes: no registration,
    the guided method falls back and FallbackReason says why."""
    out, meta = _guided_run_of_sub01(tmp_path, run_cli)
    assert meta["Method"] == "bspline" and meta["FallbackFrom"] == "srrecnn-t2w"
    assert "sub-01_T2w.nii.gz is not used: it is not finer than the T1w" in meta["FallbackReason"]
    assert "T2wReference" not in meta and not list(out.glob("**/*_xfm.txt"))
