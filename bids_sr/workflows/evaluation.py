"""init_evaluation_wf: score super-resolution methods on one T1w used as the HR truth."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_sr.evaluation import evaluation_methods
from bids_sr.interfaces.evaluation import EvaluateSuperResolution
from bids_sr.interfaces.registration import RegisterT2wToT1w
from bids_sr.workflows.anatomical import files_read_by_node


def estimate_mem_gb(t1w_file: str, n_methods: int) -> float:
    """Memory of an evaluation node: the truth, the LR image, one result per method kept for
    the report, and the metrics' float64 temporaries (about 16 copies of the volume)."""
    voxels = float(np.prod(nib.load(t1w_file).shape[:3]))
    return round(max(0.5, (n_methods + 24) * 4 * voxels / 1024**3 + 0.3), 2)


def init_evaluation_wf(
    *,
    t1w_file: str,
    methods: list[str],
    scale: list[float],
    degradation: str = "gaussian",
    weights: dict[str, str] | None = None,
    device: str = "auto",
    report_methods: list[str] | None = None,
    omp_nthreads: int = 1,
    guided: bool = False,
    seed: int = 0,
    acquisition_settings: dict | None = None,
    name: str = "evaluation_wf",
) -> pe.Workflow:
    """Degrade one T1w by ``scale`` (``degradation`` preset), super-resolve it back with each
    method and the interpolation baselines, and score every result against the T1w.

    Inputs (``inputnode``): ``t1w`` — the T1w, treated as the HR truth; ``source`` — text of the
    table's source column (a BIDS URI); ``mask_file`` — optional brain mask (a BIDS
    ``desc-brain_mask`` derivative; when absent, bids_sr.masks.brain_mask is used); with ``guided``,
    ``t2w`` — the reference (T2w or FLAIR) of a guided method: it is rigidly registered to the T1w
    (the truth) and resampled onto the T1w's own grid, and a registration that fails its quality
    check leaves the guided method out of the table (see EvaluateSuperResolution). Outputs
    (``outputnode``): ``metrics_tsv``, ``metrics_json`` — the table and its sidecar; ``report_json``
    — the images and rows the subject report shows.

    ``acquisition_settings``: more inputs of EvaluateSuperResolution (``slice_thickness``,
    ``slice_gap``, ``slice_profile``, ``data_consistency``, ``auto_choice``).
    ``t1w_file`` is used only to size the node's memory request for schedulers.
    """
    workflow = pe.Workflow(name=name)
    fields = ["t1w", "source", "mask_file", *(["t2w"] if guided else [])]
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["metrics_tsv", "metrics_json", "report_json"]),
        name="outputnode",
    )
    settings = {"methods": list(methods), "scale": list(scale), "degradation": degradation,
                "device": device}  # fmt: skip
    if weights:
        settings["weights"] = {key: str(value) for key, value in weights.items()}
    if report_methods is not None:
        settings["report_methods"] = list(report_methods)
    settings.update({k: v for k, v in (acquisition_settings or {}).items() if v is not None})
    read = {}
    for method in evaluation_methods(methods):  # the shipped weights, the given ones' cards
        read.update(files_read_by_node(method, (weights or {}).get(method)))
    if read:
        settings["read_files"] = read
    evaluate = pe.Node(
        EvaluateSuperResolution(**settings),
        name="evaluate",
        mem_gb=estimate_mem_gb(t1w_file, len(evaluation_methods(methods))),
        n_procs=omp_nthreads,
    )
    if guided:
        register = pe.Node(RegisterT2wToT1w(seed=seed, num_threads=1), name="register_reference",
                           mem_gb=2.0)  # fmt: skip
        workflow.connect([
            (inputnode, register, [("t1w", "t1w_file"), ("t2w", "t2w_file")]),
            (register, evaluate, [("registered_t2w", "reference_file"),
                                  ("usable", "reference_usable"),
                                  ("summary", "reference_summary")]),
        ])  # fmt: skip
    workflow.connect([
        (inputnode, evaluate, [("t1w", "in_file"), ("source", "source"),
                               ("mask_file", "mask_file")]),
        (evaluate, outputnode, [("out_tsv", "metrics_tsv"), ("out_json", "metrics_json"),
                                ("out_report", "report_json")]),
    ])  # fmt: skip
    return workflow
