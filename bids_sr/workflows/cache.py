"""Forget cached node results whose files are gone, so that Nipype reruns those nodes.

Nipype trusts a node's ``result_<node>.pklz`` when its input hash matches, without checking
that the files it lists still exist; a downstream node then fails on ``'out_file' ... must
be an existing file``, and keeps failing on every rerun with the same work directory. Before
a run, :func:`forget_vanished_results` removes every result file that names a missing (or
unreadable) output, which makes Nipype run that node again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nipype.interfaces.base import isdefined
from nipype.utils.filemanip import loadpkl

LOGGER = logging.getLogger("bids_sr")


def _paths(value: Any) -> Iterator[str]:
    """Absolute file paths held in an output value (strings, lists, tuples, dicts)."""
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if os.path.isabs(text):
            yield text
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _paths(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths(item)


def _missing_outputs(result_file: Path) -> list[str] | None:
    """The output paths of a stored result that no longer exist; None if it is unreadable."""

    try:
        result = loadpkl(result_file)
        outputs = getattr(result, "outputs", None)
        values = {} if outputs is None else (
            outputs.get() if hasattr(outputs, "get") and callable(outputs.get)
            else dict(outputs.__dict__)
        )  # fmt: skip
    except Exception:  # a truncated pickle, or one whose traits refuse a vanished file
        return None
    found = []
    for value in values.values():
        if value is None or not isdefined(value):
            continue
        found.extend(path for path in _paths(value) if not os.path.exists(path))
    return found


def forget_vanished_results(work_dir: Path) -> list[Path]:
    """Remove each ``result_*.pklz`` under ``work_dir`` that names a missing file or cannot
    be read; return the removed files (their nodes rerun)."""
    removed = []
    for result_file in sorted(Path(work_dir).rglob("result_*.pklz")):
        missing = _missing_outputs(result_file)
        if missing is None or missing:
            why = "unreadable" if missing is None else f"{missing[0]} is gone"
            LOGGER.info("rerunning %s: its cached result is stale (%s)",
                        result_file.parent.name, why)  # fmt: skip
            result_file.unlink(missing_ok=True)
            removed.append(result_file)
    return removed
