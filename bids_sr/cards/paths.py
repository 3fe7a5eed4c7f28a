"""Where shipped weights and model cards live: the folder, one naming rule for every method
family, the card beside a weights file and the weights beside a card.

:data:`WEIGHTS_DIR` is the one place that says where the shipped weights are; readers look it
up at call time (``paths.WEIGHTS_DIR``), so a test that points it at a folder of its own
(``monkeypatch.setattr(paths, "WEIGHTS_DIR", folder)``) changes it for every method, the
plan's ``auto`` and the report alike.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "data" / "weights"
#: The name a model card ends in; the weights file beside it ends in ``.safetensors``.
CARD_SUFFIX = ".card.json"
WEIGHTS_SUFFIX = ".safetensors"


def format_factors(factors: Sequence[float]) -> str:
    """``(2, 2, 2)`` → ``2x2x2``; ``(1, 1, 4.0)`` → ``1x1x4``; ``(1.5, 2, 1)`` → ``1.5x2x1``."""
    return "x".join(f"{float(f):g}" for f in factors)


def default_weights_path(method: str, factors: Sequence[float]) -> Path:
    """The shipped weights file of ``method`` for ``factors`` (it may not exist)."""
    return WEIGHTS_DIR / f"{method}_x{format_factors(factors)}{WEIGHTS_SUFFIX}"


def card_path(path: str | os.PathLike) -> Path:
    """The model card beside a weights file: ``<stem>.safetensors`` → ``<stem>.card.json``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(WEIGHTS_SUFFIX) + CARD_SUFFIX)


def card_stem(card_file: str | os.PathLike) -> str:
    """The stem a card is named after: ``srrecnn_x2x2x2.card.json`` → ``srrecnn_x2x2x2``."""
    return Path(card_file).name.removesuffix(CARD_SUFFIX)


def weights_beside(card_file: str | os.PathLike) -> Path:
    """The weights file a card describes: ``<stem>.card.json`` → ``<stem>.safetensors`` (it
    may not exist; a per-scan method's card has none)."""
    card_file = Path(card_file)
    return card_file.with_name(card_stem(card_file) + WEIGHTS_SUFFIX)


def markdown_beside(card_file: str | os.PathLike) -> Path:
    """The markdown rendering beside a card: ``<stem>.card.json`` → ``<stem>.md``."""
    card_file = Path(card_file)
    return card_file.with_name(card_stem(card_file) + ".md")


def card_files(folder: str | os.PathLike) -> list[Path]:
    """Every model card in ``folder``, sorted by name."""
    return sorted(Path(folder).glob(f"*{CARD_SUFFIX}"))


@lru_cache(maxsize=4)
def shipped_weights_digest(folder: Path = WEIGHTS_DIR) -> str:
    """sha256 of every shipped weights file and model card (names and bytes), read once per
    process: a node that may load any of them takes it as an input, so that Nipype's cache
    sees weights that a new release (or a retraining in place) changed."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob(f"*{WEIGHTS_SUFFIX}")) + card_files(folder):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
