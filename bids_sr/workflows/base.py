"""init_bids_sr_wf → init_single_subject_wf: the participant-level workflow graph."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_sr.bids import bids_uri, desc_label, parse_entities, reference_session, reference_uri
from bids_sr.config import Config
from bids_sr.fileio import read_sidecar
from bids_sr.interfaces.reports import SubjectReport
from bids_sr.planning.plan import MethodPlan
from bids_sr.superresolve import GUIDED_METHODS, INTERPOLATION_METHODS, SELF_SUPERVISED_METHODS
from bids_sr.workflows.anatomical import estimate_mem_gb, init_anat_sr_wf
from bids_sr.workflows.combine import init_combine_runs_wf
from bids_sr.workflows.evaluation import init_evaluation_wf
from bids_sr.workflows.outputs import (
    init_ds_combined_wf,
    init_ds_evaluation_wf,
    init_ds_guided_minus_mono_wf,
    init_ds_report_wf,
    init_ds_sr_wf,
    init_ds_uncertainty_wf,
    init_ds_xfm_wf,
)
from bids_sr.workflows.reference import init_reference_wf

LOGGER = logging.getLogger("bids_sr")


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
    plan: MethodPlan | None = None,
    name: str | None = None,
) -> pe.Workflow:
    """Process every T1w of one participant, write the derivatives, then the subject report.

    ``plan`` (:func:`bids_sr.planning.plan.plan_methods`) says which methods each T1w gets
    and which reference (T2w or FLAIR) guides it; without one, every method of
    ``config.workflow.methods`` runs on every T1w, unguided. Normal mode: one
    ``anat_<entities>_<method>_wf`` and ``ds_<entities>_<method>_wf`` per T1w (all sessions,
    acquisitions and runs) and method, so a scheduler can run them as separate jobs; a T1w
    whose guided method has a reference also gets one ``reference_<entities>_wf``
    (registration, resampling onto the output grid) and ``ds_xfm_<entities>_wf`` (the
    transform), and each guided output a ``ds_<entities>_<method>_minus_mono_wf`` (its
    guided − mono map). Evaluation mode (``config.workflow.evaluate``): one
    ``eval_<entities>_wf`` and ``ds_eval_<entities>_wf`` per T1w instead (with the reference
    registered to the T1w for a guided method); ``brain_masks`` maps a T1w to its BIDS
    brain-mask derivative, when one was found. Last, ``subject_report`` gathers everything
    into ``sub-<label>.html`` (``ds_report_wf``).
    """
    workflow = pe.Workflow(name=name or f"single_subject_{subject_id}_wf")
    report = pe.Node(SubjectReport(subject=subject_id), name="subject_report", mem_gb=1.0,
                     run_without_submitting=True)  # written as soon as its inputs are: plugin.py
    if plan is None:
        plan = MethodPlan.uniform(config.workflow.methods, t1w_files)
    if config.workflow.evaluate:
        _add_evaluation(workflow, report, t1w_files, config, brain_masks or {}, plan)
    else:
        _add_super_resolution(workflow, report, t1w_files, config, plan)
    ds_report_wf = init_ds_report_wf(
        output_dir=config.execution.output_dir, subject_id=subject_id
    )
    workflow.connect(report, "out_report", ds_report_wf, "inputnode.report")
    return workflow


def _report_merge(n_inputs: int, name: str) -> pe.Node:
    """A Merge that gathers a participant's outputs for its report. It runs in the main
    process (``run_without_submitting``, like the datasinks), so the report does not
    wait for a free worker while other participants compute (:mod:`bids_sr.cli.plugin`)."""
    return pe.Node(niu.Merge(n_inputs), name=name, run_without_submitting=True)


def _add_reference(workflow, t1w_file: str, reference_file: str, config: Config, tag: str,
                   suffix: str = "T2w"):  # fmt: skip
    """Register the reference (T2w or FLAIR, ``suffix``) to the T1w, resample it onto the
    output grid, write the transform (``from-<suffix>_to-T1w``)."""
    wf_settings = config.workflow
    ref_wf = init_reference_wf(
        scale=wf_settings.scale,
        output_resolution=wf_settings.output_resolution,
        seed=config.seeds.random_seed,
        registration_qc=wf_settings.registration_qc,
        name=f"reference_{tag}_wf",
    )
    ref_wf.inputs.inputnode.t1w = t1w_file
    ref_wf.inputs.inputnode.reference = reference_file
    ds_xfm_wf = init_ds_xfm_wf(
        output_dir=config.execution.output_dir, source_file=t1w_file, name=f"ds_xfm_{tag}_wf",
        reference_suffix=suffix,
    )
    workflow.connect(ref_wf, "outputnode.transform_file", ds_xfm_wf, "inputnode.xfm")
    return ref_wf


def _add_super_resolution(
    workflow, report, t1w_files: list[str], config: Config, plan: MethodPlan
) -> None:
    wf_settings = config.workflow
    # (source T1w, ds workflow, (reference wf, anat wf) of a guided output or None,
    #  the uncertainty map's ds workflow of a self-supervised output or None)
    outputs = []
    anat_wfs = {}  # (T1w, method) → its anat workflow, for --combine-runs
    for t1w_file in t1w_files:
        tag = _file_tag(t1w_file)
        methods = plan.methods.get(t1w_file, [])
        reference_file = plan.reference_files.get(t1w_file)
        suffix = plan.reference_suffix(t1w_file)
        ref_wf = None
        if reference_file and any(plan.guides(t1w_file, m) for m in methods):
            ref_wf = _add_reference(workflow, t1w_file, reference_file, config, tag, suffix)
        for method in methods:
            guided = method in GUIDED_METHODS
            guided_here = plan.guides(t1w_file, method) and ref_wf is not None
            fallback = plan.fallback(t1w_file, method) if guided else None
            anat_wf = init_anat_sr_wf(
                method=method,
                scale=wf_settings.scale,
                output_resolution=wf_settings.output_resolution,
                weights=_weights(wf_settings.weights, plan, t1w_file, method),
                device=wf_settings.device,
                tile_size=wf_settings.tile_size,
                tile_overlap=wf_settings.tile_overlap,
                amp=wf_settings.amp,
                seed=config.seeds.random_seed,
                omp_nthreads=config.nipype.omp_nthreads,
                guided=guided_here,
                fallback_method=fallback.method if fallback else None,
                fallback_note=fallback.note if fallback else None,
                slice_thickness=wf_settings.slice_thickness,
                slice_profile=wf_settings.slice_profile,
                reference_problem=plan.reference_problems.get(t1w_file) if guided else None,
                data_consistency=wf_settings.data_consistency,
                model_dir=Path(config.execution.work_dir).absolute() / "selfsr_models",
                selfsr_recipe=wf_settings.selfsr_recipe,
                progress=config.execution.progress,
                # the header was read while planning; cluster plugins size jobs from this
                mem_gb=estimate_mem_gb(t1w_file, wf_settings.scale, wf_settings.output_resolution),
                # the sidecar's values, not its path: an edit reruns the node (and only this node)
                in_metadata=read_sidecar(t1w_file),
                name=f"anat_{tag}_{_name_tag(method)}_wf",
            )
            anat_wf.inputs.inputnode.t1w = t1w_file
            anat_wfs[t1w_file, method] = anat_wf
            metadata = {}
            if guided_here:  # T2wReference or FLAIRReference, and which it was
                metadata[f"{suffix}Reference"] = reference_uri(reference_file,
                                                               config.execution.bids_dir)
                metadata["ReferenceSuffix"] = suffix
                session = reference_session(t1w_file, reference_file)
                if session:  # guided from another session: the sidecar says so
                    metadata["ReferenceSession"] = session
                    metadata["ReferenceSessionWarning"] = (
                        f"the {suffix} reference comes from session {session}, not this T1w's; "
                        "lesions and anatomy can change between sessions"
                    )
            choice = plan.method_choice(t1w_file, method)
            if choice:
                metadata["MethodChoice"] = choice
                if "auto" in wf_settings.methods:  # what the user asked for: the default
                    metadata["RequestedMethod"] = "auto"
            warning = plan.warnings.get(t1w_file, {}).get(method)
            if warning:
                metadata["MethodWarning"] = warning
            ds_wf = init_ds_sr_wf(
                bids_dir=config.execution.bids_dir,
                output_dir=config.execution.output_dir,
                desc=desc_label(method),
                metadata=metadata,
                name=f"ds_{tag}_{_name_tag(method)}_wf",
            )
            ds_wf.inputs.inputnode.source_file = t1w_file
            workflow.connect([
                (anat_wf, ds_wf, [
                    ("outputnode.sr_file", "inputnode.sr_file"),
                    ("outputnode.report_json", "inputnode.report_json"),
                ]),
            ])  # fmt: skip
            ds_map = None
            if method in SELF_SUPERVISED_METHODS:
                ds_map = init_ds_uncertainty_wf(
                    bids_dir=config.execution.bids_dir,
                    output_dir=config.execution.output_dir,
                    desc=desc_label(method),
                    name=f"ds_{tag}_{_name_tag(method)}_uncertainty_wf",
                )
                ds_map.inputs.inputnode.source_file = t1w_file
                workflow.connect([
                    (anat_wf, ds_map, [
                        ("outputnode.uncertainty_file", "inputnode.in_file"),
                        ("outputnode.report_json", "inputnode.report_json"),
                    ]),
                ])  # fmt: skip
            if guided_here:
                workflow.connect([
                    (ref_wf, anat_wf, [
                        ("outputnode.reference_on_sr_grid", "inputnode.reference"),
                        ("outputnode.usable", "inputnode.reference_usable"),
                        ("outputnode.summary", "inputnode.reference_summary"),
                    ]),
                ])  # fmt: skip
            if guided:
                _add_guided_minus_mono(workflow, config, t1w_file, method, anat_wf,
                                       guided_here, metadata)  # fmt: skip
            guide = (ref_wf, anat_wf) if guided_here and ref_wf is not None else None
            outputs.append((t1w_file, ds_wf, guide, ds_map))
    outputs += _add_combinations(workflow, config, plan, anat_wfs)
    merge_files = _report_merge(len(outputs), "merge_outputs")
    merge_meta = _report_merge(len(outputs), "merge_sidecars")
    merge_reference = _report_merge(len(outputs), "merge_registered_reference")
    merge_difference = _report_merge(len(outputs), "merge_guided_minus_mono")
    merge_uncertainty = _report_merge(len(outputs), "merge_uncertainty")
    for number, (_, ds_wf, guide, ds_map) in enumerate(outputs, start=1):
        workflow.connect([
            (ds_wf, merge_files, [("outputnode.out_file", f"in{number}")]),
            (ds_wf, merge_meta, [("outputnode.out_meta", f"in{number}")]),
        ])  # fmt: skip
        if ds_map is None:
            setattr(merge_uncertainty.inputs, f"in{number}", "")
        else:  # the written derivative, so the report names the file a user finds
            workflow.connect(ds_map, "outputnode.out_file", merge_uncertainty, f"in{number}")
        if guide is None:
            setattr(merge_reference.inputs, f"in{number}", "")  # no registration overlay
            setattr(merge_difference.inputs, f"in{number}", "")  # no mono twin
        else:
            # the reference on the output grid, as the guided network saw it, and what it
            # changed (guided − mono; '' when the guided node fell back)
            workflow.connect([
                (guide[0], merge_reference, [("outputnode.reference_on_sr_grid", f"in{number}")]),
                (guide[1], merge_difference, [("outputnode.difference_file", f"in{number}")]),
            ])  # fmt: skip
    report.inputs.source_files = [t1w_file for t1w_file, *_ in outputs]
    workflow.connect([
        (merge_files, report, [("out", "output_files")]),
        (merge_meta, report, [("out", "sidecars")]),
        (merge_reference, report, [("out", "registered_t2w")]),
        (merge_difference, report, [("out", "guided_minus_mono")]),
        (merge_uncertainty, report, [("out", "uncertainty_maps")]),
    ])  # fmt: skip


def _add_guided_minus_mono(workflow, config: Config, t1w_file: str, method: str, anat_wf,
                           guided_here: bool, metadata: dict) -> None:  # fmt: skip
    """Write a guided output's guided − mono map beside it (``ds_<tag>_<method>_minus_mono_wf``).

    Every guided output gets the sink: the map is written when the mono twin ran, and a map
    of an earlier run is removed when it did not (no reference, or the node fell back)."""
    suffix = metadata.get("ReferenceSuffix", "T2w")
    ds_map = init_ds_guided_minus_mono_wf(
        bids_dir=config.execution.bids_dir,
        output_dir=config.execution.output_dir,
        source_file=t1w_file,
        method=method,
        reference_suffix=suffix,
        reference=metadata.get(f"{suffix}Reference"),
        name=f"ds_{_file_tag(t1w_file)}_{_name_tag(method)}_minus_mono_wf",
    )
    if not guided_here:  # no mono twin in the graph: the sink only removes an old map
        ds_map.inputs.inputnode.in_file = ""
        workflow.add_nodes([ds_map])
        return
    workflow.connect([
        (anat_wf, ds_map, [
            ("outputnode.difference_file", "inputnode.in_file"),
            ("outputnode.report_json", "inputnode.report_json"),
        ]),
    ])  # fmt: skip


def _add_combinations(workflow, config: Config, plan: MethodPlan, anat_wfs: dict) -> list:
    """--combine-runs: per group of runs (:attr:`MethodPlan.run_groups`) and per method all
    of them ran, one ``combine_<tag>_<method>_wf`` and its ``ds_combined_*`` sink; returns
    their report rows ``(reference run, ds workflow, None, None)``."""
    rows = []
    for runs in plan.run_groups:
        methods = [m for m in plan.methods.get(runs[0], [])
                   if all((run, m) in anat_wfs for run in runs)]  # fmt: skip
        if not methods:
            LOGGER.warning("%s: --combine-runs: its runs share no method; not combined",
                           ", ".join(Path(run).name for run in runs))  # fmt: skip
        tag = _group_tag(runs)
        for method in methods:
            label = f"{tag}_{_name_tag(method)}"
            combine_wf = init_combine_runs_wf(
                run_files=list(runs),
                seed=config.seeds.random_seed,
                omp_nthreads=config.nipype.omp_nthreads,
                mem_gb=sum(estimate_mem_gb(run, config.workflow.scale,
                                           config.workflow.output_resolution) for run in runs),
                name=f"combine_{label}_wf",
            )  # fmt: skip
            merge_sr = pe.Node(niu.Merge(len(runs)), name=f"merge_{label}_sr")
            merge_reports = pe.Node(niu.Merge(len(runs)), name=f"merge_{label}_reports")
            for number, run in enumerate(runs, start=1):
                workflow.connect([
                    (anat_wfs[run, method], merge_sr, [("outputnode.sr_file", f"in{number}")]),
                    (anat_wfs[run, method], merge_reports, [
                        ("outputnode.report_json", f"in{number}")]),
                ])  # fmt: skip
            ds_wf = init_ds_combined_wf(
                bids_dir=config.execution.bids_dir,
                output_dir=config.execution.output_dir,
                run_files=list(runs),
                desc=desc_label(method),
                name=f"ds_combined_{label}_wf",
            )
            workflow.connect([
                (merge_sr, combine_wf, [("out", "inputnode.sr_files")]),
                (merge_reports, combine_wf, [("out", "inputnode.report_jsons")]),
                (combine_wf, ds_wf, [("outputnode.out_file", "inputnode.in_file"),
                                     ("outputnode.report_json", "inputnode.report_json")]),
            ])  # fmt: skip
            rows.append((runs[0], ds_wf, None, None))
    return rows


def _group_tag(runs) -> str:
    """A node-name-safe tag of the entities a group of runs shares (ses_1, or t1w)."""
    parsed = [parse_entities(run)[0] for run in runs]
    shared = {k: v for k, v in parsed[0].items()
              if k != "sub" and all(p.get(k) == v for p in parsed)}  # fmt: skip
    return _name_tag("_".join(f"{k}_{v}" for k, v in shared.items()) or "t1w")


def _weights(given: Path | None, plan: MethodPlan, t1w_file: str, method: str) -> Path | None:
    """The weights a learned method runs with: --weights, else those ``auto`` validated,
    else None (the shipped default for the factors)."""
    if method in INTERPOLATION_METHODS:
        return None
    return given or plan.weights_for(t1w_file, method)


def _add_evaluation(
    workflow,
    report,
    t1w_files: list[str],
    config: Config,
    brain_masks: dict[str, str],
    plan: MethodPlan,
) -> None:
    wf_settings = config.workflow
    learned = [m for m in plan.all_methods if m not in INTERPOLATION_METHODS]
    given = {learned[0]: str(wf_settings.weights)} if wf_settings.weights and learned else {}
    merge_reports = _report_merge(len(t1w_files), "merge_evaluations")
    for number, t1w_file in enumerate(t1w_files, start=1):
        tag = _file_tag(t1w_file)
        # the baselines are always scored: a T1w whose methods were all skipped gets them
        methods = plan.methods.get(t1w_file) or ["bspline"]
        reference_file = plan.reference_files.get(t1w_file)
        guided = bool(reference_file) and any(m in GUIDED_METHODS for m in methods)
        weights = {**{m: str(p) for m, p in plan.weights.get(t1w_file, {}).items()}, **given}
        auto_choice = plan.auto_methods.get(t1w_file)
        eval_wf = init_evaluation_wf(
            t1w_file=t1w_file,
            methods=methods,
            scale=wf_settings.scale,
            degradation=wf_settings.degradation,
            weights=weights or None,
            device=wf_settings.device,
            report_methods=methods,
            acquisition_settings={
                "slice_thickness": wf_settings.slice_thickness, "slice_gap": wf_settings.slice_gap,
                "slice_profile": wf_settings.slice_profile, "auto_choice": auto_choice,
                "data_consistency": wf_settings.data_consistency,
            },  # fmt: skip
            omp_nthreads=config.nipype.omp_nthreads,
            guided=guided,
            seed=config.seeds.random_seed,
            name=f"eval_{tag}_wf",
        )
        eval_wf.inputs.inputnode.t1w = t1w_file
        if guided:
            eval_wf.inputs.inputnode.t2w = reference_file
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
    plan: MethodPlan | None = None,
) -> pe.Workflow:
    """The whole participant-level run: one single-subject workflow per participant.

    ``brain_masks`` (evaluation mode) maps a T1w path to its brain-mask derivative; ``plan``
    the methods and reference of each T1w (:func:`bids_sr.planning.plan.plan_methods`;
    default: every method of the configuration on every T1w, unguided)."""
    workflow = pe.Workflow(name="bids_sr_wf")
    workflow.base_dir = str(Path(config.execution.work_dir))
    workflow.config["execution"].update(
        {
            "crashdump_dir": str(config.execution.log_dir or config.execution.output_dir / "logs"),
            "crashfile_format": "txt",
            "stop_on_first_crash": config.nipype.stop_on_first_crash,
            "remove_unnecessary_outputs": False,
            # a file input that changes reruns its node even when its size and time stamp
            # stay (a mask or T2w replaced with `cp -p`, `rsync -a`, an archive)
            "hash_method": "content",
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
                    subject_id=subject_id,
                    t1w_files=files,
                    config=config,
                    brain_masks=brain_masks,
                    plan=plan,
                )
            ]
        )
    return workflow
