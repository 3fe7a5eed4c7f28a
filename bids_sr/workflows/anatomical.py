"""init_anat_sr_wf: super-resolve one T1w image."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.utils.gpu_count import gpu_count

from bids_sr.fileio import card_path, read_sidecar, sha256_file
from bids_sr.image import hr_shape, requested_factors
from bids_sr.interfaces.guidance import MonoTwin
from bids_sr.interfaces.superresolve import SuperResolve
from bids_sr.superresolve import INTERPOLATION_METHODS, SELF_SUPERVISED_METHODS
from bids_sr.weights_lookup import shipped_weights_digest


def estimate_mem_gb(t1w_file: str, scale: list[float], output_resolution: float | None) -> float:
    """Memory a SuperResolve node needs, from the output size (about 12 float32 copies)."""
    img = nib.load(t1w_file)
    factors = requested_factors(img.affine, scale, output_resolution)
    voxels = float(np.prod(hr_shape(img.shape[:3], factors)))
    return round(max(0.5, 12 * 4 * voxels / 1024**3 + 0.3), 2)


def files_read_by_node(method: str, weights: str | Path | None) -> dict[str, str]:
    """sha256 of the files a node running ``method`` (SuperResolve, an evaluation) reads
    without their being File inputs (Nipype hashes those): the model card beside
    ``weights``, and the shipped weights and cards (the default weights, the selfsr priors,
    a guided method's mono twin). Empty for interpolation, which reads none."""
    if method in INTERPOLATION_METHODS:
        return {}
    found = {"shipped weights": shipped_weights_digest()}
    card = card_path(weights) if weights else None
    if card is not None and card.is_file():
        found[str(card)] = sha256_file(card)
    return found


def uses_gpu(method: str, device: str) -> bool:
    """Whether a SuperResolve node with ``method`` and ``device`` will compute on a GPU.

    Interpolation never does; learned methods do with ``device='cuda'``, and with ``'auto'``
    when ``nvidia-smi`` lists a GPU (the same test Nipype's MultiProc uses to count GPUs).
    """
    if method in INTERPOLATION_METHODS or device == "cpu":
        return False
    return device == "cuda" or gpu_count() > 0


def init_anat_sr_wf(
    *,
    t1w_file: str,
    method: str,
    scale: list[float],
    output_resolution: float | None = None,
    weights: Path | None = None,
    device: str = "auto",
    tile_size: int | None = None,
    tile_overlap: float | None = None,
    amp: str = "none",
    seed: int = 0,
    omp_nthreads: int = 1,
    progress: bool = False,
    guided: bool = False,
    fallback_method: str | None = None,
    fallback_note: str | None = None,
    slice_thickness: float | None = None,
    slice_profile: str = "rect",
    reference_problem: str | None = None,
    data_consistency: bool = True,
    model_dir: Path | None = None,
    name: str = "anat_sr_wf",
) -> pe.Workflow:
    """Super-resolve one T1w image with ``method``.

    Inputs (``inputnode``): ``t1w`` — the LR T1w path; with ``guided`` also ``reference``
    (the registered T2w on the output grid), ``reference_usable`` and ``reference_summary``
    (from :func:`bids_sr.workflows.reference.init_t2w_reference_wf`). A guided method whose
    reference is missing (``guided`` False) or unusable runs ``fallback_method`` instead
    (``fallback_note``: why that one), inside its node, and the report says so
    (``reference_problem``: why a T2w that was found does not guide).
    Outputs (``outputnode``): ``sr_file`` — the super-resolved image on the upsampled grid
    (intensities on the input's scale); ``report_json`` — what was done (method, factors,
    voxel sizes, device, runtime) for the sidecar.

    ``slice_thickness``/``slice_profile`` describe a 2D input (see bids_sr.acquisition);
    ``data_consistency`` corrects the result so that it projects back onto the input.
    With ``guided``, the node ``mono_twin`` (:class:`bids_sr.interfaces.guidance.MonoTwin`)
    also runs the mono twin when the reference was used, and ``report_json`` carries
    ``guided_minus_mono``; output ``difference_file``: guided − mono ('' when none ran).
    ``model_dir``: where a self-supervised method (selfsr) keeps its per-scan model, so a
    rerun reuses it; such a method also has the output ``uncertainty_file``.
    ``t1w_file`` sizes the node's memory request for schedulers, and its sidecar's values
    become a node input (``in_metadata``), so that editing the sidecar reruns the node;
    files the node reads that are not File inputs (a model card, the shipped weights) enter
    its hash as digests (``read_files``).
    """
    workflow = pe.Workflow(name=name)
    reference_fields = ["reference", "reference_usable", "reference_summary"]
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["t1w", *(reference_fields if guided else [])]),
        name="inputnode",
    )
    self_supervised = method in SELF_SUPERVISED_METHODS
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["sr_file", "report_json", *(["uncertainty_file"] if self_supervised else []),
                    *(["difference_file"] if guided else [])]
        ),
        name="outputnode",
    )

    settings = {"method": method, "device": device, "seed": seed, "progress": progress}
    settings.update(amp=amp, slice_profile=slice_profile, data_consistency=data_consistency)
    if output_resolution:
        settings["output_resolution"] = output_resolution
    elif scale:  # neither: the node applies image.default_factors
        settings["scale"] = list(scale)
    optional = {"weights": str(weights) if weights else None, "tile_size": tile_size}
    optional.update(tile_overlap=tile_overlap, slice_thickness=slice_thickness)
    optional.update(fallback_method=fallback_method, fallback_note=fallback_note,
                    reference_problem=reference_problem)  # fmt: skip
    optional.update(model_dir=str(model_dir) if model_dir and self_supervised else None)
    optional.update(read_files=files_read_by_node(method, weights) or None)
    settings.update({key: value for key, value in optional.items() if value is not None})
    # the sidecar's values, not its path: an edit reruns the node (and only this node)
    settings["in_metadata"] = read_sidecar(t1w_file)
    # GPU nodes take one of MultiProc's n_gpu_procs slots per CPU thread they declare
    # (nipype counts min(n_procs, n_gpu_procs)); the GPU does the work, so they declare 1.
    on_gpu = uses_gpu(method, device)
    super_resolve = pe.Node(
        SuperResolve(use_gpu=on_gpu, **settings),
        name="super_resolve",
        mem_gb=estimate_mem_gb(t1w_file, scale, output_resolution),
        n_procs=1 if on_gpu else omp_nthreads,
    )
    workflow.connect([
        (inputnode, super_resolve, [("t1w", "in_file")]),
        (super_resolve, outputnode, [("out_file", "sr_file")]),
    ])  # fmt: skip
    if guided:
        # the same settings without the guide: what the reference contributed
        twin_settings = {key: value for key, value in settings.items() if key not in (
            "weights", "fallback_method", "fallback_note", "reference_problem")}  # fmt: skip
        mono_twin = pe.Node(
            MonoTwin(use_gpu=on_gpu, **twin_settings),
            name="mono_twin",
            mem_gb=estimate_mem_gb(t1w_file, scale, output_resolution),
            n_procs=1 if on_gpu else omp_nthreads,
        )
        workflow.connect([
            (inputnode, super_resolve, [
                ("reference", "reference_file"),
                ("reference_usable", "reference_usable"),
                ("reference_summary", "reference_summary"),
            ]),
            (inputnode, mono_twin, [("t1w", "in_file")]),
            (super_resolve, mono_twin, [("out_file", "guided_file"),
                                        ("report_json", "guided_report")]),
            (mono_twin, outputnode, [("merged_report", "report_json"),
                                     ("difference_file", "difference_file")]),
        ])  # fmt: skip
    else:
        workflow.connect(super_resolve, "report_json", outputnode, "report_json")
    if self_supervised:
        workflow.connect(super_resolve, "uncertainty_file", outputnode, "uncertainty_file")
    return workflow
