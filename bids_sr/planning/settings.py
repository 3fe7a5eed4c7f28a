"""What planning reads of a run's configuration, as structural types.

The run configuration (:class:`bids_sr.config.Config`) sits above planning in the layers:
the command line builds it and the workflows read it. Planning reads only its ``workflow``
section, through these protocols, so it never imports :mod:`bids_sr.config`; a ``Config``
fits them as it is, and a program of its own can plan with any object of the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class PlanSettings(Protocol):
    """The settings a plan depends on (the fields of :class:`bids_sr.config.Workflow` of the
    same names: ``--method``, ``--fast``, the reference options, evaluation mode, the grid,
    ``--weights`` and the acquisition model of 2D inputs)."""

    @property
    def methods(self) -> Sequence[str]: ...
    @property
    def fast(self) -> bool: ...
    @property
    def t2w_reference(self) -> str: ...
    @property
    def reference_suffixes(self) -> Sequence[str] | None: ...
    @property
    def reference_session(self) -> str: ...
    @property
    def evaluate(self) -> bool: ...
    @property
    def degradation(self) -> str: ...
    @property
    def scale(self) -> Sequence[float]: ...
    @property
    def output_resolution(self) -> float | None: ...
    @property
    def weights(self) -> Path | None: ...
    @property
    def slice_thickness(self) -> float | None: ...
    @property
    def slice_gap(self) -> float | None: ...
    @property
    def slice_profile(self) -> str: ...


class RunSettings(Protocol):
    """A run configuration as planning sees it: its ``workflow`` section."""

    @property
    def workflow(self) -> PlanSettings: ...
