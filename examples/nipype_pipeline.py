"""A Nipype pipeline that uses bids_sr as one step: DataGrabber → super-resolution (auto)
→ your own node → DataSink.

    python examples/nipype_pipeline.py BIDS_DIR OUT_DIR [--subject 01 ...] [-w WORK_DIR]
    python examples/nipype_pipeline.py bids_sr/data/demo /tmp/sr_pipeline --subject 01

The T1w paths are known only when the pipeline runs (the DataGrabber finds them, one per
subject, through ``iterables``), so nothing is read while the graph is built.
:func:`bids_sr.workflows.init_anat_sr_wf` is left at ``method='auto'``, as the command line:
when its node runs, it picks the shipped model whose card validates a gain for this image's
acquisition family and factors (else B-spline) — the same decision as ``bids_sr`` — and
reports what ran and why (``outputnode.method``, ``outputnode.method_choice``). The user's
node here only summarises each result in a JSON file; put your own analysis in its place.
The DataSink collects, per subject, the super-resolved image, bids_sr's report and the
summary under ``OUT_DIR/sub-<label>/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nipype.interfaces import io as nio
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_sr.workflows import init_anat_sr_wf


def summarise(sr_file: str, method: str, method_choice: str) -> str:
    """The user's step: a JSON file with what ran, why, and the output's grid."""
    import json
    import os

    import nibabel as nib

    image = nib.load(sr_file)
    summary = {
        "sr_file": os.path.basename(sr_file),
        "method": method,
        "method_choice": method_choice,
        "shape": [int(n) for n in image.shape[:3]],
        "voxel_size_mm": [round(float(z), 4) for z in image.header.get_zooms()[:3]],
    }
    out_file = os.path.abspath("summary.json")
    with open(out_file, "w") as handle:
        json.dump(summary, handle, indent=2)
    return out_file


def build_pipeline(bids_dir: Path, out_dir: Path, subjects: list[str], work_dir: Path
                   ) -> pe.Workflow:  # fmt: skip
    """The graph: reads nothing; the files are found when it runs."""
    workflow = pe.Workflow(name="sr_pipeline", base_dir=str(work_dir))
    grab = pe.Node(
        nio.DataGrabber(infields=["subject"], outfields=["t1w"], sort_filelist=True),
        name="grab",
    )
    grab.inputs.base_directory = str(bids_dir)
    grab.inputs.template = "sub-%s/anat/sub-%s_T1w.nii.gz"
    grab.inputs.template_args = {"t1w": [["subject", "subject"]]}
    grab.iterables = ("subject", subjects)

    sr_wf = init_anat_sr_wf()  # method="auto": decided per image when it runs; GPU if visible

    summary = pe.Node(
        niu.Function(input_names=["sr_file", "method", "method_choice"],
                     output_names=["out_file"], function=summarise),
        name="summarise",
    )  # fmt: skip
    sink = pe.Node(nio.DataSink(base_directory=str(out_dir)), name="sink",
                   run_without_submitting=True)  # fmt: skip
    sink.inputs.substitutions = [("_subject_", "sub-")]
    workflow.connect([
        (grab, sr_wf, [("t1w", "inputnode.t1w")]),
        (sr_wf, summary, [("outputnode.sr_file", "sr_file"),
                          ("outputnode.method", "method"),
                          ("outputnode.method_choice", "method_choice")]),
        (sr_wf, sink, [("outputnode.sr_file", "@sr_file"),
                       ("outputnode.report_json", "@report")]),
        (summary, sink, [("out_file", "@summary")]),
    ])  # fmt: skip
    return workflow


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--subject", nargs="+", default=["01"], help="labels without 'sub-'")
    parser.add_argument("-w", "--work-dir", type=Path, default=Path("work_sr_pipeline"))
    parser.add_argument("--plugin", default="MultiProc")
    opts = parser.parse_args(argv)
    workflow = build_pipeline(opts.bids_dir.absolute(), opts.out_dir.absolute(), opts.subject,
                              opts.work_dir.absolute())  # fmt: skip
    workflow.run(plugin=opts.plugin)
    for summary in sorted(opts.out_dir.absolute().glob("sub-*/summary.json")):
        print(summary, summary.read_text(), sep="\n")


if __name__ == "__main__":
    main()
