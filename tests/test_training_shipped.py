"""The shipped weights: every file loads, matches its card, and the card carries the
validation scores of the project's evaluation beside the three interpolation baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bids_sr.cards.paths import WEIGHTS_DIR
from bids_sr.cards.tables import shipped_scores_table
from bids_sr.models.weights import sha256sum

ALL_CARDS = sorted(WEIGHTS_DIR.glob("*.card.json"))
#: Cards of per-scan methods ship no weights ("weights": null): only evidence.
WEIGHTLESS = [c for c in ALL_CARDS if json.loads(c.read_text()).get("weights", "") is None]
#: A starting point that another method fine-tunes ("role"; e.g. selfsr_prior): not a
#: bids_sr-train model (tests/test_selfsr.py checks it).
PRIORS = [c for c in ALL_CARDS if json.loads(c.read_text()).get("role")]
CARDS = [c for c in ALL_CARDS if c not in WEIGHTLESS and c not in PRIORS]


@pytest.mark.parametrize("card_file", WEIGHTLESS, ids=[c.name for c in WEIGHTLESS])
def test_weightless_card_holds_validate_shipped_evidence(card_file: Path):
    card = json.loads(card_file.read_text())
    assert not card_file.with_name(card_file.name.replace(".card.json", ".safetensors")).exists()
    assert card["evidence"]
    covered: dict[tuple, set] = {}  # per slice factor and thickness: the images validated
    for record in card["evidence"]:
        # bids_sr-train validate, or its former form for the records made before it
        method = card["method"]
        assert record["command"].startswith((f"bids_sr-train validate {method} ",
                                             f"python scripts/validate_shipped.py {method} "))
        assert record["data_consistency"] is True and record["family"] == "slice"
        assert set(record["gain_over_bspline"]) <= set(card["validation_subjects"])
        setting = (max(record["factors"]), record.get("thickness_ratio"))
        covered.setdefault(setting, set()).update(record["gain_over_bspline"])
        for name, gain in record["gain_over_bspline"].items():
            assert gain == pytest.approx(record["psnr_brain"][name]
                                         - record["psnr_brain_bspline"][name], abs=2e-3)
        if card.get("reference_suffix"):  # guided: over its mono twin (selfsr) too
            assert set(record["gain_over_mono"]) == set(record["gain_over_bspline"])
            assert set(record["reference_only_transfer"]) == set(record["gain_over_bspline"])
    # a record may cover some images (openms19 along a second slice axis), but every slice
    # setting is validated on every default validation image (chris and openms19) that has
    # the reference a guided method takes (chris has none: openms19)
    required = {"openms19"} if card.get("reference_suffix") else {"chris", "openms19"}
    for setting, names in covered.items():
        assert required <= names, setting


def test_weights_are_small():
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors"))
    assert total < 30e6


@pytest.mark.parametrize("card_file", CARDS, ids=[c.name for c in CARDS])
def test_shipped_card_and_weights(card_file: Path):
    card = json.loads(card_file.read_text())
    weights = card_file.with_name(card["file"])
    assert weights.is_file() and sha256sum(weights) == card["sha256"]
    if card["method"] == "gradfilter":
        from bids_sr.gradfilter import load_filters

        assert tuple(load_filters(weights).factors) == tuple(float(f) for f in card["factors"])
    else:
        from bids_sr.models.weights import load_model

        _, info = load_model(weights, method=card["method"])
        assert info["factors"] == [float(f) for f in card["factors"]]
    assert card["command"].startswith(f"bids_sr-train {card['method']} ")
    assert card["training_subjects"] and card["validation_subjects"]
    assert not set(card["training_subjects"]) & set(card["validation_subjects"])
    per_method = card["validation"]["per_method"]
    assert {"nearest", "linear", "bspline", card["method"]} <= set(per_method)
    assert per_method[card["method"]]["psnr_brain"]["n"] == len(card["validation_subjects"])
    met = card["validation"]["acceptance"]["met"]
    x2_gaussian = card["factors"] == [2, 2, 2] and card["degradation"] == "gaussian"
    assert isinstance(met, bool) if x2_gaussian else met is None
    if card["device"] == "cpu":
        assert any("CPU" in note for note in card["notes"])
    assert card_file.with_name(card["file"].replace(".safetensors", ".md")).is_file()
    assert card["file"] in shipped_scores_table(WEIGHTS_DIR)


def test_evidence_table_says_where_a_guide_was_not_used():
    """A guided selfsr record whose guide failed the scan's own check shows selfsr's result
    (+0.00 over mono), and the table says why."""
    from bids_sr.cards.tables import evidence_table

    record = {"family": "slice", "degradation": "slice", "factors": [1, 1, 5],
              "thickness_ratio": 1.0, "gain_over_bspline": {"a": 1.7, "b": 1.5},
              "psnr_brain": {"a": 30.0, "b": 29.0}, "psnr_brain_bspline": {"a": 28.3, "b": 27.5},
              "gain_over_mono": {"a": 0.0, "b": 1.2},
              "guide_used": {"a": False, "b": True}}  # fmt: skip
    rows = evidence_table([record]).splitlines()[2:]
    assert rows[0].endswith("| +0.00 (guide not used) |") and rows[1].endswith("| +1.20 |")
