"""Faults and hostile input (issue 15): rebuild what was deleted, check everything before
running, never hang, never write NaN."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import DEMO, REPO
from safetensors import safe_open
from safetensors.torch import save_file

SUB01 = "sub-01/anat/sub-01_res-hi_desc-nearest_T1w.nii.gz"


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _refused(result, code: int, fragment: str, out: Path) -> str:
    """The run stopped before writing anything, with one line holding ``fragment``."""
    got, err = result
    assert got == code, err
    line = _one_line(err)
    assert line.startswith("bids_sr: error: ") and fragment in line, line
    assert "Traceback" not in err
    assert not out.exists()
    return line


def _espcn_weights(path: Path, fill: float | None = None) -> Path:
    from bids_sr.models.registry import get_spec
    from bids_sr.models.weights import save_weights

    torch.manual_seed(0)
    spec = get_spec("espcn")
    config = {**spec.default_config, "factors": [2, 2, 2], "features": [4, 4]}
    model = spec.build(config)
    if fill is not None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(fill)
    return save_weights(model, path, method="espcn", config=config, factors=(2, 2, 2),
                        card={"note": "untrained, test fixture"})  # fmt: skip


def _rewrite_metadata(path: Path, **changes) -> None:
    """Rewrite a weights file with the same tensors and altered metadata fields."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = dict(handle.metadata())
    config = json.loads(metadata["config"])
    config.update(changes)
    metadata["config"] = json.dumps(config)
    save_file(tensors, str(path), metadata=metadata)


# ---------------------------------------------------------------- 1. rebuild what was deleted


@pytest.fixture(scope="module")
def nearest_run(tmp_path_factory):
    """One run of sub-01 with nearest; returns (argv, out, work, bytes of the output)."""
    from bids_sr.cli.run import main

    root = tmp_path_factory.mktemp("nearest_run")
    out, work = root / "out", root / "work"
    argv = [str(DEMO), str(out), "participant", "--participant-label", "01", "--method",
            "nearest", "-w", str(work), "--nprocs", "2", "--skip-bids-validation"]  # fmt: skip
    assert main(argv) == 0
    return argv, out, work, (out / SUB01).read_bytes()


@pytest.mark.slow
def test_rerun_after_deleting_the_output_folder_rebuilds_it(nearest_run, run_cli, caplog):
    argv, out, _, original = nearest_run
    shutil.rmtree(out)
    caplog.set_level(logging.INFO, logger="bids_sr")
    code, err = run_cli(*argv)
    assert code == 0, err
    assert (out / SUB01).read_bytes() == original
    assert (out / "sub-01.html").is_file() and (out / "dataset_description.json").is_file()
    # progress is INFO (shown by default), not WARNING
    done = [r for r in caplog.records if r.name == "bids_sr" and r.getMessage().startswith("done")]
    assert done and done[0].levelno == logging.INFO
    assert logging.getLogger("bids_sr").getEffectiveLevel() == logging.INFO


@pytest.mark.slow
def test_rerun_rebuilds_a_deleted_or_truncated_output(nearest_run, run_cli):
    argv, out, _, original = nearest_run
    image = out / SUB01
    sidecar = image.with_name(image.name.replace(".nii.gz", ".json"))
    sidecar_text = sidecar.read_text()
    image.write_bytes(original[: len(original) // 3])  # truncated
    sidecar.unlink()
    (out / "sub-01.html").unlink()
    code, err = run_cli(*argv)
    assert code == 0, err
    assert image.read_bytes() == original
    assert sidecar.read_text() == sidecar_text
    assert (out / "sub-01.html").is_file()


@pytest.mark.slow
def test_rerun_reruns_a_node_whose_cached_file_vanished(nearest_run, run_cli):
    argv, out, work, original = nearest_run
    [sr_file] = list(work.rglob("super_resolve/*_res-hi_*T1w.nii.gz")) or list(
        work.rglob("super_resolve/*.nii.gz")
    )
    sr_file.unlink()
    (out / SUB01).unlink()
    code, err = run_cli(*argv)
    assert code == 0, err
    assert sr_file.is_file() and (out / SUB01).read_bytes() == original


def test_forget_vanished_results(tmp_path):
    from nipype.interfaces.utility import Merge
    from nipype.pipeline import engine as pe

    from bids_sr.workflows.cache import forget_vanished_results

    kept, gone = tmp_path / "kept.txt", tmp_path / "gone.txt"
    for path in (kept, gone):
        path.write_text("x")
    wf = pe.Workflow(name="wf", base_dir=str(tmp_path / "work"))
    for name, path in (("a", kept), ("b", gone)):
        node = pe.Node(Merge(1), name=name)
        node.inputs.in1 = str(path)
        wf.add_nodes([node])
    wf.run(plugin="Linear")
    gone.unlink()
    (tmp_path / "work" / "wf" / "junk").mkdir()
    (tmp_path / "work" / "wf" / "junk" / "result_junk.pklz").write_bytes(b"not a pickle")
    removed = forget_vanished_results(tmp_path / "work")
    assert sorted(p.parent.name for p in removed) == ["b", "junk"]
    assert (tmp_path / "work" / "wf" / "a" / "result_a.pklz").is_file()


# ------------------------------------------- 2 and 4. errors inside the workflow, NaN output


def test_node_error_is_one_line_with_its_code_and_crash_file(tmp_path, run_cli, monkeypatch):
    """A method that returns NaN (here: interpolation patched, in the forked workers too):
    nothing is written, the node's own error is the one line, exit 65, crash files kept."""
    from bids_sr import superresolve
    from bids_sr.cli import plugin

    def nan_interpolate(lr, factors, method):
        from bids_sr.image import hr_shape

        return np.full(hr_shape(lr.shape, factors), np.nan, dtype=np.float32)

    monkeypatch.setattr(superresolve, "interpolate", nan_interpolate)
    # the patch reaches the workers only by fork (this process may have run torch: spawn)
    monkeypatch.setattr(plugin, "worker_start_method", lambda requested=None: "fork")
    out = tmp_path / "out"
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "02", "--method",
                        "nearest", "-w", tmp_path / "w", "--nprocs", "2",
                        "--skip-bids-validation")  # fmt: skip
    assert code == 65, err
    line = _one_line(err)
    assert "NaN or Inf voxel(s)" in line and "not written" in line, line
    assert "Traceback" not in line and "raised. Re-raising" not in line
    crash = Path(line.split("crash file ")[1].rstrip(")"))
    assert crash.is_file() and crash.parent == out / "logs"
    assert not list(out.glob("sub-*/**/*.nii.gz"))


def test_describe_failure_of_each_plugin_shape():
    from nipype.pipeline.engine.nodes import NodeExecutionError

    from bids_sr.cli.failures import describe_failure

    inner = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
             "bids_sr.image.ImageError: /d/sub-01_T1w.nii.gz: the result holds NaN\n")  # fmt: skip
    linear = NodeExecutionError(f"Exception raised while executing Node super_resolve.\n\n"
                                f"Traceback:\n{textwrap.indent(inner, chr(9))}")  # fmt: skip
    assert describe_failure(linear) == (
        "/d/sub-01_T1w.nii.gz: the result holds NaN", 65, "super_resolve")
    try:
        try:
            raise linear
        except NodeExecutionError as first:
            raise RuntimeError("2 raised. Re-raising first.") from first
    except RuntimeError as many:
        assert describe_failure(many)[:2] == ("/d/sub-01_T1w.nii.gz: the result holds NaN", 65)
    multiproc = RuntimeError("Traceback (most recent call last):\n  File ...\n"
                             "OSError: [Errno 28] No space left on device: '/o/x.nii.gz'\n")
    assert describe_failure(multiproc)[1] == 74
    # MultiProc's nodes run without submitting fail with the traceback as a list of lines
    as_list = RuntimeError(["Traceback (most recent call last):\n", "  File ...\n",
                            "bids_sr.models.weights.WeightsError: /w: bad\n"])  # fmt: skip
    assert describe_failure(as_list)[:2] == ("/w: bad", 65)
    message, code, _ = describe_failure(OSError(27, "File too large", "/o/x"))
    assert message.startswith("/o/x: File too large; check the free space") and code == 74
    assert describe_failure(PermissionError(13, "Permission denied", "/o"))[1] == 73
    assert describe_failure(RuntimeError("Traceback...\nKeyError: 'k'\n"))[1] == 1


def test_save_volume_refuses_non_finite_data(tmp_path):
    from bids_sr.image import ImageError, save_volume

    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = np.inf
    with pytest.raises(ImageError, match="1 NaN or Inf voxel"):
        save_volume(data, np.eye(4), tmp_path / "x.nii.gz")
    assert not list(tmp_path.iterdir())


def test_nan_weights_stop_before_running(tmp_path, run_cli):
    weights = _espcn_weights(tmp_path / "nan.safetensors", fill=float("nan"))
    out = tmp_path / "out"
    result = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method", "espcn",
                     "--weights", weights, "-w", tmp_path / "w", "--skip-bids-validation")
    _refused(result, 65, "NaN or Inf", out)


_NAN_NETWORK_SCRIPT = """
import sys
from bids_sr.interfaces.superresolve import SuperResolve
node = SuperResolve(in_file=sys.argv[1], method="espcn", weights=sys.argv[2], device="cpu",
                    scale=[2.0])
try:
    node.run(cwd=sys.argv[3])
except Exception as exc:
    print(str(exc).strip().splitlines()[-1])
    sys.exit(5)
"""


@pytest.mark.slow
def test_network_with_nan_weights_never_writes_its_output(tmp_path):
    """The interface of every method writes through save_volume: NaN weights that slipped
    past the checks still give an error, not an all-NaN image. (In a child process: torch
    compute here would leave OpenMP threads in pytest, which later forked workers inherit.)"""
    weights = _espcn_weights(tmp_path / "nan.safetensors", fill=float("nan"))
    (tmp_path / "node").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _NAN_NETWORK_SCRIPT, str(DEMO / "sub-01/anat/sub-01_T1w.nii.gz"),
         str(weights), str(tmp_path / "node")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert "NaN or Inf voxel" in proc.stdout
    assert not list((tmp_path / "node").glob("*.nii*"))


# ---------------------------------------------------------- 3. checked before anything runs


def _header_only(path: Path, rows=None, shape=(8, 8, 8)) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    if rows is None:
        data = np.ones(shape, np.float32)
        header["sform_code"], header["qform_code"] = 1, 0
        header["srow_x"], header["srow_y"], header["srow_z"] = np.eye(4)[:3] * 2
        nib.save(nib.Nifti1Image(data, None, header=header), path)
        return
    header["sform_code"], header["qform_code"] = 1, 0
    header["srow_x"], header["srow_y"], header["srow_z"] = rows
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), None, header=header), path)


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ([[np.nan, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], "NaN or Inf"),
        ([[0] * 4] * 3, "zero or singular"),
        ([[2, 0, 0, 0], [0, 2, 0, 0], [2, 0, 0, 0]], "zero or singular"),
    ],
)
def test_bad_affine_is_refused_before_anything_is_written(tmp_path, run_cli, demo_copy, rows,
                                                          fragment):  # fmt: skip
    # sub-02 ses-2 is bad, so the run must not write sub-01 or sub-02 ses-1 first
    _header_only(demo_copy / "sub-02/ses-2/anat/sub-02_ses-2_T1w.nii.gz", rows)
    out = tmp_path / "out"
    result = run_cli(demo_copy, out, "participant", "--method", "nearest",
                     "--skip-bids-validation", "-w", tmp_path / "w")  # fmt: skip
    _refused(result, 65, fragment, out)


def test_image_too_large_for_memory_is_refused_from_its_header(tmp_path, run_cli, demo_copy):
    from bids_sr.image import ImageError, check_memory

    target = demo_copy / "sub-01/anat/sub-01_T1w.nii"
    (demo_copy / "sub-01/anat/sub-01_T1w.nii.gz").unlink()
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.uint8)
    target.write_bytes(header.binaryblock + b"\0" * 4)  # a header, no data
    out = tmp_path / "out"
    result = run_cli(demo_copy, out, "participant", "--participant-label", "01",
                     "--skip-bids-validation", "-w", tmp_path / "w")  # fmt: skip
    _refused(result, 65, "GiB of memory", out)
    small = nib.Nifti1Header()
    small.set_data_shape((100, 100, 100))
    check_memory("x.nii", small, available=10**7)  # 8 MB of float32 + 4 MB stored fit
    with pytest.raises(ImageError, match="needs 0.0 GiB"):
        check_memory("x.nii", small, available=10**6)


def test_output_grid_too_large_for_memory_is_refused(tmp_path):
    from bids_sr.cli.preflight import check_output_memory
    from bids_sr.config import Config, Execution, Workflow
    from bids_sr.errors import BIDSError

    config = Config(execution=Execution(bids_dir=DEMO, output_dir=tmp_path),
                    workflow=Workflow(scale=[8.0]))  # fmt: skip
    t1w = str(DEMO / "sub-01/anat/sub-01_T1w.nii.gz")
    check_output_memory(config, [t1w], available=2**40)
    with pytest.raises(BIDSError, match="lower --scale") as caught:
        check_output_memory(config, [t1w], available=2**30)
    assert caught.value.code == 65


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--tile-overlap", "0.95"], "[0, 0.9]"),
        (["--tile-overlap", "-0.1"], "[0, 0.9]"),
        (["--plugin", "NoSuchPlugin"], "unknown Nipype plugin"),
        (["--t2w-reference", "/refs/sub-{sub}_T2w.nii.gz"], "only {subject} and {session}"),
        (["--t2w-reference", "/refs/sub-{subject_T2w.nii.gz"], "only {subject} and {session}"),
        (["--t2w-reference", "/r/{subject.__class__}.nii.gz"], "only {subject} and {session}"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, run_cli, extra, fragment):
    out = tmp_path / "out"
    result = run_cli(DEMO, out, "participant", "--participant-label", "01", "-w", tmp_path / "w",
                     "--skip-bids-validation", *extra)  # fmt: skip
    _refused(result, 64, fragment, out)


def test_bad_plugin_args_are_usage_errors(tmp_path, run_cli):
    config = tmp_path / "plugin.yml"
    config.write_text("plugin: MultiProc\nplugin_args:\n  n_procs: many\n")
    out = tmp_path / "out"
    result = run_cli(DEMO, out, "participant", "--participant-label", "01", "-w", tmp_path / "w",
                     "--skip-bids-validation", "--plugin-config", config)  # fmt: skip
    _refused(result, 64, "n_procs", out)


def test_t2w_pattern_substitutes_only_its_two_fields():
    from bids_sr.bids import fill_t2w_pattern

    filled = fill_t2w_pattern("/r/sub-{subject}_ses-{session}.nii", "01", "2")
    assert filled == "/r/sub-01_ses-2.nii"
    assert fill_t2w_pattern("/r/sub-{subject}.nii", "01", None) == "/r/sub-01.nii"
    with pytest.raises(ValueError):
        fill_t2w_pattern("/r/{subject.__class__.__name__}.nii", "01", None)


def test_tampered_weights_are_refused_before_anything_is_written(tmp_path, run_cli):
    weights = _espcn_weights(tmp_path / "w.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern of the last tensor changes
    weights.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method", "espcn",
                     "--weights", weights, "-w", tmp_path / "w", "--skip-bids-validation")
    _refused(result, 65, "does not match its model card", out)


def test_weights_asking_for_a_huge_model_are_refused_without_building_it(tmp_path):
    from bids_sr.models.weights import WeightsError, check_weights, load_model

    weights = _espcn_weights(tmp_path / "w.safetensors")
    card = json.loads((tmp_path / "w.card.json").read_text())
    (tmp_path / "w.card.json").unlink()
    _rewrite_metadata(weights, features=[30000, 30000])
    for check in (check_weights, load_model):
        with pytest.raises(WeightsError, match="tensors do not fit espcn"):
            check(weights)
    # with its card back (checksum updated), the config differing from the card is named
    from bids_sr.fileio import sha256_file

    card["sha256"] = sha256_file(weights)
    (tmp_path / "w.card.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="differs from its model card in features"):
        check_weights(weights)


def test_same_image_as_nii_and_nii_gz_is_refused(tmp_path, run_cli, demo_copy):
    image = nib.load(demo_copy / "sub-01/anat/sub-01_T1w.nii.gz")
    nib.save(image, demo_copy / "sub-01/anat/sub-01_T1w.nii")
    out = tmp_path / "out"
    result = run_cli(demo_copy, out, "participant", "--participant-label", "01", "--method",
                     "nearest", "-w", tmp_path / "w", "--skip-bids-validation")  # fmt: skip
    _refused(result, 65, "would write the same derivative", out)


def test_raw_sidecar_that_is_not_json_is_refused(tmp_path, run_cli, demo_copy):
    (demo_copy / "sub-01/anat/sub-01_T1w.json").write_text("{not json")
    out = tmp_path / "out"
    result = run_cli(demo_copy, out, "participant", "--participant-label", "01", "--method",
                     "nearest", "-w", tmp_path / "w", "--skip-bids-validation")  # fmt: skip
    _refused(result, 65, "sub-01_T1w.json: sidecar is not valid JSON", out)


# ------------------------------------------------- 5. two inputs mapping to one output name


def test_misnamed_file_mapping_to_the_same_output_is_refused(tmp_path, run_cli, demo_copy):
    folder = demo_copy / "sub-01" / "ses-1" / "anat"
    folder.mkdir(parents=True)
    shutil.copy(demo_copy / "sub-01/anat/sub-01_T1w.nii.gz", folder / "sub-01_T1w.nii.gz")
    out = tmp_path / "out"
    result = run_cli(demo_copy, out, "participant", "--participant-label", "01", "--method",
                     "nearest", "-w", tmp_path / "w", "--skip-bids-validation")  # fmt: skip
    line = _refused(result, 65, "would write the same derivative", out)
    assert "sub-01/ses-1/anat/sub-01_T1w.nii.gz" in line


def test_output_folder_inside_the_dataset_is_refused(tmp_path, run_cli, demo_copy):
    code, err = run_cli(demo_copy, demo_copy / "out", "participant", "-w", tmp_path / "w")
    assert code == 64 and "inside bids_dir" in _one_line(err)
    assert not (demo_copy / "out").exists()
    from bids_sr.cli.parser import parse_args

    config = parse_args([str(demo_copy), str(demo_copy / "derivatives" / "sr"), "participant"])
    assert config.execution.output_dir == demo_copy / "derivatives" / "sr"


# ------------------------------------------------------------------------ 6. concurrent runs


def test_second_run_on_a_locked_work_dir_exits_with_a_clear_line(tmp_path, run_cli):
    from bids_sr.cli.locks import WorkDirLock

    work, out = tmp_path / "w", tmp_path / "out"
    with WorkDirLock(work):
        result = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method",
                         "nearest", "-w", work, "--skip-bids-validation")  # fmt: skip
    line = _refused(result, 73, "work directory in use by another bids_sr run", out)
    assert f"pid {os.getpid()}" in line


def test_failed_run_keeps_an_output_folder_another_run_writes_into(tmp_path, run_cli,
                                                                   monkeypatch):  # fmt: skip
    """Run A creates OUT and fails; run B (here: simulated while A builds its workflow)
    writes there too: A must not delete it. Alone, A leaves nothing behind."""
    from bids_sr.cli.locks import OutputDirLock
    from bids_sr.workflows import base

    out = tmp_path / "out"
    other = OutputDirLock(out)

    def failing_build(**kwargs):
        if with_other_run:
            other.acquire()
            (out / "sub-02").mkdir()
            (out / "sub-02" / "from_run_b.txt").write_text("B")
        raise RuntimeError("Traceback (most recent call last):\nValueError: boom")

    monkeypatch.setattr(base, "init_bids_sr_wf", failing_build)
    argv = (DEMO, out, "participant", "--participant-label", "01", "--method", "nearest",
            "--skip-bids-validation")  # fmt: skip
    with_other_run = False
    code, err = run_cli(*argv, "-w", tmp_path / "w1")
    assert code == 1 and _one_line(err) == "bids_sr: error: boom"
    assert not out.exists()
    with_other_run = True
    code, err = run_cli(*argv, "-w", tmp_path / "w2")
    assert code == 1
    assert (out / "sub-02" / "from_run_b.txt").is_file()
    assert (out / "dataset_description.json").is_file()
    other.release()


# --------------------------------------------------------------- 7. stale --bids-database-dir


def test_stale_database_is_reindexed(tmp_path, run_cli, demo_copy):
    from bids_sr.bids import collect_t1w, load_layout

    database = tmp_path / "db"
    out = tmp_path / "out"
    # an early stop (no weights at ×3) after indexing: cheap runs that use the database
    argv = ("participant", "--method", "fsrcnn", "--scale", "3", "-w", tmp_path / "w",
            "--skip-bids-validation", "--bids-database-dir", database)  # fmt: skip
    for label in ("01", "02"):
        code, err = run_cli(demo_copy, out, *argv, "--participant-label", label)
        assert code == 65 and "no shipped weights" in err, err
    (database / "layout_index.sqlite").write_bytes(b"not a database" * 100)
    code, err = run_cli(demo_copy, out, *argv, "--participant-label", "02")
    assert code == 65 and "no shipped weights" in _one_line(err), err
    # a new T1w appears: the index sees it
    new = demo_copy / "sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz"
    shutil.copy(demo_copy / "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz", new)
    layout = load_layout(demo_copy, ["02"], database_dir=database, validate=False)
    assert str(new) in collect_t1w(layout, ["02"])["02"]
    new.unlink()
    layout = load_layout(demo_copy, ["02"], database_dir=database, validate=False)
    assert str(new) not in collect_t1w(layout, ["02"])["02"]


# --------------------------------------------------------------- 8. the README's filter file


def test_filter_file_with_bids_short_entity_names(tmp_path, run_cli, demo_copy):
    from bids_sr.bids import collect_t1w, load_layout

    anat = demo_copy / "sub-01/anat"
    (anat / "sub-01_T1w.nii.gz").rename(anat / "sub-01_acq-mprage_T1w.nii.gz")
    (anat / "sub-01_T1w.json").rename(anat / "sub-01_acq-mprage_T1w.json")
    layout = load_layout(demo_copy, ["01"], validate=False)
    found = collect_t1w(layout, ["01"], extra_filters={"acq": "mprage"})
    assert found == {"01": [str(anat / "sub-01_acq-mprage_T1w.nii.gz")]}
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"t1w": {"acq": "other"}}))
    out = tmp_path / "out"
    result = run_cli(demo_copy, out, "participant", "--participant-label", "01",
                     "--bids-filter-file", filters, "-w", tmp_path / "w",
                     "--skip-bids-validation")  # fmt: skip
    _refused(result, 66, "no T1w", out)
    filters.write_text(json.dumps({"t1w": {"colour": "blue"}}))
    result = run_cli(demo_copy, out, "participant", "--participant-label", "01",
                     "--bids-filter-file", filters, "-w", tmp_path / "w",
                     "--skip-bids-validation")  # fmt: skip
    _refused(result, 64, "'colour' is not a recognized entity", out)


# ------------------------------------------------------------------------------- 9. orphans

_WORKERS_SCRIPT = """
import os, sys, time
from bids_sr.cli.plugin import MultiProcPlugin, stop_workers
from bids_sr.cli.run import Stopped, _stop
import signal
signal.signal(signal.SIGTERM, _stop)
runner = MultiProcPlugin(plugin_args={"n_procs": 2})
futures = [runner.pool.submit(time.sleep, 600) for _ in range(2)]
while len(runner.pool._processes) < 2:
    time.sleep(0.05)
try:  # the signal may arrive as soon as the line is out, before print returns
    print(" ".join(str(pid) for pid in runner.pool._processes), flush=True)
    time.sleep(600)
except Stopped:
    stop_workers(runner)
    sys.exit(3)
"""


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie of an exited child counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def _wait_gone(pids: list[int], limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(_gone(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_with_their_parent(how):
    proc = subprocess.Popen([sys.executable, "-c", _WORKERS_SCRIPT], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)  # fmt: skip
    try:
        workers = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(workers) == 2 and not any(_gone(pid) for pid in workers)
        proc.send_signal(how)
        proc.wait(timeout=180)  # generous: a loaded machine spawns slowly
        assert _wait_gone(workers), "worker processes outlived the main process"
        if how == signal.SIGTERM:
            assert proc.returncode == 3
    finally:
        proc.kill()
        proc.wait()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(") ", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_for_workers(proc: subprocess.Popen, n: int = 2) -> list[int]:
    """The pids of the ``n`` MultiProc workers (forked: same command line) of ``proc``."""
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while len(workers) < n and proc.poll() is None and time.monotonic() < deadline:
        workers = []
        for pid in _children(proc.pid):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [
                    b"-m", b"bids_sr"]:  # fmt: skip
                    workers.append(pid)
            except OSError:
                continue
        time.sleep(0.02)
    assert len(workers) == n, "no MultiProc workers seen"
    return workers


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_leaves_no_workers_and_resumes(tmp_path, how):
    """kill -9 or SIGTERM of a running bids_sr: its MultiProc workers exit too, SIGTERM ends
    with one line, and the same command then completes (the work-dir lock was released)."""
    out, work = tmp_path / "out", tmp_path / "work"
    argv = [sys.executable, "-m", "bids_sr", str(DEMO), str(out), "participant",
            "--participant-label", "02", "--method", "bspline", "-w", str(work), "--nprocs", "2",
            "--skip-bids-validation"]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        workers = _wait_for_workers(proc)
        proc.send_signal(how)
        _, err = proc.communicate(timeout=60)
        assert _wait_gone(workers), "worker processes outlived the main process"
        if how == signal.SIGTERM:
            assert proc.returncode == 1
            errors = [line for line in err.splitlines() if "error" in line.lower()]
            assert errors == [
                "bids_sr: error: stopped by SIGTERM; rerun with the same -w to resume"], err
    finally:
        proc.kill()
        proc.wait()
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(list(out.glob("sub-02/ses-*/anat/*_desc-bspline_T1w.nii.gz"))) == 2


_DYING_NODE_SCRIPT = """
import sys
from nipype.interfaces.utility import Function
from nipype.pipeline import engine as pe
from bids_sr.cli.plugin import MultiProcPlugin

die = "def die():\\n    import os, signal\\n    os.kill(os.getpid(), signal.SIGKILL)\\n"
wf = pe.Workflow(name="wf", base_dir=sys.argv[1])
wf.add_nodes([pe.Node(Function(function=die, input_names=[], output_names=[]), name="dies")])
try:
    wf.run(plugin=MultiProcPlugin(plugin_args={"n_procs": 1}))
except Exception as exc:
    print(str(exc)[-400:])
    sys.exit(5)
"""


def test_a_dead_worker_fails_the_run_instead_of_hanging(tmp_path):
    """The only running node's worker dies (out-of-memory killer, crash): Nipype's MultiProc
    used to wait for its result forever; now the run fails at once, naming the node."""
    proc = subprocess.run([sys.executable, "-c", _DYING_NODE_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert "WorkerDied: the worker process running wf.dies died" in proc.stdout, proc.stdout


_TORCH_FIRST_SCRIPT = """
import sys
import torch
from nipype.interfaces.utility import Function
from nipype.pipeline import engine as pe
from bids_sr.cli.plugin import MultiProcPlugin, worker_start_method

torch.set_num_threads(2)
torch.nn.Conv2d(8, 8, 3)(torch.randn(2, 8, 32, 32))  # the main process's OpenMP pool runs
conv = ("def conv():\\n    import torch\\n    torch.set_num_threads(2)\\n"
        "    return float(torch.nn.Conv3d(2, 4, 3)(torch.randn(1, 2, 16, 16, 16)).sum())\\n")
wf = pe.Workflow(name="wf", base_dir=sys.argv[1])
wf.add_nodes([pe.Node(Function(function=conv, input_names=[], output_names=["out"]),
                      name="conv")])
wf.run(plugin=MultiProcPlugin(plugin_args={"n_procs": 1}))
print("start method", worker_start_method())
"""


def test_a_process_that_ran_torch_first_still_runs_multiproc_workflows(tmp_path):
    """A notebook or pipeline that ran torch on two threads, then a MultiProc workflow whose
    node runs a convolution: forked, that worker waited forever on the parent's OpenMP pool
    (GNU libgomp does not survive fork); its workers now start with spawn."""
    proc = subprocess.run([sys.executable, "-c", _TORCH_FIRST_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "start method spawn" in proc.stdout, proc.stdout


def test_the_command_line_keeps_fork_and_a_requested_start_method_wins(monkeypatch):
    """Without torch on several threads in this process, workers fork (nothing to re-import);
    ``plugin_args['mp_context']`` always wins."""
    from bids_sr.cli import plugin

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert plugin.worker_start_method() is None
    assert plugin.worker_start_method("forkserver") == "forkserver"


@pytest.mark.slow
def test_stale_temporary_files_are_removed_by_the_next_run(nearest_run, run_cli):
    argv, out, _, _ = nearest_run
    stale = out / "sub-01" / "anat" / ".sub-01_res-hi_desc-nearest_T1w.nii.gz.k2j4h5l6.tmp.nii.gz"
    stale.write_bytes(b"\0" * 1000)
    keep = out / "sub-01" / "anat" / "notes.tmp"
    keep.write_text("not ours")
    code, err = run_cli(*argv)
    assert code == 0, err
    assert not stale.exists() and keep.exists()
    keep.unlink()


# -------------------------------------------------------------------- 10. disk full / EFBIG

_FSIZE_SCRIPT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
from bids_sr.cli.run import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_file_size_limit_on_the_output_is_an_io_error(nearest_run, tmp_path):
    """The work directory holds every result (small files only are written there now); the
    output image (3 MB) exceeds RLIMIT_FSIZE: exit 74 and one clear line."""
    argv, out, _, _ = nearest_run
    full = tmp_path / "full"
    argv = [str(full) if a == str(out) else a for a in argv]
    proc = subprocess.run([sys.executable, "-c", _FSIZE_SCRIPT, *argv], capture_output=True,
                          text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert proc.returncode == 74, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("bids_sr: error:")]
    assert len(error) == 1, proc.stderr[-3000:]
    assert "File too large" in error[0] and "free space and file-size limits" in error[0]
    assert "node ds_sr" in error[0] and "Traceback" not in error[0]
    assert not list(full.glob("sub-*/anat/*.nii.gz")) and not list(full.rglob(".*.tmp*"))


def test_unwritable_work_dir_is_refused_in_one_line(tmp_path, run_cli):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = tmp_path / "out"
    result = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method",
                     "nearest", "-w", blocker / "work", "--skip-bids-validation")  # fmt: skip
    _refused(result, 73, "cannot write to the work directory", out)


# ---------------------------------------------------- 11. another pipeline's derivatives


def test_other_pipelines_derivatives_are_never_overwritten(tmp_path, run_cli):
    out = tmp_path / "fmriprep"
    out.mkdir()
    description = json.dumps({"Name": "fMRIPrep output", "BIDSVersion": "1.9.0",
                              "DatasetType": "derivative",
                              "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}]})
    (out / "dataset_description.json").write_text(description)
    (out / "sub-01.html").write_text("<html>fMRIPrep report</html>")
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method",
                        "nearest", "-w", tmp_path / "w", "--skip-bids-validation")  # fmt: skip
    assert code == 73 and "fMRIPrep" in _one_line(err)
    assert (out / "dataset_description.json").read_text() == description
    assert (out / "sub-01.html").read_text() == "<html>fMRIPrep report</html>"
    assert sorted(p.name for p in out.iterdir()) == ["dataset_description.json", "sub-01.html"]
