"""init_bids_sr_wf → init_single_subject_wf: the participant-level workflow graph."""

from __future__ import annotations

import re
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_sr.bids import bids_uri, parse_entities
from bids_sr.config import Config
from bids_sr.interfaces.reports import SubjectReport
from bids_sr.superresolve import INTERPOLATION_METHODS
from bids_sr.workflows.anatomical import init_anat_sr_wf
from bids_sr.workflows.evaluation import init_evaluation_wf
from bids_sr.workflows.outputs import init_ds_evaluation_wf, init_ds_report_wf, init_ds_sr_wf


def _file_tag(t1w_file: str) -> str:
    """A node-name-safe tag from a file's entities other than sub (ses-1_acq-mp → ses_1_acq_mp)."""
    entities, _, _ = parse_entities(t1w_file)
    tag = "_".join(f"{k}_{v}" for k, v in entities.items() if k != "sub") or "t1w"
    return re.sub(r"[^A-Za-z0-9_]", "_", tag)


def _name_tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def init_single_subject_wf(
    *,
    subject_id: str,
    t1w_files: list[str],
    config: Config,
    brain_masks: dict[str, str] | None = None,
    name: str | None = None,
) -> pe.Workflow:
    """Process every T1w of one participant, write the derivatives, then the subject report.

    Normal mode: one ``anat_<entities>_<method>_wf`` and ``ds_<entities>_<method>_wf`` per
    T1w (all sessions, acquisitions and runs) and method, so a scheduler can run them as
    separate jobs. Evaluation mode (``config.workflow.evaluate``): one ``eval_<entities>_wf``
    and ``ds_eval_<entities>_wf`` per T1w instead; ``brain_masks`` maps a T1w to its BIDS
    brain-mask derivative, when one was found. Last, ``subject_report`` gathers everything
    into ``sub-<label>.html`` (``ds_report_wf``).
    """
    workflow = pe.Workflow(name=name or f"single_subject_{subject_id}_wf")
    report = pe.Node(SubjectReport(subject=subject_id), name="subject_report", mem_gb=1.0)
    if config.workflow.evaluate:
        _add_evaluation(workflow, report, t1w_files, config, brain_masks or {})
    else:
        _add_super_resolution(workflow, report, t1w_files, config)
    ds_report_wf = init_ds_report_wf(
        output_dir=config.execution.output_dir, subject_id=subject_id
    )
    workflow.connect(report, "out_report", ds_report_wf, "inputnode.report")
    return workflow


def _add_super_resolution(workflow, report, t1w_files: list[str], config: Config) -> None:
    wf_settings = config.workflow
    outputs = []
    for t1w_file in t1w_files:
        tag = _file_tag(t1w_file)
        for method in wf_settings.methods:
            anat_wf = init_anat_sr_wf(
                t1w_file=t1w_file,
                method=method,
                scale=wf_settings.scale,
                output_resolution=wf_settings.output_resolution,
                weights=wf_settings.weights if method not in INTERPOLATION_METHODS else None,
                device=wf_settings.device,
                tile_size=wf_settings.tile_size,
                tile_overlap=wf_settings.tile_overlap,
                amp=wf_settings.amp,
                seed=config.seeds.random_seed,
                omp_nthreads=config.nipype.omp_nthreads,
                name=f"anat_{tag}_{_name_tag(method)}_wf",
            )
            anat_wf.inputs.inputnode.t1w = t1w_file
            ds_wf = init_ds_sr_wf(
                bids_dir=config.execution.bids_dir,
                output_dir=config.execution.output_dir,
                desc=method,
                name=f"ds_{tag}_{_name_tag(method)}_wf",
            )
            ds_wf.inputs.inputnode.source_file = t1w_file
            workflow.connect([
                (anat_wf, ds_wf, [
                    ("outputnode.sr_file", "inputnode.sr_file"),
                    ("outputnode.report_json", "inputnode.report_json"),
                ]),
            ])  # fmt: skip
            outputs.append((t1w_file, ds_wf))
    merge_files = pe.Node(niu.Merge(len(outputs)), name="merge_outputs")
    merge_meta = pe.Node(niu.Merge(len(outputs)), name="merge_sidecars")
    for number, (_, ds_wf) in enumerate(outputs, start=1):
        workflow.connect([
            (ds_wf, merge_files, [("outputnode.out_file", f"in{number}")]),
            (ds_wf, merge_meta, [("outputnode.out_meta", f"in{number}")]),
        ])  # fmt: skip
    report.inputs.source_files = [t1w_file for t1w_file, _ in outputs]
    workflow.connect([
        (merge_files, report, [("out", "output_files")]),
        (merge_meta, report, [("out", "sidecars")]),
    ])  # fmt: skip


def _add_evaluation(
    workflow, report, t1w_files: list[str], config: Config, brain_masks: dict[str, str]
) -> None:
    wf_settings = config.workflow
    learned = [m for m in wf_settings.methods if m not in INTERPOLATION_METHODS]
    weights = {learned[0]: str(wf_settings.weights)} if wf_settings.weights and learned else None
    merge_reports = pe.Node(niu.Merge(len(t1w_files)), name="merge_evaluations")
    for number, t1w_file in enumerate(t1w_files, start=1):
        tag = _file_tag(t1w_file)
        eval_wf = init_evaluation_wf(
            t1w_file=t1w_file,
            methods=wf_settings.methods,
            scale=wf_settings.scale,
            degradation=wf_settings.degradation,
            weights=weights,
            device=wf_settings.device,
            report_methods=wf_settings.methods,
            omp_nthreads=config.nipype.omp_nthreads,
            name=f"eval_{tag}_wf",
        )
        eval_wf.inputs.inputnode.t1w = t1w_file
        eval_wf.inputs.inputnode.source = bids_uri(t1w_file, config.execution.bids_dir)
        if t1w_file in brain_masks:
            eval_wf.inputs.inputnode.mask_file = brain_masks[t1w_file]
        ds_wf = init_ds_evaluation_wf(
            output_dir=config.execution.output_dir, source_file=t1w_file, name=f"ds_eval_{tag}_wf"
        )
        workflow.connect([
            (eval_wf, ds_wf, [("outputnode.metrics_tsv", "inputnode.metrics_tsv"),
                              ("outputnode.metrics_json", "inputnode.metrics_json")]),
            (eval_wf, merge_reports, [("outputnode.report_json", f"in{number}")]),
        ])  # fmt: skip
    workflow.connect(merge_reports, "out", report, "evaluation_reports")


def init_bids_sr_wf(
    *,
    config: Config,
    t1w_by_subject: dict[str, list[str]],
    brain_masks: dict[str, str] | None = None,
) -> pe.Workflow:
    """The whole participant-level run: one single-subject workflow per participant.

    ``brain_masks`` (evaluation mode) maps a T1w path to its brain-mask derivative."""
    workflow = pe.Workflow(name="bids_sr_wf")
    workflow.base_dir = str(Path(config.execution.work_dir))
    workflow.config["execution"].update(
        {
            "crashdump_dir": str(config.execution.log_dir or config.execution.output_dir / "logs"),
            "crashfile_format": "txt",
            "stop_on_first_crash": config.nipype.stop_on_first_crash,
            "remove_unnecessary_outputs": False,
        }
    )
    if config.nipype.plugin in ("MultiProc", "LegacyMultiProc"):
        # local scheduling: nipype sleeps this long after each pass over the graph (2 s by
        # default, meant for cluster queues), which dominates small runs and cached reruns
        workflow.config["execution"]["poll_sleep_duration"] = 0.2
    if config.nipype.resource_monitor:
        workflow.config["monitoring"] = {"enabled": True}
    for subject_id, files in t1w_by_subject.items():
        workflow.add_nodes(
            [
                init_single_subject_wf(
                    subject_id=subject_id, t1w_files=files, config=config, brain_masks=brain_masks
                )
            ]
        )
    return workflow
