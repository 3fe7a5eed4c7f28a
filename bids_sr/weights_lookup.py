"""Where the shipped weights of a method live: one naming rule for every method family."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "data" / "weights"


def format_factors(factors: Sequence[float]) -> str:
    """``(2, 2, 2)`` → ``2x2x2``; ``(1, 1, 4.0)`` → ``1x1x4``; ``(1.5, 2, 1)`` → ``1.5x2x1``."""
    return "x".join(f"{float(f):g}" for f in factors)


def default_weights_path(method: str, factors: Sequence[float]) -> Path:
    """The shipped weights file of ``method`` for ``factors`` (it may not exist)."""
    return WEIGHTS_DIR / f"{method}_x{format_factors(factors)}.safetensors"


@lru_cache(maxsize=4)
def shipped_weights_digest(folder: Path = WEIGHTS_DIR) -> str:
    """sha256 of every shipped weights file and model card (names and bytes), read once per
    process: a node that may load any of them takes it as an input, so that Nipype's cache
    sees weights that a new release (or a retraining in place) changed."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.card.json")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
