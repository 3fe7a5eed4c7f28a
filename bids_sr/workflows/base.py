"""init_bids_sr_wf → init_single_subject_wf: the participant-level workflow graph."""

from __future__ import annotations

import re
from pathlib import Path

from nipype.pipeline import engine as pe

from bids_sr.bids import parse_entities
from bids_sr.config import Config
from bids_sr.workflows.anatomical import init_anat_sr_wf
from bids_sr.workflows.outputs import init_ds_sr_wf


def _file_tag(t1w_file: str) -> str:
    """A node-name-safe tag from a file's entities other than sub (ses-1_acq-mp → ses_1_acq_mp)."""
    entities, _, _ = parse_entities(t1w_file)
    tag = "_".join(f"{k}_{v}" for k, v in entities.items() if k != "sub") or "t1w"
    return re.sub(r"[^A-Za-z0-9_]", "_", tag)


def init_single_subject_wf(
    *, subject_id: str, t1w_files: list[str], config: Config, name: str | None = None
) -> pe.Workflow:
    """Super-resolve every T1w of one participant and write the derivatives.

    One ``anat_<entities>_wf`` and one ``ds_<entities>_wf`` per T1w (all sessions,
    acquisitions and runs), so a scheduler can run them as separate jobs.
    """
    workflow = pe.Workflow(name=name or f"single_subject_{subject_id}_wf")
    wf_settings = config.workflow
    for t1w_file in t1w_files:
        tag = _file_tag(t1w_file)
        anat_wf = init_anat_sr_wf(
            t1w_file=t1w_file,
            method=wf_settings.method,
            scale=wf_settings.scale,
            output_resolution=wf_settings.output_resolution,
            weights=wf_settings.weights,
            device=wf_settings.device,
            tile_size=wf_settings.tile_size,
            tile_overlap=wf_settings.tile_overlap,
            amp=wf_settings.amp,
            seed=config.seeds.random_seed,
            omp_nthreads=config.nipype.omp_nthreads,
            name=f"anat_{tag}_wf",
        )
        anat_wf.inputs.inputnode.t1w = t1w_file
        ds_wf = init_ds_sr_wf(
            bids_dir=config.execution.bids_dir,
            output_dir=config.execution.output_dir,
            desc=wf_settings.method,
            name=f"ds_{tag}_wf",
        )
        ds_wf.inputs.inputnode.source_file = t1w_file
        workflow.connect([
            (anat_wf, ds_wf, [
                ("outputnode.sr_file", "inputnode.sr_file"),
                ("outputnode.report_json", "inputnode.report_json"),
            ]),
        ])  # fmt: skip
    return workflow


def init_bids_sr_wf(*, config: Config, t1w_by_subject: dict[str, list[str]]) -> pe.Workflow:
    """The whole participant-level run: one single-subject workflow per participant."""
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
    if config.nipype.resource_monitor:
        workflow.config["monitoring"] = {"enabled": True}
    for subject_id, files in t1w_by_subject.items():
        workflow.add_nodes(
            [init_single_subject_wf(subject_id=subject_id, t1w_files=files, config=config)]
        )
    return workflow
