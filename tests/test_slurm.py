"""A real one-machine SLURM cluster runs the participant workflow through Nipype's plugins.

The module fixture installs Debian's slurm-wlm and munge (scripts/install_slurm.sh), starts
munged, slurmctld and slurmd in the foreground as child processes with a slurm.conf written
to a temporary folder (own ports, own MUNGE socket, state and spool in that folder, so it
touches no system configuration), waits for the node to be idle, and always stops the three
daemons afterwards, on failure too.

Evidence that jobs ran on the cluster: there is no slurmdbd here, so `sacct` answers "Slurm
accounting storage is disabled"; instead the controller's job-completion log
(JobCompType=jobcomp/filetxt: one line per finished job with JobState and NodeList) and
`scontrol show job` (jobs stay known for MinJobAge seconds) give each job's final state, and
the job ids are read from the sbatch output files Nipype leaves in the work directory.

Skips only where packages cannot be installed (not root, no apt-get, apt-get failing).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO, REPO

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

INSTALL = REPO / "scripts" / "install_slurm.sh"
SBIN = "/usr/sbin:/sbin"
PARTICIPANT_ARGS = ["--participant-label", "01", "02", "--method", "linear", "--scale", "2"]


@dataclass
class Cluster:
    folder: Path
    conf: Path
    jobcomp: Path
    env: dict[str, str]

    def run(self, *argv: str, check: bool = True) -> str:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, env=self.env, timeout=60
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def completed_jobs(self) -> dict[int, dict[str, str]]:
        """Finished jobs from the job-completion log: id → fields (JobState, NodeList...)."""
        jobs = {}
        if self.jobcomp.exists():
            for line in self.jobcomp.read_text().splitlines():
                fields = dict(re.findall(r"(\w+)=(\S*)", line))
                if "JobId" in fields:
                    jobs[int(fields["JobId"])] = fields
        return jobs

    def wait_until_queue_empty(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.run("squeue", "-h", "-o", "%i").strip():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued after {timeout} s:\n{self.run('squeue')}")
            time.sleep(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _install_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("not root: cannot install slurm-wlm and munge with apt-get")
    result = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.skip(
            f"cannot install slurm-wlm/munge (install_slurm.sh exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )


def _node_line() -> str:
    """This machine's NodeName line as slurmd itself reports it (CPUs, RealMemory...)."""
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{SBIN}"}
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, env=env, timeout=60)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("NodeName="))
    return f"{line} NodeAddr=127.0.0.1 State=UNKNOWN"


def _write_config(folder: Path) -> tuple[Path, Path, str]:
    node_line = _node_line()
    node = re.match(r"NodeName=(\S+)", node_line).group(1)
    munge_socket = folder / "munge" / "munge.socket"
    jobcomp = folder / "jobcomp.txt"
    conf = folder / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=bidssrtest",
                f"SlurmctldHost={node}(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge_socket}",
                f"StateSaveLocation={folder / 'state'}",
                f"SlurmdSpoolDir={folder / 'spool'}",
                f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
                f"SlurmdPidFile={folder / 'slurmd.pid'}",
                f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/filetxt",
                f"JobCompLoc={jobcomp}",
                "MinJobAge=900",
                "MpiDefault=none",
                "ReturnToService=2",
                "SchedulerType=sched/builtin",
                node_line,
                f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    return conf, jobcomp, str(munge_socket)


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop the daemons we started (reverse order), waiting for each to exit."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@pytest.fixture(scope="module")
def slurm_cluster():
    _install_or_skip()
    folder = Path(tempfile.mkdtemp(prefix="bids_sr_slurm_"))  # short: socket path limit
    folder.chmod(0o755)
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir()
    (folder / "munge").mkdir(mode=0o755)
    conf, jobcomp, munge_socket = _write_config(folder)
    env = {
        **os.environ,
        "PATH": f"{os.environ.get('PATH', '')}:{SBIN}",
        "SLURM_CONF": str(conf),
        "LOGNAME": os.environ.get("LOGNAME") or "root",  # Nipype names SLURM jobs with it
    }
    for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_")) and k != "SLURM_CONF"]:
        del env[key]  # do not inherit an outer allocation
    key = folder / "munge" / "munge.key"
    subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, env=env, timeout=60)
    key.chmod(0o600)

    processes: list[subprocess.Popen] = []
    atexit.register(_stop, processes)  # belt and braces if the finaliser cannot run
    log = (folder / "log" / "daemons.out").open("w")
    try:
        processes.append(
            subprocess.Popen(
                [
                    "munged", "--foreground", "--force",
                    f"--key-file={key}", f"--socket={munge_socket}",
                    f"--pid-file={folder / 'munge' / 'munged.pid'}",
                    f"--log-file={folder / 'log' / 'munged.log'}",
                    f"--seed-file={folder / 'munge' / 'munged.seed'}",
                ],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not Path(munge_socket).exists():
            if time.monotonic() > deadline or processes[0].poll() is not None:
                raise RuntimeError(f"munged did not start: {(folder / 'log').iterdir()}")
            time.sleep(0.2)
        for daemon in ("slurmctld", "slurmd"):
            processes.append(
                subprocess.Popen(
                    [daemon, "-D", "-f", str(conf)], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        cluster = Cluster(folder=folder, conf=conf, jobcomp=jobcomp, env=env)
        deadline = time.monotonic() + 90
        state = ""
        while state != "idle":
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                logs = "".join(
                    f"--- {f.name}\n{f.read_text()[-2000:]}" for f in (folder / "log").iterdir()
                )
                raise RuntimeError(f"the SLURM node did not become idle (state {state!r})\n{logs}")
            time.sleep(0.5)
            state = cluster.run("sinfo", "-h", "-o", "%T", check=False).strip()
        yield cluster
    finally:
        if processes and processes[-1].poll() is None:  # cancel our jobs, then stop daemons
            subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=60)
        _stop(processes)
        log.close()
        atexit.unregister(_stop)
        shutil.rmtree(folder, ignore_errors=True)


def _bids_sr(cluster: Cluster, out: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**cluster.env, "PYTHONPATH": str(REPO)}  # the jobs import bids_sr like we do
    argv = [sys.executable, "-m", "bids_sr", str(DEMO), str(out), "participant"]
    argv += [*PARTICIPANT_ARGS, "--skip-bids-validation", "-w", str(work), *extra]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=out.parent, timeout=600
    )


def _derivatives(out: Path) -> dict[str, Path]:
    return {str(p.relative_to(out)): p for p in sorted(out.rglob("sub-*/**/*.nii.gz"))}


def _assert_identical(out: Path, reference: Path) -> None:
    ours, theirs = _derivatives(out), _derivatives(reference)
    assert ours.keys() == theirs.keys() and len(ours) == 3
    for name in ours:
        a, b = nib.load(ours[name]), nib.load(theirs[name])
        np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj), name)
        np.testing.assert_array_equal(a.affine, b.affine)
    sidecars = {str(p.relative_to(out)) for p in out.rglob("sub-*/**/*.json")}
    assert sidecars == {str(p.relative_to(reference)) for p in reference.rglob("sub-*/**/*.json")}


@pytest.fixture(scope="module")
def multiproc_reference(slurm_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("multiproc")
    result = _bids_sr(slurm_cluster, base / "out", base / "work", "--nprocs", "2")
    assert result.returncode == 0, result.stderr
    return base / "out"


def _plugin_config(path: Path, plugin: str) -> Path:
    path.write_text(
        f"plugin: {plugin}\n"
        "plugin_args:\n"
        "  sbatch_args: '--mem=1G -c 1 --time=00:10:00'\n"
        "  max_jobs: 4\n"
        "  poll_sleep_duration: 1\n"
    )
    return path


def test_slurm_plugin_runs_participants_as_cluster_jobs(
    slurm_cluster, multiproc_reference, tmp_path
):
    shared = tmp_path / "shared"  # work dir on a path every node sees (one machine here)
    shared.mkdir()
    before = set(slurm_cluster.completed_jobs())
    config = _plugin_config(tmp_path / "slurm.yml", "SLURM")
    result = _bids_sr(
        slurm_cluster, shared / "out", shared / "work", "--plugin-config", str(config)
    )
    assert result.returncode == 0, result.stderr

    # every job Nipype submitted (ids from the sbatch output files) completed on our node
    batch_dir = shared / "work" / "bids_sr_wf" / "batch"
    submitted = {int(m) for f in batch_dir.glob("slurm-*.out") for m in re.findall(r"\d+", f.name)}
    done = {k: v for k, v in slurm_cluster.completed_jobs().items() if k not in before}
    assert submitted and submitted <= set(done)
    node = re.match(r"NodeName=(\S+)", _node_line()).group(1)
    for job_id in submitted:
        assert done[job_id]["JobState"] == "COMPLETED", done[job_id]
        assert done[job_id]["NodeList"] == node
        show = slurm_cluster.run("scontrol", "show", "job", str(job_id))
        assert "JobState=COMPLETED" in show
    # one super-resolution job per T1w, the two participants in separate jobs
    names = [done[j]["Name"] for j in submitted]
    sr_jobs = [n for n in names if "super_resolve" in n]
    assert len(sr_jobs) == 3
    assert any("single_subject_01_wf" in n for n in sr_jobs)
    assert sum("single_subject_02_wf" in n for n in sr_jobs) == 2

    _assert_identical(shared / "out", multiproc_reference)


def test_slurmgraph_plugin_submits_the_whole_graph(slurm_cluster, multiproc_reference, tmp_path):
    """SLURMGraph submits every node at once with afterok dependencies and returns."""
    shared = tmp_path / "shared"
    shared.mkdir()
    before = set(slurm_cluster.completed_jobs())
    config = _plugin_config(tmp_path / "slurmgraph.yml", "SLURMGraph")
    result = _bids_sr(
        slurm_cluster, shared / "out", shared / "work", "--plugin-config", str(config)
    )
    assert result.returncode == 0, result.stderr
    slurm_cluster.wait_until_queue_empty(timeout=300)

    done = {k: v for k, v in slurm_cluster.completed_jobs().items() if k not in before}
    # every node is a job: three super-resolutions, three derivative writers, and per
    # participant a report and its writer; all completed
    assert all(fields["JobState"] == "COMPLETED" for fields in done.values()), done
    names = [re.sub(r"^j\d+_", "", fields["Name"]) for fields in done.values()]
    assert names.count("super_resolve") == 3 and names.count("ds_sr") == 3, names
    assert names.count("subject_report") == 2, names
    # the derivative writers waited for super-resolution (afterok dependencies)
    starts = [f["StartTime"] for f in done.values() if f["Name"].endswith("ds_sr")]
    ends = [f["EndTime"] for f in done.values() if f["Name"].endswith("super_resolve")]
    assert min(starts) >= min(ends)
    _assert_identical(shared / "out", multiproc_reference)
