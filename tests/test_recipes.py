"""The per-method recipes (bids_sr.recipes): frozen, typed, hashed by content; the defaults
are the shipped behaviour; a selfsr model is keyed by its recipe's hash, which the report
and the sidecar record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bids_sr.acquisition import project, simulated_acquisition
from bids_sr.interfaces.bids import build_sidecar
from bids_sr.recipes import (
    AUTO_POLICY,
    REGISTRATION_QC,
    SELFSR,
    AutoPolicy,
    RegistrationQC,
    SelfSRRecipe,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bids_sr" / "data" / "demo"


def test_the_default_recipes_are_the_shipped_constants():
    """The values the globals had before they became recipes: behaviour unchanged."""
    assert SELFSR.fields() == {
        "epochs": 10.0, "min_iterations": 100, "max_iterations": 3000, "fast_iterations": 0,
        "batch": 8, "patch": 48, "width": 128, "depth": 8, "unshuffle": 2, "lr": 3e-4,
        "fine_tune_lr": 3e-4, "collapsed_ratio": 0.995, "retries": 2,
        "min_detail_ratio": 0.7, "guide_min_improvement": 0.01, "flip_average": True,
    }  # fmt: skip
    assert REGISTRATION_QC.fields() == {"min_nmi": 1.028, "min_overlap": 0.25}
    assert AUTO_POLICY.fields() == {"factor_tolerance": 0.25, "inplane_tolerance": 1.05,
                                    "min_gain_over_mono": 0.1}  # fmt: skip


def test_a_recipe_is_frozen_and_hashed_by_its_content():
    small = SelfSRRecipe(max_iterations=20, min_iterations=20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        small.max_iterations = 30  # type: ignore[misc]
    assert small.sha256 == SelfSRRecipe(min_iterations=20, max_iterations=20).sha256
    assert small.sha256 != SELFSR.sha256 and len(small.sha256) == 64
    assert SelfSRRecipe(epochs=10).sha256 == SELFSR.sha256  # 10 and 10.0: one recipe
    assert SelfSRRecipe(epochs=10).epochs == 10.0 and isinstance(SelfSRRecipe(lr=1).lr, float)
    # every field is in the hash
    for field in dataclasses.fields(SELFSR):
        value = getattr(SELFSR, field.name)
        changed = dataclasses.replace(SELFSR, **{field.name: value * 2 if value else 1})
        assert changed.sha256 != SELFSR.sha256, field.name
    # the hash is that of the canonical JSON, which names the kind of recipe
    text = AUTO_POLICY.canonical_json()
    assert json.loads(text) == {"recipe": "AutoPolicy", "fields": AUTO_POLICY.fields()}
    assert AUTO_POLICY.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert " " not in text and AutoPolicy(min_gain_over_mono=0.0).sha256 != AUTO_POLICY.sha256
    assert RegistrationQC(min_nmi=1.99).sha256 != REGISTRATION_QC.sha256


def test_a_recipes_hash_is_the_same_in_another_process():
    code = "from bids_sr.recipes import SELFSR, REGISTRATION_QC, AUTO_POLICY as A; " \
           "print(SELFSR.sha256, REGISTRATION_QC.sha256, A.sha256)"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123"}).stdout.split()  # fmt: skip
    assert out == [SELFSR.sha256, REGISTRATION_QC.sha256, AUTO_POLICY.sha256]


def test_recipe_fields_are_checked():
    with pytest.raises(TypeError, match="max_iterations must be an integer"):
        SelfSRRecipe(max_iterations=2.5)
    with pytest.raises(TypeError, match="lr must be a number"):
        SelfSRRecipe(lr="fast")
    with pytest.raises(TypeError, match="min_nmi must be a number"):
        RegistrationQC(min_nmi=True)
    with pytest.raises(ValueError, match="min_iterations <= max_iterations"):
        SelfSRRecipe(min_iterations=200, max_iterations=100)
    with pytest.raises(ValueError, match="at least 1"):
        SelfSRRecipe(width=0)


def _blobs(shape=(40, 40, 40), seed=3) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    field = 0.5 + 0.5 * np.tanh(field / field.std() * 2.0)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return np.where(zz**2 + yy**2 + xx**2 < 0.8, 0.2 + 0.8 * field, 0.0).astype(np.float32)


def test_a_selfsr_model_is_keyed_by_its_recipe_and_the_sidecar_records_it(tmp_path):
    """The same recipe reuses the per-scan model; another recipe learns its own, never the
    stale one; the report and the sidecar say which recipe made the output."""
    from bids_sr.selfsr import super_resolve_selfsr

    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, 3))
    lr = project(_blobs(), acq, (40, 40, 13))
    run = dict(learner="filters", seed=0, model_dir=tmp_path)
    _, first = super_resolve_selfsr(lr, (1, 1, 3), acq, **run)
    _, again = super_resolve_selfsr(lr, (1, 1, 3), acq, **run, recipe=SelfSRRecipe())
    other = SelfSRRecipe(min_detail_ratio=0.0)
    _, changed = super_resolve_selfsr(lr, (1, 1, 3), acq, **run, recipe=other)
    assert first["recipe_sha256"] == SELFSR.sha256 and first["recipe"] == SELFSR.fields()
    assert again["model_reused"] and again["weights"] == first["weights"]
    assert not changed["model_reused"] and changed["weights"] != first["weights"]
    assert changed["recipe_sha256"] == other.sha256 and changed["recipe"]["min_detail_ratio"] == 0
    assert len(list(tmp_path.glob("selfsr-filters-*.safetensors"))) == 2
    t1w = DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    sidecar = build_sidecar(str(t1w), str(DEMO), "selfsr", "hi", {"method": "selfsr", **first})
    assert sidecar["RecipeSha256"] == SELFSR.sha256
    assert sidecar["Recipe"]["MaxIterations"] == 3000 and sidecar["Recipe"]["Lr"] == 3e-4
    assert len(sidecar["Recipe"]) == len(SELFSR.fields())


def test_the_run_configuration_saves_its_recipes(tmp_path):
    """The config TOML of a run holds its recipes, so the run can be reproduced; one written
    before they were saved loads with the shipped ones."""
    from bids_sr.config import Config, Execution, Workflow

    small = SelfSRRecipe(max_iterations=20, min_iterations=20, lr=1e-3)
    config = Config(execution=Execution(bids_dir=tmp_path, output_dir=tmp_path / "out"),
                    workflow=Workflow(selfsr_recipe=small,
                                      registration_qc=RegistrationQC(min_nmi=1.5)))  # fmt: skip
    loaded = Config.load(config.save(tmp_path / "config.toml"))
    assert loaded == config and loaded.workflow.selfsr_recipe.sha256 == small.sha256
    text = (tmp_path / "config.toml").read_text()
    old = "\n".join(line for line in text.splitlines()
                    if not line.startswith(("selfsr_recipe", "registration_qc")))  # fmt: skip
    (tmp_path / "old.toml").write_text(old)
    before = Config.load(tmp_path / "old.toml").workflow
    assert before.selfsr_recipe == SELFSR and before.registration_qc == REGISTRATION_QC
