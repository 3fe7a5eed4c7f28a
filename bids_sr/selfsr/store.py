"""Saving and reusing a per-scan model (safetensors, never pickle).

The model learned on one scan is written to a cache folder (the work directory in the
app) under a name made from a key of everything that determines it (the input's bytes,
the acquisition, the factors, the seed, the learner, the hash of its recipe:
:class:`bids_sr.recipes.SelfSRRecipe`), so a rerun finds and reuses it and a changed recipe
never reuses a stale model. The file's sha256 goes into the run report and from there into
the sidecar.

Part of the numerical core (never imports nipype or pybids).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from bids_sr.fileio import atomic_path, sha256_file
from bids_sr.selfsr.features import BucketSpec
from bids_sr.selfsr.filters import PlaneFilters

#: Bump when the learner changes what it learns: old cached models are then not reused.
FORMAT = "bids_sr.selfsr/2"


def model_key(lr: np.ndarray, settings: dict, *guides: np.ndarray) -> str:
    """A hex key of the input array, any further arrays the model learns from (a guided
    model's reference) and the settings that determine the learned model."""
    digest = hashlib.sha256()
    for array in (lr, *guides):
        data = np.ascontiguousarray(array, dtype=np.float32)
        digest.update(str(data.shape).encode())
        digest.update(data.tobytes())
    digest.update(json.dumps({"format": FORMAT, **settings}, sort_keys=True).encode())
    return digest.hexdigest()


def save_model(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict) -> Path:
    """Write ``tensors`` to ``path`` atomically; ``metadata`` (JSON-able, including the
    ``learner``) goes in the header."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one metadata entry: safetensors writes several in no fixed order (the checksum would vary)
    header = {"bids_sr.selfsr": json.dumps({"format": FORMAT, **metadata}, sort_keys=True)}
    contiguous = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=header)
    return path


class ForeignModelError(ValueError):
    """A cached model whose header holds another key than its file name promises: it was
    learned from another scan or with other settings (copied or renamed into the cache)."""


def load_model(path: str | os.PathLike, key: str | None = None
               ) -> tuple[dict[str, np.ndarray], dict]:  # fmt: skip
    """Read a model written by :func:`save_model`: its tensors and metadata; ValueError naming
    the file if it is not one, :class:`ForeignModelError` when ``key`` is given and the
    header's key differs (the name alone is no proof of what the model learned from)."""

    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = json.loads((handle.metadata() or {}).get("bids_sr.selfsr", "{}"))
            if header.get("format") != FORMAT:
                raise ValueError("not a bids_sr.selfsr model of this version")
            if key is not None and header.get("key") != key:
                raise ForeignModelError(
                    f"learned from another scan or with other settings (its key "
                    f"{str(header.get('key'))[:12]}…, this scan's {key[:12]}…)"
                )
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except ForeignModelError as exc:
        raise ForeignModelError(f"{path}: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path}: unreadable selfsr model ({exc})") from exc
    return tensors, header


def filters_to_tensors(filters: PlaneFilters) -> dict[str, np.ndarray]:
    """The arrays of a closed-form filter set."""
    return {
        "filters": np.asarray(filters.filters, dtype=np.float32),
        "phase_filters": np.asarray(filters.phase_filters, dtype=np.float32),
        "strength_cuts": np.asarray(filters.spec.strength_cuts, dtype=np.float32),
        "coherence_cuts": np.asarray(filters.spec.coherence_cuts, dtype=np.float32),
        "counts": np.asarray(filters.counts, dtype=np.int64),
        "layout": np.asarray([filters.spec.phases, filters.spec.angles, *filters.patch],
                             dtype=np.int64),  # fmt: skip
    }


def filters_from_tensors(tensors: dict[str, np.ndarray], path: str | os.PathLike) -> PlaneFilters:
    """A closed-form filter set from :func:`filters_to_tensors` arrays (``path``: for errors)."""
    try:
        phases, angles, k0, k1 = (int(v) for v in tensors["layout"])
        spec = BucketSpec(phases=phases, angles=angles, strength_cuts=tensors["strength_cuts"],
                          coherence_cuts=tensors["coherence_cuts"])  # fmt: skip
        filters = PlaneFilters(filters=tensors["filters"], phase_filters=tensors["phase_filters"],
                               spec=spec, patch=(k0, k1), counts=tensors["counts"])  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a selfsr filter set ({exc})") from exc
    if filters.filters.shape != (spec.n_buckets, k0 * k1):
        raise ValueError(f"{path}: filters of shape {filters.filters.shape} do not match "
                         f"{spec.n_buckets} buckets of {k0}×{k1} taps")  # fmt: skip
    return filters


def checksum(path: str | os.PathLike) -> str:
    """The sha256 of a saved model (for the sidecar)."""
    return sha256_file(path)
