"""The floating-point precision the per-scan networks compute in on this machine.

On a CPU with AMX tiles (Intel Sapphire Rapids and later), oneDNN runs bfloat16
convolutions in hardware: ``selfsr``'s 128-channel plane network learns about 4× faster and
is applied about 6× faster in bfloat16 (autocast: convolutions in bfloat16, weights, losses
and the B-spline base in float32; channels-last tensors) than in float32: 75 s against
about 480 s per 256×256×48 clinical scan on 2 cores (``benchmarks/selfsr_time.py``). On
other CPUs bfloat16 is emulated and slower, so it is used only where AMX is present; CUDA
keeps float32 (not validated there yet).

``BIDS_SR_CPU_PRECISION`` overrides the choice: ``bf16``, ``fp32`` or ``auto`` (default).
A cluster of mixed nodes that must give bit-identical outputs on all of them sets ``fp32``.
The precision a result was computed in goes into its sidecar (``Precision``) and into the
per-scan model cache key (a model learned in one precision is not reused for the other).

Part of the numerical core (never imports nipype or pybids).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: The environment variable that overrides the automatic choice on CPUs.
ENVIRONMENT = "BIDS_SR_CPU_PRECISION"
CHOICES = ("auto", "bf16", "fp32")


def requested() -> str:
    """The choice :data:`ENVIRONMENT` asks for (``auto`` when unset). Reads no torch, so
    the command line checks it before anything runs; ValueError naming the variable when
    it holds something else than one of :data:`CHOICES`."""
    choice = os.environ.get(ENVIRONMENT, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENVIRONMENT}={choice!r}: expected one of {', '.join(CHOICES)}")
    return choice


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (bfloat16 matrix units), as torch sees it; False where
    torch cannot tell (the probe is private API and may move between torch versions). Asked
    once per process: the hardware does not change."""
    import torch  # here, not at import: the command line reads requested() without torch

    probe = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if callable(probe) else False
    except Exception:  # a probe that fails says nothing about the hardware
        return False


def compute_dtype(device: str) -> torch.dtype | None:
    """bfloat16 when the networks should autocast to it on ``device``, None for float32
    (ValueError from :func:`requested` for a bad :data:`ENVIRONMENT`)."""
    import torch

    if not str(device).startswith("cpu"):
        return None
    choice = requested()
    if choice == "fp32":
        return None
    if choice == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_amx() else None


def precision_name(device: str) -> str:
    """``"bfloat16"`` or ``"float32"``: what :func:`autocast` computes in on ``device``."""
    return "float32" if compute_dtype(device) is None else "bfloat16"


def autocast(device: str) -> torch.autocast:
    """A context that autocasts the enclosed network calls to :func:`compute_dtype`
    (disabled for float32). It can be entered again and again: a training loop makes it
    once, not once per step."""
    import torch

    dtype = compute_dtype(device)
    return torch.autocast(device_type="cpu", dtype=dtype or torch.bfloat16,
                          enabled=dtype is not None)  # fmt: skip


def memory_format(device: str) -> torch.memory_format:
    """Channels-last where the networks compute in bfloat16 (oneDNN's native layout for its
    AMX kernels), the default layout otherwise: float32 stays exactly the computation it was
    (channels-last float32 was 1.6× faster on 2 cores but its per-scan models differed
    between the container image and a host install, which float32 must not)."""
    import torch

    return torch.contiguous_format if compute_dtype(device) is None else torch.channels_last
