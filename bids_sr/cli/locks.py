"""Locks that keep concurrent runs apart: one run per work directory, and no run deletes an
output folder another run is writing into.

Both are ``flock`` locks on a hidden file (closed by the kernel when the process dies, even
under ``kill -9``, so a crashed run never leaves a stale lock behind), each its own file: a
folder that is both (the parser refuses ``-w`` equal to the output folder, but a bind mount
can alias one folder under two paths) never has a run wait for its own exclusive lock.
The work directory's lock is exclusive: Nipype's node folders cannot be shared by two runs.
The output folder's lock is shared by every run writing there; a run takes it exclusively
only to delete the folder after its own failure, or to remove stale temporary files, i.e.
only when no other run uses it; the group level takes it exclusively while it summarises.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bids_sr.errors import EXIT_CANT_CREATE, EXIT_IO, IO_ERRNOS, BIDSError

LOCK_NAME = ".bids_sr.lock"
WORK_LOCK_NAME = ".bids_sr_work.lock"


def _open_error(path: Path, exc: OSError, what: str) -> BIDSError:
    code = EXIT_IO if exc.errno in IO_ERRNOS else EXIT_CANT_CREATE
    return BIDSError(f"{path}: cannot write to the {what} ({exc.strerror})", code)


class WorkDirLock:
    """Exclusive lock of a Nipype work directory; a second run exits with 73 and a clear line."""

    def __init__(self, work_dir: Path):
        self.path = Path(work_dir) / WORK_LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> WorkDirLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _open_error(self.path.parent, exc, "work directory") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BIDSError(
                f"{self.path.parent}: work directory in use by another bids_sr run (pid "
                f"{holder}); wait for it to finish or give another -w/--work-dir",
                EXIT_CANT_CREATE,
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise _open_error(self.path.parent, exc, "work directory") from exc
        self.fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


class OutputDirLock:
    """Shared lock of an output folder, held for the whole run (:meth:`acquire`)."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Create the folder if needed and take the shared lock; retry if another run's
        clean-up deleted the folder between our mkdir and our lock."""
        for _ in range(20):
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _open_error(self.output_dir, exc, "output directory") from exc
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)  # the folder was removed under us: start again
        raise BIDSError(f"{self.output_dir}: output directory keeps disappearing",
                        EXIT_CANT_CREATE)  # fmt: skip

    def acquire_exclusive(self) -> None:
        """Take the lock exclusively, without waiting (the group level: it reads what the
        participant runs wrote, so none may be writing); BIDSError (73) when a run holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _open_error(self.output_dir, exc, "output directory") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BIDSError(
                f"{self.output_dir}: a bids_sr run is in progress there (it holds {LOCK_NAME}); "
                "run the group level when it has finished",
                EXIT_CANT_CREATE,
            ) from None
        self.fd = fd

    def try_exclusive(self) -> bool:
        """Upgrade to an exclusive lock without waiting; True when no other run holds the
        folder (then :meth:`shared` gives the shared lock back)."""
        if self.fd is None:
            return False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Linux drops the shared lock before trying the exclusive one: take it back
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            return False
        return True

    def shared(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self, *, remove: bool = False) -> None:
        """Give the lock back. With ``remove`` (after a successful run), first delete the
        lock file when no other run holds the folder, so that a finished derivatives
        folder holds derivatives only. A run that opened the file just before sees it gone
        once it has its lock and starts again with a new one (:meth:`acquire`); a file that
        another lock of this process holds (``-w`` equal to the output folder) is never
        free, so it stays."""
        if self.fd is None:
            return
        if remove and self.try_exclusive():
            try:
                if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    self.path.unlink()
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = None
