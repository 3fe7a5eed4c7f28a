"""What a successful run leaves in its sidecars and output root (issue 42, item 5):
``RequestedMethod`` is what the user asked for (``auto`` by default), a per-scan model is
described by its checksum rather than a path in the work directory, and the output
folder's lock file is gone once no run uses the folder."""

from __future__ import annotations

import json
from pathlib import Path

from bids_sr.cli.locks import LOCK_NAME, OutputDirLock
from bids_sr.interfaces.bids import build_sidecar

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bids_sr" / "data" / "demo"
T1W = DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz"


def test_default_run_says_auto_was_requested_and_leaves_no_lock(tmp_path, run_cli):
    """The default method at ×3 (no card validates a learned method there: bspline, fast)."""
    out = tmp_path / "out"
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "01", "--scale", "3",
                        "--skip-bids-validation", "-w", tmp_path / "w")  # fmt: skip
    assert code == 0, err
    meta = json.loads((out / "sub-01" / "anat" / "sub-01_res-hi_desc-bspline_T1w.json")
                      .read_text())  # fmt: skip
    assert meta["Method"] == "bspline" and meta["RequestedMethod"] == "auto"
    assert meta["MethodChoice"].startswith("auto chose bspline")
    assert not (out / LOCK_NAME).exists()
    assert (out / "dataset_description.json").is_file()


def test_lock_file_stays_while_another_run_holds_the_folder(tmp_path):
    out = tmp_path / "out"
    first, second = OutputDirLock(out), OutputDirLock(out)
    first.acquire()
    second.acquire()
    first.release(remove=True)  # the other run still writes here: keep its lock file
    assert (out / LOCK_NAME).exists()
    second.release(remove=True)  # the last one out removes it
    assert not (out / LOCK_NAME).exists()
    again = OutputDirLock(out)  # a later run starts afresh
    again.acquire()
    assert (out / LOCK_NAME).exists()
    again.release()


def test_selfsr_weights_are_described_not_a_work_dir_path(tmp_path):
    model = tmp_path / "work" / "selfsr_models" / "..%2Fodd" / "selfsr_0123abcd.safetensors"
    report = {"method": "selfsr", "weights": str(model), "weights_sha256": "ab" * 32,
              "factors": [1, 1, 2]}  # fmt: skip
    sidecar = build_sidecar(str(T1W), str(DEMO), "selfsr", "hi", report)
    assert str(tmp_path) not in sidecar["Weights"] and "/" not in sidecar["Weights"].split("(")[0]
    assert "per-scan model" in sidecar["Weights"] and "selfsr_0123abcd" in sidecar["Weights"]
    assert sidecar["WeightsSha256"] == "ab" * 32
    shipped = build_sidecar(str(T1W), str(DEMO), "srrecnn", "hi",
                            {"method": "srrecnn", "weights": "/opt/w/srrecnn.safetensors"})
    assert shipped["Weights"] == "/opt/w/srrecnn.safetensors"  # a shipped file keeps its path


def test_ctrl_c_inside_the_writability_test_leaves_no_folder(tmp_path, monkeypatch, run_cli):
    """SIGINT between the writability test's file appearing and its removal (seen once
    under load): the folder this run created holds only its lock and that file, and goes."""
    import tempfile

    from bids_sr.fileio import WRITE_TEST_PREFIX

    real = tempfile.NamedTemporaryFile

    def interrupted(*args, **kwargs):
        if kwargs.get("prefix") != WRITE_TEST_PREFIX:
            return real(*args, **kwargs)
        Path(kwargs["dir"], f"{WRITE_TEST_PREFIX}abc123").touch()
        raise KeyboardInterrupt

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", interrupted)
    out = tmp_path / "out"
    code, err = run_cli(DEMO, out, "participant", "--participant-label", "01", "--method",
                        "nearest", "--skip-bids-validation", "-w", tmp_path / "w")  # fmt: skip
    assert code == 1 and "stopped by SIGINT" in err, err
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def test_a_user_folder_keeps_its_files_and_loses_only_the_temporaries(tmp_path):
    """The same interrupt in a folder the user made: the next run removes the leftover."""
    from bids_sr.fileio import WRITE_TEST_PREFIX, is_own_temporary, remove_stale_temporaries

    leftover = tmp_path / f"{WRITE_TEST_PREFIX}xyz"
    leftover.touch()
    (tmp_path / "notes.txt").write_text("mine")
    assert is_own_temporary(leftover.name) and not is_own_temporary("notes.txt")
    assert remove_stale_temporaries(tmp_path) == [leftover]
    assert (tmp_path / "notes.txt").read_text() == "mine"
