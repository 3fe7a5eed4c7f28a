"""init_ds_*_wf: every derivative the app writes is written here, in one place."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_sr.interfaces.bids import DerivativesDataSink


def init_ds_sr_wf(
    *, bids_dir: Path, output_dir: Path, desc: str, name: str = "ds_sr_wf"
) -> pe.Workflow:
    """Write a super-resolved T1w and its sidecar into the derivatives dataset.

    Inputs (``inputnode``): ``source_file`` (the raw T1w), ``sr_file``, ``report_json``.
    Outputs (``outputnode``): ``out_file``, ``out_meta`` — the derivative and its sidecar.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["source_file", "sr_file", "report_json"]), name="inputnode"
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_file", "out_meta"]), name="outputnode")
    ds_sr = pe.Node(
        DerivativesDataSink(base_directory=str(output_dir), bids_dir=str(bids_dir), desc=desc),
        name="ds_sr",
        run_without_submitting=True,
    )
    workflow.connect([
        (inputnode, ds_sr, [
            ("source_file", "source_file"),
            ("sr_file", "in_file"),
            ("report_json", "report_json"),
        ]),
        (ds_sr, outputnode, [("out_file", "out_file"), ("out_meta", "out_meta")]),
    ])  # fmt: skip
    return workflow
