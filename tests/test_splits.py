"""The IXI pool's subject split (bids_sr.training.splits): fixed by rule, disjoint, and
never trained on by a shipped prior."""

from __future__ import annotations

import json

import pytest

from bids_sr.cards.paths import WEIGHTS_DIR
from bids_sr.training.splits import (
    IXI_VALIDATION_COUNT,
    ixi_split,
    ixi_subject,
    split_subjects,
)


def test_pool_file_names_give_the_ixi_identifier():
    assert ixi_subject("IXI013-HH-1212_T1.nii.gz") == "IXI013"
    assert ixi_subject("IXI013-HH-1212_T2.nii.gz") is None
    assert ixi_subject("README.md") is None


def test_the_split_is_disjoint_complete_and_does_not_depend_on_order():
    subjects = [f"IXI{n:03d}" for n in range(1, 111)]
    pretraining, validation = split_subjects(subjects)
    assert len(validation) == IXI_VALIDATION_COUNT and len(pretraining) == 80
    assert not set(pretraining) & set(validation)
    assert set(pretraining) | set(validation) == set(subjects)
    assert split_subjects(reversed(subjects)) == (pretraining, validation)
    # a subject joining the pool moves nobody else across the split
    grown_pretraining, grown_validation = split_subjects([*subjects, "IXI999"])
    assert set(validation) - {"IXI999"} <= set(grown_validation) | set(pretraining)
    assert set(grown_validation) - {"IXI999"} <= set(validation) | set(grown_pretraining)
    assert len(set(validation) ^ set(grown_validation)) <= 2


def test_the_shared_pool_splits_80_30(shared_data):
    pretraining, validation = ixi_split(shared_data)
    if not validation:
        pytest.skip(f"no IXI pool under {shared_data}")
    assert (len(pretraining), len(validation)) == (80, 30)


def test_no_shipped_card_trained_on_an_ixi_validation_subject():
    """A card scored on IXI subjects lists them among its validation subjects, and no
    prior's training subjects are among any card's IXI validation subjects."""
    cards = [json.loads(p.read_text()) for p in sorted(WEIGHTS_DIR.glob("*.card.json"))]
    validating = set()
    for card in cards:
        for record in card.get("evidence", []):
            scored = {n for n in record.get("gain_over_bspline", {}) if n.startswith("IXI")}
            assert scored <= set(card.get("validation_subjects", [])), card.get("method")
            validating |= scored
    pretrained = {name for card in cards for name in card.get("training_subjects", [])}
    assert not pretrained & validating


def test_an_evidence_sentence_counts_many_ixi_subjects():
    from pathlib import Path

    from bids_sr.cards.evidence import Evidence

    record = {"factors": [1, 1, 3], "gain_over_bspline": {
        "chris": 1.0, **{f"IXI{n:03d}": 0.5 for n in range(30)}}}
    evidence = Evidence(weights=Path("selfsr.card.json"), method="selfsr", family="slice",
                        factor=3.0, gain=0.5, gain_over_mono=None, records=(record,))
    assert "(chris, 30 IXI subjects)" in evidence.sentence()
