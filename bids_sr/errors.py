"""Exit codes and the errors that carry them: which failure ends a run with which status.

The codes are those of the BIDS Apps execution specification, used by both console scripts
(``bids_sr`` and ``bids_sr-train``). :class:`BIDSError` carries its code up to the entry
point; :func:`exit_code_for` gives the code of any other error by its type name and errno,
which is all that survives when Nipype re-raises a node's failure as text.

A core module: the standard library only (no nipype, no pybids), so every layer may import it.
"""

from __future__ import annotations

import errno
import re

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_VALIDATION = 16
EXIT_NO_FILES = 18
EXIT_USAGE = 64
EXIT_DATA = 65
EXIT_MISSING = 66
EXIT_CANT_CREATE = 73
EXIT_IO = 74

#: What each failure code means, for users (the Boutiques descriptor's ``error-codes``)
EXIT_DESCRIPTIONS = {
    EXIT_FAILURE: "unspecified failure (for example a workflow node crashed)",
    EXIT_VALIDATION: "the input dataset failed BIDS validation",
    EXIT_NO_FILES: "the participant, session or BIDS filters selected no files",
    EXIT_USAGE: "command-line usage error",
    EXIT_DATA: "bad input data (unreadable, 4D or empty image, missing weights)",
    EXIT_MISSING: "valid BIDS, but required files are missing",
    EXIT_CANT_CREATE: "cannot create or write the output folder",
    EXIT_IO: "input/output error",
}

# errors of the storage itself: I/O error (74)
IO_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO}
# the output cannot be created where asked: 73
CREATE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}
# exceptions raised by our checks of the data a node received (65); CombineError: runs of
# --combine-runs that cannot be registered or matched
DATA_ERRORS = {"ImageError", "WeightsError", "CombineError"}

_ERRNO = re.compile(r"\[Errno (?P<errno>\d+)\]")


class BIDSError(Exception):
    """A problem with the input dataset or selection; ``code`` is the exit status to use."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


class UsageError(Exception):
    """Bad command-line arguments of ``bids_sr-train`` (exit 64)."""


def exit_code_for(error_type: str, message: str, number: int | None = None) -> int:
    """The exit code of an error given by its type name, message and (for OSError) errno."""
    name = error_type.rsplit(".", 1)[-1]
    if number is None:
        match = _ERRNO.search(message)
        number = int(match.group("errno")) if match else None
    if number in IO_ERRNOS:
        return EXIT_IO
    if number in CREATE_ERRNOS:
        return EXIT_CANT_CREATE
    if name in DATA_ERRORS:
        return EXIT_DATA
    return EXIT_FAILURE
