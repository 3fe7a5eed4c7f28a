"""The generic SuperResolve interface: any method, chosen by name, on one NIfTI image.

Thin over the numerical core: load and check the image, normalise intensities, run
:func:`bids_sr.superresolve.super_resolve`, restore the input's intensity scale, write the
result on the upsampled grid (affine from :func:`bids_sr.image.upsampled_affine`) and a JSON
report of what was done. Family interfaces (networks, gradient filters) subclass it.

Example
-------
>>> from nipype.pipeline import engine as pe
>>> from bids_sr.interfaces.superresolve import SuperResolve
>>> node = pe.Node(SuperResolve(method="bspline", scale=[2.0]), name="sr")
>>> node.inputs.in_file = "sub-01_T1w.nii.gz"  # doctest: +SKIP
>>> node.run()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_sr.image import (
    as_factors,
    effective_factors,
    factors_for_resolution,
    hr_shape,
    load_volume,
    robust_normalisation,
    save_volume,
    upsampled_affine,
    voxel_sizes,
)
from bids_sr.superresolve import METHODS, super_resolve


class SuperResolveInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="low-resolution 3D NIfTI image")
    method = traits.Enum(*METHODS, usedefault=True, desc="super-resolution method")
    scale = traits.List(
        traits.Float, minlen=1, maxlen=3, desc="one factor or three per-axis factors"
    )
    output_resolution = traits.Float(desc="target voxel size in mm (alternative to scale)")
    weights = File(exists=True, desc="weights/filters file (default: the shipped ones)")
    reference_file = File(
        exists=True, desc="HR reference (registered T2w) on the output grid, for guided methods"
    )
    device = traits.Enum("auto", "cpu", "cuda", usedefault=True, desc="where to compute")
    tile_size = traits.Int(desc="inference tile size in LR voxels (default: method's own)")
    tile_overlap = traits.Float(desc="fraction of overlap between tiles")
    seed = traits.Int(0, usedefault=True, desc="random seed")
    amp = traits.Enum("none", "bf16", "fp16", usedefault=True, desc="mixed precision on CUDA")
    progress = traits.Bool(False, usedefault=True, desc="show a progress bar")
    out_name = traits.Str("sr.nii.gz", usedefault=True, desc="output file name")
    use_gpu = traits.Bool(
        False,
        usedefault=True,
        nohash=True,
        desc="scheduling hint: the node computes on a GPU, so Nipype's MultiProc counts it "
        "against n_gpu_procs (not hashed: a cached result stays valid on a CPU node)",
    )


class SuperResolveOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="super-resolved image on the upsampled grid")
    report_json = File(exists=True, desc="JSON report: method, factors, device, runtime, ...")


def _optional(value):
    return value if isdefined(value) else None


class SuperResolve(SimpleInterface):
    """Super-resolve one 3D image with the method named in ``method``.

    Intensities are normalised with robust percentiles before the method and restored after,
    so the output is on the input's scale; both percentiles go in the report.
    """

    input_spec = SuperResolveInputSpec
    output_spec = SuperResolveOutputSpec

    def _factors(self, affine: np.ndarray) -> tuple[float, float, float]:
        if isdefined(self.inputs.output_resolution):
            return factors_for_resolution(affine, self.inputs.output_resolution)
        if not isdefined(self.inputs.scale):
            raise ValueError("SuperResolve needs either scale or output_resolution")
        return as_factors(self.inputs.scale)

    def _reference(self, normalise_shape: tuple[int, int, int]) -> np.ndarray | None:
        if not isdefined(self.inputs.reference_file):
            return None
        ref = load_volume(self.inputs.reference_file)
        if ref.data.shape != normalise_shape:
            raise ValueError(
                f"{self.inputs.reference_file}: reference shape {ref.data.shape} is not the "
                f"output grid {normalise_shape}; resample it first"
            )
        return robust_normalisation(ref.data).apply(ref.data)

    def _run_interface(self, runtime):
        volume = load_volume(self.inputs.in_file)
        requested = self._factors(volume.affine)
        factors = effective_factors(volume.data.shape, requested)
        norm = robust_normalisation(volume.data)
        hr, report = super_resolve(
            norm.apply(volume.data),
            factors,
            self.inputs.method,
            weights=_optional(self.inputs.weights),
            reference=self._reference(hr_shape(volume.data.shape, factors)),
            device=self.inputs.device,
            tile_size=_optional(self.inputs.tile_size),
            tile_overlap=_optional(self.inputs.tile_overlap),
            seed=self.inputs.seed,
            progress=self.inputs.progress,
            amp=None if self.inputs.amp == "none" else self.inputs.amp,
        )
        out_affine = upsampled_affine(volume.affine, factors)
        out_file = save_volume(
            norm.restore(hr),
            out_affine,
            Path(runtime.cwd) / self.inputs.out_name,
            volume.header,
        )
        report.update(
            {
                "in_file": os.path.abspath(self.inputs.in_file),
                "requested_factors": list(requested),
                "factors": list(factors),
                "input_shape": list(volume.data.shape),
                "output_shape": list(hr.shape),
                "input_voxel_size_mm": list(voxel_sizes(volume.affine)),
                "output_voxel_size_mm": list(voxel_sizes(out_affine)),
                "intensity_normalisation": {"low": norm.low, "high": norm.high},
            }
        )
        report_path = Path(runtime.cwd) / "report.json"
        report_path.write_text(json.dumps(report, indent=2, default=str))
        self._results["out_file"] = str(out_file)
        self._results["report_json"] = str(report_path)
        return runtime
