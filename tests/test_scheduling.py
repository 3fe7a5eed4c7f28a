"""Scheduling hints on the workflow graph: memory, threads, GPU marking, plugin settings."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from conftest import DEMO
from nipype.pipeline import engine as pe

from bids_sr.config import Config, Execution, Nipype, Workflow
from bids_sr.interfaces.superresolve import SuperResolve
from bids_sr.workflows import anatomical
from bids_sr.workflows.anatomical import estimate_mem_gb, uses_gpu
from bids_sr.workflows.base import init_bids_sr_wf

T1W = {
    "01": [str(DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz")],
    "02": [
        str(DEMO / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.nii.gz"),
        str(DEMO / "sub-02" / "ses-2" / "anat" / "sub-02_ses-2_T1w.nii.gz"),
    ],
}


def _config(tmp_path: Path, method: str, device: str, omp: int = 2) -> Config:
    return Config(
        execution=Execution(bids_dir=DEMO, output_dir=tmp_path / "out", work_dir=tmp_path / "work"),
        workflow=Workflow(methods=[method], scale=[2.0], device=device),
        nipype=Nipype(nprocs=4, omp_nthreads=omp),
    )


def _flat_nodes(config: Config) -> list[pe.Node]:
    workflow = init_bids_sr_wf(config=config, t1w_by_subject=T1W)
    return list(workflow._create_flat_graph().nodes())


def test_uses_gpu(monkeypatch):
    monkeypatch.setattr(anatomical, "gpu_count", lambda: 0)
    assert not uses_gpu("bspline", "cuda")  # interpolation is CPU code whatever the device
    assert not uses_gpu("srrecnn", "cpu")
    assert uses_gpu("srrecnn", "cuda")
    assert uses_gpu("gradfilter", "cuda")  # CuPy
    assert not uses_gpu("fsrcnn", "auto")  # no GPU visible
    monkeypatch.setattr(anatomical, "gpu_count", lambda: 1)
    assert uses_gpu("fsrcnn", "auto")
    assert not uses_gpu("linear", "auto")


def test_learned_method_on_cuda_marks_gpu_nodes(tmp_path):
    nodes = _flat_nodes(_config(tmp_path, "srrecnn", "cuda"))
    sr_nodes = [n for n in nodes if n.name == "super_resolve"]
    assert len(sr_nodes) == 3  # one per T1w: sub-01, sub-02 ses-1 and ses-2
    for node in sr_nodes:
        assert node.is_gpu_node()
        assert node.n_procs == 1  # one MultiProc GPU slot each
    expected_mem = sorted(estimate_mem_gb(f, [2.0], None) for files in T1W.values() for f in files)
    assert sorted(node.mem_gb for node in sr_nodes) == expected_mem
    assert min(expected_mem) > 0
    sinks = [n for n in nodes if n.name.startswith("ds_")]
    assert sinks and not any(n.is_gpu_node() for n in sinks)
    assert all(n.run_without_submitting for n in sinks)


def test_interpolation_nodes_are_cpu_nodes_with_thread_counts(tmp_path):
    nodes = _flat_nodes(_config(tmp_path, "bspline", "cuda", omp=2))
    sr_nodes = [n for n in nodes if n.name == "super_resolve"]
    assert len(sr_nodes) == 3
    for node in sr_nodes:
        assert not node.is_gpu_node()
        assert node.n_procs == 2
        assert node.mem_gb >= 0.5


def test_gpu_hint_does_not_change_the_node_hash():
    """A result cached on a GPU node stays valid when resuming on a CPU node."""
    t1w = T1W["01"][0]
    on = SuperResolve(in_file=t1w, method="srrecnn", scale=[2.0], use_gpu=True)
    off = SuperResolve(in_file=t1w, method="srrecnn", scale=[2.0], use_gpu=False)
    assert on.inputs.get_hashval()[1] == off.inputs.get_hashval()[1]


def test_plugin_settings_limit_gpu_jobs(tmp_path):
    config = _config(tmp_path, "srrecnn", "cuda")
    settings = config.plugin_settings()
    assert settings["plugin"] == "MultiProc"
    assert settings["plugin_args"]["n_gpu_procs"] == 1
    assert settings["plugin_args"]["n_procs"] == 4
    config.nipype.plugin_args = {"n_gpu_procs": 2}  # e.g. from --plugin-config on a big GPU
    assert config.plugin_settings()["plugin_args"]["n_gpu_procs"] == 2
    config.nipype.plugin = "SLURM"
    config.nipype.plugin_args = {"sbatch_args": "--gres=gpu:1"}
    assert config.plugin_settings()["plugin_args"] == {"sbatch_args": "--gres=gpu:1"}


def _interval(node: pe.Node) -> tuple[datetime, datetime]:
    runtime = node.result.runtime
    return datetime.fromisoformat(runtime.startTime), datetime.fromisoformat(runtime.endTime)


@pytest.mark.slow
def test_multiproc_runs_one_gpu_node_at_a_time(tmp_path):
    """Two GPU-marked nodes never overlap under MultiProc with n_gpu_procs=1, 2 CPUs free."""
    workflow = pe.Workflow(name="gpu_wf", base_dir=str(tmp_path))
    nodes = []
    for index, t1w in enumerate(T1W["02"]):
        node = pe.Node(
            SuperResolve(in_file=t1w, method="linear", scale=[2.0], use_gpu=True),
            name=f"sr_{index}",
            n_procs=1,
            mem_gb=0.1,
        )
        nodes.append(node)
    workflow.add_nodes(nodes)
    result = workflow.run(
        plugin="MultiProc",
        plugin_args={"n_procs": 2, "n_gpu_procs": 1, "memory_gb": 2, "raise_insufficient": True},
    )
    done = {node.name: node for node in result.nodes()}
    (start_a, end_a), (start_b, end_b) = (_interval(done[n.name]) for n in nodes)
    assert end_a <= start_b or end_b <= start_a, "two GPU nodes ran at the same time"
