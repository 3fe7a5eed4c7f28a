"""bids_sr-train on the demo dataset: short real runs (tiny patches, a few iterations)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO
from safetensors import safe_open

from bids_sr.training.cli import main as train_main

FAST = ["--patch-size", "8", "--batch-size", "4", "--nthreads", "1", "--device", "cpu",
        "--quiet", "--val-every", "5"]


def train(method, out, *extra):
    return train_main([method, str(DEMO), str(out), "--participant-label", "02",
                       "--validation-label", "01", *FAST, *[str(e) for e in extra]])


def history(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def tensors(path):
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}


@pytest.fixture(scope="module")
def espcn_run(tmp_path_factory):
    """ESPCN x2, 30 steps, with the final evaluation on the validation participant."""
    out = tmp_path_factory.mktemp("espcn")
    assert train("espcn", out, "--iterations", "30", "--seed", "3") == 0
    return out


def test_supervised_loss_decreases_and_outputs(espcn_run):
    log = history(espcn_run)
    assert [h["step"] for h in log] == list(range(1, 31))
    losses = [h["loss"] for h in log]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert "val_psnr" in log[-1] and np.isfinite(log[-1]["val_psnr"])
    for name in ("espcn_x2x2x2.safetensors", "espcn_x2x2x2.card.json", "espcn_x2x2x2.md",
                 "loss_curve.png", "espcn_x2x2x2_validation.tsv"):
        assert (espcn_run / name).is_file(), name
    card = json.loads((espcn_run / "espcn_x2x2x2.card.json").read_text())
    assert card["training_subjects"] == ["02"] and card["validation_subjects"] == ["01"]
    assert card["iterations"] == 30 and card["device"] == "cpu"
    assert card["degradation"] == "gaussian"
    # images are named relative to the dataset (cards travel), pinned by their sha256
    files = card["data"]["training_files"]
    assert [f["t1w"] for f in files] == [f"sub-02/ses-{s}/anat/sub-02_ses-{s}_T1w.nii.gz"
                                         for s in (1, 2)]
    assert all(len(f["t1w_sha256"]) == 64 for f in files)
    assert card["command"].startswith("bids_sr-train espcn ")
    assert any("CPU" in note for note in card["notes"])
    assert not any("Architecture differs" in note for note in card["notes"])  # defaults
    per_method = card["validation"]["per_method"]
    assert list(per_method) == ["nearest", "linear", "bspline", "espcn"]
    assert per_method["bspline"]["psnr_brain"]["n"] == 1
    delta = card["validation"]["delta_vs_bspline"]["psnr_brain"]["mean"]
    brain = {m: per_method[m]["psnr_brain"]["mean"] for m in per_method}
    expected = brain["espcn"] - brain["bspline"]
    assert delta == pytest.approx(expected)
    assert card["validation"]["acceptance"]["met"] == (delta >= 1.5)


@pytest.mark.slow
def test_trained_weights_run_in_the_app(espcn_run, tmp_path, run_cli):
    weights = espcn_run / "espcn_x2x2x2.safetensors"
    out = tmp_path / "out"
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method",
                        "espcn", "--weights", weights, "--device", "cpu", "-w", tmp_path / "w",
                        "--skip-bids-validation")
    assert code == 0, err
    image = out / "sub-01" / "anat" / "sub-01_res-hi_desc-espcn_T1w.nii.gz"
    assert nib.load(image).shape == (168, 204, 168)


@pytest.mark.slow
def test_srgan_content_loss_decreases(tmp_path):
    out = tmp_path / "srgan"
    assert train("srgan", out, "--iterations", "30", "--pretrain-iterations", "15",
                 "--lr", "1e-3", "--no-evaluate", "--patch-size", "8") == 0
    log = history(out)
    assert all("adversarial" in h and "discriminator" in h for h in log[15:])
    assert not any("adversarial" in h for h in log[:15])
    content = [h["content"] for h in log]
    assert np.mean(content[-5:]) < np.mean(content[:5])
    from bids_sr.models.weights import load_model

    model, info = load_model(out / "srgan_x2x2x2.safetensors", method="srgan", factors=(2, 2, 2))
    assert info["config"]["factors"] == [2, 2, 2]


def test_resume_matches_uninterrupted_run_bit_for_bit(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    args = ("--iterations", "10", "--no-evaluate", "--checkpoint-every", "4", "--seed", "5")
    assert train("srrecnn", whole, *args, "--config", '{"features": 8, "layers": 4}') == 0
    assert train("srrecnn", split, *args, "--config", '{"features": 8, "layers": 4}',
                 "--stop-after", "6") == 0
    assert not (split / "srrecnn_x2x2x2.safetensors").exists()
    assert json.loads((split / "checkpoints" / "checkpoint.json").read_text())["step"] == 6
    assert train("srrecnn", split, *args, "--config", '{"features": 8, "layers": 4}',
                 "--resume") == 0
    name = "srrecnn_x2x2x2.safetensors"
    a, b = tensors(whole / name), tensors(split / name)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert [h["loss"] for h in history(whole)] == [h["loss"] for h in history(split)]


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / name
        assert train("fsrcnn", out, "--iterations", "4", "--no-evaluate", "--seed", seed) == 0
        runs[name] = tensors(out / "fsrcnn_x2x2x2.safetensors")
    assert all(np.array_equal(runs["a"][k].numpy(), runs["b"][k].numpy()) for k in runs["a"])
    assert not all(np.array_equal(runs["a"][k].numpy(), runs["c"][k].numpy()) for k in runs["a"])


def test_gradfilter_command_on_demo(tmp_path):
    out = tmp_path / "gf"
    code = train_main(["gradfilter", str(DEMO), str(out), "--participant-label", "02",
                       "--validation-label", "01", "--patch-size", "5", "--sample-stride", "4",
                       "--quiet", "--device", "cpu"])
    assert code == 0
    card = json.loads((out / "gradfilter_x2x2x2.card.json").read_text())
    assert card["method"] == "gradfilter" and card["training_subjects"] == ["02"]
    assert "gradfilter" in card["validation"]["per_method"]
    from bids_sr.gradfilter import load_filters

    assert load_filters(out / "gradfilter_x2x2x2.safetensors").patch_size == 5


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["fsrcnn", "--participant-label", "07"], 18, "not found: 07"),
        (["fsrcnn", "--participant-label", "01", "02", "--validation-label", "01"], 64,
         "also in the training set"),
        (["fsrcnn", "--scale", "1.5"], 64, "integer per-axis factors"),
        (["fsrcnn", "--scale", "2", "2"], 64, "one factor or three"),
        (["espcn", "--patch-size", "9"], 64, "multiple of every factor"),
        (["srrecnn-t2w", "--participant-label", "01", "--validation-label", "02"], 66,
         "no T2w"),
        (["srrecnn-flair", "--participant-label", "01", "--validation-label", "02"], 66,
         "no FLAIR; validating a FLAIR-guided network needs a real T1w/FLAIR pair"),
        (["srrecnn-t2w", "--reference-misregistration", "1", "-2"], 64,
         "--reference-misregistration MM DEG must not be negative"),
        (["srrecnn-t2w", "--reference-blur", "5"], 64, "--reference-blur must lie in [0, 3]"),
        (["srrecnn", "--smoothed-copies", "0"], 64, "--smoothed-copies SDs must lie in (0, 3]"),
        (["gradfilter", "--smoothed-copies", "1"], 64, "not to gradfilter"),
        (["gradfilter", "--patch-size", "6"], 64, "odd edge"),
        (["srrecnn", "--iterations", "0"], 64, "must be positive"),
        (["espcn", "--patch-size", "8", "--loss-margin", "4"], 64, "--loss-margin must lie"),
        (["espcn", "--background-fraction", "1"], 64, "--background-fraction must lie"),
        (["srrecnn", "--init", "/nonexistent.safetensors"], 64, "not found"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, argv, code, needle):
    out = tmp_path / "out"
    result = train_main([argv[0], str(DEMO), str(out), *argv[1:], "--quiet"])
    err = capsys.readouterr().err.strip()
    assert result == code
    assert needle in err and len(err.splitlines()) == 1
    assert not (out / "checkpoints").exists()


def test_participant_without_t1w(tmp_path, capsys):
    data = tmp_path / "demo"
    shutil.copytree(DEMO, data)
    for f in (data / "sub-01" / "anat").glob("*T1w*"):
        f.unlink()
    assert train_main(["espcn", str(data), str(tmp_path / "o"), "--participant-label", "01"]) == 66
    assert "no T1w" in capsys.readouterr().err


def test_existing_checkpoint_needs_resume_and_same_settings(tmp_path, capsys):
    out = tmp_path / "o"
    assert train("espcn", out, "--iterations", "4", "--stop-after", "2") == 0
    assert train("espcn", out, "--iterations", "4") == 64
    assert "--resume" in capsys.readouterr().err
    assert train("espcn", out, "--iterations", "5", "--resume") == 64
    assert "differs in iterations" in capsys.readouterr().err


def test_init_fine_tunes_from_weights(espcn_run, tmp_path):
    weights = espcn_run / "espcn_x2x2x2.safetensors"
    out = tmp_path / "ft"
    assert train("espcn", out, "--iterations", "3", "--no-evaluate", "--init", weights) == 0
    card = json.loads((out / "espcn_x2x2x2.card.json").read_text())
    assert card["initialisation"].startswith("fine-tuned from")
    log = history(out)
    assert log[0]["loss"] < history(espcn_run)[0]["loss"]


def test_loss_margin_ignores_the_patch_border():
    """With --loss-margin k, output voxels within k of a patch face do not enter the loss."""
    import torch

    from bids_sr.training.loops import LoopSettings, SupervisedTask

    targets = torch.rand(2, 1, 10, 10, 10)
    inputs = targets.clone()
    inputs[:, :, :2] += 5.0  # wrong only in the first two slices
    inputs[:, :, :, -1] -= 3.0  # and the last row
    model = torch.nn.Conv3d(1, 1, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    losses = {}
    for margin in (0, 2):
        task = SupervisedTask(model, LoopSettings(iterations=1, lr=1e-12, loss_margin=margin))
        losses[margin] = task.step(inputs, targets, 0)["loss"]
    assert losses[0] > 1.0
    assert losses[2] == pytest.approx(0.0, abs=1e-10)


def test_flair_guided_run_records_its_contrast_and_misregistration(tmp_path):
    """srrecnn-flair trains without any FLAIR (all references synthesised); its weights name
    their method (T2w weights never load as FLAIR weights) and the card records the
    reference contrast, the misregistration bounds, the reference blur and the smoothed
    copies."""
    from bids_sr.models.weights import WeightsError, load_model

    out = tmp_path / "flair"
    assert train_main(["srrecnn-flair", str(DEMO), str(out), "--participant-label", "01", "02",
                       *FAST, "--iterations", "3", "--no-evaluate",
                       "--reference-misregistration", "0.5", "1", "--reference-blur", "0.8",
                       "--smoothed-copies", "1.0",
                       "--config", '{"features": 4, "layers": 3}']) == 0  # fmt: skip
    weights = out / "srrecnn-flair_x2x2x2.safetensors"
    card = json.loads(weights.with_name("srrecnn-flair_x2x2x2.card.json").read_text())
    assert card["reference_suffix"] == "FLAIR" and card["needs_reference"]
    assert not card["needs_t2w"]
    bounds = card["augmentation"]["reference_misregistration"]
    assert (bounds["max_translation_mm"], bounds["max_rotation_deg"]) == (0.5, 1.0)
    assert "real FLAIR" in card["reference_training"]
    assert "Gaussian blur of SD ~U(0, 0.8) voxels" in card["reference_training"]
    assert card["augmentation"]["smoothed_copies"]["sd_voxels"] == [1.0]
    assert ("Architecture differs from the published model: layers 3 (published 10), "
            "features 4 (published 64).") in card["notes"]
    assert any("CPU" in note for note in card["notes"])  # kept beside the evaluation note
    # weights fine-tuned from these keep their shape, and the card still says so
    tuned = tmp_path / "tuned"
    assert train_main(["srrecnn-flair", str(DEMO), str(tuned), "--participant-label", "01",
                       *FAST, "--iterations", "1", "--no-evaluate", "--init", str(weights)]) == 0
    card = json.loads((tuned / "srrecnn-flair_x2x2x2.card.json").read_text())
    assert any(note.startswith("Architecture differs") and "features 4 (published 64)" in note
               for note in card["notes"])  # fmt: skip
    with pytest.raises(WeightsError):
        load_model(weights, method="srrecnn-t2w")
