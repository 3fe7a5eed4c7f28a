"""SubjectReport: the per-subject HTML report as a Nipype node.

Thin over :func:`bids_sr.reports.subject.build_subject_report`: it turns what the
single-subject workflow produced into report entries and writes ``report.html`` into the
node's folder (``workflows/outputs.py`` copies it to ``<output_dir>/sub-<label>.html``).

- Normal mode: one entry per derivative — the raw T1w (shown nearest-upsampled) against the
  super-resolved image, with the derivative's sidecar as provenance. ``source_files``,
  ``output_files`` and ``sidecars`` are parallel lists, and so is ``registered_t2w`` when
  given: the reference (T2w or FLAIR) registered onto the output grid for a guided output
  (its registration overlay is shown), an empty string for the others;
  ``guided_minus_mono`` likewise holds the difference between a guided output and its mono
  twin's (shown as a row of its own), and
  ``uncertainty_maps`` the uncertainty map of a self-supervised output (shown on the
  report's first screen, :mod:`bids_sr.reports.trust`).
- Evaluation mode: one entry per kept method of each ``report.json`` written by
  :class:`bids_sr.interfaces.evaluation.EvaluateSuperResolution` — the simulated LR input,
  the result, the HR truth and the error map; the first entry of each image carries the
  metrics table of every method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_sr.__about__ import __version__
from bids_sr.evaluation import format_scale
from bids_sr.image import as_factors
from bids_sr.reports.subject import build_subject_report


class SubjectReportInputSpec(BaseInterfaceInputSpec):
    subject = traits.Str(mandatory=True, desc="participant label (with or without 'sub-')")
    source_files = traits.List(File(exists=True), desc="raw T1w of each derivative")
    output_files = traits.List(File(exists=True), desc="the super-resolved derivatives")
    sidecars = traits.List(File(exists=True), desc="their JSON sidecars")
    registered_t2w = traits.List(
        traits.Str, desc="per derivative: the registered reference (T2w or FLAIR) of a guided "
        "output, or ''"
    )
    guided_minus_mono = traits.List(
        traits.Str, desc="per derivative: the guided − mono difference map, or ''"
    )
    uncertainty_maps = traits.List(
        traits.Str, desc="per derivative: its uncertainty map (self-supervised methods), or ''"
    )
    evaluation_reports = traits.List(
        File(exists=True), desc="report.json files of EvaluateSuperResolution (evaluation mode)"
    )
    out_name = traits.Str("report.html", usedefault=True, desc="output file name")


class SubjectReportOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="the self-contained HTML report")


def _listed(value) -> list:
    return list(value) if isdefined(value) else []


def derivative_entries(
    source_files: list[str],
    output_files: list[str],
    sidecars: list[str],
    registered_references: list[str] | None = None,
    guided_minus_mono: list[str] | None = None,
    uncertainty_maps: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Report entries of the normal mode (parallel lists; see the module docstring)."""
    registered_references = registered_references or [""] * len(source_files)
    differences = guided_minus_mono or [""] * len(source_files)
    uncertainty_maps = uncertainty_maps or [""] * len(source_files)
    if not (len(source_files) == len(output_files) == len(sidecars) == len(registered_references)
            == len(differences) == len(uncertainty_maps)):  # fmt: skip
        raise ValueError(
            f"report inputs differ in length: {len(source_files)} sources, "
            f"{len(output_files)} outputs, {len(sidecars)} sidecars, "
            f"{len(registered_references)} registered references, {len(differences)} difference "
            f"maps, {len(uncertainty_maps)} uncertainty maps"
        )
    entries = []
    rows = zip(source_files, output_files, sidecars, registered_references, differences,
               uncertainty_maps, strict=True)  # fmt: skip
    for source, output, sidecar, reference, difference, uncertainty in rows:
        meta = json.loads(Path(sidecar).read_text())
        entry = {
            "title": f"{Path(source).name} → {Path(output).name}",
            "input_path": source,
            "output_path": output,
            "sidecar": meta,
        }
        if reference:
            entry["registered_reference_path"] = reference
        if difference:
            entry["guided_minus_mono_path"] = difference
        if uncertainty:
            entry["uncertainty_path"] = uncertainty
        entries.append(entry)
    return entries


def evaluation_entries(report_file: str) -> list[dict[str, Any]]:
    """Report entries of one evaluated image (see the module docstring)."""
    report = json.loads(Path(report_file).read_text())
    rows = report.get("rows", [])
    scale = format_scale(as_factors(report["scale"]))
    entries = []
    for method, path in report.get("sr", {}).items():
        row = next((r for r in rows if r.get("method") == method), {})
        sidecar = {
            "Method": method,
            "Degradation": report["degradation"],
            "ScaleFactor": report["scale"],
            "Device": row.get("device"),
            "RunTime": row.get("runtime_s"),
            "SoftwareVersion": f"bids_sr {__version__}",
            "Sources": [report["source"]],
            "Mask": report.get("mask"),
        }
        entries.append(
            {
                "title": f"{Path(report['source']).name}: {method}, ×{scale} "
                f"({report['degradation']} degradation)",
                "input_path": report["input"],
                "output_path": path,
                "truth_path": report["truth"],
                "sidecar": {k: v for k, v in sidecar.items() if v is not None},
                "metrics": rows if not entries else [],
            }
        )
    return entries


class SubjectReport(SimpleInterface):
    """Write one participant's HTML report (figures embedded; no network, no JavaScript)."""

    input_spec = SubjectReportInputSpec
    output_spec = SubjectReportOutputSpec

    def _run_interface(self, runtime):
        entries = derivative_entries(
            _listed(self.inputs.source_files),
            _listed(self.inputs.output_files),
            _listed(self.inputs.sidecars),
            _listed(self.inputs.registered_t2w) or None,
            _listed(self.inputs.guided_minus_mono) or None,
            _listed(self.inputs.uncertainty_maps) or None,
        )
        for report_file in _listed(self.inputs.evaluation_reports):
            entries += evaluation_entries(report_file)
        out = build_subject_report(
            self.inputs.subject, entries, Path(runtime.cwd) / self.inputs.out_name
        )
        self._results["out_report"] = str(out)
        return runtime
