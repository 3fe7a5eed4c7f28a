"""Network weights as safetensors files with a JSON model card beside each.

File format: a safetensors file whose metadata holds ``format`` ("bids_sr-weights"),
``method`` (a registry name), ``config`` (JSON of the builder's config) and ``factors``
(JSON list: the per-axis factors the weights were trained for). The card
``<stem>.card.json`` repeats the architecture and adds the parameter count, the sha256 of
the safetensors file and whatever the writer knows (data, degradation, command, scores,
licence). Loading rebuilds the architecture from the metadata, checks the card's checksum
when a card exists and every tensor's name and shape, and never unpickles anything.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from bids_sr.cards.paths import card_path
from bids_sr.fileio import atomic_path
from bids_sr.fileio import sha256_file as sha256sum
from bids_sr.models.registry import format_factors, get_spec

FORMAT = "bids_sr-weights"


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""




def _atomic_write(path: Path, write) -> None:
    with atomic_path(path) as tmp:
        write(str(tmp))


def _factor_list(factors: Sequence[float]) -> list[float | int]:
    return [int(f) if float(f).is_integer() else float(f) for f in factors]


def save_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    method: str,
    config: dict[str, Any],
    factors: Sequence[float],
    card: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state (parameters and buffers) as safetensors plus its model card.

    ``config`` must rebuild the same architecture through the registry's builder for
    ``method``; ``card`` adds free provenance (data, degradation, command, scores, licence,
    intensity convention...). Both files are written atomically. Returns the weights path.
    """
    spec = get_spec(method)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full_config = {**spec.default_config, **config}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "method": method,
        "config": json.dumps(full_config, sort_keys=True),
        "factors": json.dumps(_factor_list(factors)),
    }
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    core = {
        "method": method,
        "architecture": type(model).__name__,
        "description": spec.description,
        "config": full_config,
        "factors": _factor_list(factors),
        "input_grid": spec.input_grid,
        "needs_t2w": spec.reference_suffix == "T2w",
        "needs_reference": spec.needs_reference,
        "reference_suffix": spec.reference_suffix,
        "intensity": spec.intensity,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "file": path.name,
        "sha256": sha256sum(path),
    }
    extra = {k: v for k, v in (card or {}).items() if k not in ("sha256", "file", "parameters")}
    text = json.dumps({**core, **extra}, indent=2, ensure_ascii=False, default=str) + "\n"
    cpath = card_path(path)
    _atomic_write(cpath, lambda tmp: Path(tmp).write_text(text))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and validate a weights file's metadata (method, config, factors)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(
            f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})"
        ) from exc
    if raw.get("format") != FORMAT or not {"method", "config", "factors"} <= set(raw):
        raise WeightsError(
            f"{path}: safetensors file without bids_sr metadata (format/method/config/factors); "
            "convert original weights with bids_sr-convert-weights"
        )
    try:
        config = json.loads(raw["config"])
        factors = json.loads(raw["factors"])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: malformed metadata ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(factors, list) or len(factors) != 3:
        raise WeightsError(f"{path}: malformed metadata (config must be a dict, factors 3 numbers)")
    return {"method": raw["method"], "config": config, "factors": [float(f) for f in factors]}


def _check_card(path: Path) -> tuple[dict[str, Any] | None, str]:
    digest = sha256sum(path)
    cpath = card_path(path)
    if not cpath.exists():
        return None, digest
    try:
        card = json.loads(cpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{cpath}: unreadable model card ({exc})") from exc
    expected = card.get("sha256")
    if expected and expected != digest:
        raise WeightsError(
            f"{path}: sha256 {digest[:12]}… does not match its model card ({expected[:12]}…); "
            "the file is truncated, modified or not the one the card describes"
        )
    return card, digest


# safetensors dtype → how numpy reads it (bf16: the high half of a float32)
_FLOAT_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def _non_finite_tensors(path: Path) -> list[str]:
    """Names of the floating-point tensors holding NaN or Inf, read with numpy from the
    safetensors layout (8-byte header length, JSON header, data). Not with torch: a torch
    operation here would start its OpenMP threads in the main process, and a worker forked
    after that can hang in its first parallel region."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        start = 8 + length
        bad = []
        for name, entry in header.items():
            if name == "__metadata__" or entry.get("dtype") not in _FLOAT_DTYPES:
                continue
            begin, end = entry["data_offsets"]
            handle.seek(start + begin)
            values = np.frombuffer(handle.read(end - begin), dtype=_FLOAT_DTYPES[entry["dtype"]])
            if entry["dtype"] == "BF16":
                values = (values.astype(np.uint32) << 16).view(np.float32)
            if not np.all(np.isfinite(values)):
                bad.append(name)
    return bad


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the safetensors header alone (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path}: cannot read tensors ({type(exc).__name__}: {exc})") from exc


def _architecture_shapes(spec, config: dict[str, Any], path: Path) -> dict[str, tuple[int, ...]]:
    """The parameter shapes ``config`` asks for, from a network built on the meta device:
    no memory is allocated, so metadata asking for a huge model costs nothing to check."""
    try:
        with torch.device("meta"):
            model = spec.build(config)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise WeightsError(f"{path}: config cannot build {spec.name} ({exc})") from exc
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def check_weights(
    path: str | os.PathLike,
    *,
    method: str | None = None,
    factors: Sequence[float] | None = None,
    check_values: bool = False,
) -> dict[str, Any]:
    """Everything :func:`load_model` checks, without building the network: metadata, method,
    factors, the card's checksum and config, and every tensor's name and shape against the
    architecture the metadata describes (built on the meta device); ``check_values`` also
    reads the tensors and refuses NaN/Inf. Run before a workflow starts, so a tampered or
    oversized file stops the run before anything is written. Returns ``info`` as
    :func:`load_model` does. Raises :class:`WeightsError` naming the file.
    """
    path = Path(path)
    meta = read_metadata(path)
    if method is not None and meta["method"] != method:
        raise WeightsError(f"{path}: weights are for method {meta['method']!r}, not {method!r}")
    try:
        spec = get_spec(meta["method"])
    except ValueError as exc:
        raise WeightsError(f"{path}: {exc}") from exc
    if factors is not None and spec.learned_upsampling:
        wanted = [float(f) for f in factors]
        if not all(abs(a - b) < 1e-6 for a, b in zip(wanted, meta["factors"])):
            raise WeightsError(
                f"{path}: weights were trained for ×{format_factors(meta['factors'])} but "
                f"×{format_factors(wanted)} was requested ({meta['method']} upsamples with a "
                "learned layer, so the factors must match)"
            )
    card, digest = _check_card(path)
    config = {**spec.default_config, **meta["config"]}
    if card and isinstance(card.get("config"), dict):
        carded = {**spec.default_config, **card["config"]}
        if carded != config:
            changed = sorted(k for k in set(carded) | set(config) if carded.get(k) != config.get(k))
            raise WeightsError(
                f"{path}: metadata config differs from its model card in {', '.join(changed[:4])}"
            )
    stored = _stored_shapes(path)
    expected = _architecture_shapes(spec, meta["config"], path)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = [
        f"{k} {stored[k]} vs {v}" for k, v in expected.items() if k in stored and stored[k] != v
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}")
        if wrong:
            parts.append(f"shape mismatch {'; '.join(wrong[:4])}")
        raise WeightsError(
            f"{path}: tensors do not fit {meta['method']} {meta['config']}: {' | '.join(parts)}"
        )
    if check_values:
        bad = _non_finite_tensors(path)
        if bad:
            raise WeightsError(f"{path}: tensors hold NaN or Inf values ({', '.join(bad[:4])})")
    return {
        "method": meta["method"],
        "config": meta["config"],
        "factors": meta["factors"],
        "path": str(path.resolve()),
        "sha256": digest,
        "card": card,
    }


def load_model(
    path: str | os.PathLike,
    *,
    method: str | None = None,
    factors: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load the network stored in ``path``; return (model in eval mode, info).

    ``method``: the registry name the caller expects (a file for another method is an error).
    ``factors``: the factors the caller needs; for learned-upsampling networks they must equal
    the trained factors. ``info`` holds method, config, factors, path, sha256 and the card.
    Raises :class:`WeightsError` naming the file for any malformed, truncated or mismatched
    file; every check (:func:`check_weights`) comes before the network is built, so a file
    whose metadata asks for an enormous model is refused without allocating it.
    """
    path = Path(path)
    info = check_weights(path, method=method, factors=factors)
    spec = get_spec(info["method"])
    try:
        model = spec.build(info["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise WeightsError(f"{path}: config cannot build {info['method']} ({exc})") from exc
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read tensors ({type(exc).__name__}: {exc})") from exc
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    return model, info
