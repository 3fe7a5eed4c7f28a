"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

``checkpoint.safetensors`` holds every module's state (``model.<key>``, ``disc.<key>``),
every optimizer's per-parameter state flattened to ``optim.<name>.<index>.<key>`` and the
torch RNG state (``rng.torch``). ``checkpoint.json`` holds the step, the optimizers'
hyper-parameters (param groups) and scalar state, the numpy Generator's bit-generator
state, the loss history, the run configuration and the sha256 of the tensor file, which
is checked on load (a half-written pair is refused rather than silently mixed). Both files
are written atomically, tensors first, so an interrupted save leaves the previous pair.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from bids_sr.models.weights import sha256sum

TENSORS = "checkpoint.safetensors"
STATE = "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed; the message names the file and the problem."""


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _flatten_optimizer(name: str, optimizer: torch.optim.Optimizer):
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{name}.{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    folder: str | os.PathLike,
    *,
    step: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    rng: np.random.Generator,
    history: list[dict[str, Any]],
    config: dict[str, Any],
) -> Path:
    """Write the checkpoint pair into ``folder``; returns the JSON path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state().clone()}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().cpu().contiguous().clone()
    optim_meta = {}
    for name, optimizer in optimizers.items():
        flat, meta = _flatten_optimizer(name, optimizer)
        tensors.update(flat)
        optim_meta[name] = meta
    tensor_path = folder / TENSORS
    _atomic(tensor_path, lambda tmp: save_file(tensors, tmp, metadata={"step": str(step)}))
    document = {
        "step": int(step),
        "tensors_sha256": sha256sum(tensor_path),
        "optimizers": optim_meta,
        "numpy_rng": rng.bit_generator.state,
        "history": history,
        "config": config,
    }
    state_path = folder / STATE
    text = json.dumps(document, indent=1, default=str)
    _atomic(state_path, lambda tmp: Path(tmp).write_text(text))
    return state_path


def checkpoint_exists(folder: str | os.PathLike) -> bool:
    return (Path(folder) / STATE).is_file() and (Path(folder) / TENSORS).is_file()


def load_checkpoint(
    folder: str | os.PathLike,
    *,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Restore modules, optimizers, the torch RNG and ``rng`` in place; return the JSON
    document (step, history, config)."""
    folder = Path(folder)
    state_path, tensor_path = folder / STATE, folder / TENSORS
    if not checkpoint_exists(folder):
        raise CheckpointError(f"{folder}: no checkpoint to resume from ({STATE} + {TENSORS})")
    try:
        document = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{state_path}: unreadable checkpoint state ({exc})") from exc
    if document.get("tensors_sha256") != sha256sum(tensor_path):
        raise CheckpointError(f"{tensor_path}: does not match {state_path} (sha256 differs)")
    with safe_open(str(tensor_path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for name, module in modules.items():
        prefix = f"{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{tensor_path}: {name} does not fit this run ({exc})") from exc
    for name, optimizer in optimizers.items():
        meta = document["optimizers"].get(name)
        if meta is None:
            raise CheckpointError(f"{state_path}: no state for optimizer {name!r}")
        prefix = f"optim.{name}."
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, field = key[len(prefix):].split(".", 1)
                per_param.setdefault(int(index), {})[field] = value
        for index, scalars in meta["scalars"].items():
            per_param.setdefault(int(index), {}).update(scalars)
        optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    rng.bit_generator.state = document["numpy_rng"]
    return document
