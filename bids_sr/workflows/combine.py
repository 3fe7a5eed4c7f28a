"""init_combine_runs_wf: combine the super-resolved T1w runs of one session (--combine-runs)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_sr.combine import DEFAULT_ITERATIONS
from bids_sr.interfaces.combine import CombineRuns


def init_combine_runs_wf(
    *,
    run_files: list[str],
    iterations: int = DEFAULT_ITERATIONS,
    seed: int = 0,
    omp_nthreads: int = 1,
    mem_gb: float = 1.0,
    name: str = "combine_runs_wf",
) -> pe.Workflow:
    """Register the super-resolved outputs of ``run_files`` (two or more T1w of one session,
    the first the reference) and reconstruct one image that agrees with every run.

    Inputs (``inputnode``): ``sr_files`` and ``report_jsons`` — each run's super-resolved
    image and SuperResolve report, in the order of ``run_files``.
    Outputs (``outputnode``): ``out_file`` — the combination on the first run's output
    grid; ``report_json`` — its provenance (per-run registration and DataConsistencyPSNR).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["sr_files", "report_jsons"]),
                        name="inputnode")  # fmt: skip
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_file", "report_json"]),
                         name="outputnode")  # fmt: skip
    combine = pe.Node(
        CombineRuns(in_files=list(run_files), iterations=iterations, seed=seed,
                    num_threads=omp_nthreads),
        name="combine_runs", mem_gb=mem_gb, n_procs=omp_nthreads,
    )  # fmt: skip
    workflow.connect([
        (inputnode, combine, [("sr_files", "sr_files"), ("report_jsons", "report_jsons")]),
        (combine, outputnode, [("out_file", "out_file"), ("report_json", "report_json")]),
    ])  # fmt: skip
    return workflow
