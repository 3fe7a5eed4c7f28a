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
    EXIT_USAGE,
    BIDSError,
    check_dataset,
    check_sessions,
    collect_t1w,
    find_brain_mask,
    load_derivative_layouts,
    load_layout,
    select_participants,
    validate_dataset,
    write_dataset_description,
)
from bids_sr.cli.parser import parse_args
from bids_sr.config import Config

LOGGER = logging.getLogger("bids_sr")
GUIDED_METHODS = ("srrecnn-t2w",)  # need a registered T2w: not part of --method all yet


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
    config.workflow.methods = resolve_methods(config, t1w_by_subject)
    brain_masks = _brain_masks(config, t1w_by_subject)
    n_files = sum(len(v) for v in t1w_by_subject.values())
    LOGGER.warning(
        "%s %d T1w image(s) of %d participant(s) with %s",
        "evaluating (T1w as the truth) on" if config.workflow.evaluate else "super-resolving",
        n_files,
        len(t1w_by_subject),
        ", ".join(config.workflow.methods),
    )
    created = _check_writable(config.execution.output_dir)
    try:
        write_dataset_description(config.execution.bids_dir, config.execution.output_dir)
        config.execution.log_dir.mkdir(parents=True, exist_ok=True)
        config.save(config.execution.log_dir / f"bids_sr_{config.execution.run_uuid}.toml")
        from bids_sr.workflows.base import init_bids_sr_wf

        workflow = init_bids_sr_wf(
            config=config, t1w_by_subject=t1w_by_subject, brain_masks=brain_masks
        )
        start = time.perf_counter()
        workflow.run(**config.plugin_settings())
    except BaseException:
        if created and not any(config.execution.output_dir.glob("sub-*")):
            shutil.rmtree(config.execution.output_dir, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - start
    LOGGER.warning("done in %.1f s; derivatives in %s", elapsed, config.execution.output_dir)
    return EXIT_OK


def _all_factors(config: Config, t1w_by_subject: dict[str, list[str]]) -> set[tuple]:
    """The factors every T1w will be processed with (one set unless --output-resolution)."""
    from bids_sr.image import as_factors, factors_for_resolution, load_volume

    if not config.workflow.output_resolution:
        return {as_factors(config.workflow.scale)}
    return {
        factors_for_resolution(load_volume(path).affine, config.workflow.output_resolution)
        for files in t1w_by_subject.values()
        for path in files
    }


def resolve_methods(config: Config, t1w_by_subject: dict[str, list[str]]) -> list[str]:
    """The methods to run: 'all' expanded, and learned methods checked for weights.

    'all' = the interpolation baselines plus every learned method whose shipped weights exist
    for the factors of every image (srrecnn-t2w only when the guide is wired: not yet).
    A learned method named explicitly without weights stops the run (exit 65) in normal mode
    and is skipped with a warning in evaluation mode. ``--weights`` must go with exactly one
    learned method (exit 64 otherwise).
    """
    from bids_sr.superresolve import INTERPOLATION_METHODS, METHODS, default_weights

    wf_settings = config.workflow
    factor_sets = _all_factors(config, t1w_by_subject)

    def missing_weights(method: str) -> list[str]:
        """Why each factor set has no usable shipped weights (empty: all found)."""
        if method in INTERPOLATION_METHODS:
            return []
        reasons = []
        for factors in sorted(factor_sets):
            try:
                default_weights(method, factors)
            except FileNotFoundError as exc:
                reasons.append(str(exc))
        return reasons

    methods: list[str] = []
    for name in wf_settings.methods:
        if name == "all":
            methods += [m for m in METHODS if m not in GUIDED_METHODS and not missing_weights(m)]
        else:
            methods.append(name)
    methods = list(dict.fromkeys(methods))
    learned = [m for m in methods if m not in INTERPOLATION_METHODS]
    if wf_settings.weights is not None:
        if len(learned) != 1:
            raise BIDSError(
                f"--weights {wf_settings.weights} needs exactly one learned method, got "
                f"{', '.join(learned) or 'none'}",
                EXIT_USAGE,
            )
        return methods
    kept = []
    for method in methods:
        missing = missing_weights(method)
        if not missing:
            kept.append(method)
            continue
        message = missing[0]
        if not wf_settings.evaluate:
            raise BIDSError(message, EXIT_DATA)
        LOGGER.warning("skipping %s in the evaluation: %s", method, message)
    if not kept:
        raise BIDSError("no method left to evaluate (none has weights)", EXIT_DATA)
    return kept


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
            else:
                LOGGER.warning("no desc-brain_mask derivative for %s: computing one", path)
    return masks


def run_group(config: Config) -> int:
    """Summarise the participant-level outputs (TSV + HTML), and aggregate the evaluation
    tables when there are any (mean ± SD per method, paired difference to bspline)."""
    from bids_sr.reports.summary import write_group_summary

    output_dir = config.execution.output_dir
    if not (output_dir / "dataset_description.json").exists():
        raise BIDSError(
            f"{output_dir}: no bids_sr derivatives here; run the participant level first",
            EXIT_DATA,
        )
    tsv, html = write_group_summary(output_dir)
    LOGGER.warning("group summary: %s and %s", tsv, html)
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
        LOGGER.warning("evaluation of %d image(s): %s and %s", len(tables), tsv, html)
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
