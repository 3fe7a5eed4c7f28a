"""Reading model cards: one card, every card of a folder, and the facts several readers need
(the contrast a guided model takes, whether a card stands for a method without weights)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bids_sr.cards.paths import card_files, card_stem


def read_card(card_file: str | os.PathLike) -> dict[str, Any]:
    """The card as a dict (OSError or ValueError when it cannot be read or parsed)."""
    return json.loads(Path(card_file).read_text())


def load_cards(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every ``*.card.json`` in ``folder``, by stem (``srrecnn_x2x2x2``), sorted."""
    return {card_stem(path): read_card(path) for path in card_files(folder)}


def card_reference_suffix(card: dict) -> str | None:
    """The BIDS suffix of the reference a card's model takes (None: a mono model). Cards
    written before FLAIR guidance say only ``needs_t2w``."""
    if card.get("reference_suffix"):
        return str(card["reference_suffix"])
    return "T2w" if card.get("needs_t2w") else None


def ships_no_weights(card: dict) -> bool:
    """Whether the card stands for a method that learns per scan and ships no weights
    (``"weights": null``): the card is all there is."""
    return "weights" in card and card["weights"] is None
