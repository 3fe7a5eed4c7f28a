"""bids_sr's main: parse → config → check inputs → workflow → plugin → exit code.

Every expected failure ends as one line on stderr naming the file and the problem, and the
BIDS Apps exit code; all inputs are checked before anything is written, so a bad input
leaves no partial output behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from bids_sr.bids import (
    LOGGER,
    check_dataset,
    check_sessions,
    collect_t1w,
    derivative_path,
    desc_label,
    find_brain_mask,
    group_runs,
    load_derivative_layouts,
    load_layout,
    reference_session,
    select_participants,
    validate_dataset,
    write_dataset_description,
)
from bids_sr.cli.failures import crash_files, crash_input, describe_failure
from bids_sr.cli.locks import LOCK_NAME, OutputDirLock, WorkDirLock
from bids_sr.cli.logs import log_file, setup_console
from bids_sr.cli.parser import parse_args
from bids_sr.cli.preflight import (
    check_output_dir,
    check_output_memory,
    check_output_names,
    check_precision,
    check_sidecars,
    check_weights_files,
    grid_difference,
)
from bids_sr.config import Config
from bids_sr.errors import (
    EXIT_CANT_CREATE,
    EXIT_DATA,
    EXIT_FAILURE,
    EXIT_OK,
    BIDSError,
    exit_code_for,
)
from bids_sr.fileio import WRITE_TEST_PREFIX, is_own_temporary, remove_stale_temporaries
from bids_sr.image import ImageError, load_volume
from bids_sr.planning.plan import MethodPlan, plan_methods, resolve_methods
from bids_sr.planning.references import find_references
from bids_sr.superresolve import GUIDED_METHODS

__all__ = ["main", "resolve_methods", "run_group", "run_participant"]


class Stopped(BaseException):
    """The run was told to stop (SIGTERM); a BaseException, so that no ``except Exception``
    on the way (Nipype's included) swallows it."""


def _check_writable(output_dir: Path) -> None:
    """Make sure ``output_dir`` can be written (73, or 74 when the disk is full)."""
    try:
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=WRITE_TEST_PREFIX):
            pass
    except OSError as exc:
        raise BIDSError(
            f"{output_dir}: cannot write to the output directory ({exc.strerror})",
            exit_code_for("OSError", "", exc.errno) if exc.errno else EXIT_CANT_CREATE,
        ) from exc


def _check_images(t1w_by_subject: dict[str, list[str]], others=()) -> None:
    """Load every T1w (and reference in ``others``) once before running: corrupt, complex,
    4D, 2D, empty or NaN images stop the run, and so does a constant T1w."""

    paths = [path for files in t1w_by_subject.values() for path in files]
    for path in dict.fromkeys([*paths, *others]):
        try:
            load_volume(path, reject_constant=path in paths)
        except ImageError as exc:
            raise BIDSError(str(exc), EXIT_DATA) from exc


def _collect_inputs(config: Config) -> tuple[object, dict[str, list[str]]]:
    execution = config.execution
    check_dataset(execution.bids_dir)
    if not execution.skip_bids_validation:
        validate_dataset(execution.bids_dir)
    participants = select_participants(execution.bids_dir, execution.participant_label)
    layout = load_layout(
        execution.bids_dir,
        participants,
        database_dir=execution.bids_database_dir,
        validate=not execution.skip_bids_validation,
    )
    sessions = check_sessions(layout, participants, execution.session_label)
    filters = execution.bids_filters.get("t1w", {})
    return layout, collect_t1w(layout, participants, sessions, filters)


def _report_fallbacks(config: Config, plan: MethodPlan) -> None:
    """After the run: warn about every guided output whose node fell back (sidecar says so)."""
    for t1w_file, methods in plan.methods.items():
        for method in (m for m in methods if m in GUIDED_METHODS):
            image = config.execution.output_dir / derivative_path(t1w_file, desc=desc_label(method))
            sidecar = image.with_name(image.name.split(".")[0] + ".json")
            try:
                meta = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                continue
            if meta.get("FallbackFrom"):
                LOGGER.warning("%s: %s ran instead of %s: %s", image.name, meta.get("Method"),
                               meta["FallbackFrom"], meta.get("FallbackReason"))  # fmt: skip


def run_participant(config: Config) -> int:
    """Check inputs, build the Nipype workflow and run it with the configured plugin.

    Every check comes first (inputs, sidecars, output names, weights, plugin, output
    folder); then the work directory is locked (one run each), the output folder is
    shared-locked and stale temporary files of killed writes are removed, and the workflow
    runs. The plugin's worker processes end with the run, however it ends.
    """
    from bids_sr.cli.plugin import make_plugin, stop_workers  # late: nipype (see _run_workflow)

    check_precision()
    check_output_dir(config.execution.output_dir)
    layout, t1w_by_subject = _collect_inputs(config)
    references = find_references(layout, config, t1w_by_subject)
    reference_files = [path for found in references.values() for path in found.values()]
    _check_images(t1w_by_subject, reference_files)
    t1w_files = [f for files in t1w_by_subject.values() for f in files]
    check_sidecars([*t1w_files, *reference_files])
    check_output_memory(config, t1w_files)
    plan = plan_methods(config, t1w_by_subject, references)
    if config.workflow.combine_runs:
        plan.run_groups = group_runs(layout, t1w_by_subject)
    check_output_names(config, plan)
    check_weights_files(config, plan)
    brain_masks = _brain_masks(config, t1w_by_subject)
    runner = make_plugin(config)
    try:
        with WorkDirLock(config.execution.work_dir):
            n_files = sum(len(v) for v in t1w_by_subject.values())
            LOGGER.info(
                "%s %d T1w image(s) of %d participant(s) with %s",
                "evaluating (T1w as the truth) on" if config.workflow.evaluate
                else "super-resolving",
                n_files,
                len(t1w_by_subject),
                ", ".join(plan.all_methods),
            )  # fmt: skip
            for t1w_file, reference in plan.reference_files.items():
                LOGGER.info("%s: guided by the %s %s", Path(t1w_file).name,
                            plan.reference_suffix(t1w_file), reference)  # fmt: skip
                session = reference_session(t1w_file, reference)
                if session and any(plan.guides(t1w_file, m) for m in plan.methods[t1w_file]):
                    LOGGER.warning("%s: its %s comes from another session (ses-%s); lesions "
                                   "and anatomy can change between sessions "
                                   "(--reference-session same forbids it)", Path(t1w_file).name,
                                   plan.reference_suffix(t1w_file), session)  # fmt: skip
            elapsed = _run_workflow(config, plan, t1w_by_subject, brain_masks, runner)
    finally:
        stop_workers(runner)
    if not config.workflow.evaluate:
        _report_fallbacks(config, plan)
    LOGGER.info("done in %.1f s; derivatives in %s", elapsed, config.execution.output_dir)
    return EXIT_OK


@contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM that arrive inside the block are delivered when it ends: what it
    writes, and the record of it, are never cut in half."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _new_files(output_dir: Path, write, into: set[Path]) -> None:
    """Call ``write()``; add the files under ``output_dir`` it created to ``into``, even
    when it fails part-way (the clean-up after a failure must know them)."""
    before = {p for p in output_dir.rglob("*") if p.is_file()}
    try:
        write()
    finally:
        into |= {p for p in output_dir.rglob("*") if p.is_file()} - before


def _run_workflow(config: Config, plan, t1w_by_subject, brain_masks, runner) -> float:
    """Write the dataset description and configuration, then run the workflow; on failure,
    remove the output folder only if this run created it and it holds nothing else."""
    # late: nipype (~0.6 s) and the workflows load only for a participant run, not for --help,
    # a usage error, the group level or a run that stops at the input checks
    from bids_sr.cli.plugin import check_node_memory
    from bids_sr.workflows.base import init_bids_sr_wf
    from bids_sr.workflows.cache import forget_vanished_results

    output_dir = config.execution.output_dir
    created = not output_dir.exists()
    lock = OutputDirLock(output_dir)
    ours = {output_dir / LOCK_NAME} if created else set()
    started = time.time()
    finished = False
    try:
        with _signals_deferred():  # the folder it creates and its lock come together
            lock.acquire()
        _check_writable(output_dir)
        if lock.try_exclusive():  # no other run writes here: their temporaries are stale
            for path in remove_stale_temporaries(output_dir):
                LOGGER.info("removed %s, left by an interrupted write", path)
            lock.shared()

        def prepare():
            write_dataset_description(config.execution.bids_dir, output_dir)
            config.execution.log_dir.mkdir(parents=True, exist_ok=True)
            config.save(config.execution.log_dir / f"bids_sr_{config.execution.run_uuid}.toml")

        with _signals_deferred():
            _new_files(output_dir, prepare, ours)
        log_path = config.execution.log_dir / f"bids_sr_{config.execution.run_uuid}.log"
        ours.add(log_path)
        workflow = init_bids_sr_wf(
            config=config, t1w_by_subject=t1w_by_subject, brain_masks=brain_masks, plan=plan
        )
        check_node_memory(workflow, config)
        forget_vanished_results(Path(config.execution.work_dir) / workflow.name)
        start = time.perf_counter()
        with log_file(log_path):
            try:
                workflow.run(plugin=runner)
            except BaseException as exc:  # in full in the log; one line on the console
                LOGGER.error("the run failed", exc_info=exc, extra={"console": False})
                raise
        finished = True
        return time.perf_counter() - start
    except BaseException:
        if created and not crash_files(config.execution.log_dir, started):
            _remove_if_only_ours(output_dir, ours, lock)
        raise
    finally:
        lock.release(remove=finished)  # a finished folder keeps no .bids_sr.lock


def _remove_if_only_ours(output_dir: Path, ours: set[Path], lock: OutputDirLock) -> None:
    """Delete ``output_dir`` when no other run uses it and it holds only files this run
    wrote (the description, README, .bidsignore, its configuration) or its temporaries (a
    Ctrl-C inside the writability test leaves that test's file): nothing else is lost."""
    if not lock.try_exclusive():
        return
    present = {p for p in output_dir.rglob("*") if p.is_file() and not is_own_temporary(p.name)}
    if present <= ours:
        with _signals_deferred():  # a second Ctrl-C does not leave half a folder
            shutil.rmtree(output_dir, ignore_errors=True)
    else:
        lock.shared()


def _brain_masks(config: Config, t1w_by_subject: dict[str, list[str]]) -> dict[str, str]:
    """Evaluation mode: the native-space brain-mask derivative of each T1w that has one."""
    if not (config.workflow.evaluate and config.workflow.derivatives):
        return {}
    layouts = load_derivative_layouts(config.workflow.derivatives)
    masks = {}
    for files in t1w_by_subject.values():
        for path in files:
            mask = find_brain_mask(layouts, path)
            if mask:
                masks[path] = mask
                difference = grid_difference(mask, path)
                if difference:
                    LOGGER.warning("%s: brain mask on another grid than %s (%s): resampled "
                                   "to it through both headers' world coordinates", mask,
                                   Path(path).name, difference)  # fmt: skip
            else:
                LOGGER.warning("no desc-brain_mask derivative for %s: computing one", path)
    return masks


def run_group(config: Config) -> int:
    """Summarise the participant-level outputs (TSV + HTML), and aggregate the evaluation
    tables when there are any (mean ± SD per method, paired difference to bspline).
    A participant run still writing there (it holds the output folder's lock) stops it
    (73): a summary of half the outputs would look complete."""
    output_dir = config.execution.output_dir
    if not (output_dir / "dataset_description.json").exists():
        raise BIDSError(
            f"{output_dir}: no bids_sr derivatives here; run the participant level first",
            EXIT_DATA,
        )
    lock = OutputDirLock(output_dir)
    lock.acquire_exclusive()  # no participant run is writing what the summary reads
    try:
        _write_group_outputs(output_dir)
    finally:
        lock.release()
    return EXIT_OK


def _write_group_outputs(output_dir: Path) -> None:
    # late: the reports load matplotlib (~0.5 s), for the group level only
    from bids_sr.reports.summary import write_group_summary

    tsv, html = write_group_summary(output_dir)
    LOGGER.info("group summary: %s and %s", tsv, html)
    tables = sorted(output_dir.glob("sub-*/**/*_desc-evaluation_metrics.tsv"))
    if tables:
        from bids_sr.reports import group

        try:
            rows = group.load_tables(tables)
        except ValueError as exc:
            raise BIDSError(str(exc), EXIT_DATA) from exc
        summary = group.aggregate(rows)
        tsv = group.write_group_tsv(summary, output_dir / "group_desc-evaluation_metrics.tsv")
        html = group.build_group_report(
            rows, output_dir / "group_desc-evaluation_metrics.html", summary=summary
        )
        LOGGER.info("evaluation of %d image(s): %s and %s", len(tables), tsv, html)


def _stop(signum, frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns (and exits with) a BIDS Apps exit code."""
    config = parse_args(argv)
    setup_console(config.execution.verbose)
    # threads per process follow --omp-nthreads (containers default these variables to 1)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(config.nipype.omp_nthreads)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if in_main_thread else None
    started = time.time()
    try:
        if config.execution.analysis_level == "group":
            code = run_group(config)
        else:
            code = run_participant(config)
    except BIDSError as exc:
        sys.stderr.write(f"bids_sr: error: {exc}\n")
        code = exc.code
    except (Stopped, KeyboardInterrupt) as exc:
        why = f"{exc}" if isinstance(exc, Stopped) else "SIGINT"
        sys.stderr.write(f"bids_sr: error: stopped by {why}; rerun with the same -w to "
                         "resume\n")  # fmt: skip
        code = EXIT_FAILURE
    except Exception as exc:  # a node failed (Nipype re-raises it), or an OS error here
        message, code, node = describe_failure(exc)
        crashes = crash_files(config.execution.log_dir, started)
        where = []
        source = crash_input(crashes[-1]) if crashes else None
        if source and source not in message:
            where.append(f"input {source}")
        if node:
            where.append(f"node {node}")
        if crashes:
            where.append(f"crash file {crashes[-1]}")
        detail = f" ({'; '.join(where)})" if where else ""
        sys.stderr.write(f"bids_sr: error: {message}{detail}\n")
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
