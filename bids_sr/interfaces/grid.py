"""UpsampledGrid: a small NIfTI that only defines the super-resolved grid of an image.

Nodes that must work on the output grid before the output exists (resampling the T2w
reference for a guided method) take their shape and affine from it. The data are zeros in
uint8, so the file is a few kilobytes whatever its size.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_sr.image import (
    effective_factors,
    hr_shape,
    requested_factors,
    upsampled_affine,
)
from bids_sr.interfaces.superresolve import optional_input


class UpsampledGridInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the low-resolution image")
    scale = traits.List(traits.Float, minlen=1, maxlen=3, desc="one or three factors")
    output_resolution = traits.Float(desc="target voxel size in mm (instead of scale)")


class UpsampledGridOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="zeros on the upsampled grid (shape and affine only)")


class UpsampledGrid(SimpleInterface):
    """Write the grid that SuperResolve will produce for ``in_file`` (same rule, image.py)."""

    input_spec = UpsampledGridInputSpec
    output_spec = UpsampledGridOutputSpec

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        factors = requested_factors(
            img.affine,
            optional_input(self.inputs.scale),
            optional_input(self.inputs.output_resolution),
        )
        factors = effective_factors(img.shape[:3], factors)
        affine = upsampled_affine(img.affine, factors)
        grid = nib.Nifti1Image(np.zeros(hr_shape(img.shape[:3], factors), np.uint8), affine)
        grid.set_qform(affine, code=int(img.header["qform_code"]) or 1)
        grid.set_sform(affine, code=int(img.header["sform_code"]) or 1)
        out = Path(runtime.cwd) / "grid.nii.gz"
        nib.save(grid, str(out))
        self._results["out_file"] = str(out)
        return runtime
