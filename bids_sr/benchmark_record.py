"""Machine-readable records of the product benchmarks (``benchmarks/*.py``).

Every benchmark writes one JSON record of what it measured, so that the documentation's
Benchmarks page is generated from measurements (:mod:`bids_sr.benchmarks_page`) and never
carries a figure without the date, commit, machine and command that produced it. A record::

    {"benchmark": "evaluation",                  # the script's name
     "title": "Evaluation protocol, ×2 isotropic",
     "description": "what was measured, how (markdown)",
     "date": "2026-12-06T06:10:00Z",             # UTC; a converted record: the day only
     "commit": "9d887b9",                        # "-dirty": uncommitted changes were present
     "machine": {"description": "host: CPU, N logical CPUs, Python x, torch y", ...},
     "command": "OMP_NUM_THREADS=1 python benchmarks/evaluation.py",
     "tables": [{"title": "...", "columns": ["method", ...], "rows": [["bspline", 21.45]],
                 "note": "..."}],
     "figures": {...}}                           # the raw numbers, benchmark-specific

Table cells are strings or numbers, written as given. By default a benchmark writes
``benchmarks/results/<benchmark>.json`` (the folder the page is generated from); its
``--json PATH`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bids_sr.fileio import write_json_atomic

#: Keys every record carries (the page shows each table with them).
REQUIRED_KEYS = ("benchmark", "title", "date", "commit", "machine", "command", "tables")
#: Environment variables that change a timing and so belong to the command line.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine a benchmark runs on: host, CPU model, logical CPUs, Python, torch and
    the first visible GPU, with a one-line ``description`` of them."""
    info: dict[str, Any] = {"host": platform.node(), "cpu": _cpu_model(),
                            "logical_cpus": os.cpu_count(),
                            "python": platform.python_version(), "torch": None,
                            "gpu": None}  # fmt: skip
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    text = (f"{info['host']}: {info['cpu']}, {info['logical_cpus']} logical CPUs, "
            f"Python {info['python']}")  # fmt: skip
    if info["torch"]:
        text += f", torch {info['torch']}"
    text += f", GPU {info['gpu']}" if info["gpu"] else ", no GPU"
    return {"description": text, **info}


#: What benchmarks write themselves (their records, the page made from them): a change there
#: does not make the measured code differ from its commit.
OUTPUT_PATHS = ("benchmarks/results/", "docs/benchmarks.md")


def git_commit(folder: str | os.PathLike | None = None) -> str | None:
    """The short commit of the checkout holding ``folder`` (this package's by default),
    with ``-dirty`` when tracked files other than :data:`OUTPUT_PATHS` differ from it;
    None outside a git checkout."""
    where = str(folder or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        # porcelain paths are relative to the repository root, after two status letters
        changes = subprocess.run(["git", "-C", where, "status", "--porcelain",
                                  "--untracked-files=no"], capture_output=True, text=True,
                                 check=True).stdout.splitlines()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    changed = [line[3:] for line in changes if not line[3:].startswith(OUTPUT_PATHS)]
    return f"{commit}-dirty" if changed else commit


def command_line(script: str | os.PathLike, argv: Sequence[str] | None = None) -> str:
    """The command as typed: thread variables that are set, ``python``, the script (relative
    to the current folder where it lies below it) and its arguments (``sys.argv[1:]`` when
    ``argv`` is None)."""
    path = Path(script).resolve()
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    arguments = list(sys.argv[1:] if argv is None else argv)
    env = [f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if name in os.environ]
    return " ".join([*env, "python", shlex.join([shown, *arguments])])


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None,
          note: str | None = None) -> dict[str, Any]:
    """One table of a record (:func:`make_record`); every row as long as ``columns``."""
    bad = [row for row in rows if len(row) != len(columns)]
    if bad:
        raise ValueError(f"a row has {len(bad[0])} cells for {len(columns)} columns: {bad[0]}")
    out: dict[str, Any] = {"columns": list(columns), "rows": [list(row) for row in rows]}
    if title:
        out["title"] = title
    if note:
        out["note"] = note
    return out


def make_record(benchmark: str, *, title: str, description: str,
                tables: Sequence[dict[str, Any]], figures: Any, command: str,
                date: str | None = None, commit: str | None = None,
                machine_info: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A record of one benchmark run, dated now, at this checkout's commit, on this machine
    unless told otherwise (a converted past measurement keeps its own)."""
    return {
        "benchmark": benchmark, "title": title, "description": description.strip(),
        "date": date or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit if commit is not None else git_commit(),
        "machine": machine_info or machine(), "command": command,
        "tables": list(tables), "figures": figures,
    }  # fmt: skip


def add_json_argument(parser: argparse.ArgumentParser, default: Path) -> None:
    """``--json PATH``: where the record goes (default ``default``, the results folder)."""
    parser.add_argument("--json", type=Path, default=default, metavar="PATH",
                        help="write the machine-readable record of the figures here "
                        f"(default: {default.parent.name}/{default.name} beside the "
                        "benchmark; the Benchmarks page is generated from that folder)")


def write_record(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``record`` (checked for :data:`REQUIRED_KEYS`) as JSON; its path."""
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ValueError(f"benchmark record lacks {', '.join(missing)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    written = write_json_atomic(record, path)
    print(f"record written to {written}", flush=True)
    return written
