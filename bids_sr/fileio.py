"""Atomic file output: write to a temporary name beside the target, then rename.

Every file the package writes goes through :func:`atomic_path`, so an interrupted run never
leaves a partial or corrupt output under the final name, and outputs get the usual
permissions (0666 less the umask; ``mkstemp`` alone would make them private).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()
# names of atomic_path's temporary files: ".<name>.<8 random characters>.tmp[.<ext>]"
TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9.]+)?$")
#: the prefix of the empty file a run creates to check that its output folder is writable
WRITE_TEST_PREFIX = ".bids_sr_write_test"


def is_own_temporary(name: str) -> bool:
    """Whether a file called ``name`` is one of bids_sr's temporaries (an atomic write's
    temporary or the writability test's file): never an output, safe to delete when no run
    is writing."""
    return bool(TEMP_NAME.match(name)) or name.startswith(WRITE_TEST_PREFIX)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place when the block succeeds.

    ``suffix`` lets writers that choose a format by extension (nibabel, ITK) see the right
    one, e.g. ``.tmp.nii.gz``. On any exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete, under ``folder``, the temporary files of writes that were killed before their
    rename (their names follow :func:`atomic_path`'s pattern); return what was removed.
    Call it only while no other process writes there."""
    removed = []
    for root, _, files in os.walk(folder):
        for name in files:
            if is_own_temporary(name):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8, LF line ends) atomically; return the final path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return Path(path)


def generated_page_main(
    argv: Sequence[str] | None, *, prog: str, description: str, source_option: str,
    source_default: Path, source_help: str, render: Callable[[Path], str],
) -> int:
    """The command line of a generated documentation page (the Models page from the cards,
    the Benchmarks page from the benchmark records): ``render`` the folder given by
    ``source_option`` (default ``source_default``) to stdout, or atomically to ``--output``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(source_option, dest="source", type=Path, default=source_default,
                        metavar=source_option.lstrip("-").replace("-", "_").upper(),
                        help=source_help)  # fmt: skip
    parser.add_argument("--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    page = render(args.source)
    if args.output:
        write_text_atomic(page, args.output)
    else:
        sys.stdout.write(page)
    return 0


def write_json_atomic(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON atomically; return the final path."""
    return write_text_atomic(json.dumps(data, indent=2, default=str) + "\n", path)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (weights and filter checksums)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(image_file: str | os.PathLike) -> Path:
    """The JSON sidecar beside a NIfTI image (``x.nii.gz`` / ``x.nii`` → ``x.json``)."""
    name = str(image_file)
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return Path(name[: -len(suffix)] + ".json")
    return Path(name).with_suffix(".json")


def read_sidecar(image_file: str | os.PathLike, *, strict: bool = False) -> dict[str, Any]:
    """The JSON sidecar beside ``image_file`` as a dict ({} when there is none).

    A sidecar that is not a JSON object gives {} too, or with ``strict`` a ValueError naming
    the file (the CLI refuses such sidecars before running; nodes then read them leniently).
    """
    path = sidecar_path(image_file)
    if path.exists() and not path.is_file():  # a FIFO or device would block the read for ever
        if strict:
            raise ValueError(f"{path}: sidecar is not a regular file")
        return {}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if strict:
            raise ValueError(f"{path}: sidecar is not valid JSON ({exc})") from exc
        return {}
    if not isinstance(data, dict):
        if strict:
            raise ValueError(f"{path}: sidecar must hold a JSON object")
        return {}
    return data
