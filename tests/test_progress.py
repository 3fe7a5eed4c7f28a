"""Progress lines of long loops: time-throttled INFO lines with step/total, elapsed and the
estimate; tqdm bars only with --progress; the lines reach the terminal from MultiProc's
worker processes."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from bids_sr.cli.parser import parse_args
from bids_sr.progress import Progress, format_duration, progress_line, subject, track


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bids_sr"]


def test_progress_line_says_step_total_elapsed_and_what_is_left():
    assert progress_line("selfsr: training", 30, 120, 60.0) == (
        "selfsr: training: step 30/120 (25%), 0:01:00 elapsed, about 0:03:00 left"
    )
    assert progress_line("x", 0, 10, 0.0).endswith("about ? left")
    assert progress_line("registration", 7, None, 3725.0) == "registration: step 7, 1:02:05 elapsed"
    assert format_duration(59.6) == "0:01:00"


def test_lines_name_the_image_being_processed(caplog):
    """Several images train at once under MultiProc: each line says which one it is about."""
    caplog.set_level(logging.INFO, logger="bids_sr")
    with subject("sub-03_T1w.nii.gz"):
        list(track(range(2), desc="selfsr: training"))
    list(track(range(2), desc="after"))
    lines = _messages(caplog)
    assert lines[0].startswith("sub-03_T1w.nii.gz: selfsr: training: step 0/2")
    assert lines[-1].startswith("after: step 2/2")


def test_track_logs_first_every_interval_and_last(caplog):
    """A line at the first step, then only when 30 s passed since the last line, and at the
    end: a slow loop says something at least every 30 s, a fast one twice."""
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="bids_sr")
    seen = []
    for step in track(range(10), desc="training", clock=clock):
        seen.append(step)
        clock.now += 12.0  # each step takes 12 s
    assert seen == list(range(10))
    lines = _messages(caplog)
    # after steps 3 (36 s), 6 (72 s: 36 s after the line before), 9 (108 s), and the last
    assert [line.split(",")[0] for line in lines] == [
        "training: step 0/10 (0%)", "training: step 3/10 (30%)", "training: step 6/10 (60%)",
        "training: step 9/10 (90%)", "training: step 10/10 (100%)",
    ]  # fmt: skip
    assert lines[2] == "training: step 6/10 (60%), 0:01:12 elapsed, about 0:00:48 left"
    gaps = [later - earlier for earlier, later in zip([0, 36, 72, 108], [36, 72, 108, 120])]
    assert max(gaps) <= 60  # at least one line a minute


def test_track_fast_loop_writes_two_lines_and_a_loop_left_early_its_last(caplog):
    caplog.set_level(logging.INFO, logger="bids_sr")
    assert sum(track(range(1000), desc="fast")) == sum(range(1000))
    assert _messages(caplog) == [
        "fast: step 0/1000 (0%), 0:00:00 elapsed, about ? left",
        "fast: step 1000/1000 (100%), 0:00:00 elapsed, about 0:00:00 left",
    ]
    caplog.clear()
    for step in track(range(50), desc="converging"):
        if step == 4:
            break
    assert [m.split(",")[0] for m in _messages(caplog)] == [
        "converging: step 0/50 (0%)", "converging: step 4/50 (8%)"]
    caplog.clear()
    assert list(track([], desc="nothing")) == []
    assert _messages(caplog) == []


def test_progress_counts_callbacks(caplog):
    """For an optimiser's iteration events (registration): steps without a total."""
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="bids_sr")
    progress = Progress("registration: iteration", clock=clock)
    for _ in range(5):
        clock.now += 20.0
        progress.step()
    progress.close()
    assert [m.split(",")[0] for m in _messages(caplog)] == [
        "registration: iteration: step 0", "registration: iteration: step 2",
        "registration: iteration: step 4", "registration: iteration: step 5"]  # fmt: skip


def test_bar_only_when_asked(capsys):
    list(track(range(3), desc="quiet"))
    assert "quiet" not in capsys.readouterr().err
    list(track(range(3), desc="shown", bar=True))
    assert "shown" in capsys.readouterr().err  # tqdm writes to stderr


def test_progress_option(tmp_path):
    demo = tmp_path / "in"
    demo.mkdir()
    argv = [str(demo), str(tmp_path / "out"), "participant"]
    assert parse_args(argv).execution.progress is False
    assert parse_args([*argv, "--progress"]).execution.progress is True


def test_lines_reach_the_terminal_from_multiproc_workers(tmp_path):
    """A node run by a MultiProc worker process logs through the app's logging set-up: its
    progress lines appear on the stderr of the command."""
    script = textwrap.dedent(f"""
        import os
        from nipype.interfaces.utility import Function
        from nipype.pipeline import engine as pe
        from bids_sr.cli.plugin import MultiProcPlugin
        from bids_sr.cli.logs import setup_console

        def loop():
            import os
            from bids_sr.progress import track
            for _ in track(range(3), desc=f"worker {{os.getpid()}} loop"):
                pass

        setup_console(0)
        workflow = pe.Workflow(name="wf", base_dir={str(tmp_path)!r})
        workflow.add_nodes([pe.Node(Function(function=loop), name="loop")])
        workflow.run(plugin=MultiProcPlugin(plugin_args={{"n_procs": 1}}))
        print("main", os.getpid())
    """)
    (tmp_path / "run.py").write_text(script)  # Nipype's Function needs a source file
    result = subprocess.run([sys.executable, str(tmp_path / "run.py")], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    main_pid = result.stdout.split()[-1]
    lines = [line for line in result.stderr.splitlines() if " loop: step " in line]
    assert len(lines) == 2 and "[bids_sr] INFO: worker " in lines[0], result.stderr
    assert f"worker {main_pid} " not in lines[0]  # it ran in another process
    assert lines[1].endswith("loop: step 3/3 (100%), 0:00:00 elapsed, about 0:00:00 left")
