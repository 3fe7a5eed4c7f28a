"""The per-subject HTML report: what super-resolution did to each image, and how it was made.

It opens with what a reader needs to trust each output (:mod:`bids_sr.reports.trust`: the
method, why, its validated gain, the per-scan self-check, the uncertainty map, what data
consistency guarantees). Then, for each output (an *entry*) the report shows orthogonal
slices through the centre of the
input (nearest-upsampled onto the output grid), the super-resolved result, for a guided
output the reference and the difference guided − mono (what the reference contributed, with
one sentence of numbers), and, in evaluation mode, the HR truth and the error map, with a
zoomed crop of the cortex at the top of the brain; the registration overlay when a reference
(T2w or FLAIR, named by the sidecar: :func:`reference_suffix`) guided the method; the
metrics rows when there are any; and the sidecar's provenance (method, weights checksum,
device, run time, version). Figures:
:mod:`bids_sr.reports.figures` (matplotlib; why there).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_sr.evaluation import TISSUE_COLUMNS
from bids_sr.planning.references import GUIDE_SUFFIXES
from bids_sr.reports import html
from bids_sr.reports.figures import (
    Layer,
    comparison_png,
    display_grid,
    png_data_uri,
    registration_overlay_png,
)
from bids_sr.reports.trust import trust_section
from bids_sr.segmentation import INSTALL_HINT

# provenance fields shown first, in this order, when the sidecar has them (case-insensitive)
PROVENANCE_FIRST = (
    "Method",
    "RequestedMethod",
    "FallbackFrom",
    "FallbackReason",
    "MethodChoice",
    "MethodWarning",
    "DataConsistencyPSNR",
    "DataConsistencyPSNRBefore",
    "AcquisitionModel",
    "ReferenceSuffix",
    "T2wReference",
    "FLAIRReference",
    "RegistrationQualityNMI",
    "RegistrationUsable",
    "GuidedMinusMono",
    "ScaleFactor",
    "Resolution",
    "WeightsChecksum",
    "WeightsSHA256",
    "Weights",
    "Device",
    "RunTime",
    "SoftwareVersion",
    "Version",
    "GeneratedBy",
    "Sources",
    "Degradation",
    "IntensityNormalisation",
)
METRIC_HEADER = (
    "method",
    "degradation",
    "scale",
    "psnr_brain",
    "ssim_brain",
    "psnr_whole",
    "ssim_whole",
    "gradient_error_brain",
    "runtime_s",
)


def _load(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read image for the report ({exc})") from exc
    data = np.squeeze(data)
    if data.ndim != 3:
        raise ValueError(f"{path}: the report needs a 3D image, got shape {data.shape}")
    return data, np.asarray(img.affine, dtype=float)


def _on_grid(
    data: np.ndarray, affine: np.ndarray, shape: Sequence[int], target_affine: np.ndarray
) -> np.ndarray:
    """``data`` resampled (linear) onto the grid ``(shape, target_affine)``; as is if equal."""
    if tuple(data.shape) == tuple(shape) and np.allclose(affine, target_affine, atol=1e-4):
        return data
    mapping = np.linalg.inv(affine) @ target_affine
    return ndimage.affine_transform(
        data, mapping[:3, :3], offset=mapping[:3, 3], output_shape=tuple(shape), order=1
    )


def provenance(sidecar: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar's fields, the provenance ones first (see PROVENANCE_FIRST), then the rest."""
    lower = {key.lower(): key for key in sidecar}
    ordered = {lower[k.lower()]: sidecar[lower[k.lower()]] for k in PROVENANCE_FIRST if k.lower()
               in lower}  # fmt: skip
    ordered.update({key: value for key, value in sidecar.items() if key not in ordered})
    return ordered


def reference_suffix(sidecar: Mapping[str, Any]) -> str:
    """The contrast of the reference that guided an output: the sidecar's
    ``ReferenceSuffix``, else the suffix of its ``<suffix>Reference`` field (``T2wReference``,
    ``FLAIRReference``), else ``T2w`` (sidecars written before FLAIR could guide)."""
    if sidecar.get("ReferenceSuffix"):
        return str(sidecar["ReferenceSuffix"])
    return next((s for s in GUIDE_SUFFIXES if f"{s}Reference" in sidecar), "T2w")


COMBINED_HEADER = ("run", "slice axis", "thickness (mm)", "registration (° / mm)", "NMI",
                   "DC average (dB)", "DC combined (dB)", "left out")  # fmt: skip


def combined_runs_section(sidecar: Mapping[str, Any]) -> str:
    """The runs a ``--combine-runs`` output was reconstructed from, one row each: how each
    was registered to the reference and how well the simple average and the combination
    reproduce what it acquired (DataConsistencyPSNR)."""
    rows = []
    for run in sidecar.get("CombinedRuns") or []:
        moved = "reference" if run.get("Reference") else (
            f"{run.get('RegistrationRotationDegrees')} / {run.get('RegistrationTranslationMM')}")
        rows.append([run.get("Run"), run.get("InputSliceAxis"), run.get("InputSliceThickness"),
                     moved, run.get("RegistrationQualityNMI"),
                     run.get("DataConsistencyPSNRAverage"), run.get("DataConsistencyPSNR"),
                     run.get("Excluded", "")])  # fmt: skip
    return "\n".join([
        "<h3>Combined runs</h3>",
        f'<p class="note">{html.escape(str(sidecar.get("CombinationMethod", "")))}; '
        f"{sidecar.get('CombinationIterations')} rounds, on the grid of "
        f"{html.escape(str(sidecar.get('CombinationReference')))}'s output. DC: how well "
        "the image reproduces each acquired run.</p>",
        html.table(COMBINED_HEADER, rows),
    ])  # fmt: skip


def guided_sentence(sidecar: Mapping[str, Any]) -> str:
    """What the reference contributed (the sidecar's ``GuidedMinusMono``), in one sentence."""
    numbers = sidecar["GuidedMinusMono"]
    twin = numbers.get("MonoModel", "the mono model")
    if numbers.get("Problem"):
        return f"No guided − mono comparison: {numbers['Problem']}."
    return (f"What the reference contributed: inside the brain the guided output differs from "
            f"its mono twin {twin} (same input, factors and data consistency) by "
            f"{numbers['MeanAbsDifferencePercent']:.2f}% of the T1w's brain intensity range "
            f"on average (mean |guided − mono| {numbers['MeanAbsDifference']:.4g}, 99.9th "
            f"percentile {numbers['MaxAbsDifference']:.4g}, range "
            f"{numbers['IntensityRange']:.4g}); PSNR of guided against mono "
            f"{numbers['PSNR']} dB. Row \"guided − mono\": orange where the guide made the "
            "T1w brighter, blue where darker, black where it changed nothing (colour bar: "
            "T1w intensity units).")  # fmt: skip


def tissue_section(metrics: Sequence[Mapping[str, Any]]) -> str:
    """The downstream-agreement table (Dice per tissue, GM volume error, segmentation time)
    of the segmented methods, or a note saying how to get it when no row has it."""
    rows = [row for row in metrics if row.get("dice_gm") is not None]
    if not rows:
        return f'<p class="note">No tissue segmentation: {html.escape(INSTALL_HINT)}.</p>'
    header = ("method", *TISSUE_COLUMNS, "segmentation_s")
    return "\n".join([
        "<h3>Tissue segmentation agreement</h3>",
        html.table(header, ([row.get(k) for k in header] for row in rows)),
        '<p class="note">The truth and each result segmented into CSF, GM and WM by ANTs '
        "Atropos (k-means, 3 classes, same settings) inside the brain mask; Dice of each "
        "tissue against the truth's segmentation (1 is perfect) and the GM volume error in % "
        "of the truth's GM volume (0 is perfect); segmentation_s: Atropos time per image.</p>",
    ])  # fmt: skip


def entry_section(entry: Mapping[str, Any]) -> str:
    """The HTML of one output: figure, optional overlay and metrics, provenance."""
    title = str(entry.get("title") or Path(entry["output_path"]).name)
    sr, sr_affine = _load(entry["output_path"])
    lr, lr_affine = _load(entry["input_path"])
    grid, _ = display_grid(sr, sr_affine)
    layers = [Layer("input (nearest)", lr, lr_affine), Layer("super-resolved", sr, sr_affine)]
    sidecar = entry.get("sidecar") or {}
    suffix = reference_suffix(sidecar)
    if entry.get("registered_reference_path"):  # the reference on the output grid, as used
        reference, reference_affine = _load(entry["registered_reference_path"])
        layers.append(Layer(f"reference ({suffix})", reference, reference_affine,
                            kind="contrast"))
    if entry.get("guided_minus_mono_path"):  # what the reference changed
        difference, difference_affine = _load(entry["guided_minus_mono_path"])
        layers.append(Layer("guided − mono", difference, difference_affine, kind="difference"))
    if entry.get("truth_path"):
        truth, truth_affine = _load(entry["truth_path"])
        truth = _on_grid(truth, truth_affine, sr.shape, sr_affine)
        layers.append(Layer("HR truth", truth, sr_affine))
        layers.append(Layer("|SR − truth|", sr - truth, sr_affine, kind="error"))
    parts = [f"<h2>{html.escape(title)}</h2>"]
    parts.append(
        '<p class="note">Centre slices in RAS orientation (subject right on the right); the '
        "green box on the coronal slice is the zoomed cortex crop. Input: "
        f"{html.escape(Path(entry['input_path']).name)}; output: "
        f"{html.escape(Path(entry['output_path']).name)}.</p>"
    )
    if sidecar.get("FallbackFrom"):
        parts.append(
            f'<p class="note"><strong>{html.escape(str(sidecar.get("Method")))} ran instead '
            f'of {html.escape(str(sidecar["FallbackFrom"]))}</strong>: '
            f'{html.escape(str(sidecar.get("FallbackReason", "")))}.</p>'
        )
    if sidecar.get("GuidedMinusMono"):
        parts.append(f'<p class="note">{html.escape(guided_sentence(sidecar))}</p>')
    parts.append(html.image(png_data_uri(comparison_png(layers, grid)), f"{title}: slices"))
    if sidecar.get("CombinedRuns"):
        parts.append(combined_runs_section(sidecar))
    if entry.get("registered_reference_path"):
        overlay = registration_overlay_png(entry["input_path"], entry["registered_reference_path"],
                                           reference_suffix=suffix)  # fmt: skip
        parts.append(f"<h3>{html.escape(suffix)} registration</h3>")
        quality = sidecar.get("RegistrationQualityNMI")
        if quality is not None:
            verdict = "usable" if sidecar.get("RegistrationUsable") else "not usable"
            parts.append(
                f'<p class="note">Edges of the T1w over the {html.escape(suffix)} registered '
                f"to it ({html.escape(str(sidecar.get(f'{suffix}Reference', '')))}); "
                f"normalised mutual information {quality} (threshold "
                f"{sidecar.get('RegistrationQualityThreshold')}): {verdict}.</p>"
            )
        parts.append(html.image(png_data_uri(overlay), f"{title}: registration overlay"))
    metrics = entry.get("metrics") or []
    if metrics:
        parts.append("<h3>Evaluation metrics</h3>")
        parts.append(html.table(METRIC_HEADER, ([row.get(k) for k in METRIC_HEADER] for row in
                                                metrics)))  # fmt: skip
        parts.append(
            '<p class="note">PSNR in dB and SSIM (3D, Gaussian window) with data range 1 on '
            "the robust-normalised truth; gradient error: relative L2 error of the gradient "
            "magnitude (lower is better).</p>"
        )
        parts.append(tissue_section(metrics))
    parts.append("<h3>Provenance</h3>")
    parts.append(html.key_value_table(provenance(entry.get("sidecar") or {})))
    return "\n".join(parts)


def uncertainty_figure(entry: Mapping[str, Any]) -> str:
    """The output over its uncertainty map (``uncertainty_path``), centre slices, with the
    map's colour scale: a PNG data URI."""
    sr, sr_affine = _load(entry["output_path"])
    spread, spread_affine = _load(entry["uncertainty_path"])
    grid, _ = display_grid(sr, sr_affine)
    layers = [Layer("super-resolved", sr, sr_affine),
              Layer("uncertainty", spread, spread_affine, kind="uncertainty")]  # fmt: skip
    return png_data_uri(comparison_png(layers, grid, crop=False))


def build_subject_report(
    subject: str, entries: Sequence[Mapping[str, Any]], out_html: str | os.PathLike
) -> Path:
    """Write the self-contained HTML report of ``subject`` (label with or without ``sub-``).

    Each entry is a mapping with ``title``, ``input_path``, ``output_path``, ``sidecar``
    (dict) and optionally ``truth_path``, ``registered_reference_path``,
    ``guided_minus_mono_path`` (a signed map on any grid), ``uncertainty_path`` (a
    self-supervised method's uncertainty map) and ``metrics`` (rows of
    :func:`bids_sr.evaluation.evaluate_image`). The page opens with what a reader needs
    to trust each output that is not an evaluation against a truth
    (:mod:`bids_sr.reports.trust`), then one section per entry. Written atomically;
    returns the path.
    """
    label = subject if subject.startswith("sub-") else f"sub-{subject}"
    for number, entry in enumerate(entries, start=1):
        missing = [key for key in ("input_path", "output_path") if not entry.get(key)]
        if missing:
            raise ValueError(f"report entry {number} of {label} lacks {', '.join(missing)}")
    if entries:
        outputs = [entry for entry in entries if not entry.get("truth_path")]
        sections = [trust_section(outputs, uncertainty_figure)] if outputs else []
        body = "\n".join([*sections, *(entry_section(entry) for entry in entries)])
    else:
        body = '<p class="note">No outputs were produced for this subject.</p>'
    return html.write_text_atomic(html.page(f"bids_sr report: {label}", body), out_html)
