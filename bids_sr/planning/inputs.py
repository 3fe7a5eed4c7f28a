"""Each T1w as a run sees it: the scale factors it is processed with, the model of how it
was acquired (isotropic or a 2D scan), and the warnings where its sidecar disagrees."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib

from bids_sr.acquisition import (
    Acquisition,
    AcquisitionError,
    coarse_axis,
    describe_acquisition,
    simulated_acquisition,
)
from bids_sr.errors import EXIT_USAGE, BIDSError
from bids_sr.fileio import read_sidecar
from bids_sr.image import as_factors, requested_factors, voxel_sizes
from bids_sr.planning.settings import RunSettings

LOGGER = logging.getLogger("bids_sr")


def t1w_factors(config: RunSettings, t1w_file: str) -> tuple[float, float, float]:
    """The scale factors a T1w is processed with (from --scale or --output-resolution, else
    the default grid of :func:`bids_sr.image.default_factors`). Reads the header only: the
    images were checked before planning, and this runs several times per T1w."""
    if config.workflow.output_resolution or not config.workflow.scale:
        affine = nib.load(t1w_file).affine
        return requested_factors(affine, config.workflow.scale, config.workflow.output_resolution)
    return as_factors(config.workflow.scale)


def t1w_acquisition(config: RunSettings, t1w_file: str) -> Acquisition:
    """The acquisition model of a T1w as a run sees it (exit 64 for impossible options).

    Evaluation mode simulates its input: a 2D scan for ``--degradation slice``, else an
    isotropic one, whatever the truth's own header says.
    """
    wf_settings = config.workflow
    if wf_settings.evaluate:
        factors = t1w_factors(config, t1w_file)
        spacing = tuple(float(f) for f in factors)
        if wf_settings.degradation != "slice":
            return Acquisition(spacing=spacing)
        try:  # the slices the evaluation node will simulate: a gap above the spacing stops here
            simulated_acquisition(voxel_sizes(nib.load(t1w_file).affine), factors,
                                  thickness=wf_settings.slice_thickness, gap=wf_settings.slice_gap,
                                  profile=wf_settings.slice_profile)  # fmt: skip
        except AcquisitionError as exc:
            raise BIDSError(f"{t1w_file}: {exc} (--slice-gap/--slice-thickness against the "
                            "simulated slice spacing)", EXIT_USAGE) from exc  # fmt: skip
        return Acquisition(spacing=spacing, slice_axis=int(max(range(3), key=factors.__getitem__)),
                           thickness=max(spacing), profile=wf_settings.slice_profile)  # fmt: skip
    try:
        return describe_acquisition(
            voxel_sizes(nib.load(t1w_file).affine),
            slice_thickness=wf_settings.slice_thickness,
            sidecar_thickness=read_sidecar(t1w_file).get("SliceThickness"),
            profile=wf_settings.slice_profile,
        )
    except AcquisitionError as exc:
        raise BIDSError(f"{t1w_file}: {exc}", EXIT_USAGE) from exc


def warn_acquisition_metadata(t1w_file: str, acquisition: Acquisition) -> None:
    """Warn where the model of how ``t1w_file`` was acquired departs from its sidecar: an
    invalid ``SliceThickness`` replaced by the slice spacing (the output sidecar's
    ``InputSliceThicknessSource`` says so too), or an ``MRAcquisitionType`` the voxel sizes
    contradict (the model follows the voxel sizes; the warning says which one was used)."""
    name = Path(t1w_file).name
    source = acquisition.thickness_source or ""
    if source.startswith("slice spacing ("):
        LOGGER.warning("%s: %s; the slice thickness is taken as the slice spacing, %g mm "
                       "(--slice-thickness sets it)", name, source[len("slice spacing ("):-1],
                       acquisition.thickness)  # fmt: skip
    declared = read_sidecar(t1w_file).get("MRAcquisitionType")
    sizes = "×".join(f"{s:g}" for s in acquisition.spacing) + " mm"
    if declared == "3D" and acquisition.family == "slice":
        LOGGER.warning("%s: the sidecar says MRAcquisitionType 3D, but the voxel sizes %s have "
                       "one coarse axis (%d): modelled as a 2D scan, slices %g mm thick (%s "
                       "profile)", name, sizes, acquisition.slice_axis, acquisition.thickness,
                       acquisition.profile)  # fmt: skip
    elif declared == "2D" and acquisition.family == "isotropic":
        LOGGER.warning("%s: the sidecar says MRAcquisitionType 2D, but the voxel sizes %s are "
                       "nearly isotropic: modelled as an isotropic (3D) acquisition", name,
                       sizes)  # fmt: skip


def warn_thick_slice_truth(t1w_file: str) -> None:
    """``--evaluate`` takes each T1w as the truth: warn when its voxel sizes are those of a
    2D scan (thick slices), whose scores then measure a blurred truth along the slice axis."""
    sizes = voxel_sizes(nib.load(t1w_file).affine)
    axis = coarse_axis(sizes)
    if axis is not None:
        LOGGER.warning("%s: --evaluate takes it as the truth, but its voxel sizes %s are those "
                       "of a 2D scan (thick slices along axis %d): its scores measure how well "
                       "a blurred truth is recovered; evaluate on a 3D (isotropic) scan",
                       Path(t1w_file).name, "×".join(f"{s:g}" for s in sizes) + " mm",
                       axis)  # fmt: skip
