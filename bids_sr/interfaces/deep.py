"""``DeepSuperResolve``: the Nipype interface of the deep SR network family.

A thin subclass of :class:`bids_sr.interfaces.superresolve.SuperResolve` (which loads,
normalises, dispatches, restores intensities and writes the image with its upsampled affine
and a JSON report); this one only restricts ``method`` to the networks of
:mod:`bids_sr.models.registry` and documents their options. The report JSON gains the
inference engine's provenance: device actually used, tiles, tile size, peak memory, weights
path and sha256, and whether a CUDA run fell back to the CPU.

Example
-------
>>> from nipype.pipeline import engine as pe
>>> from bids_sr.interfaces.deep import DeepSuperResolve
>>> sr = pe.Node(DeepSuperResolve(method="srrecnn", scale=[2.0], device="auto"), name="sr")
>>> sr.inputs.in_file = "sub-01_T1w.nii.gz"  # doctest: +SKIP
>>> sr.inputs.weights = "srrecnn_x2x2x2.safetensors"  # default: the shipped weights
>>> sr.run().outputs.report_json  # doctest: +SKIP

For ``srrecnn-t2w`` set ``reference_file`` to a T2w already registered and resampled onto
the output grid. Learned-upsampling networks (fsrcnn, espcn, srgan) take per-axis integer
factors (``scale=[1, 1, 4]``); srrecnn takes any factor.
"""

from __future__ import annotations

from nipype.interfaces.base import traits

from bids_sr.interfaces.superresolve import (
    SuperResolve,
    SuperResolveInputSpec,
    SuperResolveOutputSpec,
)
from bids_sr.superresolve import NETWORK_METHODS


class DeepSuperResolveInputSpec(SuperResolveInputSpec):
    method = traits.Enum(
        *NETWORK_METHODS,
        usedefault=True,
        desc="network: fsrcnn, espcn, srgan (integer per-axis factors), srrecnn (any factor) "
        "or srrecnn-t2w (needs reference_file)",
    )
    tile_size = traits.Int(
        desc="tile edge in voxels of the network's input grid (LR for fsrcnn/espcn/srgan, "
        "HR for srrecnn); default: the registry's, bounded GPU memory whatever the volume"
    )
    tile_overlap = traits.Float(
        desc="fraction of each tile's trusted core shared with its neighbours (default 0.125)"
    )


class DeepSuperResolve(SuperResolve):
    """Super-resolve a 3D image with one of the deep SR networks (tiled, CPU or GPU).

    Inputs as :class:`SuperResolve`; ``weights`` defaults to the shipped
    ``bids_sr/data/weights/{method}_x{factors}.safetensors`` and any file written by
    :func:`bids_sr.models.weights.save_weights` (or ``bids_sr-convert-weights``) can be given.
    """

    input_spec = DeepSuperResolveInputSpec
    output_spec = SuperResolveOutputSpec
