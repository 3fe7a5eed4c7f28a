"""The floating-point precision the per-scan networks compute in on this machine.

On a CPU with bfloat16 units, oneDNN runs bfloat16 convolutions in hardware (autocast:
convolutions in bfloat16, weights, losses and the B-spline base in float32; channels-last
tensors). With AMX tiles (Intel Sapphire Rapids and later) ``selfsr``'s 128-channel plane
network learns about 4× faster and is applied about 6× faster than in float32: 75 s against
about 480 s per 256×256×48 clinical scan on 2 cores (``benchmarks/selfsr_time.py``). With
AVX-512 BF16 and no AMX (AMD Zen 4 and later, Intel Cooper Lake) a whole ``selfsr`` run is
2.1× faster (248 s against 514 s on 2 cores of an AMD EPYC) and ``selfsr-fast`` 2.9× (43 s
against 125 s). On other CPUs bfloat16 is emulated and slower, so it is used only where
one of the two is present; CUDA keeps float32 (not validated there yet).

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


def _torch_cpu_probe(name: str) -> bool:
    """What ``torch.cpu.<name>()`` says about this CPU; False where torch cannot tell (the
    probes are private API and may move between torch versions)."""
    import torch  # here, not at import: the command line reads requested() without torch

    probe = getattr(getattr(torch, "cpu", None), name, None)
    try:
        return bool(probe()) if callable(probe) else False
    except Exception:  # a probe that fails says nothing about the hardware
        return False


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (bfloat16 matrix units), as torch sees it. Asked once
    per process: the hardware does not change."""
    return _torch_cpu_probe("_is_amx_tile_supported")


@functools.cache
def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU has AVX-512 BF16 (bfloat16 dot products in its vector units), as
    torch sees it."""
    return _torch_cpu_probe("_is_avx512_bf16_supported")


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: AMX tiles or AVX-512 BF16."""
    return cpu_has_amx() or cpu_has_avx512_bf16()


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
    return torch.bfloat16 if cpu_computes_bfloat16() else None


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
