"""BIDS side of the app: pybids queries, validation, derivative names and metadata.

Everything that knows about BIDS lives here (the numerical core never imports pybids).
Errors are :class:`bids_sr.errors.BIDSError`, carrying the exit code of the BIDS Apps
execution spec. pybids (about 0.4 s to import) is imported inside the functions that query a
dataset, so the parser, ``--help`` and usage errors do not load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bids_sr.__about__ import __url__, __version__
from bids_sr.errors import (
    EXIT_CANT_CREATE,
    EXIT_DATA,
    EXIT_MISSING,
    EXIT_NO_FILES,
    EXIT_USAGE,
    EXIT_VALIDATION,
    BIDSError,
)
from bids_sr.fileio import write_json_atomic, write_text_atomic

LOGGER = logging.getLogger("bids_sr")

# BIDS entity order for file names (the schema's order, restricted to anatomical files)
ENTITY_ORDER = (
    "sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "mod", "echo", "flip", "inv",
    "mt", "part", "space", "res", "den", "label", "desc",
)  # fmt: skip
IMAGE_QUERY = {"datatype": "anat", "part": ["mag", None], "extension": [".nii", ".nii.gz"]}
# BIDS short entity names (as in file names) → the names pybids queries with
ENTITY_QUERY_NAMES = {
    "sub": "subject", "ses": "session", "acq": "acquisition", "ce": "ceagent",
    "rec": "reconstruction", "dir": "direction", "mod": "modality", "trc": "tracer",
    "stain": "staining", "res": "resolution", "den": "density", "inv": "inv",
}  # fmt: skip
#: The desc- suffix of a self-supervised method's uncertainty map (``desc-selfsrUncertainty``)
#: and of a guided output's difference to its mono twin (``desc-srrecnnT2wGuidedMinusMono``):
#: maps written beside a super-resolved image, not super-resolved images themselves.
UNCERTAINTY_DESC = "Uncertainty"
GUIDED_MINUS_MONO_DESC = "GuidedMinusMono"
# the only fields a --t2w-reference pattern may hold
T2W_PATTERN_FIELDS = ("{subject}", "{session}")


def strip_prefix(label: str, prefix: str) -> str:
    """``sub-01`` → ``01``; labels given with or without the prefix are accepted."""
    return label[len(prefix) :] if label.startswith(prefix) else label


def check_dataset(bids_dir: Path) -> None:
    """Fail early with a clear message when ``bids_dir`` is not a BIDS dataset."""
    if not bids_dir.exists():
        raise BIDSError(f"{bids_dir}: BIDS directory does not exist", EXIT_USAGE)
    if not bids_dir.is_dir():
        raise BIDSError(f"{bids_dir}: is not a directory", EXIT_USAGE)
    description = bids_dir / "dataset_description.json"
    if not description.exists():
        raise BIDSError(
            f"{bids_dir}: not a BIDS dataset (no dataset_description.json)", EXIT_VALIDATION
        )
    try:
        json.loads(description.read_text())
    except (OSError, ValueError) as exc:
        raise BIDSError(f"{description}: unreadable JSON ({exc})", EXIT_VALIDATION) from exc


def validator_command() -> str | None:
    """Path of the BIDS validator (the deno build from PyPI, or a node one), if installed."""
    beside_python = Path(sys.executable).parent  # the venv's bin, even when not on PATH
    for name in ("bids-validator-deno", "bids-validator"):
        found = shutil.which(name, path=f"{beside_python}{os.pathsep}{os.environ.get('PATH', '')}")
        if found:
            return found
    return None


def run_validator(bids_dir: Path, timeout: float = 600) -> list[dict[str, Any]]:
    """Run the official BIDS validator; return its error-severity issues (empty if valid)."""
    command = validator_command()
    if command is None:
        raise BIDSError(
            "the BIDS validator is not installed (pip install bids-validator-deno); "
            "install it or pass --skip-bids-validation",
            EXIT_VALIDATION,
        )
    proc = subprocess.run(
        [command, str(bids_dir), "--json"], capture_output=True, text=True, timeout=timeout
    )
    try:
        issues = json.loads(proc.stdout)["issues"]["issues"]
    except (ValueError, KeyError) as exc:
        raise BIDSError(
            f"{bids_dir}: the BIDS validator gave no readable result: {proc.stderr.strip()[:300]}",
            EXIT_VALIDATION,
        ) from exc
    return [issue for issue in issues if issue.get("severity") == "error"]


def validate_dataset(bids_dir: Path) -> None:
    """Raise BIDSError (exit 16) naming the first problems when the validator finds errors."""
    errors = run_validator(bids_dir)
    if errors:
        shown = "; ".join(
            f"{e.get('code')} at {e.get('location', '?')}" for e in errors[:3]
        )
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        raise BIDSError(
            f"{bids_dir}: BIDS validation failed: {shown}{more} "
            "(use --skip-bids-validation to go on anyway)",
            EXIT_VALIDATION,
        )


def _participants_on_disk(bids_dir: Path) -> list[str]:
    return sorted(p.name[4:] for p in bids_dir.glob("sub-*") if p.is_dir())


def select_participants(bids_dir: Path, labels: Sequence[str] | None) -> list[str]:
    """Requested participant labels (prefix stripped), checked against the dataset."""
    available = _participants_on_disk(bids_dir)
    if not available:
        raise BIDSError(f"{bids_dir}: no sub-* folders in the dataset", EXIT_MISSING)
    if not labels:
        return available
    wanted = list(dict.fromkeys(strip_prefix(label, "sub-") for label in labels))
    unknown = [label for label in wanted if label not in available]
    if unknown:
        raise BIDSError(
            f"{bids_dir}: participant label(s) not found: {', '.join(unknown)} "
            f"(available: {', '.join(available)})",
            EXIT_NO_FILES,
        )
    return wanted


INDEX_IGNORED = ("code", "stimuli", "sourcedata", "models", "derivatives")
FINGERPRINT_NAME = "bids_sr_fingerprint.json"


def index_fingerprint(bids_dir: Path, participants: Sequence[str], validate: bool) -> dict:
    """What a pybids index of ``bids_dir`` depends on: the selected participants, the
    validation setting, and every indexed file's path, size and modification time (the
    top-level files and the selected participants' folders). A stored index whose
    fingerprint differs is stale: files were added, removed or changed since."""
    from bids import __version__ as pybids_version

    bids_dir = Path(bids_dir)
    digest = hashlib.sha256()
    roots = [bids_dir / f"sub-{label}" for label in sorted(participants)]
    entries = [p for p in bids_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            entries.extend(Path(folder) / f for f in files if not f.startswith("."))
    for path in sorted(entries):
        stat = path.stat()
        digest.update(f"{path.relative_to(bids_dir).as_posix()}\0{stat.st_size}\0"
                      f"{stat.st_mtime_ns}\n".encode())  # fmt: skip
    return {"participants": sorted(participants), "validate": validate,
            "pybids": pybids_version, "files": digest.hexdigest()}  # fmt: skip


def _stored_fingerprint(database_dir: Path) -> dict | None:
    try:
        return json.loads((database_dir / FINGERPRINT_NAME).read_text())
    except (OSError, ValueError):
        return None


def load_layout(
    bids_dir: Path,
    participants: Sequence[str],
    *,
    database_dir: Path | None = None,
    validate: bool = True,
):
    """A BIDSLayout that indexes only the selected participants, reusing a database folder.

    ``validate`` asks pybids to ignore files that are not BIDS; the full dataset validation
    is :func:`validate_dataset`, run by the CLI unless --skip-bids-validation. A database
    in ``database_dir`` is reused only while its fingerprint (:func:`index_fingerprint`,
    stored beside it) matches the dataset and the selection; a stale one is rebuilt, and so
    is a corrupt one (with a warning).
    """
    from bids.layout import BIDSLayout, BIDSLayoutIndexer

    # paths are matched relative to the root with a leading "/": skip other participants
    others = re.compile(
        r"^(?!/sub-(" + "|".join(re.escape(p) for p in participants) + r")(/|$))/sub-[^/]+"
    )
    ignore = [*INDEX_IGNORED, re.compile(r"^\."), others]

    def build(**kwargs):
        indexer = BIDSLayoutIndexer(validate=validate, ignore=ignore, index_metadata=False)
        return BIDSLayout(str(bids_dir), validate=validate, indexer=indexer, **kwargs)

    if database_dir is None:
        return build()
    try:
        database_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BIDSError(f"{database_dir}: cannot create the database folder ({exc.strerror})",
                        EXIT_CANT_CREATE) from exc  # fmt: skip
    fingerprint = index_fingerprint(bids_dir, participants, validate)
    stale = _stored_fingerprint(database_dir) != fingerprint
    if stale and any(database_dir.iterdir()):
        LOGGER.info("%s: the pybids index is stale (the dataset or the selection changed); "
                    "re-indexing", database_dir)  # fmt: skip
    try:
        layout = build(database_path=str(database_dir), reset_database=stale)
    except Exception as exc:  # a corrupt database: sqlalchemy/sqlite errors of many kinds
        LOGGER.warning("%s: unreadable pybids database (%s); re-indexing", database_dir,
                       str(exc).splitlines()[0][:200])  # fmt: skip
        for child in database_dir.iterdir():
            if child.is_file() and child.name != FINGERPRINT_NAME:
                child.unlink()
        layout = build(database_path=str(database_dir), reset_database=True)
    if stale:
        write_json_atomic(fingerprint, database_dir / FINGERPRINT_NAME)
    return layout


def query_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """pybids query filters from a ``--bids-filter-file`` entry: BIDS short entity names, as
    users write them (``{"acq": "mprage"}``), become pybids' names (``acquisition``)."""
    return {ENTITY_QUERY_NAMES.get(key, key): value for key, value in filters.items()}


def check_sessions(
    layout, participants: Sequence[str], sessions: Sequence[str] | None
) -> list[str] | None:
    """Session labels (prefix stripped) checked against the selected participants' data."""
    if not sessions:
        return None
    wanted = [strip_prefix(s, "ses-") for s in sessions]
    available = set(layout.get_sessions(subject=list(participants)))
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise BIDSError(
            f"{layout.root}: session label(s) not found for the selected participants: "
            f"{', '.join(unknown)} (available: {', '.join(sorted(available)) or 'none'})",
            EXIT_NO_FILES,
        )
    return wanted


def query_images(
    layout,
    subject: str,
    suffix: str,
    sessions: Sequence[str] | None = None,
    extra_filters: dict[str, Any] | None = None,
) -> list[str]:
    """Paths of a participant's anatomical images of one suffix (T1w, T2w), sorted."""
    query = {**IMAGE_QUERY, **query_filters(extra_filters or {}), "subject": subject,
             "suffix": suffix}  # fmt: skip
    if sessions:
        query["session"] = list(sessions)
    try:
        return sorted(layout.get(return_type="file", **query))
    except ValueError as exc:  # pybids: "'foo' is not a recognized entity"
        raise BIDSError(f"--bids-filter-file: {exc}".split(" If you")[0], EXIT_USAGE) from exc


def collect_t1w(layout, subjects: Iterable[str], sessions=None, extra_filters=None) -> dict:
    """T1w paths per subject. A subject without any T1w (a FLAIR-only session of a clinical
    dataset) is skipped with a warning; when no selected subject has one: exit 66."""
    found, missing = {}, []
    where = f" in session(s) {', '.join(sessions)}" if sessions else ""
    for subject in subjects:
        files = query_images(layout, subject, "T1w", sessions, extra_filters)
        if files:
            found[subject] = files
        else:
            missing.append(f"{layout.root}/sub-{subject}")
    if not found:
        raise BIDSError(f"{', '.join(missing)}: participant has no T1w image{where}", EXIT_MISSING)
    for folder in missing:
        LOGGER.warning("%s: participant has no T1w image%s; skipped", folder, where)
    return found


# file-name entity → pybids query name, for the entities a native-space mask must share
MASK_ENTITIES = {"ses": "session", "acq": "acquisition", "ce": "ceagent",
                 "rec": "reconstruction", "run": "run"}  # fmt: skip


def load_derivative_layouts(paths: Sequence[Path]) -> list:
    """One pybids layout per derivatives dataset (e.g. fMRIPrep's output), metadata unindexed."""
    from bids.layout import BIDSLayout, BIDSLayoutIndexer

    layouts = []
    for path in paths:
        if not (Path(path) / "dataset_description.json").exists():
            raise BIDSError(f"{path}: not a derivatives dataset (no dataset_description.json)",
                            EXIT_USAGE)  # fmt: skip
        indexer = BIDSLayoutIndexer(validate=False, index_metadata=False)
        try:
            layouts.append(BIDSLayout(str(path), validate=False, indexer=indexer))
        except Exception as exc:  # pybids raises many kinds for unreadable datasets
            raise BIDSError(f"{path}: cannot index derivatives dataset ({exc})", EXIT_DATA) from exc
    return layouts


def find_brain_mask(layouts: Sequence, t1w_file: str | os.PathLike) -> str | None:
    """A native-space ``desc-brain_mask`` of ``t1w_file`` in the derivatives, or None.

    The mask must carry the T1w's subject, session, acq, ce, rec and run entities exactly
    (absent ones absent) and no ``space-`` entity (fMRIPrep/sMRIPrep's convention for the
    T1w's own space); the first dataset that holds one wins.
    """
    from bids.layout import Query

    entities, _, _ = parse_entities(t1w_file)
    query: dict[str, Any] = {"subject": entities["sub"], "desc": "brain", "suffix": "mask",
                             "space": Query.NONE, "extension": [".nii", ".nii.gz"]}  # fmt: skip
    for key, name in MASK_ENTITIES.items():
        value = entities.get(key)
        if value is None:
            query[name] = Query.NONE
        else:
            query[name] = int(value) if key == "run" else value
    for layout in layouts:
        found = sorted(layout.get(return_type="file", **query))
        if found:
            return found[0]
    return None


def parse_entities(path: str | os.PathLike) -> tuple[dict[str, str], str, str]:
    """Split a BIDS file name into (entities in order, suffix, extension)."""
    name = Path(path).name
    match = re.match(r"^(?P<stem>[^.]+)(?P<ext>\..*)?$", name)
    stem, ext = match.group("stem"), match.group("ext") or ""
    parts = stem.split("_")
    entities = dict(part.split("-", 1) for part in parts[:-1] if "-" in part)
    return entities, parts[-1], ext


def desc_label(method: str) -> str:
    """The ``desc-`` label of a method: BIDS labels are alphanumeric, so ``srrecnn-t2w`` →
    ``srrecnnT2w`` (each part after a separator capitalised); ``bspline`` stays ``bspline``."""
    parts = [part for part in re.split(r"[^A-Za-z0-9]+", method) if part]
    if not parts:
        raise ValueError(f"{method!r} gives no alphanumeric desc- label")
    return parts[0] + "".join(part[0].upper() + part[1:] for part in parts[1:])


def derivative_path(
    source: str | os.PathLike,
    *,
    desc: str | None,
    res: str | None = "hi",
    suffix: str | None = None,
    extension: str | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Relative derivative path that keeps every source entity and adds ``res``/``desc``.

    ``sub-01/ses-1/anat/sub-01_ses-1_acq-mprage_T1w.nii.gz`` →
    ``sub-01/ses-1/anat/sub-01_ses-1_acq-mprage_res-hi_desc-bspline_T1w.nii.gz``.
    Entities of ``extra`` that BIDS does not order (``from``, ``to``, ``mode`` of a
    transform) come after the source's, before ``res``/``desc``; ``desc=None`` adds none.
    Images are always written gzip-compressed, so a ``.nii`` source gives ``.nii.gz``: the
    name says what the file holds.
    """
    entities, source_suffix, source_ext = parse_entities(source)
    if source_ext == ".nii":
        source_ext = ".nii.gz"
    entities = {k: v for k, v in entities.items() if k not in ("res", "desc")}
    entities.update(extra or {})
    if res:
        entities["res"] = res
    if desc:
        entities["desc"] = desc
    trailing = [k for k in ("res", "desc") if k in entities]
    known = [k for k in ENTITY_ORDER if k in entities and k not in trailing]
    unknown = [k for k in entities if k not in ENTITY_ORDER]
    ordered = [f"{k}-{entities[k]}" for k in known + unknown + trailing]
    name = "_".join(ordered + [suffix or source_suffix]) + (
        source_ext if extension is None else extension
    )
    folder = Path(f"sub-{entities['sub']}")
    if "ses" in entities:
        folder /= f"ses-{entities['ses']}"
    return folder / "anat" / name


def dataset_relative(path: str | os.PathLike, bids_dir: str | os.PathLike) -> str:
    """``sub-01/anat/sub-01_T1w.nii.gz`` for a file inside ``bids_dir`` (ValueError outside).
    abspath, not resolve: a dataset of symlinks must not turn into their targets."""
    return Path(os.path.abspath(path)).relative_to(os.path.abspath(bids_dir)).as_posix()


def bids_uri(path: str | os.PathLike, bids_dir: str | os.PathLike, dataset: str = "raw") -> str:
    """``bids:raw:sub-01/anat/sub-01_T1w.nii.gz`` for a file inside ``bids_dir``."""
    return f"bids:{dataset}:{dataset_relative(path, bids_dir)}"


def reference_uri(path: str | os.PathLike, bids_dir: str | os.PathLike) -> str:
    """A file's BIDS URI when it lies inside ``bids_dir`` (:func:`bids_uri`), else its
    absolute path (a T2w reference given by a pattern outside the dataset)."""
    try:
        return bids_uri(path, bids_dir)
    except ValueError:
        return os.path.abspath(path)


def container_info() -> dict[str, str] | None:
    """Container type and tag when running inside Docker or Singularity/Apptainer."""
    if os.environ.get("SINGULARITY_CONTAINER") or os.environ.get("APPTAINER_CONTAINER"):
        return {
            "Type": "singularity",
            "Tag": os.environ.get("SINGULARITY_NAME") or os.environ.get("APPTAINER_NAME", ""),
        }
    if os.environ.get("BIDS_SR_CONTAINER_TAG"):  # set by our Dockerfile
        return {"Type": "docker", "Tag": os.environ["BIDS_SR_CONTAINER_TAG"]}
    return None


def dataset_description(bids_dir: Path) -> dict[str, Any]:
    """The derivatives' dataset_description.json content."""
    source_name = "raw"
    try:
        raw = json.loads((bids_dir / "dataset_description.json").read_text())
        source_name = raw.get("Name", source_name)
    except (OSError, ValueError):
        raw = {}
    generated = {"Name": "bids_sr", "Version": __version__, "CodeURL": __url__}
    container = container_info()
    if container:
        generated["Container"] = container
    source = {"URL": Path(bids_dir).resolve().as_uri()}
    if raw.get("DatasetDOI"):
        source["DOI"] = raw["DatasetDOI"]
    return {
        "Name": f"bids_sr super-resolution of {source_name}",
        "BIDSVersion": raw.get("BIDSVersion", "1.9.0"),
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": Path(bids_dir).resolve().as_uri()},
    }



DERIVATIVES_README = """# bids_sr derivatives

Super-resolved anatomical images written by bids_sr {version}. Each image keeps the source
file's entities and adds `res-hi` and `desc-<method>`; its JSON sidecar names the source
(`Sources`), the method, the scale factors, the input and output voxel sizes, the intensity
normalisation that was applied and undone, the device and the run time.
A T2w-guided method (`desc-srrecnnT2w`) also writes the rigid T2w → T1w registration it
used as `*_from-T2w_to-T1w_mode-image_xfm.txt` (ITK text; `antsApplyTransforms -i T2w -r T1w`
applies it); the sidecar names the T2w (`T2wReference`), the registration quality and, when
the T2w was missing or badly registered, the method that ran instead (`FallbackFrom`).
A FLAIR-guided method (`desc-srrecnnFlair`) does the same with `from-FLAIR` and
`FLAIRReference`. When the reference was used, `*_res-hi_desc-<method>GuidedMinusMono_T1w.nii.gz`
beside the guided image is that image minus its mono twin's (the same network without the
reference; T1w intensity units): what the reference changed. A self-supervised method
(`desc-selfsr`) writes its uncertainty map as `*_res-hi_desc-selfsrUncertainty_T1w.nii.gz`.
With `--combine-runs`, the runs of a session (e.g. an axial and a sagittal 2D T1w) are also
combined into `*_res-hi_desc-<method>Combined_T1w.nii.gz` (entities all runs share; sidecar:
`Sources` = the runs, `CombinedRuns` = per-run registration and data consistency).
`sub-<label>.html` is each participant's visual report. In evaluation mode (`--evaluate`)
each T1w gets `*_desc-evaluation_metrics.tsv` (+ `.json` describing the columns) instead of
images; the group level aggregates them into `group_desc-evaluation_metrics.*`.
`logs/` holds the run configuration of every run.
"""


def write_dataset_description(bids_dir: Path, output_dir: Path) -> Path:
    """Write (or refresh) the derivatives' dataset_description.json, README and .bidsignore.

    The description comes first and every file is written atomically: a run stopped in
    between leaves a folder that is a BIDS derivatives dataset, never a README without one."""
    description = write_json_atomic(dataset_description(bids_dir),
                                    output_dir / "dataset_description.json")  # fmt: skip
    readme = output_dir / "README.md"
    if not readme.exists():
        write_text_atomic(DERIVATIVES_README.format(version=__version__), readme)
    # reports and logs are not BIDS files: tell the validator (as fMRIPrep does)
    write_text_atomic("logs/\n*.html\ngroup_*\n*_xfm.txt\n*_desc-evaluation_metrics.*\n",
                      output_dir / ".bidsignore")  # fmt: skip
    return description


def resolution_field(voxel_size: Sequence[float], method: str, res: str = "hi") -> dict:
    """The REQUIRED ``Resolution`` sidecar field that the ``res-`` entity asks for."""
    sizes = [round(float(v), 3) for v in voxel_size]
    grid = f"{sizes[0]:g} mm isotropic" if len(set(sizes)) == 1 else "×".join(
        f"{v:g}" for v in sizes
    ) + " mm"
    return {res: f"super-resolved with {method} to {grid}"}


def _session_distance(a: str | None, b: str | None) -> float:
    """How far apart two session labels are: numeric difference when both are numbers."""
    if a == b:
        return 0.0
    if a is None or b is None:
        return 0.5  # a sessionless image is as near as any session
    try:
        return abs(float(a) - float(b))
    except ValueError:
        return 1.0 + sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def check_t2w_pattern(pattern: str) -> None:
    """ValueError unless every brace of a ``--t2w-reference`` pattern belongs to one of the two
    documented fields, ``{subject}`` and ``{session}`` (``{sub}``, ``{subject.__class__}``
    or an unbalanced brace are mistakes, and nothing else is ever substituted)."""
    rest = pattern
    for placeholder in T2W_PATTERN_FIELDS:
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest:
        raise ValueError(
            f"--t2w-reference {pattern}: a pattern may hold only {{subject}} and {{session}}"
        )


def fill_t2w_pattern(pattern: str, subject: str, session: str | None) -> str:
    """Substitute the two documented fields of a checked pattern (never ``str.format``)."""
    check_t2w_pattern(pattern)
    return pattern.replace("{subject}", subject).replace("{session}", session or "")


def reference_session(t1w_file: str, reference_file: str) -> str | None:
    """The session of ``reference_file`` when it is another one than ``t1w_file``'s (both
    labelled, and different), else None: a guide from another session may show lesions or
    anatomy that changed since, which the guided output would then carry."""
    theirs = parse_entities(str(reference_file))[0].get("ses")
    ours = parse_entities(str(t1w_file))[0].get("ses")
    return theirs if theirs is not None and ours is not None and theirs != ours else None


def select_reference(layout, t1w_file: str, suffix: str, mode: str = "auto",
                     same_session: bool = False) -> str | None:  # fmt: skip
    """The image of ``suffix`` (T2w, FLAIR) to guide one T1w: same session first, else the
    closest session (only the same session with ``same_session``), else none.

    ``mode`` is ``auto``, ``none``, or a path pattern with ``{subject}`` and ``{session}``
    placeholders (e.g. ``/refs/sub-{subject}_T2w.nii.gz``) for references outside the
    dataset; a pattern that names no existing file is an error (exit 66).
    """
    if mode == "none":
        return None
    entities, _, _ = parse_entities(t1w_file)
    subject, session = entities["sub"], entities.get("ses")
    if mode != "auto":
        path = Path(fill_t2w_pattern(mode, subject, session))
        if not path.exists():
            raise BIDSError(f"{path}: {suffix} reference given by --t2w-reference does not "
                            "exist", EXIT_MISSING)  # fmt: skip
        return str(path)
    candidates = query_images(layout, subject, suffix)
    if same_session:
        candidates = [c for c in candidates if parse_entities(c)[0].get("ses") == session]
    if not candidates:
        return None

    def rank(path: str) -> tuple[float, str]:
        return _session_distance(session, parse_entities(path)[0].get("ses")), path

    return min(candidates, key=rank)



# entities that tell runs of one contrast apart (--combine-runs combines across them only)
RUN_ENTITIES = ("acquisition", "run")


def group_runs(layout, t1w_by_subject: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """The T1w images of each participant and session that differ only in ``acq-``/``run-``,
    as groups of two or more paths (sorted; the first is the reference of the combination).

    Entities come from pybids (``layout.get_file``), so ``ce-``, ``rec-`` or ``part-`` keep
    images apart (a contrast-enhanced T1w is another contrast). A session whose T1w has no
    such partner gets a one-line warning: there is nothing to combine there.
    """
    groups: dict[tuple, list[str]] = {}
    for files in t1w_by_subject.values():
        for path in files:
            found = layout.get_file(path)
            entities = found.get_entities() if found is not None else {}
            key = tuple(sorted((k, str(v)) for k, v in entities.items()
                               if k not in RUN_ENTITIES and k != "extension"))  # fmt: skip
            groups.setdefault(key, []).append(path)
    combined = []
    for paths in groups.values():
        if len(paths) >= 2:
            combined.append(tuple(sorted(paths)))
        else:
            LOGGER.warning("%s: --combine-runs: the only T1w of its session (no other acq-/run-"
                           " of the same contrast); nothing to combine", paths[0])  # fmt: skip
    return combined


def combined_path(files: Sequence[str], desc: str) -> Path:
    """The derivative path of the combination of ``files`` (runs of one session): the
    entities they all share (``acq``/``run`` that differ are dropped), ``res-hi`` and
    ``desc``: ``sub-01/ses-1/anat/sub-01_ses-1_res-hi_desc-bsplineCombined_T1w.nii.gz``."""
    parsed = [parse_entities(path) for path in files]
    shared = {k: v for k, v in parsed[0][0].items() if all(p[0].get(k) == v for p in parsed)}
    stem = "_".join([*(f"{k}-{v}" for k, v in shared.items()), parsed[0][1]])
    return derivative_path(stem + parsed[0][2], desc=desc)
