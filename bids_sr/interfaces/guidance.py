"""MonoTwin: what the reference contributed to a guided result, as a Nipype node.

Runs after a guided :class:`~bids_sr.interfaces.superresolve.SuperResolve` node, with the
same settings (factors, acquisition, data consistency, device, tiles, seed). When the guided
node really used its reference, this node runs the guided method's mono twin (the same
network without the reference channel, :func:`bids_sr.guidance.mono_twin`) on the same
input, writes the difference guided − mono on the output grid, and adds its size inside the
brain (:func:`bids_sr.guidance.guided_minus_mono`) to the guided report as
``guided_minus_mono`` (the sidecar's ``GuidedMinusMono``). When the guided node fell back
(no usable reference, or a ``selfsr`` guide that did not help on the scan's own slices:
the recipe's ``guide_min_improvement``, :class:`bids_sr.recipes.SelfSRRecipe`) nothing
runs; when the twin has no weights the report says so instead of failing. A node of its
own, so the mono result is cached and visible in the graph.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from nipype.interfaces.base import File, TraitedSpec, traits

from bids_sr.fileio import write_json_atomic
from bids_sr.guidance import guided_minus_mono, mono_twin, mono_twin_weights
from bids_sr.image import load_volume, save_volume, voxel_sizes
from bids_sr.interfaces.bids import weights_field
from bids_sr.interfaces.superresolve import SuperResolve, SuperResolveInputSpec
from bids_sr.superresolve import GUIDED_METHODS

LOGGER = logging.getLogger("nipype.interface")


class MonoTwinInputSpec(SuperResolveInputSpec):
    guided_file = File(exists=True, mandatory=True, desc="the guided node's output image")
    guided_report = File(exists=True, mandatory=True, desc="the guided node's report.json")


class MonoTwinOutputSpec(TraitedSpec):
    out_file = File(desc="the mono twin's output (when it ran)")
    report_json = File(desc="the mono twin's own run report (when it ran)")
    merged_report = File(
        exists=True, desc="the guided report, with guided_minus_mono when the twin ran"
    )
    difference_file = traits.Str(
        desc="guided − mono on the output grid (T1w intensity units), or '' when no twin ran"
    )


def _rounded(value: float) -> float:
    return round(float(value), 4)


class MonoTwin(SuperResolve):
    """Run the mono twin of a guided result and measure guided − mono (module docstring)."""

    input_spec = MonoTwinInputSpec
    output_spec = MonoTwinOutputSpec

    def _run_interface(self, runtime):
        report = json.loads(Path(self.inputs.guided_report).read_text())
        self._results["difference_file"] = ""
        method = report.get("method")
        if method in GUIDED_METHODS and not report.get("fallback_from"):
            report["guided_minus_mono"] = self._compare(runtime, report)
        merged = write_json_atomic(report, Path(runtime.cwd) / "guided_report.json")
        self._results["merged_report"] = str(merged)
        # a per-scan twin (selfsr) also maps its uncertainty: the guided output's map is the one
        self._results.pop("uncertainty_file", None)
        return runtime

    def _compare(self, runtime, guided_report: dict) -> dict:
        """Run the twin, write the difference map; the sidecar's ``GuidedMinusMono``."""
        method = guided_report["method"]
        twin = mono_twin(method)
        try:
            weights = mono_twin_weights(method, guided_report.get("weights"),
                                        guided_report["factors"])  # fmt: skip
        except FileNotFoundError as exc:
            LOGGER.warning("%s: no guided − mono comparison: %s", self.inputs.in_file, exc)
            return {"MonoModel": twin, "Problem": f"the mono model cannot run: {exc}"}
        volume = load_volume(self.inputs.in_file)
        run = self._super_resolve(runtime, volume, twin, str(weights) if weights else None,
                                  None, {})  # fmt: skip
        mono = load_volume(self._results["out_file"])
        guided = load_volume(self.inputs.guided_file)
        if guided.data.shape != mono.data.shape:
            raise ValueError(f"{self.inputs.guided_file}: shape {guided.data.shape} differs from "
                             f"the mono output {mono.data.shape}")  # fmt: skip
        numbers = guided_minus_mono(guided.data, mono.data, voxel_sizes(mono.affine))
        difference = save_volume(guided.data - mono.data, mono.affine,
                                 Path(runtime.cwd) / "guided_minus_mono.nii.gz",
                                 guided.header)  # fmt: skip
        self._results["difference_file"] = str(difference)
        return {
            "MonoModel": twin,
            "MonoWeights": weights_field(twin, run.get("weights")),
            "MonoWeightsSha256": run.get("weights_sha256"),
            "MonoDataConsistencyPSNR": run.get("data_consistency_psnr"),
            "Mask": "brain mask of the mono output (bids_sr.masks.brain_mask)",
            "IntensityRange": _rounded(numbers["intensity_range"]),
            "MeanAbsDifference": _rounded(numbers["mean_abs_difference"]),
            "MeanAbsDifferencePercent": _rounded(numbers["mean_abs_difference_percent"]),
            "MaxAbsDifference": _rounded(numbers["max_abs_difference"]),
            "PSNR": round(numbers["psnr_db"], 2),
            "Description": (
                f"{method} minus its mono twin {twin} (same input, factors and data "
                "consistency), inside the brain: mean and 99.9th percentile of |guided − mono| "
                "in the T1w's intensity units, the mean as a percentage of IntensityRange (the "
                "mono output's 0.5–99.5 percentile range in the brain), and the PSNR (dB) of "
                "the guided output against the mono output over that range"
            ),
        }
