"""Turn a failure inside the workflow into one line and a BIDS Apps exit code.

Nipype re-raises a node's failure as a RuntimeError whose text is a traceback (MultiProc), a
NodeExecutionError whose message embeds the interface's traceback (Linear), or ``N raised.
Re-raising first.`` with the first failure as its cause. The user needs the node's own error:
the last ``SomeError: message`` line of that text, and an exit code chosen from its type
(:func:`bids_sr.errors.exit_code_for`).
"""

from __future__ import annotations

import re
from pathlib import Path

from bids_sr.errors import EXIT_FAILURE, EXIT_IO, exit_code_for

_ERROR_LINE = re.compile(
    r"^\s*(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)): ?(?P<text>.*)$"
)
_NODE = re.compile(r"Exception raised while executing Node (?P<node>[\w-]+(?:\.[\w-]+)*)")


def _texts(exc: BaseException) -> list[str]:
    """The messages of ``exc`` and of its causes, the innermost last."""
    texts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        first = exc.args[0] if exc.args else None
        if isinstance(first, list | tuple):  # MultiProc: the traceback as a list of lines
            texts.append("".join(str(part) for part in first))
        else:
            texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return texts


IO_HINT = "check the free space and file-size limits of the output and work directories"


def describe_failure(exc: BaseException) -> tuple[str, int, str | None]:
    """``(one-line message, exit code, failing node or None)`` for a workflow failure."""
    message, code, node = _describe(exc)
    if code == EXIT_IO:
        message = f"{message}; {IO_HINT}"
    return message, code, node


def _describe(exc: BaseException) -> tuple[str, int, str | None]:
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}", exit_code_for("OSError", "", exc.errno), None
    texts = [t for t in _texts(exc) if "raised. Re-raising first" not in t]
    for text in texts:
        lines = text.splitlines()
        node = _NODE.search(text)
        found = [m for m in map(_ERROR_LINE.match, lines) if m]
        found = [m for m in found if not m.group("type").endswith("NodeExecutionError")]
        if found:
            last = found[-1]
            message = last.group("text").strip() or last.group("type")
            code = exit_code_for(last.group("type"), message)
            return message, code, node.group("node") if node else None
    first = next((t.strip().splitlines()[0] for t in texts if t.strip()), type(exc).__name__)
    return first, EXIT_FAILURE, None


def crash_files(log_dir: Path | None, since: float) -> list[Path]:
    """Nipype crash files written into ``log_dir`` at or after ``since`` (a time.time())."""
    if log_dir is None or not Path(log_dir).is_dir():
        return []
    found = [p for p in Path(log_dir).glob("crash-*") if p.stat().st_mtime >= since - 1]
    return sorted(found, key=lambda p: p.stat().st_mtime)


#: Node inputs naming the raw file a node works on, most telling first
_INPUT_FIELDS = ("source_file", "t1w_file", "in_file")
_INPUT_LINE = re.compile(r"^(?P<field>\w+) = (?P<value>/.+)$")


def crash_input(crash: Path) -> str | None:
    """The input file of the node a crash file reports (its ``source_file``, ``t1w_file``
    or ``in_file``), so the one-line error names the file even when the node's message
    does not; None when the crash file names none."""
    try:
        lines = Path(crash).read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = {}
    for line in lines:
        if line.startswith("Traceback"):
            break
        match = _INPUT_LINE.match(line.strip())
        if match and match.group("field") in _INPUT_FIELDS:
            found[match.group("field")] = match.group("value")
    return next((found[field] for field in _INPUT_FIELDS if field in found), None)
