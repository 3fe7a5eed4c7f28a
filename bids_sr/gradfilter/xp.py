"""Array-module selection: one code path over NumPy or CuPy.

Every numerical function of :mod:`bids_sr.gradfilter` takes an ``xp`` argument (``numpy`` or
``cupy``) and an ``ndi`` argument (``scipy.ndimage`` or ``cupyx.scipy.ndimage``) instead of
importing either, so the CPU and GPU paths are the same code. CuPy is optional
(``pip install bids_sr[gpu]``) and imported only when a GPU run is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from scipy import ndimage

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ArrayBackend:
    """The array module, its ndimage module and the device name used in reports."""

    xp: ModuleType
    ndi: ModuleType
    device: str

    def asarray(self, data: Any, dtype: Any = None) -> Any:
        """Move ``data`` onto this backend's device."""
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, data: Any) -> np.ndarray:
        """Bring an array back to host memory as a NumPy array."""
        return to_numpy(data)


def to_numpy(data: Any) -> np.ndarray:
    """NumPy view/copy of a NumPy or CuPy array (CuPy arrays have ``.get()``)."""
    if hasattr(data, "get") and not isinstance(data, np.ndarray):
        return data.get()
    return np.asarray(data)


def _cupy_or_reason() -> tuple[ModuleType | None, ModuleType | None, str]:
    """Import cupy and check a GPU is usable; return (cupy, ndimage, "") or a reason."""
    try:
        import cupy
        import cupyx.scipy.ndimage as cndi
    except Exception as exc:  # ImportError, or a CUDA library missing at import time
        return None, None, f"cupy is not importable ({type(exc).__name__}: {exc})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, None, "cupy found no CUDA device"
    except Exception as exc:
        return None, None, f"cupy found no usable CUDA device ({type(exc).__name__}: {exc})"
    return cupy, cndi, ""


def get_backend(device: str = "auto") -> ArrayBackend:
    """Pick NumPy or CuPy for ``device``.

    ``"cpu"`` → NumPy; ``"cuda"`` → CuPy, or a RuntimeError saying why it is unavailable;
    ``"auto"`` → CuPy when it imports and a GPU is present, otherwise NumPy.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    if device == "cpu":
        return _numpy_backend()
    cupy, cndi, reason = _cupy_or_reason()
    if cupy is not None:
        return ArrayBackend(xp=cupy, ndi=cndi, device="cuda")
    if device == "cuda":
        raise RuntimeError(
            f"device 'cuda' requested for gradfilter but {reason}; "
            "install the GPU extra (pip install bids_sr[gpu]) on a machine with a GPU, "
            "or use device 'cpu'"
        )
    return _numpy_backend()


def _numpy_backend() -> ArrayBackend:

    return ArrayBackend(xp=np, ndi=ndimage, device="cpu")


def cuda_available() -> bool:
    """True when CuPy imports and sees a GPU (used to skip GPU tests)."""
    return _cupy_or_reason()[0] is not None
