"""Evaluation mode: degrade an HR image, super-resolve it with each method, score the result.

Part of the numerical core (never imports nipype or pybids). The CLI's ``--evaluate`` and
the benchmark script call :func:`evaluate_image` per HR T1w and write its rows with
:func:`write_metrics_tsv` (BIDS-style TSV + JSON sidecar describing every column).

Protocol (the same for every method, so scores are comparable):

1. ``hr`` is normalised with :func:`bids_sr.image.robust_normalisation` (background → 0,
   the 99.5th percentile of the head → 1) and cropped with
   :func:`bids_sr.degrade.crop_to_factor` so the LR grid maps back onto it exactly.
2. The LR image is simulated with :func:`bids_sr.degrade.degrade` (the training presets).
3. Every method (the interpolation baselines nearest, linear and bspline always, then the
   requested ones) super-resolves the LR image through :func:`bids_sr.superresolve.super_resolve`.
4. :func:`bids_sr.metrics.compute_metrics` scores each result against the normalised HR truth
   with ``data_range = 1.0`` (the normalised robust range of the truth), inside a brain mask
   (given, e.g. a BIDS mask derivative, or :func:`bids_sr.masks.brain_mask` of the truth) and
   on the whole volume.
5. Downstream agreement: with ``antspyx`` installed, the truth, cubic B-spline and every
   requested method's result are segmented into CSF/GM/WM inside that brain mask with the
   same ANTs Atropos settings (:mod:`bids_sr.segmentation`), and each result's segmentation
   is compared with the truth's (:data:`TISSUE_COLUMNS`). Without ``antspyx`` those columns
   are n/a and the log says once how to get them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_sr.acquisition import Acquisition, simulated_acquisition
from bids_sr.degrade import crop_to_factor, degrade, lr_shape_for
from bids_sr.fileio import write_text_atomic
from bids_sr.image import as_factors, robust_normalisation, upsampled_affine, voxel_sizes
from bids_sr.masks import brain_mask
from bids_sr.metrics import compute_metrics
from bids_sr.segmentation import (
    INSTALL_HINT,
    atropos_available,
    timed_segmentation,
    tissue_agreement,
)
from bids_sr.superresolve import super_resolve

LOGGER = logging.getLogger(__name__)

BASELINES = ("nearest", "linear", "bspline")
DATA_RANGE = 1.0  # the truth is robust-normalised: its bright-tissue range is [0, 1]
METRIC_COLUMNS = ("psnr_brain", "ssim_brain", "psnr_whole", "ssim_whole", "gradient_error_brain")
#: downstream agreement with the truth's tissue segmentation (see bids_sr.segmentation)
TISSUE_COLUMNS = ("dice_gm", "dice_wm", "dice_csf", "gm_volume_error")
#: the interpolation baseline whose result is segmented too (nearest/linear are not: cost)
SEGMENTED_BASELINE = "bspline"
_hint_logged = False


def format_scale(factors: Sequence[float]) -> str:
    """``"2"`` for isotropic factors, ``"1x1x4"`` otherwise (integers without decimals)."""
    text = [f"{f:g}" for f in factors]
    return text[0] if len(set(text)) == 1 else "x".join(text)


def is_segmented(method: str) -> bool:
    """Whether the evaluation segments ``method``'s result (bspline and every SR method)."""
    return method not in BASELINES or method == SEGMENTED_BASELINE


def evaluation_methods(methods: Iterable[str]) -> list[str]:
    """The baselines first, then the requested methods, each once, in order."""
    ordered: list[str] = []
    for method in (*BASELINES, *methods):
        if method not in ordered:
            ordered.append(method)
    return ordered


def _crop_offset(shape: Sequence[int], factors: Sequence[float]) -> list[int]:
    """Start index of :func:`crop_to_factor`'s centred crop along each axis."""
    cropped = crop_to_factor(np.empty(tuple(shape), dtype=np.bool_), factors).shape
    return [(n - t) // 2 for n, t in zip(shape, cropped, strict=True)]


def evaluate_image(
    hr: np.ndarray,
    hr_affine: np.ndarray,
    *,
    factors: float | Sequence[float],
    degradation: str,
    methods: Sequence[str],
    mask: np.ndarray | None = None,
    weights: Mapping[str, str] | None = None,
    reference: np.ndarray | None = None,
    device: str = "auto",
    source: str | None = None,
    arrays: dict[str, Any] | None = None,
    on_error: str = "raise",
    acquisition: Acquisition | None = None,
    data_consistency: bool = True,
    auto_choice: str | None = None,
    model_dir: str | None = None,
    tissues: bool = False,
) -> list[dict[str, Any]]:
    """Score each method (plus the baselines) on the simulated LR version of ``hr``.

    Returns one row per method: ``source``, ``method``, ``degradation``, ``scale``, the
    columns of :data:`METRIC_COLUMNS`, ``runtime_s`` and ``device`` (see
    :func:`evaluation_columns`). ``weights`` maps a method to a weights file; ``reference``
    is a T2w on the HR grid of ``hr`` (for guided methods), normalised the same way.

    Pass a dict as ``arrays`` to keep the images for the report: it receives ``truth``
    (normalised, cropped HR), ``input`` (the LR image), ``mask``, ``hr_affine`` (of the
    cropped grid), ``lr_affine``, ``sr`` (method → HR result), ``reference`` (the
    normalised, cropped reference, or None) and ``acquisition`` (the simulated scan). With
    ``on_error="record"`` a method that fails gets a row with empty metrics and an ``error``
    message instead of stopping the evaluation (the benchmark uses this while some methods
    are unavailable).

    ``acquisition`` sets the simulated 2D scan of the ``slice`` degradation (its spacing is
    the LR voxel size in mm; see :func:`bids_sr.acquisition.simulated_acquisition`). Every
    method then runs as a normal run would: with ``data_consistency`` its result is
    corrected through the same acquisition model (an isotropic voxel model for the other
    presets), and the row's ``data_consistency_psnr`` says how well it matched the input.
    ``auto_choice``: the method ``auto`` picks for this simulated input; a row ``auto``
    repeats its scores with ``auto_choice`` naming it. ``model_dir``: where a
    self-supervised method keeps its per-scan models (a second evaluation reuses them).
    ``tissues``: add the downstream-agreement columns (:data:`TISSUE_COLUMNS` and
    ``segmentation_s``, see :func:`add_tissue_agreement`) for bspline and the requested
    methods; they stay empty without ``antspyx``. Off by default: ``--evaluate`` turns it
    on; the benchmarks and card validations that only need PSNR/SSIM skip its cost.
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    factors = as_factors(factors)
    hr = np.asarray(hr, dtype=np.float32)
    if hr.ndim != 3:
        raise ValueError(f"evaluate_image needs a 3D image, got shape {hr.shape}")
    if min(lr_shape_for(hr.shape, factors)) < 2:
        raise ValueError(f"image of shape {hr.shape} is too small for factors {factors}")
    norm = robust_normalisation(hr)
    truth = crop_to_factor(norm.apply(hr), factors)
    offset = _crop_offset(hr.shape, factors)
    shift = np.eye(4)
    shift[:3, 3] = offset
    crop_affine = np.asarray(hr_affine, dtype=float) @ shift
    if mask is None:
        mask = brain_mask(truth, voxel_sizes(crop_affine))
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != hr.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {hr.shape}")
        mask = crop_to_factor(mask, factors)
    guide = None
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape != hr.shape:
            raise ValueError(f"reference shape {reference.shape} differs from {hr.shape}")
        guide = crop_to_factor(robust_normalisation(reference).apply(reference), factors)
    hr_spacing = voxel_sizes(crop_affine)
    lr_spacing = tuple(h * f for h, f in zip(hr_spacing, factors, strict=True))
    if degradation != "slice":
        if acquisition is not None:
            raise ValueError("an acquisition (slice parameters) needs the 'slice' degradation")
        model = Acquisition(spacing=lr_spacing)
    else:
        model = acquisition or simulated_acquisition(hr_spacing, factors)
    lr = degrade(truth, factors, degradation, acquisition=model if degradation == "slice" else None)
    weights = dict(weights or {})
    scale = format_scale(factors)
    if auto_choice is not None:
        methods = [*methods, auto_choice]

    rows: list[dict[str, Any]] = []
    results: dict[str, np.ndarray] = {}
    for method in evaluation_methods(methods):
        row: dict[str, Any] = {
            "source": source,
            "method": method,
            "degradation": degradation,
            "scale": scale,
        }
        try:
            sr, report = super_resolve(
                lr, factors, method, weights=weights.get(method), reference=guide, device=device,
                acquisition=model, data_consistency=data_consistency, model_dir=model_dir,
            )
        except Exception as exc:
            if on_error == "raise":
                raise
            row.update({name: None for name in METRIC_COLUMNS})
            row.update(runtime_s=None, device=None, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            continue
        row.update(compute_metrics(sr, truth, mask=mask, data_range=DATA_RANGE))
        row.update(runtime_s=float(report["runtime_s"]), device=str(report.get("device", "")))
        row["data_consistency_psnr"] = report.get("data_consistency_psnr")
        # a per-scan method's learning, its precision (bids_sr.precision), its starting
        # point, and a guided one's guide check (not in the TSV)
        for key in ("learn_s", "model_reused", "guide_check", "precision", "prior_sha256"):
            if key in report:
                row[key] = report[key]
        rows.append(row)
        if method == auto_choice:
            rows.append({**row, "method": "auto", "auto_choice": auto_choice})
        if arrays is not None or (tissues and is_segmented(method)):
            results[method] = sr
    truth_labels = None
    if tissues:
        try:
            truth_labels = add_tissue_agreement(rows, truth, mask, hr_spacing, results)
        except Exception as exc:  # a downstream score: its failure must not sink the evaluation
            LOGGER.warning("tissue segmentation failed (%s: %s): its columns are n/a",
                           type(exc).__name__, exc)  # fmt: skip
            for row in rows:
                for name in (*TISSUE_COLUMNS, "segmentation_s"):
                    row[name] = None
    if arrays is not None:
        arrays.update(
            truth=truth,
            input=lr,
            mask=mask,
            hr_affine=crop_affine,
            lr_affine=crop_affine @ np.linalg.inv(upsampled_affine(np.eye(4), factors)),
            sr=results,
            reference=guide,
            acquisition=model,
            truth_labels=truth_labels,
        )
    return rows


def add_tissue_agreement(
    rows: Sequence[dict[str, Any]],
    truth: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float],
    results: Mapping[str, np.ndarray],
) -> np.ndarray | None:
    """Fill each row's :data:`TISSUE_COLUMNS` and ``segmentation_s``, in place.

    Segments ``truth`` and the result of bspline and of every non-interpolation method in
    ``results`` (method → image on the truth's grid) inside ``mask`` with the same Atropos
    settings, and scores each against the truth's segmentation; an ``auto`` row gets the
    scores of the method it chose. Rows of nearest and linear (and of failed methods) stay
    None. Returns the truth's label map, or None without ``antspyx`` (logged once, with how
    to install it). ``segmentation_cpu_s`` (not in the TSV) is the CPU time of each.
    """
    global _hint_logged
    for row in rows:
        for name in (*TISSUE_COLUMNS, "segmentation_s"):
            row.setdefault(name, None)
    if not atropos_available():
        if not _hint_logged:
            LOGGER.warning(INSTALL_HINT)
            _hint_logged = True
        return None
    truth_labels, seconds, cpu = timed_segmentation(truth, mask, spacing)
    LOGGER.info("tissue segmentation of the truth: %.1f s (CPU %.1f s)", seconds, cpu)
    scores: dict[str, dict[str, Any]] = {}
    for method, image in results.items():
        if not is_segmented(method):
            continue
        labels, seconds, cpu = timed_segmentation(image, mask, spacing)
        scores[method] = {**tissue_agreement(truth_labels, labels), "segmentation_s": seconds,
                          "segmentation_cpu_s": cpu}  # fmt: skip
    for row in rows:
        method = row.get("auto_choice") if row["method"] == "auto" else row["method"]
        if method in scores:
            row.update(scores[method])
    return truth_labels


def evaluation_columns() -> dict[str, dict[str, str]]:
    """The TSV's columns, in order, with BIDS sidecar fields LongName, Description, Units."""
    mask_note = (
        "inside the brain mask (a BIDS brain-mask derivative when one exists, else "
        "bids_sr.masks.brain_mask of the HR image: Otsu threshold, erosion, largest "
        "component, reconstruction, hole filling)"
    )
    range_note = (
        "with data range 1.0: the HR image is robust-normalised before degradation "
        "(background to 0, 99.5th percentile of the head to 1)"
    )
    ssim_note = (
        "3D SSIM (Wang et al. 2004; Gaussian window sigma 1.5 voxels, K1 0.01, K2 0.03) "
        + range_note
    )
    return {
        "source": {
            "LongName": "Source image",
            "Description": "The high-resolution image that was degraded and super-resolved.",
            "Units": "n/a",
        },
        "method": {
            "LongName": "Super-resolution method",
            "Description": "bids_sr method name; nearest, linear and bspline are the "
            "interpolation baselines.",
            "Units": "n/a",
        },
        "degradation": {
            "LongName": "Degradation preset",
            "Description": "bids_sr.degrade preset that simulated the low-resolution image "
            "(gaussian, decimate, kspace or slice).",
            "Units": "n/a",
        },
        "scale": {
            "LongName": "Scale factor",
            "Description": "Upsampling factor, one number if isotropic, else per axis "
            "(i x j x k, array axes).",
            "Units": "n/a",
        },
        "psnr_brain": {
            "LongName": "PSNR in the brain",
            "Description": f"Peak signal-to-noise ratio {mask_note}, {range_note}.",
            "Units": "dB",
        },
        "ssim_brain": {
            "LongName": "SSIM in the brain",
            "Description": f"Mean of the {ssim_note}, averaged {mask_note}.",
            "Units": "n/a",
        },
        "psnr_whole": {
            "LongName": "PSNR of the whole volume",
            "Description": f"Peak signal-to-noise ratio over every voxel, {range_note}.",
            "Units": "dB",
        },
        "ssim_whole": {
            "LongName": "SSIM of the whole volume",
            "Description": f"Mean of the {ssim_note}, averaged over every voxel.",
            "Units": "n/a",
        },
        "gradient_error_brain": {
            "LongName": "Gradient-magnitude error in the brain",
            "Description": "High-frequency error: relative L2 error of the gradient magnitude "
            "(central differences), sqrt(sum((|grad SR| - |grad HR|)^2) / sum(|grad HR|^2)), "
            f"{mask_note}. 0 is perfect, 1 means all edge energy is wrong; lower is better.",
            "Units": "n/a",
        },
        "runtime_s": {
            "LongName": "Run time",
            "Description": "Wall-clock time of the super-resolution step alone.",
            "Units": "s",
        },
        "device": {
            "LongName": "Device",
            "Description": "Where the method ran (cpu, cuda:0, ...).",
            "Units": "n/a",
        },
        "data_consistency_psnr": {
            "LongName": "Data consistency PSNR",
            "Description": "PSNR of the result projected through the acquisition model "
            "(bids_sr.acquisition) against the simulated input, inside the head, after the "
            "data-consistency correction when it ran.",
            "Units": "dB",
        },
        **tissue_columns(mask_note),
        "auto_choice": {
            "LongName": "Method auto chose",
            "Description": "On the row whose method is auto: the method that --method auto "
            "picks for this simulated input (its scores are that method's).",
            "Units": "n/a",
        },
    }


def tissue_columns(mask_note: str) -> dict[str, dict[str, str]]:
    """Sidecar entries of the downstream-agreement columns (:data:`TISSUE_COLUMNS` and
    ``segmentation_s``)."""
    how = (
        "ANTs Atropos (antspyx; k-means initialisation, 3 classes, MRF 0.2 over 1 voxel, 5 "
        f"iterations) of the truth and of this result, with the same settings, {mask_note}, "
        "on the truth's grid; the classes ordered by T1w intensity: CSF, GM, WM. Only "
        "bspline and the super-resolution methods are segmented; n/a for nearest and linear "
        "and when antspyx is not installed (pip install 'bids_sr[seg]')"
    )
    tissue_names = {"gm": "grey matter", "wm": "white matter", "csf": "cerebrospinal fluid"}
    columns = {
        f"dice_{key}": {
            "LongName": f"Dice of {name}",
            "Description": f"Dice overlap 2|A and B| / (|A| + |B|) of the {name} label of this "
            f"result's tissue segmentation with the truth's: {how}. 1 is perfect.",
            "Units": "n/a",
        }
        for key, name in tissue_names.items()
    }
    columns["gm_volume_error"] = {
        "LongName": "Grey-matter volume error",
        "Description": "Signed grey-matter volume of this result's segmentation minus the "
        f"truth's, in percent of the truth's grey-matter volume: {how}. 0 is perfect.",
        "Units": "%",
    }
    columns["segmentation_s"] = {
        "LongName": "Segmentation time",
        "Description": "Wall-clock time of the Atropos segmentation of this result.",
        "Units": "s",
    }
    return columns


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    text = str(value)
    return "n/a" if text == "" else text.replace("\t", " ").replace("\n", " ")



def sidecar_path(tsv_path: str | os.PathLike) -> Path:
    """The JSON sidecar beside a ``.tsv`` file."""
    path = Path(tsv_path)
    if path.suffix != ".tsv":
        raise ValueError(f"{path}: a metrics table must have the .tsv extension")
    return path.with_suffix(".json")


def write_tsv(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    columns: Mapping[str, Mapping[str, str]],
) -> Path:
    """Write ``rows`` as a BIDS-style TSV (``n/a`` for missing) and its JSON sidecar, atomically.

    Only the keys named in ``columns`` are written, in that order; the sidecar is
    ``columns`` itself.
    """
    path = Path(path)
    sidecar = sidecar_path(path)
    names = list(columns)
    lines = ["\t".join(names)]
    lines += ["\t".join(_format(row.get(name)) for name in names) for row in rows]
    write_text_atomic("\n".join(lines) + "\n", path)
    write_text_atomic(json.dumps(dict(columns), indent=2) + "\n", sidecar)
    return path


def write_metrics_tsv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write evaluation rows to ``path`` (e.g. ``sub-01_desc-evaluation_metrics.tsv``)."""
    return write_tsv(rows, path, evaluation_columns())


def _parse(value: str) -> Any:
    if value == "n/a":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def read_metrics_tsv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a metrics TSV back: numbers as float, ``n/a`` as None, the rest as text.

    ``source``, ``method``, ``degradation``, ``scale`` and ``device`` always stay text.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read metrics table ({exc})") from exc
    if not lines:
        raise ValueError(f"{path}: metrics table is empty")
    header = lines[0].split("\t")
    if "method" not in header:
        raise ValueError(f"{path}: metrics table has no 'method' column")
    text_columns = {"source", "method", "degradation", "scale", "device", "auto_choice"}
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ValueError(
                f"{path}: line {number} has {len(cells)} cells, expected {len(header)}"
            )
        rows.append(
            {
                name: (None if cell == "n/a" else cell) if name in text_columns else _parse(cell)
                for name, cell in zip(header, cells, strict=True)
            }
        )
    return rows
