"""Filter files: safetensors (never pickle) plus a JSON model card beside each.

Tensors: ``filters`` (n_buckets × taps, float32), ``global_filter``, ``strength_thresholds``,
``coherence_thresholds``, ``factors`` (float64), ``bins`` and ``patch_size`` (int64),
``counts`` (samples per bucket) and ``fallback`` (uint8). The safetensors metadata repeats the
factors, bins and patch size as text. The card ``<stem>.card.json`` records the file's
sha256, which :func:`load_filters` verifies.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from bids_sr.cards.paths import card_path
from bids_sr.fileio import atomic_path
from bids_sr.fileio import sha256_file as file_sha256
from bids_sr.gradfilter.filterset import FilterSet

FORMAT = "bids_sr.gradfilter/1"
TENSORS = ("filters", "global_filter", "strength_thresholds", "coherence_thresholds", "factors",
           "bins", "patch_size", "counts", "fallback")




def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def save_filters(filterset: FilterSet, path: str | os.PathLike, card: dict | None = None) -> Path:
    """Write ``filterset`` to ``path`` (safetensors, atomically) and its model card.

    The card holds the sha256 of the written file, the factors, degradation, bins, patch size,
    number of training images, the learning ``info`` and whatever ``card`` adds.
    """

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "filters": np.ascontiguousarray(filterset.filters, dtype=np.float32),
        "global_filter": np.ascontiguousarray(filterset.global_filter, dtype=np.float32),
        "strength_thresholds": np.asarray(filterset.strength_thresholds, dtype=np.float32),
        "coherence_thresholds": np.asarray(filterset.coherence_thresholds, dtype=np.float32),
        "factors": np.asarray(filterset.factors, dtype=np.float64),
        "bins": np.asarray(filterset.bins, dtype=np.int64),
        "patch_size": np.asarray([filterset.patch_size], dtype=np.int64),
        "counts": np.asarray(filterset.counts, dtype=np.int64),
        "fallback": np.asarray(filterset.fallback, dtype=np.uint8),
    }
    metadata = {
        "format": FORMAT,
        "factors": json.dumps(list(filterset.factors)),
        "bins": json.dumps(list(filterset.bins)),
        "patch_size": str(filterset.patch_size),
        "degradation": str(filterset.info.get("degradation", "unknown")),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    document = {
        "method": "gradfilter",
        "format": FORMAT,
        "file": path.name,
        "sha256": file_sha256(path),
        "factors": list(filterset.factors),
        "degradation": filterset.info.get("degradation"),
        "bins": {"phi": filterset.bins[0], "theta": filterset.bins[1],
                 "strength": filterset.bins[2], "coherence": filterset.bins[3]},
        "patch_size": filterset.patch_size,
        "training_images": filterset.info.get("training_images"),
        "buckets_fallback": int(np.count_nonzero(filterset.fallback)),
        "learning": filterset.info,
        **(card or {}),
    }
    card_path(path).write_text(json.dumps(_jsonable(document), indent=2) + "\n")
    return path


def load_filters(path: str | os.PathLike) -> FilterSet:
    """Read a filter file, checking the card's sha256 (when a card exists) and every shape.

    Raises FileNotFoundError for a missing file and ValueError naming the file for anything
    malformed.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: gradfilter filter file not found")
    card_file = card_path(path)
    card: dict[str, Any] = {}
    if card_file.is_file():
        try:
            card = json.loads(card_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{card_file}: unreadable model card ({exc})") from exc
        expected = card.get("sha256")
        if expected and expected != file_sha256(path):
            raise ValueError(f"{path}: sha256 does not match its model card {card_file.name} "
                             "(file corrupt or replaced)")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            keys = set(handle.keys())
            missing = [k for k in TENSORS if k not in keys]
            if missing:
                raise ValueError(f"missing tensors {missing}")
            t = {k: handle.get_tensor(k) for k in TENSORS}
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid gradfilter filter file ({exc})") from exc
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path}: not a valid gradfilter filter file "
                         f"({type(exc).__name__}: {exc})") from exc
    try:
        if t["factors"].shape != (3,) or t["bins"].shape != (4,) or t["patch_size"].size != 1:
            raise ValueError("factors/bins/patch_size have wrong shapes")
        info = dict(card.get("learning", {}))
        info.setdefault("degradation", card.get("degradation"))
        filterset = FilterSet(
            filters=np.asarray(t["filters"], dtype=np.float32),
            factors=tuple(float(v) for v in t["factors"]),
            patch_size=int(t["patch_size"].reshape(-1)[0]),
            bins=tuple(int(v) for v in t["bins"]),
            strength_thresholds=np.asarray(t["strength_thresholds"], dtype=np.float32),
            coherence_thresholds=np.asarray(t["coherence_thresholds"], dtype=np.float32),
            counts=np.asarray(t["counts"], dtype=np.int64),
            fallback=np.asarray(t["fallback"]).astype(bool),
            global_filter=np.asarray(t["global_filter"], dtype=np.float32),
            info=info,
        )
    except ValueError as exc:
        raise ValueError(f"{path}: malformed gradfilter filter file ({exc})") from exc
    if not np.all(np.isfinite(filterset.filters)):
        raise ValueError(f"{path}: filters hold NaN or Inf values")
    return filterset
