"""Checks run before anything is written: every problem the run would otherwise meet
halfway (a half-written dataset, then a crash) is found here, reported in one line with its
BIDS Apps exit code.

:func:`check_sidecars` (raw JSON sidecars that are not JSON), :func:`check_output_names`
(two inputs that would write one derivative), :func:`check_weights_files` (tampered,
oversized, NaN or mismatched weights), :func:`check_output_dir` (another pipeline's
derivatives folder).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sr.__about__ import __version__
from bids_sr.bids import derivative_path, desc_label
from bids_sr.config import Config
from bids_sr.errors import EXIT_CANT_CREATE, EXIT_DATA, EXIT_USAGE, BIDSError
from bids_sr.fileio import read_sidecar
from bids_sr.image import available_memory, hr_shape
from bids_sr.planning.inputs import t1w_factors
from bids_sr.planning.plan import MethodPlan
from bids_sr.precision import requested
from bids_sr.superresolve import INTERPOLATION_METHODS, NETWORK_METHODS, default_weights


def check_precision() -> None:
    """A bad ``BIDS_SR_CPU_PRECISION`` stops the run before anything runs (64, usage)."""
    try:
        requested()
    except ValueError as exc:
        raise BIDSError(f"{exc} (the environment variable choosing the CPU precision of the "
                        "selfsr networks)", EXIT_USAGE) from exc  # fmt: skip


def check_sidecars(images: Iterable[str]) -> None:
    """BIDSError (65) for a sidecar beside an input image that is not a JSON object: its
    metadata would otherwise be dropped without a word."""
    for image in dict.fromkeys(images):
        try:
            read_sidecar(image, strict=True)
        except ValueError as exc:
            raise BIDSError(str(exc), EXIT_DATA) from exc


def _output_stem(path: Path) -> str:
    return path.as_posix().split(".")[0] if "." in path.name else path.as_posix()


def check_output_names(config: Config, plan: MethodPlan) -> None:
    """BIDSError (65) when two inputs would write the same derivative (whatever the
    extension): e.g. ``sub-01_T1w.nii`` beside ``sub-01_T1w.nii.gz``, a file whose name lacks
    its folder's session, or a derivatives folder indexed as raw data."""
    seen: dict[str, str] = {}
    for t1w_file, methods in plan.methods.items():
        if config.workflow.evaluate:
            names = [derivative_path(t1w_file, desc="evaluation", res=None, suffix="metrics")]
        else:
            names = [derivative_path(t1w_file, desc=desc_label(m)) for m in methods]
        for name in names:
            key = _output_stem(name)
            other = seen.setdefault(key, t1w_file)
            if other != t1w_file:
                raise BIDSError(
                    f"{t1w_file}: would write the same derivative as {other} ({key}.*): "
                    "remove or rename one of them",
                    EXIT_DATA,
                )


def _weights_to_check(config: Config, plan: MethodPlan) -> dict[Path, tuple[str, tuple]]:
    """Each weights file the run will load → (method, factors) it is loaded for."""
    wanted: dict[Path, tuple[str, tuple]] = {}
    given = config.workflow.weights
    for t1w_file, methods in plan.methods.items():
        factors = t1w_factors(config, t1w_file)
        runs = [m for m in methods if m not in INTERPOLATION_METHODS]
        for method in runs:
            chosen = Path(given) if given is not None else plan.weights_for(t1w_file, method)
            if chosen is not None:  # --weights, or the file auto's evidence validated
                wanted.setdefault(chosen, (method, factors))
                continue
            try:
                wanted.setdefault(Path(default_weights(method, factors)), (method, factors))
            except FileNotFoundError:
                continue  # the plan already stopped or skipped methods without weights
        fallbacks = {f.method for f in (plan.fallback(t1w_file, m) for m in runs) if f}
        for fallback in sorted(fallbacks - set(INTERPOLATION_METHODS)):
            if any(m != fallback for m in runs):
                try:
                    path = Path(default_weights(fallback, factors))
                except FileNotFoundError:
                    continue
                wanted.setdefault(path, (fallback, factors))
    return wanted


def check_weights_files(config: Config, plan: MethodPlan) -> None:
    """BIDSError (65) for any weights file the run would load that fails the checks of
    :func:`bids_sr.models.weights.check_weights` (checksum against its card, tensor names
    and shapes against the architecture, NaN/Inf) or, for gradfilter, of its loader."""
    for path, (method, factors) in _weights_to_check(config, plan).items():
        try:
            if method in NETWORK_METHODS:
                from bids_sr.models.weights import check_weights  # late: torch, for networks only

                check_weights(path, method=method, factors=factors, check_values=True)
            else:
                from bids_sr.gradfilter.io import load_filters  # late: as above

                load_filters(path)
        except (ValueError, OSError) as exc:
            raise BIDSError(str(exc), EXIT_DATA) from exc


def check_output_memory(config: Config, t1w_files: Iterable[str],
                        available: int | None = None) -> None:  # fmt: skip
    """BIDSError (65) when one T1w's super-resolved image alone (float32 on the output grid)
    would not fit in the memory available now: the run could only fail, after allocating."""

    available = available_memory() if available is None else available
    if available is None:
        return
    for t1w_file in t1w_files:
        shape = hr_shape(nib.load(t1w_file).shape[:3], t1w_factors(config, t1w_file))
        needed = float(np.prod(shape, dtype=np.float64)) * 4
        if needed > available:
            raise BIDSError(
                f"{t1w_file}: the output grid {shape} alone needs {needed / 2**30:.1f} GiB of "
                f"memory; {available / 2**30:.1f} GiB is available (lower --scale)",
                EXIT_DATA,
            )


def _generator_name(description: dict) -> str:
    generated = description.get("GeneratedBy") or [{}]
    first = generated[0] if isinstance(generated, list) and generated else {}
    return str(first.get("Name", "") if isinstance(first, dict) else "")


def _generator_version(description: dict) -> str:
    generated = description.get("GeneratedBy") or [{}]
    first = generated[0] if isinstance(generated, list) and generated else {}
    return str(first.get("Version", "") if isinstance(first, dict) else "")


def check_output_dir(output_dir: Path) -> None:
    """BIDSError (73) when ``output_dir`` already holds another pipeline's derivatives
    (e.g. fMRIPrep's): its dataset_description.json and reports must not be overwritten;
    or another bids_sr version's: rewriting ``GeneratedBy`` would relabel its outputs."""
    description = Path(output_dir) / "dataset_description.json"
    if not description.exists():
        return
    try:
        data = json.loads(description.read_text())
    except (OSError, ValueError) as exc:
        raise BIDSError(f"{description}: unreadable; not overwriting another dataset ({exc})",
                        EXIT_CANT_CREATE) from exc  # fmt: skip
    name = _generator_name(data) if isinstance(data, dict) else ""
    if name != "bids_sr":
        raise BIDSError(
            f"{output_dir}: holds another dataset ({name or 'not a bids_sr derivative'}); "
            "choose an empty folder or a bids_sr one",
            EXIT_CANT_CREATE,
        )
    version = _generator_version(data)
    if version != __version__:  # GeneratedBy would be rewritten over the old version's files
        raise BIDSError(
            f"{output_dir}: holds the derivatives of bids_sr {version or '(no version)'}, and "
            f"this is {__version__}: its files would be relabelled as this version's; choose "
            "a new output folder (or remove this one)",
            EXIT_CANT_CREATE,
        )



def grid_difference(mask_file: str, image_file: str) -> str | None:
    """How a brain mask's voxel grid differs from its image's (shape, voxel sizes; the
    affine to 0.01 mm), or None when they match. The evaluation resamples such a mask by
    its world coordinates, which is right only if both headers are: the user is told."""
    mask, image = nib.load(mask_file), nib.load(image_file)
    if mask.shape[:3] == image.shape[:3] and np.allclose(mask.affine, image.affine, atol=1e-2):
        return None
    return (f"{mask.shape[:3]} voxels of {_sizes(mask)} against the T1w's {image.shape[:3]} of "
            f"{_sizes(image)}")  # fmt: skip


def _sizes(img) -> str:
    return "×".join(f"{float(z):g}" for z in img.header.get_zooms()[:3]) + " mm"
