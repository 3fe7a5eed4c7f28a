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
    find_brain_mask,
    load_derivative_layouts,
    load_layout,
    select_participants,
    select_t2w,
    validate_dataset,
    write_dataset_description,
)
from bids_sr.cli.parser import parse_args
from bids_sr.config import Config
from bids_sr.planning import MethodPlan, plan_methods, resolve_methods
from bids_sr.superresolve import GUIDED_METHODS

__all__ = ["main", "resolve_methods", "run_group", "run_participant"]

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


def _check_images(t1w_by_subject: dict[str, list[str]], others=()) -> None:
    """Load every T1w (and T2w in ``others``) once before running: corrupt, 4D, 2D, empty or
    NaN images stop the run."""
    from bids_sr.image import ImageError, load_volume

    paths = [path for files in t1w_by_subject.values() for path in files]
    for path in dict.fromkeys([*paths, *others]):
        try:
            load_volume(path)
        except ImageError as exc:
            raise BIDSError(str(exc), EXIT_DATA) from exc


def _wants_t2w(config: Config) -> bool:
    """Whether a requested method may use a T2w (then one is looked for, per T1w)."""
    if config.workflow.t2w_reference == "none":
        return False
    return any(m in GUIDED_METHODS or m in ("all", "auto") for m in config.workflow.methods)


def _find_t2w(layout, config: Config, t1w_by_subject: dict[str, list[str]]) -> dict[str, str]:
    """The T2w of each T1w that has one (:func:`bids_sr.bids.select_t2w`), when wanted."""
    if not _wants_t2w(config):
        return {}
    found = {}
    for files in t1w_by_subject.values():
        for t1w_file in files:
            t2w_file = select_t2w(layout, t1w_file, config.workflow.t2w_reference)
            if t2w_file:
                found[t1w_file] = t2w_file
    return found


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
    import json

    from bids_sr.bids import derivative_path, desc_label

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
    """Check inputs, build the Nipype workflow and run it with the configured plugin."""
    layout, t1w_by_subject = _collect_inputs(config)
    t2w_files = _find_t2w(layout, config, t1w_by_subject)
    _check_images(t1w_by_subject, t2w_files.values())
    plan = plan_methods(config, t1w_by_subject, t2w_files)
    brain_masks = _brain_masks(config, t1w_by_subject)
    n_files = sum(len(v) for v in t1w_by_subject.values())
    LOGGER.warning(
        "%s %d T1w image(s) of %d participant(s) with %s",
        "evaluating (T1w as the truth) on" if config.workflow.evaluate else "super-resolving",
        n_files,
        len(t1w_by_subject),
        ", ".join(plan.all_methods),
    )
    for t1w_file, t2w_file in plan.t2w.items():
        LOGGER.warning("%s: guided by %s", Path(t1w_file).name, t2w_file)
    created = _check_writable(config.execution.output_dir)
    try:
        write_dataset_description(config.execution.bids_dir, config.execution.output_dir)
        config.execution.log_dir.mkdir(parents=True, exist_ok=True)
        config.save(config.execution.log_dir / f"bids_sr_{config.execution.run_uuid}.toml")
        from bids_sr.workflows.base import init_bids_sr_wf

        workflow = init_bids_sr_wf(
            config=config, t1w_by_subject=t1w_by_subject, brain_masks=brain_masks, plan=plan
        )
        start = time.perf_counter()
        workflow.run(**config.plugin_settings())
    except BaseException:
        if created and not any(config.execution.output_dir.glob("sub-*")):
            shutil.rmtree(config.execution.output_dir, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - start
    if not config.workflow.evaluate:
        _report_fallbacks(config, plan)
    LOGGER.warning("done in %.1f s; derivatives in %s", elapsed, config.execution.output_dir)
    return EXIT_OK


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
