"""bids_sr.errors: the exit codes of the BIDS Apps execution spec and which error gets which."""

from __future__ import annotations

import errno
import re

from conftest import REPO

from bids_sr import errors
from bids_sr.errors import (
    EXIT_CANT_CREATE,
    EXIT_DATA,
    EXIT_DESCRIPTIONS,
    EXIT_FAILURE,
    EXIT_IO,
    EXIT_OK,
    BIDSError,
    exit_code_for,
)

# the codes the BIDS Apps execution spec gives (and DESIGN.md lists)
SPEC_CODES = {0, 1, 16, 18, 64, 65, 66, 73, 74}


def _codes() -> dict[str, int]:
    return {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")
            and isinstance(value, int)}  # fmt: skip


def test_the_exit_codes_are_the_spec_ones_and_distinct():
    codes = _codes()
    assert set(codes.values()) == SPEC_CODES
    assert len(codes) == len(SPEC_CODES)


def test_every_failure_code_is_described_and_documented():
    """The Boutiques descriptor and the troubleshooting page both list every code."""
    failures = set(_codes().values()) - {EXIT_OK}
    assert set(EXIT_DESCRIPTIONS) == failures
    page = (REPO / "docs" / "troubleshooting.md").read_text()
    rows = {int(m) for m in re.findall(r"^\| (\d+) \|", page, flags=re.M)}
    assert rows == failures | {EXIT_OK}


def test_bids_error_carries_its_code():
    assert BIDSError("no T1w").code == EXIT_FAILURE
    assert BIDSError("cannot write", EXIT_CANT_CREATE).code == EXIT_CANT_CREATE


def test_storage_errors_are_io_and_permission_errors_cannot_create():
    assert exit_code_for("OSError", "", errno.ENOSPC) == EXIT_IO
    assert exit_code_for("OSError", "", errno.EDQUOT) == EXIT_IO
    assert exit_code_for("OSError", "", errno.EACCES) == EXIT_CANT_CREATE
    assert exit_code_for("OSError", "", errno.EROFS) == EXIT_CANT_CREATE
    # Nipype hands over a node's failure as text: the errno is read from the message
    assert exit_code_for("OSError", "[Errno 28] No space left on device: '/out'") == EXIT_IO
    assert exit_code_for("PermissionError", "[Errno 13] Permission denied: '/o'") == 73


def test_our_data_checks_are_bad_data_and_anything_else_is_a_failure():
    assert exit_code_for("bids_sr.image.ImageError", "4D image") == EXIT_DATA
    assert exit_code_for("WeightsError", "checksum differs") == EXIT_DATA
    assert exit_code_for("CombineError", "runs differ") == EXIT_DATA
    assert exit_code_for("RuntimeError", "something else") == EXIT_FAILURE
    assert exit_code_for("OSError", "", errno.ENOENT) == EXIT_FAILURE
