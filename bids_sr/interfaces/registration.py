"""Nipype interfaces for the T2w → T1w rigid registration and resampling onto the SR grid.

Thin wrappers over :mod:`bids_sr.registration` (the numerical core).
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
    isdefined,
    traits,
)

from bids_sr.image import load_volume, save_volume
from bids_sr.recipes import REGISTRATION_QC, RegistrationQC
from bids_sr.registration import (
    INITIALISATIONS,
    read_itk_transform,
    register_rigid,
    resample_to_grid,
    write_itk_transform,
)


class _RegisterT2wToT1wInputSpec(BaseInterfaceInputSpec):
    t1w_file = File(exists=True, mandatory=True, desc="T1w NIfTI (fixed image)")
    t2w_file = File(exists=True, mandatory=True, desc="T2w NIfTI (moving image)")
    initialisation = traits.Enum(
        *INITIALISATIONS,
        usedefault=True,
        desc="initial alignment: auto (the scanner coordinates when both images share a "
        "space, else or on failure their centres of mass), moments, geometry or header",
    )
    seed = traits.Int(0, usedefault=True, desc="seed of the metric's random sample")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads (1 is bit-for-bit reproducible)")
    qc = traits.Dict(
        desc="the fields of the quality check (bids_sr.recipes.RegistrationQC: least NMI and "
        "overlap; default: the shipped check)"
    )


class _RegisterT2wToT1wOutputSpec(TraitedSpec):
    transform_file = File(
        exists=True, desc="ITK text transform, T1w points → T2w points (from-T2w_to-T1w)"
    )
    registered_t2w = File(exists=True, desc="T2w resampled onto the T1w grid (for reports)")
    quality = traits.Float(desc="normalised mutual information after registration")
    usable = traits.Bool(desc="quality and overlap pass the quality check (qc)")
    summary = traits.Dict(desc="registration figures for the sidecar")


class RegisterT2wToT1w(SimpleInterface):
    """Rigidly register a T2w to a T1w (Mattes MI, multi-resolution; see
    :func:`bids_sr.registration.register_rigid`) and resample it onto the T1w grid."""

    input_spec = _RegisterT2wToT1wInputSpec
    output_spec = _RegisterT2wToT1wOutputSpec

    def _run_interface(self, runtime):
        result = register_rigid(
            self.inputs.t1w_file,
            self.inputs.t2w_file,
            initialisation=self.inputs.initialisation,
            seed=self.inputs.seed,
            threads=self.inputs.num_threads,
            qc=RegistrationQC(**self.inputs.qc) if isdefined(self.inputs.qc) else REGISTRATION_QC,
        )
        cwd = Path(runtime.cwd)
        transform_file = write_itk_transform(result.transform, cwd / "from-T2w_to-T1w_xfm.txt")
        t1w = load_volume(self.inputs.t1w_file)
        registered = resample_to_grid(
            self.inputs.t2w_file, result.transform, t1w.data.shape, t1w.affine, order=3
        )
        out = save_volume(registered, t1w.affine, cwd / "t2w_registered.nii.gz", t1w.header)
        self._results.update(
            transform_file=str(transform_file),
            registered_t2w=str(out),
            quality=float(result.quality),
            usable=bool(result.usable),
            summary=result.summary(),
        )
        return runtime


class _ResampleToGridInputSpec(BaseInterfaceInputSpec):
    moving_file = File(exists=True, mandatory=True, desc="image to resample (e.g. the T2w)")
    transform_file = File(
        exists=True, mandatory=True, desc="ITK transform, reference points → moving points"
    )
    reference_file = File(
        exists=True, mandatory=True, desc="NIfTI defining the output grid (e.g. the SR output)"
    )
    order = traits.Enum(3, 1, 0, usedefault=True, desc="3 B-spline, 1 linear, 0 nearest")


class _ResampleToGridOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="float32 image on the reference grid")


class ResampleToGrid(SimpleInterface):
    """Resample an image through an ITK transform onto the grid of a reference NIfTI."""

    input_spec = _ResampleToGridInputSpec
    output_spec = _ResampleToGridOutputSpec

    def _run_interface(self, runtime):
        # only the reference's grid is needed: read its header, never its data
        reference = nib.load(self.inputs.reference_file)
        transform = read_itk_transform(self.inputs.transform_file)
        data = resample_to_grid(
            self.inputs.moving_file,
            transform,
            reference.shape[:3],
            reference.affine,
            order=int(self.inputs.order),
        )
        out = save_volume(
            np.asarray(data, np.float32),
            reference.affine,
            Path(runtime.cwd) / "resampled.nii.gz",
            reference.header,
        )
        self._results["out_file"] = str(out)
        return runtime
