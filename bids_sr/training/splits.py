"""Subject splits of the many-subject pools in ../shared/data, made once by a fixed rule.

The IXI pool (``ixi_t1_2mm``: 110 T1w subjects of one site at 2 mm) is split by subject into
a pretraining part and a validation part. The rule needs no random state and no list kept
by hand: subjects are ordered by the SHA-256 of their IXI identifier (``IXI013``) and the
first :data:`IXI_VALIDATION_COUNT` validate, the rest may pretrain. A subject added to the
pool later lands on one side without moving the others. Model cards name the validation
subjects they were scored on; tests check that no prior's training subjects are among them.

Part of the numerical core (file names only, no image is read).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

#: How many IXI subjects validate (the rest, about 80, may pretrain).
IXI_VALIDATION_COUNT = 30
#: The pool's folder under ../shared/data and its file pattern (``IXI013-HH-1212_T1.nii.gz``).
IXI_FOLDER = "ixi_t1_2mm"
_IXI_NAME = re.compile(r"^(IXI\d{3})-[A-Za-z]+-\d+_T1\.nii(\.gz)?$")


def ixi_subject(file_name: str) -> str | None:
    """The IXI identifier of a pool file name (``IXI013``), or None for another file."""
    match = _IXI_NAME.match(file_name)
    return match.group(1) if match else None


def _order(subject: str) -> str:
    return hashlib.sha256(subject.encode("ascii")).hexdigest()


def split_subjects(subjects: Iterable[str], n_validation: int = IXI_VALIDATION_COUNT
                   ) -> tuple[list[str], list[str]]:  # fmt: skip
    """``(pretraining, validation)``: each sorted by name, disjoint, together ``subjects``."""
    unique = sorted(set(subjects))
    ranked = sorted(unique, key=_order)
    validation = sorted(ranked[:n_validation])
    pretraining = sorted(ranked[n_validation:])
    return pretraining, validation


def ixi_files(data_dir: str | Path) -> dict[str, Path]:
    """The IXI pool under ``data_dir`` (``../shared/data``): identifier → file."""
    folder = Path(data_dir) / IXI_FOLDER
    found = {}
    for path in sorted(folder.glob("IXI*_T1.nii*")):
        subject = ixi_subject(path.name)
        if subject is not None:
            found[subject] = path
    return found


def ixi_split(data_dir: str | Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The IXI pool split into ``(pretraining, validation)``, identifier → file."""
    files = ixi_files(data_dir)
    pretraining, validation = split_subjects(files)
    return ({s: files[s] for s in pretraining}, {s: files[s] for s in validation})
