"""Learning gradient filters from HR NIfTI images on disk (what ``bids_sr-train gradfilter``
calls after its BIDS query).

Images are loaded lazily, one at a time, through a re-iterable sequence, so the learner can
make its threshold pass and its accumulation pass while holding a single volume in memory.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_sr import __version__
from bids_sr.gradfilter import learn_gradient_filters, save_filters
from bids_sr.gradfilter.io import file_sha256
from bids_sr.image import as_factors, load_volume


class LazyVolumes(Sequence):
    """A sequence of image arrays read from ``paths`` on access (never all in memory)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return LazyVolumes(self.paths[index])
        return load_volume(self.paths[index]).data


def train_gradfilter(
    hr_paths: list[Path],
    out_path: Path,
    factors: float | Sequence[float],
    *,
    degradation: str = "gaussian",
    seed: int = 0,
    progress: bool = True,
    card_extra: dict[str, Any] | None = None,
    **learn_options: Any,
) -> Path:
    """Learn filters from HR images ``hr_paths`` and write ``out_path`` (+ model card).

    ``learn_options`` go to :func:`bids_sr.gradfilter.learn_gradient_filters` (patch_size,
    stride, augment, …). The card lists the training files with their sha256, the settings,
    the software version and the wall time; ``card_extra`` (e.g. the command line, the BIDS
    query) is added to it. Returns ``out_path``.
    """
    paths = [Path(p) for p in hr_paths]
    if not paths:
        raise ValueError("train_gradfilter needs at least one HR image")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: training image not found")
    factors = as_factors(factors)
    start = time.perf_counter()
    filterset = learn_gradient_filters(
        LazyVolumes(paths), factors, degradation=degradation, seed=seed, progress=progress,
        **learn_options,
    )
    card = {
        "training_files": [{"path": str(p), "sha256": file_sha256(p)} for p in paths],
        "software": {"bids_sr": __version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "train_wall_s": time.perf_counter() - start,
        **(card_extra or {}),
    }
    return save_filters(filterset, Path(out_path), card)
