"""init_anat_sr_wf: super-resolve one T1w image.

Nothing here reads a file: the T1w may be known only when the workflow runs (a
DataGrabber, iterables). The super-resolution node's memory request comes from the T1w's
header when the node is about to run (:class:`SuperResolveMemory`, with MultiProc), or from
the ``mem_gb`` hint given to :func:`init_anat_sr_wf` (what cluster plugins, which size jobs
before they run, use).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces import utility as niu
from nipype.interfaces.base import isdefined
from nipype.pipeline import engine as pe
from nipype.utils.gpu_count import gpu_count

from bids_sr.cards.paths import card_path, shipped_weights_digest
from bids_sr.fileio import sha256_file
from bids_sr.image import hr_shape, requested_factors
from bids_sr.interfaces.guidance import MonoTwin
from bids_sr.interfaces.superresolve import SuperResolve
from bids_sr.recipes import SELFSR, SelfSRRecipe
from bids_sr.superresolve import INTERPOLATION_METHODS, SELF_SUPERVISED_METHODS

try:  # nipype >= 1.11: MultiProc asks a node's estimator once its inputs are known
    from nipype.utils.ram_estimator import RamEstimator
except ImportError:  # older nipype: the hint (or DEFAULT_MEM_GB) stands
    RamEstimator = object

#: A SuperResolve node's memory request before its input is known, without a hint (GB).
DEFAULT_MEM_GB = 1.0


def mem_gb_for(shape: Sequence[int], affine: np.ndarray, scale: Sequence[float] | None,
               output_resolution: float | None) -> float:  # fmt: skip
    """Memory a SuperResolve node needs, from the output size (about 12 float32 copies)."""
    factors = requested_factors(affine, list(scale) if scale else None, output_resolution)
    voxels = float(np.prod(hr_shape(tuple(shape[:3]), factors)))
    return round(max(0.5, 12 * 4 * voxels / 1024**3 + 0.3), 2)


def estimate_mem_gb(t1w_file: str, scale: list[float], output_resolution: float | None) -> float:
    """:func:`mem_gb_for` from a T1w's header (the data are not loaded)."""
    img = nib.load(t1w_file)
    return mem_gb_for(img.shape, img.affine, scale, output_resolution)


class SuperResolveMemory(RamEstimator):
    """Nipype RAM estimator of a SuperResolve node: :func:`mem_gb_for` from the header of its
    ``in_file`` and its ``scale``/``output_resolution``, asked when the node is ready to run
    (its input path known), so a workflow needs no file to be built."""

    def __call__(self, inputs) -> tuple[float, str]:
        if not isdefined(inputs.in_file):
            return DEFAULT_MEM_GB, "in_file undefined: default"
        scale = inputs.scale if isdefined(inputs.scale) else None
        resolution = inputs.output_resolution if isdefined(inputs.output_resolution) else None
        try:
            mem_gb = estimate_mem_gb(inputs.in_file, scale, resolution)
        except (OSError, nib.filebasedimages.ImageFileError) as exc:  # the node reports it
            return DEFAULT_MEM_GB, f"{inputs.in_file}: header unreadable ({exc})"
        return mem_gb, f"{Path(inputs.in_file).name}: {mem_gb} GB from its header"


def _sr_node(interface: SuperResolve, name: str, mem_gb: float | None, n_procs: int) -> pe.Node:
    """A node sized by the ``mem_gb`` hint, then by its input's header at run time."""
    node = pe.Node(interface, name=name, mem_gb=mem_gb or DEFAULT_MEM_GB, n_procs=n_procs)
    if RamEstimator is not object and mem_gb is None:
        node.ram_estimator = SuperResolveMemory()
    return node


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
    method: str = "auto",
    fast: bool = False,
    scale: list[float] | None = None,
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
    selfsr_recipe: SelfSRRecipe = SELFSR,
    mem_gb: float | None = None,
    in_metadata: dict | None = None,
    name: str = "anat_sr_wf",
) -> pe.Workflow:
    """Super-resolve one T1w image with ``method`` (default ``auto``, as the command line;
    ``fast``: ``auto`` prefers a validated cohort mode such as ``selfsr-fast``, as ``--fast``).

    Inputs (``inputnode``): ``t1w`` — the LR T1w path (known at build time or only when
    the workflow runs); with ``guided`` also ``reference`` (the registered T2w or FLAIR on
    the output grid), ``reference_usable`` and ``reference_summary`` (from
    :func:`bids_sr.workflows.reference.init_reference_wf`), and, with ``auto``,
    ``reference_source`` (the reference as acquired: auto guides only when it is finer).
    A guided method whose reference is missing (``guided`` False) or unusable runs
    ``fallback_method`` instead (``fallback_note``: why that one), inside its node, and the
    report says so (``reference_problem``: why a reference that was found does not guide).
    Outputs (``outputnode``): ``sr_file`` — the super-resolved image on the upsampled grid
    (intensities on the input's scale, named after the input); ``report_json`` — what was
    done (method, factors, voxel sizes, device, runtime) for the sidecar; ``method`` and
    ``method_choice`` — what ran and why (``auto``: the model card's evidence, decided when
    the node runs, as :func:`bids_sr.planning.auto.auto_choice` decides for the command line).

    ``slice_thickness``/``slice_profile`` describe a 2D input (see bids_sr.acquisition);
    ``data_consistency`` corrects the result so that it projects back onto the input.
    With ``guided``, the node ``mono_twin`` (:class:`bids_sr.interfaces.guidance.MonoTwin`)
    also runs the mono twin when the reference was used, and ``report_json`` carries
    ``guided_minus_mono``; output ``difference_file``: guided − mono ('' when none ran).
    ``model_dir``: where a self-supervised method (selfsr) keeps its per-scan model, so a
    rerun reuses it; such a method (and ``auto``, which may choose one) also has the output
    ``uncertainty_file`` (undefined when no selfsr ran), and ``selfsr_recipe``: how it
    learns (:class:`bids_sr.recipes.SelfSRRecipe`), an input of its node, so that another
    recipe reruns it.
    ``mem_gb``: the node's memory request, for plugins that size jobs before they run
    (SLURM); without it MultiProc sizes the node from the T1w's header when it is ready.
    ``in_metadata``: the T1w sidecar's values (the command line passes them, so that
    editing the sidecar reruns the node; without it the node reads the sidecar when it
    runs); files the node reads that are not File inputs (a model card, the shipped
    weights) enter its hash as digests (``read_files``).
    No file of the input is read while the workflow is built.
    """
    workflow = pe.Workflow(name=name)
    reference_fields = ["reference", "reference_usable", "reference_summary"]
    auto = method == "auto"
    if guided and auto:
        reference_fields.append("reference_source")
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["t1w", *(reference_fields if guided else [])]),
        name="inputnode",
    )
    self_supervised = method in SELF_SUPERVISED_METHODS or auto
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["sr_file", "report_json", "method", "method_choice",
                    *(["uncertainty_file"] if self_supervised else []),
                    *(["difference_file"] if guided else [])]
        ),
        name="outputnode",
    )

    settings = {"method": method, "device": device, "seed": seed, "progress": progress}
    if auto and fast:
        settings["fast"] = True
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
    optional.update(selfsr_recipe=selfsr_recipe.fields() if self_supervised else None)
    optional.update(read_files=files_read_by_node(method, weights) or None)
    settings.update({key: value for key, value in optional.items() if value is not None})
    # the sidecar's values, not its path: an edit reruns the node (and only this node)
    if in_metadata is not None:
        settings["in_metadata"] = dict(in_metadata)
    # GPU nodes take one of MultiProc's n_gpu_procs slots per CPU thread they declare
    # (nipype counts min(n_procs, n_gpu_procs)); the GPU does the work, so they declare 1.
    on_gpu = uses_gpu(method, device)
    n_procs = 1 if on_gpu else omp_nthreads
    super_resolve = _sr_node(SuperResolve(use_gpu=on_gpu, **settings), "super_resolve",
                             mem_gb, n_procs)  # fmt: skip
    workflow.connect([
        (inputnode, super_resolve, [("t1w", "in_file")]),
        (super_resolve, outputnode, [("out_file", "sr_file"), ("method", "method"),
                                     ("method_choice", "method_choice")]),
    ])  # fmt: skip
    if guided and auto:
        workflow.connect(inputnode, "reference_source", super_resolve, "reference_source")
    if guided:
        # the same settings without the guide: what the reference contributed
        twin_settings = {key: value for key, value in settings.items() if key not in (
            "weights", "fallback_method", "fallback_note", "reference_problem")}  # fmt: skip
        mono_twin = _sr_node(MonoTwin(use_gpu=on_gpu, **twin_settings), "mono_twin", mem_gb,
                             n_procs)  # fmt: skip
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
