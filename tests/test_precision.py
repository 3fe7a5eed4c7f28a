"""The per-scan networks' precision (bids_sr.precision): bfloat16 on CPUs with AMX or
AVX-512 BF16, float32 elsewhere or when asked, recorded in the report and the sidecar,
part of the model's key."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bids_sr import precision
from bids_sr.acquisition import project, simulated_acquisition
from bids_sr.interfaces.bids import build_sidecar
from bids_sr.recipes import SelfSRRecipe
from bids_sr.selfsr import super_resolve_selfsr
from bids_sr.selfsr.network import PlaneNet, apply_plane_net

DEMO = Path(__file__).resolve().parents[1] / "bids_sr" / "data" / "demo"


@pytest.mark.parametrize(("amx", "avx512_bf16"), [(True, False), (False, True), (True, True),
                                                 (False, False)])  # fmt: skip
def test_auto_takes_bfloat16_only_where_the_cpu_computes_it(monkeypatch, amx, avx512_bf16):
    """AMX tiles (Intel Sapphire Rapids) or AVX-512 BF16 (AMD Zen 4): bfloat16; else
    float32 (bfloat16 would be emulated, slower)."""
    monkeypatch.delenv(precision.ENVIRONMENT, raising=False)
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(precision, "cpu_has_avx512_bf16", lambda: avx512_bf16)
    hardware = amx or avx512_bf16
    assert precision.compute_dtype("cpu") == (torch.bfloat16 if hardware else None)
    assert precision.precision_name("cpu") == ("bfloat16" if hardware else "float32")
    assert precision.compute_dtype("cuda") is None  # not validated on GPUs: float32


def test_the_environment_overrides_the_choice_and_a_typo_is_named(monkeypatch):
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: True)
    monkeypatch.setenv(precision.ENVIRONMENT, "fp32")
    assert precision.compute_dtype("cpu") is None
    monkeypatch.setattr(precision, "cpu_computes_bfloat16", lambda: False)
    monkeypatch.setenv(precision.ENVIRONMENT, "BF16")
    assert precision.compute_dtype("cpu") == torch.bfloat16
    monkeypatch.setenv(precision.ENVIRONMENT, "half")
    with pytest.raises(ValueError, match="BIDS_SR_CPU_PRECISION='half'"):
        precision.compute_dtype("cpu")


def test_bfloat16_changes_the_residual_a_little_and_never_the_base(monkeypatch):
    """Autocast computes the network in bfloat16 (so the output differs from float32's) but
    adds its residual to the float32 base: the difference is a small part of the residual."""
    torch.manual_seed(0)
    net = PlaneNet(depth=3, width=16, unshuffle=2)
    torch.nn.init.normal_(net.body[-1].weight, std=0.05)
    base = np.random.default_rng(0).random((20, 24, 18)).astype(np.float32)
    everywhere = np.ones(base.shape, bool)
    outputs = {}
    for choice in ("fp32", "bf16"):
        monkeypatch.setenv(precision.ENVIRONMENT, choice)
        outputs[choice] = apply_plane_net(net, base, 2, 0, 6, region=everywhere)
    residual = np.abs(outputs["fp32"] - base).max()
    difference = np.abs(outputs["bf16"] - outputs["fp32"]).max()
    assert residual > 1e-3 and 0 < difference < 0.05 * residual
    assert outputs["bf16"].dtype == np.float32


def test_a_model_learned_in_one_precision_is_not_reused_in_the_other(monkeypatch, tmp_path):
    """The precision keys the per-scan model and reaches the sidecar as ``Precision``."""
    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, 3))
    rng = np.random.default_rng(1)
    lr = project(rng.random((24, 24, 24)).astype(np.float32), acq, (24, 24, 8))
    small = SelfSRRecipe(width=8, depth=3, batch=2, patch=16, min_iterations=4,
                         max_iterations=4, retries=0)  # fmt: skip
    run = dict(learner="cnn", seed=0, model_dir=tmp_path, device="cpu", recipe=small,
               prior=tmp_path / "no-prior.safetensors")  # fmt: skip
    reports = {}
    for choice in ("fp32", "bf16", "fp32"):
        monkeypatch.setenv(precision.ENVIRONMENT, choice)
        _, reports[choice, len(reports)] = super_resolve_selfsr(lr, (1, 1, 3), acq, **run)
    first, bf16, again = reports.values()
    assert (first["precision"], bf16["precision"]) == ("float32", "bfloat16")
    assert not bf16["model_reused"] and bf16["weights"] != first["weights"]
    assert again["model_reused"] and again["weights"] == first["weights"]
    t1w = DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    sidecar = build_sidecar(str(t1w), str(DEMO), "selfsr", "hi", {"method": "selfsr", **bf16})
    assert sidecar["Precision"] == "bfloat16"


def test_a_bad_precision_stops_the_command_line_before_anything_runs(tmp_path, monkeypatch):
    """A typo in the variable is a usage error (64) naming it, with no output folder."""
    from bids_sr.cli.run import main

    monkeypatch.setenv(precision.ENVIRONMENT, "half")
    out = tmp_path / "out"
    code = main([str(DEMO), str(out), "participant", "--participant-label", "01",
                 "--method", "nearest", "-w", str(tmp_path / "w"), "--skip-bids-validation"])
    assert code == 64 and not out.exists()


def test_the_command_line_reads_the_choice_without_torch(monkeypatch):
    """``requested`` needs no torch: the command line's main process stays torch-free, so
    its MultiProc workers keep starting with fork (bids_sr.cli.plugin.worker_start_method)."""
    import subprocess
    import sys

    code = ("import sys; from bids_sr.precision import requested; "
            "from bids_sr.cli import preflight; assert requested() == 'auto'; "
            "print('torch' in sys.modules)")  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if k != precision.ENVIRONMENT}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-500:]
