"""Writing model cards: merging new fields into a card, and its markdown rendering beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bids_sr.cards.paths import markdown_beside
from bids_sr.cards.tables import render_markdown


def update_card(card_file: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into an existing JSON card (the sha256 of the weights is unchanged)."""
    card = json.loads(card_file.read_text())
    card.update(extra)
    card_file.write_text(json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n")
    return card


def write_markdown(card: dict[str, Any], card_file: Path) -> Path:
    """Write the card's markdown rendering (:func:`~bids_sr.cards.tables.render_markdown`)
    beside ``card_file`` as ``<stem>.md``; return its path."""
    path = markdown_beside(card_file)
    path.write_text(render_markdown(card))
    return path
