"""init_ds_*_wf: every derivative the app writes is written here, in one place."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_sr.bids import (
    GUIDED_MINUS_MONO_DESC,
    UNCERTAINTY_DESC,
    bids_uri,
    combined_path,
    derivative_path,
    desc_label,
    strip_prefix,
)
from bids_sr.guidance import mono_twin
from bids_sr.interfaces.bids import (
    CopyToDerivatives,
    DerivativesDataSink,
    OptionalDerivativesDataSink,
)

# Sinks always run (``overwrite=True``): their cached result is no proof that the file they
# wrote is still in the output folder (deleted, truncated, the folder removed), and copying
# a finished file again is cheap.
SINK = {"run_without_submitting": True, "overwrite": True}


def init_ds_sr_wf(
    *,
    bids_dir: Path,
    output_dir: Path,
    desc: str,
    metadata: dict | None = None,
    name: str = "ds_sr_wf",
) -> pe.Workflow:
    """Write a super-resolved T1w and its sidecar into the derivatives dataset.

    ``desc`` is the desc- label (:func:`bids_sr.bids.desc_label` of the method);
    ``metadata``: more sidecar fields known when the graph is built (``T2wReference``,
    ``MethodChoice``).
    Inputs (``inputnode``): ``source_file`` (the raw T1w), ``sr_file``, ``report_json``.
    Outputs (``outputnode``): ``out_file``, ``out_meta`` — the derivative and its sidecar.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["source_file", "sr_file", "report_json"]), name="inputnode"
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_file", "out_meta"]), name="outputnode")
    sink = DerivativesDataSink(base_directory=str(output_dir), bids_dir=str(bids_dir), desc=desc)
    if metadata:
        sink.inputs.extra_metadata = dict(metadata)
    ds_sr = pe.Node(sink, name="ds_sr", **SINK)
    workflow.connect([
        (inputnode, ds_sr, [
            ("source_file", "source_file"),
            ("sr_file", "in_file"),
            ("report_json", "report_json"),
        ]),
        (ds_sr, outputnode, [("out_file", "out_file"), ("out_meta", "out_meta")]),
    ])  # fmt: skip
    return workflow


#: The desc- suffix of a combination of runs (``desc-bsplineCombined``, ``--combine-runs``).
COMBINED_DESC = "Combined"


def init_ds_combined_wf(
    *,
    bids_dir: Path,
    output_dir: Path,
    run_files: list[str],
    desc: str,
    name: str = "ds_combined_wf",
) -> pe.Workflow:
    """Write the combination of a session's T1w runs (``--combine-runs``) and its sidecar.

    The name keeps the entities all runs share (their differing ``acq-``/``run-`` go),
    adds ``res-hi`` and ``desc-<desc>Combined``
    (``sub-01_ses-1_res-hi_desc-bsplineCombined_T1w.nii.gz``). The sidecar's ``Sources``
    lists every run; ``SpatialReference`` is the first run, whose output grid it shares;
    the ``Combination*``/``CombinedRuns`` fields come from the node's report.
    Inputs (``inputnode``): ``in_file``, ``report_json``.
    Outputs (``outputnode``): ``out_file``, ``out_meta``.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_file", "report_json"]),
                        name="inputnode")  # fmt: skip
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_file", "out_meta"]), name="outputnode")
    full_desc = desc + COMBINED_DESC
    reference = Path(run_files[0]).name
    sink = DerivativesDataSink(
        base_directory=str(output_dir), bids_dir=str(bids_dir), desc=full_desc,
        source_file=run_files[0], out_path=combined_path(run_files, full_desc).as_posix(),
    )  # fmt: skip
    sink.inputs.extra_metadata = {
        "Description": (
            f"T1w image combined from {len(run_files)} scans of one session by bids_sr: each "
            f"super-resolved with desc-{desc}, registered rigidly to {reference}'s output, "
            "then reconstructed jointly so that it agrees with what every scan acquired "
            "(POCS over their data-consistency projections); on the grid and intensity "
            f"scale of {reference}'s output."
        ),
        "Sources": [bids_uri(path, bids_dir) for path in run_files],
    }
    ds_combined = pe.Node(sink, name="ds_combined", **SINK)
    workflow.connect([
        (inputnode, ds_combined, [("in_file", "in_file"), ("report_json", "report_json")]),
        (ds_combined, outputnode, [("out_file", "out_file"), ("out_meta", "out_meta")]),
    ])  # fmt: skip
    return workflow


#: Report fields that score the super-resolved image against the acquired one: true of that
#: image, not of a map derived from it (an uncertainty or a guided − mono difference)
IMAGE_ONLY_FIELDS = ["DataConsistency", "DataConsistencyPSNR", "DataConsistencyPSNRBefore"]


def init_ds_uncertainty_wf(
    *,
    bids_dir: Path,
    output_dir: Path,
    desc: str,
    name: str = "ds_uncertainty_wf",
) -> pe.Workflow:
    """Write a self-supervised method's uncertainty map as a derivative of its own.

    The name keeps the T1w's entities with ``res-hi`` and ``desc-<desc>Uncertainty``
    (``sub-01_res-hi_desc-selfsrUncertainty_T1w.nii.gz``), beside the super-resolved image
    on the same grid; the sidecar says what the map is.
    Inputs (``inputnode``): ``source_file``, ``in_file`` (the map), ``report_json``.
    Outputs (``outputnode``): ``out_file``, ``out_meta``.
    """
    sink = DerivativesDataSink(
        base_directory=str(output_dir), bids_dir=str(bids_dir), desc=desc + UNCERTAINTY_DESC
    )
    sink.inputs.extra_metadata = {
        "Description": (
            f"Uncertainty of the desc-{desc} super-resolved T1w: half the absolute difference "
            "between its two through-plane estimates (slice axis with each in-plane axis), "
            "before data consistency, in the T1w's intensity units; 0 where they agree. "
            "Large values mark structure the scan's own in-plane data did not predict."
        ),
        "Units": "arbitrary (T1w intensity)",
    }
    sink.inputs.omit_fields = IMAGE_ONLY_FIELDS
    return _ds_map_wf(sink, node_name="ds_uncertainty", name=name)



def init_ds_guided_minus_mono_wf(
    *,
    bids_dir: Path,
    output_dir: Path,
    source_file: str,
    method: str,
    reference_suffix: str = "T2w",
    reference: str | None = None,
    name: str = "ds_guided_minus_mono_wf",
) -> pe.Workflow:
    """Write a guided output minus its mono twin's (what the reference changed) beside it.

    The name keeps the T1w's entities with ``res-hi`` and ``desc-<desc>GuidedMinusMono``,
    ``<desc>`` the guided output's (``sub-01_res-hi_desc-srrecnnT2wGuidedMinusMono_T1w.nii.gz``
    beside ``…desc-srrecnnT2w_T1w.nii.gz``, on the same grid). The sidecar says what the map
    is, lists the guided output and the T1w the twin ran on as ``Sources`` and names the
    reference (``<reference_suffix>Reference``: ``reference``, its URI, and
    ``ReferenceSuffix``); the mono model and the map's numbers come with the report
    (``GuidedMinusMono``: ``MonoModel``, ``MonoWeights``, …). The map exists only when the twin
    ran: given ``in_file`` '', the sink writes nothing and removes an earlier run's map
    (:class:`~bids_sr.interfaces.bids.OptionalDerivativesDataSink`).
    Inputs (``inputnode``): ``in_file`` (the map, or ''), ``report_json``.
    Outputs (``outputnode``): ``out_file``, ``out_meta`` (undefined when nothing was written).
    """
    desc = desc_label(method)
    guided = derivative_path(source_file, desc=desc)
    sink = OptionalDerivativesDataSink(
        base_directory=str(output_dir), bids_dir=str(bids_dir), desc=desc + GUIDED_MINUS_MONO_DESC
    )
    sink.inputs.extra_metadata = {
        "Description": (
            f"What the {reference_suffix} reference contributed to the desc-{desc} output: "
            f"the {method} output minus that of its mono twin {mono_twin(method)} (the same "
            "network without the reference channel; same input, factors and data "
            "consistency), voxel by voxel on the output grid, in the T1w's intensity units: "
            f"positive where the {reference_suffix} made the T1w brighter, negative where "
            "darker, 0 where it changed nothing."
        ),
        "Sources": [f"bids::{guided.as_posix()}", bids_uri(source_file, bids_dir)],
        "Units": "arbitrary (T1w intensity)",
        **({f"{reference_suffix}Reference": reference} if reference else {}),
        "ReferenceSuffix": reference_suffix,
    }
    sink.inputs.omit_fields = IMAGE_ONLY_FIELDS
    workflow = _ds_map_wf(sink, node_name="ds_guided_minus_mono", name=name)
    workflow.inputs.inputnode.source_file = source_file
    return workflow


def _ds_map_wf(sink, *, node_name: str, name: str) -> pe.Workflow:
    """A workflow around ``sink``, a map stored beside a super-resolved T1w.

    Inputs (``inputnode``): ``source_file``, ``in_file``, ``report_json`` (the method's
    report: the sidecar's provenance). Outputs (``outputnode``): ``out_file``, ``out_meta``.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["source_file", "in_file", "report_json"]), name="inputnode"
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_file", "out_meta"]), name="outputnode")
    ds_map = pe.Node(sink, name=node_name, **SINK)
    workflow.connect([
        (inputnode, ds_map, [
            ("source_file", "source_file"),
            ("in_file", "in_file"),
            ("report_json", "report_json"),
        ]),
        (ds_map, outputnode, [("out_file", "out_file"), ("out_meta", "out_meta")]),
    ])  # fmt: skip
    return workflow


def init_ds_xfm_wf(*, output_dir: Path, source_file: str, name: str = "ds_xfm_wf",
                   reference_suffix: str = "T2w") -> pe.Workflow:  # fmt: skip
    """Write the rigid reference → T1w registration of a guided method into the derivatives.

    The name keeps the T1w's entities and adds fMRIPrep's transform entities:
    ``sub-01[_ses-1][_acq-mp]_from-T2w_to-T1w_mode-image_xfm.txt`` (``from-FLAIR`` for a
    FLAIR reference; ITK text, the transform ``antsApplyTransforms -i T2w -r T1w`` expects);
    ``.bidsignore`` lists ``*_xfm.txt``.
    Inputs (``inputnode``): ``xfm``. Outputs (``outputnode``): ``out_file``.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["xfm"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_file"]), name="outputnode")
    relative = derivative_path(
        source_file, desc=None, res=None, suffix="xfm", extension=".txt",
        extra={"from": reference_suffix, "to": "T1w", "mode": "image"},
    )  # fmt: skip
    ds_xfm = pe.Node(
        CopyToDerivatives(base_directory=str(output_dir), out_path=relative.as_posix()),
        name="ds_xfm",
        **SINK,
    )
    workflow.connect([
        (inputnode, ds_xfm, [("xfm", "in_file")]),
        (ds_xfm, outputnode, [("out_file", "out_file")]),
    ])  # fmt: skip
    return workflow


def init_ds_evaluation_wf(
    *, output_dir: Path, source_file: str, name: str = "ds_evaluation_wf"
) -> pe.Workflow:
    """Write one T1w's evaluation table and its sidecar into the derivatives dataset.

    The name keeps the T1w's entities: ``sub-01/ses-1/anat/sub-01_ses-1_desc-evaluation_
    metrics.tsv`` (+ ``.json``); the ``.bidsignore`` written with the dataset description
    tells the validator about them. Inputs (``inputnode``): ``metrics_tsv``, ``metrics_json``.
    Outputs (``outputnode``): ``out_file``, ``out_meta``.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["metrics_tsv", "metrics_json"]), name="inputnode"
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_file", "out_meta"]), name="outputnode")
    relative = derivative_path(
        source_file, desc="evaluation", res=None, suffix="metrics", extension=".tsv"
    )
    ds_metrics = pe.Node(
        CopyToDerivatives(base_directory=str(output_dir), out_path=relative.as_posix()),
        name="ds_metrics",
        **SINK,
    )
    workflow.connect([
        (inputnode, ds_metrics, [("metrics_tsv", "in_file"), ("metrics_json", "in_sidecar")]),
        (ds_metrics, outputnode, [("out_file", "out_file"), ("out_meta", "out_meta")]),
    ])  # fmt: skip
    return workflow


def init_ds_report_wf(
    *, output_dir: Path, subject_id: str, name: str = "ds_report_wf"
) -> pe.Workflow:
    """Write a participant's HTML report as ``<output_dir>/sub-<label>.html`` (fMRIPrep's place).

    Inputs (``inputnode``): ``report``. Outputs (``outputnode``): ``out_file``.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["report"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_file"]), name="outputnode")
    ds_report = pe.Node(
        CopyToDerivatives(
            base_directory=str(output_dir), out_path=f"sub-{strip_prefix(subject_id, 'sub-')}.html"
        ),
        name="ds_report",
        **SINK,
    )
    workflow.connect([
        (inputnode, ds_report, [("report", "in_file")]),
        (ds_report, outputnode, [("out_file", "out_file")]),
    ])  # fmt: skip
    return workflow
