"""The documentation's Models page is generated from the model cards and never drifts.

``docs/models.md`` must be exactly what ``python -m bids_sr.cards.page`` renders from
``bids_sr/data/weights/*.card.json``: a card changed without regenerating the page (or a
page edited by hand) fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bids_sr.cards.page import COMMAND, main, render_models_page
from bids_sr.cards.paths import WEIGHTS_DIR
from bids_sr.cards.read import load_cards
from bids_sr.cards.tables import evidence_table

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "models.md"


def test_committed_models_page_equals_what_the_cards_render():
    assert PAGE.is_file(), f"{PAGE} is missing: run `{COMMAND}`"
    assert PAGE.read_text(encoding="utf-8") == render_models_page(WEIGHTS_DIR), (
        f"docs/models.md differs from the model cards: run `{COMMAND}`"
    )


def test_every_card_and_every_evidence_row_is_on_the_page():
    page = render_models_page(WEIGHTS_DIR)
    cards = load_cards(WEIGHTS_DIR)
    assert len(cards) == len(list(WEIGHTS_DIR.glob("*.card.json"))) > 0
    for stem, card in cards.items():
        assert f"### `{stem}`" in page
        if card.get("sha256"):
            assert card["sha256"] in page
        for row in evidence_table(card.get("evidence") or [], weights=stem).splitlines()[2:]:
            assert row in page, row


def test_guided_rows_are_derived_from_the_guided_cards():
    """guided − selfsr is the record's gain over mono, and selfsr over bspline the gain minus
    it: both read from the card, per image."""
    page = render_models_page(WEIGHTS_DIR)
    card = load_cards(WEIGHTS_DIR)["selfsr-t2w"]
    record = card["evidence"][0]
    for image, gain in record["gain_over_bspline"].items():
        over_mono = record["gain_over_mono"][image]
        expected = (f"| {image} | {gain - over_mono:+.2f} | {gain:+.2f} | "
                    f"**{over_mono:+.2f}** |")  # fmt: skip
        assert expected in page


def _copy_cards(tmp_path: Path) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    for card in WEIGHTS_DIR.glob("*.card.json"):
        shutil.copy2(card, folder / card.name)
    return folder


def test_a_changed_card_changes_the_page(tmp_path: Path):
    folder = _copy_cards(tmp_path)
    assert render_models_page(folder) == render_models_page(WEIGHTS_DIR)
    card_file = folder / "srrecnn_x2x2x2.card.json"
    card = json.loads(card_file.read_text())
    image = next(iter(card["evidence"][0]["gain_over_bspline"]))
    card["evidence"][0]["gain_over_bspline"][image] = 9.87
    card_file.write_text(json.dumps(card))
    page = render_models_page(folder)
    assert page != render_models_page(WEIGHTS_DIR)
    assert f"| srrecnn_x2x2x2 | isotropic | gaussian | 2x2x2 | n/a | {image} |" in page
    assert "| +9.87 | n/a |" in page


def test_command_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "models.md"
    assert main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_models_page(WEIGHTS_DIR)
    assert main([]) == 0
    assert capsys.readouterr().out == out.read_text(encoding="utf-8")
