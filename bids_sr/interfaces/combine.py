"""CombineRuns: several super-resolved 2D scans of one session → one T1w (Nipype node).

Thin over :func:`bids_sr.combine.combine_scans`: it loads each acquired T1w and its
super-resolved output, rebuilds the acquisition model its SuperResolve node used (from that
node's report, so both agree exactly), combines them on the first run's output grid and
writes the image and a report (the method, every run's registration, intensity map and
DataConsistencyPSNR before/after) that :class:`bids_sr.interfaces.bids.DerivativesDataSink`
turns into the sidecar. A run left out (failed registration, no overlap, another contrast)
is logged with the reason; fewer than two usable runs stops the node with a
:class:`bids_sr.combine.CombineError` naming them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_sr.acquisition import Acquisition
from bids_sr.combine import DEFAULT_ITERATIONS, CombineError, Scan, combine_scans
from bids_sr.image import load_volume, save_volume, voxel_sizes

LOGGER = logging.getLogger("nipype.interface")
PROGRESS = logging.getLogger("bids_sr")


class CombineRunsInputSpec(BaseInterfaceInputSpec):
    in_files = traits.List(
        File(exists=True), minlen=2, mandatory=True,
        desc="the acquired T1w of each run; the first is the reference (common grid)",
    )  # fmt: skip
    sr_files = traits.List(
        File(exists=True), minlen=2, mandatory=True, desc="their super-resolved outputs"
    )
    report_jsons = traits.List(
        File(exists=True), minlen=2, mandatory=True,
        desc="the SuperResolve report of each output (method, acquisition model)",
    )  # fmt: skip
    iterations = traits.Range(
        low=1, value=DEFAULT_ITERATIONS, usedefault=True, desc="rounds of POCS"
    )
    seed = traits.Int(0, usedefault=True, desc="seed of the registrations' sampling")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")
    out_name = traits.Str("combined.nii.gz", usedefault=True, desc="output file name")


class CombineRunsOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the combined image on the first run's output grid")
    report_json = File(exists=True, desc="JSON report: method, per-run figures")


def acquisition_from_report(report: dict) -> Acquisition:
    """The acquisition model a SuperResolve node used, from its report's ``Input*`` fields
    (written by :meth:`bids_sr.acquisition.Acquisition.describe`)."""
    spacing = tuple(float(v) for v in report["input_voxel_size_mm"])
    if report.get("AcquisitionModel") != "slice":
        return Acquisition(spacing=spacing)
    return Acquisition(
        spacing=spacing,
        slice_axis=int(report["InputSliceAxis"]),
        thickness=float(report["InputSliceThickness"]),
        profile=report.get("InputSliceProfile", "rect"),
    )


class CombineRuns(SimpleInterface):
    """Combine the super-resolved runs of one session by a joint reconstruction."""

    input_spec = CombineRunsInputSpec
    output_spec = CombineRunsOutputSpec

    def _run_interface(self, runtime):
        lists = (self.inputs.in_files, self.inputs.sr_files, self.inputs.report_jsons)
        if len({len(items) for items in lists}) != 1:
            raise CombineError(
                f"{len(lists[0])} runs, {len(lists[1])} outputs and {len(lists[2])} reports"
            )
        scans, reports, reference_header = [], [], None
        for in_file, sr_file, report_file in zip(*lists, strict=True):
            report = json.loads(Path(report_file).read_text())
            acquired, output = load_volume(in_file), load_volume(sr_file)
            reference_header = reference_header or output.header
            scans.append(Scan(Path(in_file).name, acquired.data, acquired.affine,
                              acquisition_from_report(report), output.data, output.affine))
            reports.append(report)
        PROGRESS.info("combining %d runs: %s", len(scans), ", ".join(s.name for s in scans))
        result = combine_scans(scans, iterations=self.inputs.iterations, seed=self.inputs.seed,
                               threads=self.inputs.num_threads)  # fmt: skip
        for record in result.runs:
            if not record["Used"]:
                LOGGER.warning("%s: left out of the combination: %s", record["Run"],
                               record["Excluded"])  # fmt: skip
        out_file = save_volume(result.data, result.affine, Path(runtime.cwd) /
                               self.inputs.out_name, reference_header)  # fmt: skip
        methods = list(dict.fromkeys(r.get("method") for r in reports))
        report = {
            "method": "+".join(str(m) for m in methods),
            "requested_method": reports[0].get("requested_method"),
            "output_shape": list(result.data.shape),
            "output_voxel_size_mm": list(voxel_sizes(result.affine)),
            "intensity_normalisation": reports[0].get("intensity_normalisation"),
            "runtime_s": result.runtime_s,
            "device": "cpu",
            "combination": result.summary(),
        }
        figures = ", ".join(
            f"{r['Run']} {r['DataConsistencyPSNRAverage']} → {r['DataConsistencyPSNR']} dB"
            for r in result.runs if r["Used"]
        )
        PROGRESS.info("combined in %.0f s; DataConsistencyPSNR average → combined: %s",
                      result.runtime_s, figures)  # fmt: skip
        report_path = Path(runtime.cwd) / "report.json"
        report_path.write_text(json.dumps(report, indent=2, default=str))
        self._results["out_file"] = str(out_file)
        self._results["report_json"] = str(report_path)
        return runtime
