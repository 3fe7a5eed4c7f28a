"""bids_sr's main: parse → config → check inputs → workflow → plugin → exit code.

Every expected failure ends as one line on stderr naming the file and the problem, and the
BIDS Apps exit code; all inputs are checked before anything is written, so a bad input
leaves no partial output behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bids_sr.bids import (
    EXIT_CANT_CREATE,
    EXIT_DATA,
    EXIT_FAILURE,
    EXIT_OK,
    BIDSError,
    check_dataset,
    check_sessions,
    collect_t1w,
    load_layout,
    select_participants,
    validate_dataset,
    write_dataset_description,
)
from bids_sr.cli.parser import parse_args
from bids_sr.config import Config

LOGGER = logging.getLogger("bids_sr")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s [bids_sr] %(levelname)s: %(message)s")
    nipype_level = "INFO" if verbose >= 1 else "WARNING"
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    nipype_config.set("logging", "workflow_level", nipype_level)
    nipype_config.set("logging", "interface_level", nipype_level)
    nipype_logging.update_logging(nipype_config)


def _check_writable(output_dir: Path) -> bool:
    """Make sure ``output_dir`` can be created and written; return True if we created it."""
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".bids_sr_write_test"):
            pass
    except OSError as exc:
        raise BIDSError(
            f"{output_dir}: cannot write to the output directory ({exc.strerror})",
            EXIT_CANT_CREATE,
        ) from exc
    return created


def _check_images(t1w_by_subject: dict[str, list[str]]) -> None:
    """Load every T1w once before running: corrupt, 4D, 2D, empty or NaN images stop the run."""
    from bids_sr.image import ImageError, load_volume

    for files in t1w_by_subject.values():
        for path in files:
            try:
                load_volume(path)
            except ImageError as exc:
                raise BIDSError(str(exc), EXIT_DATA) from exc


def _collect_inputs(config: Config) -> dict[str, list[str]]:
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
    return collect_t1w(layout, participants, sessions, filters)


def run_participant(config: Config) -> int:
    """Check inputs, build the Nipype workflow and run it with the configured plugin."""
    t1w_by_subject = _collect_inputs(config)
    _check_images(t1w_by_subject)
    if config.workflow.method not in ("nearest", "linear", "bspline"):
        _check_weights_available(config)
    n_files = sum(len(v) for v in t1w_by_subject.values())
    LOGGER.warning(
        "super-resolving %d T1w image(s) of %d participant(s) with %s",
        n_files,
        len(t1w_by_subject),
        config.workflow.method,
    )
    created = _check_writable(config.execution.output_dir)
    try:
        write_dataset_description(config.execution.bids_dir, config.execution.output_dir)
        config.execution.log_dir.mkdir(parents=True, exist_ok=True)
        config.save(config.execution.log_dir / f"bids_sr_{config.execution.run_uuid}.toml")
        from bids_sr.workflows.base import init_bids_sr_wf

        workflow = init_bids_sr_wf(config=config, t1w_by_subject=t1w_by_subject)
        start = time.perf_counter()
        workflow.run(**config.plugin_settings())
    except BaseException:
        if created and not any(config.execution.output_dir.glob("sub-*")):
            shutil.rmtree(config.execution.output_dir, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - start
    LOGGER.warning("done in %.1f s; derivatives in %s", elapsed, config.execution.output_dir)
    return EXIT_OK


def _check_weights_available(config: Config) -> None:
    """Fail before running when a learned method has no weights for the requested factors."""
    if config.workflow.weights is not None or config.workflow.output_resolution:
        return  # per-image factors: the node reports a missing file clearly
    from bids_sr.image import as_factors
    from bids_sr.superresolve import default_weights

    try:
        default_weights(config.workflow.method, as_factors(config.workflow.scale))
    except FileNotFoundError as exc:
        raise BIDSError(str(exc), EXIT_DATA) from exc


def run_group(config: Config) -> int:
    """Summarise the participant-level outputs (TSV + HTML)."""
    from bids_sr.reports.summary import write_group_summary

    output_dir = config.execution.output_dir
    if not (output_dir / "dataset_description.json").exists():
        raise BIDSError(
            f"{output_dir}: no bids_sr derivatives here; run the participant level first",
            EXIT_DATA,
        )
    tsv, html = write_group_summary(output_dir)
    LOGGER.warning("group summary: %s and %s", tsv, html)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns (and exits with) a BIDS Apps exit code."""
    config = parse_args(argv)
    _setup_logging(config.execution.verbose)
    # threads per process follow --omp-nthreads (containers default these variables to 1)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(config.nipype.omp_nthreads)
    try:
        if config.execution.analysis_level == "group":
            code = run_group(config)
        else:
            code = run_participant(config)
    except BIDSError as exc:
        sys.stderr.write(f"bids_sr: error: {exc}\n")
        code = exc.code
    except RuntimeError as exc:  # nipype raises RuntimeError when nodes crash
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(
            f"bids_sr: error: {first} (crash files in {config.execution.log_dir})\n"
        )
        code = EXIT_FAILURE
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
