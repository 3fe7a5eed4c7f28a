"""Reruns that never serve stale results, arguments that never hang, every input format,
interrupts that leave no half-made dataset (issue 43, items 1-6 and 16)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO, REPO

SUB03 = "sub-03/anat/sub-03_res-hi_desc-bspline_T1w"


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _error_line(err: str) -> str:
    """The one error line among the progress lines (no traceback)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("bids_sr: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def _cli(*argv, timeout: float = 120) -> subprocess.CompletedProcess:
    """bids_sr in a subprocess, so that a hang fails the test (TimeoutExpired) instead of
    hanging the suite."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bids_sr", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _node_results(work: Path, node: str) -> dict[Path, float]:
    """Modification time of each cached result of ``node`` under ``work``."""
    return {p: p.stat().st_mtime for p in work.rglob(f"{node}/result_{node}.pklz")}


# ---------------------------------------------- 1. inputs read behind Nipype's back rerun


@pytest.mark.slow
def test_sidecar_edit_reruns_exactly_the_node_that_reads_it(tmp_path, demo_copy, run_cli):
    """The issue's reproduction: sub-03 (a 2D scan) with bspline and -w W; SliceThickness
    3.6 → 2.0 in the raw sidecar; the same command again gives another image and a sidecar
    saying 2.0; a third run with nothing changed recomputes nothing."""
    out, work = tmp_path / "out", tmp_path / "work"
    argv = (demo_copy, out, "participant", "--participant-label", "03", "--method", "bspline",
            "-w", work, "--skip-bids-validation", "--nprocs", "1")  # fmt: skip
    code, err = run_cli(*argv)
    assert code == 0, err
    image, meta = out / f"{SUB03}.nii.gz", out / f"{SUB03}.json"
    first = image.read_bytes()
    assert json.loads(meta.read_text())["InputSliceThickness"] == 3.6

    raw = demo_copy / "sub-03" / "anat" / "sub-03_T1w.json"
    text = raw.read_text()
    assert '"SliceThickness": 3.6' in text
    stat = raw.stat()
    raw.write_text(text.replace('"SliceThickness": 3.6', '"SliceThickness": 2.0'))
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or `rsync -a` would
    code, err = run_cli(*argv)
    assert code == 0, err
    written = json.loads(meta.read_text())
    assert written["InputSliceThickness"] == 2.0 and written["InputSliceGap"] == 2.0
    assert image.read_bytes() != first

    results = _node_results(work, "super_resolve")
    assert len(results) == 1
    code, err = run_cli(*argv)
    assert code == 0, err
    assert _node_results(work, "super_resolve") == results  # cached: nothing changed


@pytest.mark.slow
def test_brain_mask_replaced_in_place_reruns_the_evaluation(tmp_path, run_cli):
    """A corrected brain-mask derivative copied over the old one (same size, time stamp
    kept, as `cp -p` does): the evaluation is recomputed with the new mask."""
    from bids_sr.masks import brain_mask

    derivatives = tmp_path / "masks"
    anat = derivatives / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (derivatives / "dataset_description.json").write_text(json.dumps(
        {"Name": "masks", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))  # fmt: skip
    t1w = nib.load(DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    head = brain_mask(np.asarray(t1w.dataobj, dtype=np.float32)).astype(np.uint8)
    mask_file = anat / "sub-01_desc-brain_mask.nii"  # uncompressed: its size never changes
    nib.save(nib.Nifti1Image(head, t1w.affine), mask_file)
    out, work = tmp_path / "out", tmp_path / "work"
    argv = (DEMO, out, "participant", "--participant-label", "01", "--evaluate", "--method",
            "bspline", "--derivatives", derivatives, "-w", work, "--skip-bids-validation",
            "--nprocs", "1")  # fmt: skip
    code, err = run_cli(*argv)
    assert code == 0, err
    table = out / "sub-01" / "anat" / "sub-01_desc-evaluation_metrics.tsv"
    first = table.read_text()

    stat = mask_file.stat()
    smaller = np.zeros_like(head)
    smaller[20:60, 20:80, 20:60] = head[20:60, 20:80, 20:60]
    nib.save(nib.Nifti1Image(smaller, t1w.affine), mask_file)
    assert mask_file.stat().st_size == stat.st_size
    os.utime(mask_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    code, err = run_cli(*argv)
    assert code == 0, err
    assert table.read_text() != first


def test_every_input_a_super_resolve_node_reads_is_in_its_hash(tmp_path):
    """Unit level: the sidecar's values, the shipped weights and a weights file's model card
    are node inputs (so in Nipype's hash), and the app hashes files by content."""
    from bids_sr.config import Config, Execution
    from bids_sr.workflows.anatomical import init_anat_sr_wf
    from bids_sr.workflows.base import init_bids_sr_wf
    from bids_sr.workflows.evaluation import init_evaluation_wf

    t1w = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.diag([1, 1, 3, 1])), t1w)
    sidecar = tmp_path / "sub-01_T1w.json"
    sidecar.write_text(json.dumps({"SliceThickness": 2.5}))

    def hashed(**kwargs):
        # the command line passes the sidecar's values (workflows.base), so an edit reruns
        wf = init_anat_sr_wf(in_metadata=json.loads(sidecar.read_text()), scale=[1, 1, 3],
                             **kwargs)  # fmt: skip
        node = wf.get_node("super_resolve")
        node.inputs.in_file = str(t1w)
        return node.inputs.get_hashval(hash_method="content")[1]

    before = hashed(method="bspline")
    sidecar.write_text(json.dumps({"SliceThickness": 2.0}))
    assert hashed(method="bspline") != before
    weights = REPO / "bids_sr" / "data" / "weights" / "srrecnn_x1x1x4.safetensors"
    learned = init_anat_sr_wf(scale=[1, 1, 3], method="srrecnn",
                              weights=weights).get_node("super_resolve")  # fmt: skip
    digests = learned.inputs.read_files
    assert str(weights.with_name("srrecnn_x1x1x4.card.json")) in digests
    assert "shipped weights" in digests
    evaluation = init_evaluation_wf(t1w_file=str(t1w), methods=["srrecnn"], scale=[2.0])
    assert "shipped weights" in evaluation.get_node("evaluate").inputs.read_files

    config = Config(execution=Execution(bids_dir=DEMO, output_dir=tmp_path / "o",
                                        work_dir=tmp_path / "w"))  # fmt: skip
    wf = init_bids_sr_wf(config=config, t1w_by_subject={})
    assert wf.config["execution"]["hash_method"] == "content"


# ------------------------------------------------------------ 2. -w equal to the output folder


def test_work_dir_equal_to_the_output_dir_is_refused_not_a_hang(tmp_path):
    out = tmp_path / "out"
    proc = _cli(DEMO, out, "participant", "--participant-label", "01", "--method", "bspline",
                "-w", out, "--skip-bids-validation", timeout=60)  # fmt: skip
    assert proc.returncode == 64, proc.stderr[-2000:]
    line = _one_line(proc.stderr)
    assert "must not be the output_dir" in line and str(out) in line
    assert not out.exists()


def test_work_and_output_locks_of_one_folder_never_block_each_other(tmp_path):
    """Both locks on one folder (a bind mount can alias two paths the parser sees as
    different): taking both must not wait for ever."""
    from bids_sr.cli.locks import OutputDirLock, WorkDirLock

    done = threading.Event()

    def take_both():
        with WorkDirLock(tmp_path):
            lock = OutputDirLock(tmp_path)
            lock.acquire()
            lock.release()
        done.set()

    threading.Thread(target=take_both, daemon=True).start()
    assert done.wait(timeout=20), "the output folder's lock waited for the work dir's"


# --------------------------------------------------------------------- 3. uncompressed .nii


def test_uncompressed_nii_input_gives_an_output_whose_content_matches_its_name(
        tmp_path, demo_copy, run_cli):  # fmt: skip
    anat = demo_copy / "sub-01" / "anat"
    packed = anat / "sub-01_T1w.nii.gz"
    (anat / "sub-01_T1w.nii").write_bytes(gzip.decompress(packed.read_bytes()))
    packed.unlink()
    out = tmp_path / "out"
    code, err = run_cli(demo_copy, out, "participant", "--participant-label", "01", "--method",
                        "bspline", "-w", tmp_path / "work", "--skip-bids-validation")  # fmt: skip
    assert code == 0, err
    images = sorted((out / "sub-01" / "anat").glob("*desc-bspline_T1w.nii*"))
    assert [p.name for p in images] == ["sub-01_res-hi_desc-bspline_T1w.nii.gz"]
    assert images[0].read_bytes()[:2] == b"\x1f\x8b"  # gzip, as the name says
    assert nib.load(images[0]).shape == (168, 204, 168)
    assert (out / "sub-01.html").is_file()
    meta = json.loads((out / "sub-01" / "anat" / "sub-01_res-hi_desc-bspline_T1w.json")
                      .read_text())  # fmt: skip
    assert meta["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii"]


# ------------------------------------------------------- 4. a foreign selfsr model in the cache


def test_a_selfsr_model_of_another_scan_in_the_cache_is_not_reused(tmp_path, caplog):
    from bids_sr.acquisition import project, simulated_acquisition
    from bids_sr.selfsr import super_resolve_selfsr

    rng = np.random.default_rng(0)
    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, 3))
    scans = []
    for seed in (1, 2):
        hr = np.zeros((24, 24, 24), np.float32)
        hr[4:20, 4:20, 4:20] = np.random.default_rng(seed).random((16, 16, 16))
        scans.append(project(hr + 0.01 * rng.random(hr.shape, dtype=np.float32), acq,
                             (24, 24, 8)))  # fmt: skip
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    _, report_a = super_resolve_selfsr(scans[0], (1, 1, 3), acq, learner="filters",
                                       model_dir=a_dir)  # fmt: skip
    _, report_b = super_resolve_selfsr(scans[1], (1, 1, 3), acq, learner="filters",
                                       model_dir=b_dir)  # fmt: skip
    assert report_a["weights_sha256"] != report_b["weights_sha256"]
    # scan A's model put where scan B's belongs
    shutil.copyfile(report_a["weights"], report_b["weights"])
    caplog.set_level(logging.WARNING)
    _, again = super_resolve_selfsr(scans[1], (1, 1, 3), acq, learner="filters",
                                    model_dir=b_dir)  # fmt: skip
    assert again["model_reused"] is False
    assert again["weights_sha256"] == report_b["weights_sha256"]
    assert any("another" in r.getMessage() and "retrain" in r.getMessage()
               for r in caplog.records), caplog.text  # fmt: skip


# ------------------------------------------------- 5. group level while a participant writes


def test_group_level_while_a_participant_run_writes_says_so(tmp_path, run_cli):
    from bids_sr.bids import write_dataset_description
    from bids_sr.cli.locks import OutputDirLock

    out = tmp_path / "out"
    out.mkdir()
    write_dataset_description(DEMO, out)
    participant = OutputDirLock(out)
    participant.acquire()  # what a running participant level holds
    try:
        code, err = run_cli(DEMO, out, "group")
    finally:
        participant.release()
    assert code == 73, err
    line = _one_line(err)
    assert "in progress" in line and str(out) in line
    assert not (out / "group_summary.tsv").exists()
    code, err = run_cli(DEMO, out, "group")  # once it has finished
    assert code == 0, err


# ------------------------------------------------------------------------ 6. --mem-gb


@pytest.mark.parametrize("value", ["0.0001", "0.5"])
def test_absurd_mem_gb_is_a_usage_error_not_a_hang(tmp_path, value):
    out = tmp_path / "out"
    proc = _cli(DEMO, out, "participant", "--participant-label", "01", "--method", "bspline",
                "-w", tmp_path / "w", "--mem-gb", value, "--skip-bids-validation", timeout=60)
    assert proc.returncode == 64, proc.stderr[-2000:]
    assert "--mem-gb" in _one_line(proc.stderr)
    assert not out.exists()


def test_node_larger_than_the_memory_limit_fails_fast_in_one_line(tmp_path):
    """×4 of sub-01 (84×102×84 → 336×408×336) asks about 2.5 GB for its super_resolve node:
    with --mem-gb 1 the run stops before any node runs, instead of waiting or running it."""
    out = tmp_path / "out"
    start = time.monotonic()
    proc = _cli(DEMO, out, "participant", "--participant-label", "01", "--method", "bspline",
                "--scale", "4", "-w", tmp_path / "w", "--mem-gb", "1", "--skip-bids-validation",
                timeout=120)  # fmt: skip
    assert proc.returncode == 64, proc.stderr[-2000:]
    line = _error_line(proc.stderr)
    assert "--mem-gb 1" in line and "super_resolve" in line, line
    assert time.monotonic() - start < 60
    assert not out.exists()


@pytest.mark.parametrize("value", ["0.001", ".nan"])
def test_plugin_memory_below_every_node_fails_fast(tmp_path, value):
    config = tmp_path / "plugin.yml"
    config.write_text(f"plugin: MultiProc\nplugin_args:\n  memory_gb: {value}\n")
    out = tmp_path / "out"
    proc = _cli(DEMO, out, "participant", "--participant-label", "01", "--method", "bspline",
                "-w", tmp_path / "w", "--plugin-config", config, "--skip-bids-validation",
                timeout=60)  # fmt: skip
    assert proc.returncode == 64, proc.stderr[-2000:]
    assert "memory_gb" in _error_line(proc.stderr)
    assert not out.exists()


def test_sidecar_that_is_a_fifo_is_refused_not_a_hang(tmp_path, demo_copy):
    """Probe in the same direction: a named pipe as sidecar blocked the first read for ever."""
    sidecar = demo_copy / "sub-01" / "anat" / "sub-01_T1w.json"
    sidecar.unlink(missing_ok=True)
    os.mkfifo(sidecar)
    out = tmp_path / "out"
    proc = _cli(demo_copy, out, "participant", "--participant-label", "01", "--method",
                "nearest", "-w", tmp_path / "w", "--skip-bids-validation", timeout=90)  # fmt: skip
    assert proc.returncode == 65, proc.stderr[-2000:]
    assert "not a regular file" in _error_line(proc.stderr)
    assert not out.exists()


# ------------------------------------------------------------ 16. interrupted before running


def test_interrupt_while_preparing_the_output_folder_leaves_nothing(tmp_path, run_cli,
                                                                    monkeypatch):  # fmt: skip
    """Ctrl-C while the description, README and configuration are written: the folder this
    run created goes, instead of staying as README and logs without a description."""
    from bids_sr import config as config_module

    def interrupted(self, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(config_module.Config, "save", interrupted)
    out = tmp_path / "out"
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method",
                        "nearest", "-w", tmp_path / "w", "--skip-bids-validation")  # fmt: skip
    assert code == 1 and "stopped by SIGINT" in err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def test_dataset_description_is_written_before_anything_else(tmp_path, monkeypatch):
    """Each file is renamed into place (atomic), the description first."""
    from bids_sr.bids import write_dataset_description

    renamed = []
    real = os.replace

    def record(source, target):
        renamed.append(Path(target).name)
        return real(source, target)

    monkeypatch.setattr(os, "replace", record)
    write_dataset_description(DEMO, tmp_path)
    assert renamed == ["dataset_description.json", "README.md", ".bidsignore"]


def test_sigint_at_once_leaves_no_folder_without_a_description(tmp_path):
    """SIGINT as soon as the output folder appears (a real signal, not a simulated one)."""
    out, work = tmp_path / "out", tmp_path / "work"
    argv = [sys.executable, "-m", "bids_sr", str(DEMO), str(out), "participant",
            "--participant-label", "01", "--method", "nearest", "-w", str(work),
            "--skip-bids-validation"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, err[-2000:]
    assert not out.exists() or (out / "dataset_description.json").is_file(), sorted(
        p.name for p in out.iterdir())
