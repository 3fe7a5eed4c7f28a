"""init_reference_wf: bring a T1w's reference (a T2w or FLAIR) onto its super-resolved grid."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_sr.interfaces.grid import UpsampledGrid
from bids_sr.interfaces.registration import RegisterT2wToT1w, ResampleToGrid
from bids_sr.recipes import REGISTRATION_QC, RegistrationQC


def init_reference_wf(
    *,
    scale: list[float],
    output_resolution: float | None = None,
    seed: int = 0,
    registration_qc: RegistrationQC = REGISTRATION_QC,
    name: str = "reference_wf",
) -> pe.Workflow:
    """Rigidly register the reference (T2w or FLAIR) to the LR T1w and resample it onto the
    SR output grid.

    Registration is SimpleITK's Mattes mutual information, multi-resolution, initialised by
    image moments (:func:`bids_sr.registration.register_rigid`); the reference is then
    resampled once, with a cubic B-spline, straight onto the grid the super-resolution will
    produce.

    Inputs (``inputnode``): ``t1w`` (the LR T1w), ``reference`` (the T2w or FLAIR).
    Outputs (``outputnode``): ``reference_on_sr_grid`` — the reference for the guided method;
    ``transform_file`` — ITK text transform (T1w → reference physical points, i.e. the
    ``from-T2w_to-T1w_mode-image`` resampling transform of a T2w); ``registered_reference``
    — the reference on the LR T1w grid (for the report's overlay); ``quality`` — normalised
    mutual information; ``usable`` — quality above the threshold; ``summary`` — figures for
    the sidecar. ``registration_qc``: the quality check
    (:class:`bids_sr.recipes.RegistrationQC`), an input of the registration node, so that
    another check reruns it.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "reference"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["reference_on_sr_grid", "transform_file", "registered_reference", "quality",
                    "usable", "summary"]
        ),
        name="outputnode",
    )
    grid_settings = (  # neither: the node applies image.default_factors
        {"output_resolution": output_resolution} if output_resolution
        else ({"scale": list(scale)} if scale else {})
    )
    sr_grid = pe.Node(UpsampledGrid(**grid_settings), name="sr_grid")
    register = pe.Node(
        RegisterT2wToT1w(seed=seed, num_threads=1, qc=registration_qc.fields()),
        name="register",
        mem_gb=2.0,
    )
    resample = pe.Node(ResampleToGrid(), name="resample_to_sr_grid", mem_gb=2.0)
    workflow.connect([
        (inputnode, sr_grid, [("t1w", "in_file")]),
        (inputnode, register, [("t1w", "t1w_file"), ("reference", "t2w_file")]),
        (inputnode, resample, [("reference", "moving_file")]),
        (register, resample, [("transform_file", "transform_file")]),
        (sr_grid, resample, [("out_file", "reference_file")]),
        (resample, outputnode, [("out_file", "reference_on_sr_grid")]),
        (register, outputnode, [
            ("transform_file", "transform_file"),
            ("registered_t2w", "registered_reference"),
            ("quality", "quality"),
            ("usable", "usable"),
            ("summary", "summary"),
        ]),
    ])  # fmt: skip
    return workflow
