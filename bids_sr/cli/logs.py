"""What the console shows, and what the run's log file keeps.

The console shows bids_sr's progress and warnings, other libraries' warnings, and, when the
run fails, one line (:mod:`bids_sr.cli.run`). Nipype reports a failed node itself, at ERROR,
with the whole traceback (on its own stdout handler and again through the root logger: 80
to 110 lines before our one line). Those records stay off the console: they go to the run's
log file (``logs/bids_sr_<run uuid>.log``) and the crash file Nipype writes beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bids_sr.bids import LOGGER

FORMAT = "%(asctime)s [bids_sr] %(levelname)s: %(message)s"
#: Nipype's one-line warnings about a failed node: the error line says it once, better
NODE_FAILURE_WARNINGS = ("Storing result file without outputs", "[Node] Error on")


class ConsoleFilter(logging.Filter):
    """Drops, on the console only: Nipype's reports of a failed node (ERROR and above, and
    :data:`NODE_FAILURE_WARNINGS`) and records logged with ``extra={"console": False}``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        if record.name.startswith("nipype"):
            if record.levelno >= logging.ERROR:
                return False
            return not record.getMessage().startswith(NODE_FAILURE_WARNINGS)
        return True


def setup_console(verbose: int) -> None:
    """Progress (INFO) of bids_sr is shown by default, DEBUG with -v; other libraries show
    their warnings only (their INFO with -v); Nipype's records reach the console once,
    through the root logger's stderr handler and :class:`ConsoleFilter`."""
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig; an embedding program keeps its own
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(ConsoleFilter())
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose >= 1 else logging.WARNING)
    LOGGER.setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
    nipype_level = "INFO" if verbose >= 1 else "WARNING"
    # late: nipype (~0.6 s); console logging is set up before a usage error is known
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    nipype_config.set("logging", "workflow_level", nipype_level)
    nipype_config.set("logging", "interface_level", nipype_level)
    nipype_logging.update_logging(nipype_config)
    nipype_root = logging.getLogger("nipype")
    for handler in list(nipype_root.handlers):  # Nipype's own stdout copy of every record
        if type(handler) is logging.StreamHandler:
            nipype_root.removeHandler(handler)


@contextmanager
def log_file(path: Path) -> Iterator[Path]:
    """Every record of the run (Nipype's tracebacks included) also goes to ``path``."""
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
