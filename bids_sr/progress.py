"""Progress of the long loops (training, tiled inference, filtering, registration, data
consistency) as INFO lines a user sees, and optionally as a tqdm bar.

A run that trains ``selfsr`` for half an hour must not look hung: :func:`track` wraps a
loop's iterable and logs ``<what>: step i/N (p%), <elapsed> elapsed, about <left> left``
on the ``bids_sr`` logger at the first step, then whenever ``interval`` seconds (30 by
default, so at least one line a minute even with slow steps) have passed since the last
line, and at the last step, prefixed with the image being processed (:func:`subject`).
Lines are time-throttled, not count-throttled, so a fast loop
writes two lines and a slow one a line every ``interval``. ``bar=True`` (``--progress``)
adds a tqdm bar on stderr. Logging goes through :mod:`logging`, so the lines reach the
terminal from Nipype's worker processes, which inherit the app's handlers.

Part of the numerical core (never imports nipype or pybids).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

LOGGER = logging.getLogger("bids_sr")
#: Seconds between two progress lines of one loop (the first and last are always written).
INTERVAL_S = 30.0

T = TypeVar("T")
#: What the current loops work on (e.g. ``sub-03_T1w.nii.gz``), prefixed to their lines so
#: that lines of several images computed at once can be told apart; set with :func:`subject`.
_SUBJECT: ContextVar[str] = ContextVar("bids_sr_progress_subject", default="")


@contextmanager
def subject(text: str) -> Iterator[None]:
    """Within the block, progress lines start with ``text: ``."""
    token = _SUBJECT.set(text)
    try:
        yield
    finally:
        _SUBJECT.reset(token)


def format_duration(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` (``0:00:07``; ``?`` when not finite)."""
    if not math.isfinite(seconds):
        return "?"
    total = int(round(max(0.0, seconds)))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def progress_line(desc: str, done: int, total: int | None, elapsed: float) -> str:
    """One progress line: step/total, percentage, elapsed time and the estimated time left
    (from the mean time per step so far)."""
    desc = f"{_SUBJECT.get()}: {desc}" if _SUBJECT.get() else desc
    if not total:
        return f"{desc}: step {done}, {format_duration(elapsed)} elapsed"
    left = elapsed / done * (total - done) if done else math.inf
    return (f"{desc}: step {done}/{total} ({100.0 * done / total:.0f}%), "
            f"{format_duration(elapsed)} elapsed, about {format_duration(left)} left")  # fmt: skip


class Progress:
    """Counts the steps of one loop and logs them, time-throttled (see the module
    docstring); for loops that are not a Python ``for`` (an optimiser's iteration callback).
    Call :meth:`step` after each step and :meth:`close` at the end."""

    def __init__(self, desc: str, total: int | None = None, *, bar: bool = False,
                 unit: str = "step", interval: float = INTERVAL_S,
                 logger: logging.Logger = LOGGER,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.desc, self.total, self.interval = desc, total, interval
        self.logger, self.clock = logger, clock
        self.done = 0
        self.start = self.last = clock()
        self.logged = -1  # the step count of the last line written
        self.bar = None
        if bar:
            from tqdm.auto import tqdm  # late: only for a bar; every start-up imports progress

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)
        self._log(self.start)

    def _log(self, now: float) -> None:
        self.logger.info(progress_line(self.desc, self.done, self.total, now - self.start))
        self.last, self.logged = now, self.done

    def step(self, n: int = 1) -> None:
        """``n`` more steps are done: a line when ``interval`` passed or the total is reached."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        now = self.clock()
        if now - self.last >= self.interval or self.done == self.total:
            self._log(now)

    def close(self) -> None:
        """The loop ended (finished, broke early or failed): the last line if not written."""
        if self.logged != self.done:
            self._log(self.clock())
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def track(
    iterable: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    bar: bool = False,
    unit: str = "step",
    interval: float = INTERVAL_S,
    logger: logging.Logger = LOGGER,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield the items of ``iterable``, logging progress (see the module docstring and
    :class:`Progress`).

    A step counts as done when the loop asks for the next item, so the line after step i
    reports i finished steps; a loop left early (``break``) still gets its last line.
    ``total`` defaults to ``len(iterable)`` when it has one; ``bar`` shows a tqdm bar on
    stderr as well; ``clock`` is for tests. Nothing is logged for an empty iterable."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if total == 0:
        return
    progress = None
    try:
        for item in iterable:
            if progress is None:
                progress = Progress(desc, total, bar=bar, unit=unit, interval=interval,
                                    logger=logger, clock=clock)  # fmt: skip
            else:
                progress.step()
            yield item
        if progress is not None:
            progress.step()
    finally:
        if progress is not None:
            progress.close()
