"""The BIDS-App command line: positional arguments, grouped options, consistency checks.

Option names follow fMRIPrep's family. Usage errors print one line and exit with 64
(EX_USAGE, as the BIDS Apps execution spec asks), never argparse's default 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from bids_sr.__about__ import __version__
from bids_sr.acquisition import PROFILES
from bids_sr.bids import check_t2w_pattern
from bids_sr.config import Config, Execution, Nipype, Seeds, Workflow
from bids_sr.degrade import PRESETS
from bids_sr.errors import EXIT_USAGE
from bids_sr.planning.references import GUIDE_SUFFIXES
from bids_sr.superresolve import METHODS, NETWORK_METHODS


class BIDSAppParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit with EX_USAGE (64)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale factor {text!r} is not a number") from None
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"scale factor {text} must be a finite number >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


#: The least --mem-gb that can run anything: every run's subject report node reserves 1 GB
#: (workflows/base.py); Nipype's MultiProc waits for ever for memory it will never have.
MIN_MEM_GB = 1.0


def _mem_gb(text: str) -> float:
    value = _positive_float(text)
    if value < MIN_MEM_GB:
        raise argparse.ArgumentTypeError(
            f"{text} GB is too little: a run needs at least {MIN_MEM_GB:g} GB")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def _check_tile_size(parser: argparse.ArgumentParser, tile: int, methods: list[str]) -> None:
    """A usage error for a ``--tile-size`` below what a requested network's receptive field
    needs (auto and all may run any of them): a tiny tile would be enlarged anyway, into
    thousands of tiles (120 s instead of 6 s for an 80³ volume)."""
    from bids_sr.models.registry import get_spec  # late: torch (~2 s); --help needs none

    wide = {"auto", "all"} & set(methods)
    networks = NETWORK_METHODS if wide else [m for m in methods if m in NETWORK_METHODS]
    if not networks:
        return
    needed, widest = max((get_spec(m).min_tile(), m) for m in networks)
    if tile < needed:
        parser.error(f"--tile-size {tile} is below the {needed} voxels that {widest}'s "
                     f"receptive field needs; give at least {needed}")  # fmt: skip


def _overlap(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 0.9:
        raise argparse.ArgumentTypeError(f"{text} must lie in [0, 0.9]")
    return value


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: file does not exist")
    return path.absolute()


def _existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: folder does not exist")
    return path.absolute()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, stating a default only where there is one to state:
    not None (the help says what happens then, e.g. "default: all"), not a flag's own
    True/False (``--no-data-consistency (default: True)`` reads as the opposite), and not
    twice when the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        flag = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        if action.default is None or flag or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The parser; also the source of the Boutiques descriptor, so keep help texts useful."""
    parser = BIDSAppParser(
        prog="bids_sr",
        description="Super-resolve anatomical brain MRI (T1w) of a BIDS dataset into a "
        "BIDS derivatives dataset.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="the root folder of a BIDS dataset")
    parser.add_argument(
        "output_dir", type=Path, help="the folder where derivatives are written (created)"
    )
    parser.add_argument(
        "analysis_level",
        choices=["participant", "group"],
        help="participant: super-resolve each participant's images; group: summarise them",
    )
    parser.add_argument("--version", action="version", version=f"bids_sr {__version__}")

    bids = parser.add_argument_group("Selecting data")
    bids.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        metavar="LABEL",
        help="participant labels, with or without 'sub-' (default: all)",
    )
    bids.add_argument(
        "--session-label",
        "--session_label",
        nargs="+",
        metavar="LABEL",
        help="session labels, with or without 'ses-' (default: all)",
    )
    bids.add_argument(
        "--bids-filter-file",
        type=_existing_file,
        metavar="FILE",
        help="JSON file of pybids filters for the T1w query, e.g. {\"t1w\": {\"acq\": \"mprage\"}}",
    )
    bids.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validation",
        action="store_true",
        help="do not run the BIDS validator on the input dataset",
    )
    bids.add_argument(
        "--bids-database-dir",
        type=Path,
        metavar="PATH",
        help="folder for a reusable pybids index database (speeds up reruns)",
    )

    sr = parser.add_argument_group("Super-resolution")
    sr.add_argument(
        "--method",
        nargs="+",
        choices=METHODS + ("all", "auto"),
        default="auto",
        metavar="METHOD",
        help=f"one or more of: {', '.join(METHODS)}, all, auto. auto: per T1w, the "
        "shipped model whose card validates the largest gain for the input (a guided one, "
        "srrecnn-t2w, srrecnn-flair, selfsr-t2w or selfsr-flair, only with a finer T2w or "
        "FLAIR), else "
        "bspline (the sidecar's MethodChoice says why); all: the interpolation baselines and "
        "every learned method whose weights ship for the scale. Each method writes its own "
        "desc-<method> derivative (srrecnn-t2w: desc-srrecnnT2w)",
    )
    sr.add_argument(
        "--fast",
        action="store_true",
        help="for cohorts: auto prefers a validated fast method where one exists (selfsr-fast, "
        "the shipped prior with no per-scan training: about a minute instead of about eight "
        "per 256×256×48 2D scan on two CPU cores, with a smaller gain over bspline; see the "
        "Methods page); without it, selfsr-fast runs only where nothing slower is validated",
    )
    sr.add_argument(
        "--t2w-reference",
        default="auto",
        metavar="{auto,none,PATTERN}",
        help="the T2w that guides srrecnn-t2w and selfsr-t2w: auto = the participant's T2w "
        "of the same session, else of the closest session; none = no T2w; or a path pattern "
        "with {subject} and {session}, e.g. /refs/sub-{subject}_T2w.nii.gz. Without a T2w, "
        "or when its rigid registration to the T1w fails the quality check, srrecnn-t2w "
        "falls back to srrecnn (bspline when srrecnn has no weights) and selfsr-t2w to "
        "selfsr, and the sidecar says so (default: auto)",
    )
    sr.add_argument(
        "--reference-session",
        choices=["any", "same"],
        default="any",
        help="any: a T2w or FLAIR of another session may guide a T1w when its own session has "
        "none (a warning, and ReferenceSession in the output sidecar; lesions and anatomy "
        "can change between sessions); same: only a reference of the T1w's own session",
    )
    sr.add_argument(
        "--reference-suffix",
        nargs="+",
        choices=GUIDE_SUFFIXES,
        metavar="SUFFIX",
        help="the contrasts that may guide a T1w: T2w (srrecnn-t2w, selfsr-t2w) and/or FLAIR "
        "(srrecnn-flair, selfsr-flair), each found like the T2w of --t2w-reference auto (same "
        "session first). Default: both, and auto picks per T1w the finest along the super-resolved "
        "axes for which a guided model's card shows a gain (a tie: T2w). Given, it is forced: "
        "a T1w that would be guided and has none of them stops the run",
    )
    sr.add_argument(
        "--scale",
        nargs="+",
        type=_factor,
        metavar="FACTOR",
        help="one factor, or three per-axis factors such as '1 1 4' (default: a 2D scan, "
        "one axis much coarser, becomes isotropic at its finest voxel size, e.g. 0.9x0.9x3 mm "
        "-> 0.9 mm; a 3D scan is doubled along every axis; evaluation mode: 2)",
    )
    sr.add_argument(
        "--output-resolution",
        type=_positive_float,
        metavar="MM",
        help="target voxel size in mm, instead of --scale (axes already finer stay as they are)",
    )
    sr.add_argument(
        "--weights",
        type=_existing_file,
        metavar="PATH",
        help="weights (.safetensors) to use instead of the shipped ones, e.g. your own retrained",
    )
    sr.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where learned methods run (auto: a GPU when one is visible)",
    )
    sr.add_argument(
        "--amp",
        choices=["none", "bf16", "fp16"],
        default="none",
        help="mixed precision for networks on CUDA (ignored on CPU)",
    )
    sr.add_argument(
        "--tile-size",
        type=_positive_int,
        metavar="N",
        help="inference tile edge in input voxels; at least what the network's receptive "
        "field needs (twice its radius plus 4: 24 for srrecnn and fsrcnn, 8 for espcn, 42 "
        "for srgan; with auto or all, the largest of them)",
    )
    sr.add_argument(
        "--tile-overlap",
        type=_overlap,
        metavar="FRACTION",
        help="overlap between inference tiles, a fraction in [0, 0.9]",
    )

    sr.add_argument(
        "--combine-runs",
        action="store_true",
        help="also combine the T1w images of each participant and session that differ only "
        "in acq- or run- (e.g. an axial and a sagittal 2D scan): after each is "
        "super-resolved, they are registered rigidly to the first one's output and "
        "reconstructed jointly, so that the result agrees with what every scan acquired; "
        "written as desc-<method>Combined, without acq-/run-, with the per-run data "
        "consistency in its sidecar",
    )

    acquisition = parser.add_argument_group(
        "Acquisition model",
        "how the input was acquired: a 2D scan (its coarse axis is the slice axis) or an "
        "isotropic 3D scan; used by data consistency and the thick-slice methods",
    )
    acquisition.add_argument(
        "--slice-thickness",
        type=float,
        metavar="MM",
        help="slice thickness of 2D inputs (default: the sidecar's SliceThickness, else the "
        "slice spacing); gap = spacing - thickness, negative for overlapping slices",
    )
    acquisition.add_argument(
        "--slice-profile",
        choices=PROFILES,
        default="rect",
        help="slice profile of 2D inputs (gaussian: FWHM = thickness)",
    )
    acquisition.add_argument(
        "--no-data-consistency",
        dest="data_consistency",
        action="store_false",
        help="do not correct the result so that, projected through the acquisition model, it "
        "returns the input (DataConsistencyPSNR is still measured and reported)",
    )

    evaluation = parser.add_argument_group("Evaluation")
    evaluation.add_argument(
        "--evaluate",
        action="store_true",
        help="evaluation mode: treat each T1w as the high-resolution truth, degrade it by "
        "--scale, super-resolve it back with each --method and the interpolation baselines, "
        "and write a metrics table (PSNR, SSIM, gradient error) per T1w instead of images",
    )
    evaluation.add_argument(
        "--degradation",
        choices=PRESETS,
        default="gaussian",
        help="how the low-resolution image is simulated in evaluation mode (the training "
        "presets of bids_sr.degrade)",
    )
    evaluation.add_argument(
        "--slice-gap",
        type=float,
        metavar="MM",
        help="evaluation with --degradation slice: gap between the simulated slices "
        "(instead of --slice-thickness; negative = overlap)",
    )
    evaluation.add_argument(
        "--derivatives",
        nargs="+",
        type=_existing_dir,
        metavar="PATH",
        help="derivatives datasets searched for a native-space desc-brain_mask of each T1w "
        "(evaluation mode; without one, bids_sr computes a brain mask)",
    )

    perf = parser.add_argument_group("Performance and execution")
    perf.add_argument(
        "--nprocs",
        "--nthreads",
        "--n_cpus",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="maximum number of processes/threads across all nodes",
    )
    perf.add_argument(
        "--omp-nthreads",
        type=_positive_int,
        metavar="N",
        help="threads per process (default: min(8, nprocs))",
    )
    perf.add_argument(
        "--mem-gb", "--mem_gb", type=_mem_gb, metavar="GB",
        help=f"memory limit in GB (at least {MIN_MEM_GB:g}); a node that declares more stops "
        "the run before anything runs",
    )
    perf.add_argument(
        "--plugin",
        default="MultiProc",
        help="Nipype execution plugin (Linear, MultiProc, SLURM, SLURMGraph, SGE, PBS, ...)",
    )
    perf.add_argument(
        "--plugin-config",
        "--use-plugin",
        type=_existing_file,
        metavar="FILE",
        help="YAML file with 'plugin:' and 'plugin_args:' for Nipype (overrides --plugin)",
    )
    perf.add_argument(
        "-w", "--work-dir", type=Path, default=Path("work"),
        help="Nipype working directory (reuse it to resume; a folder of its own: not "
        "bids_dir or inside it, not the output_dir itself)",
    )
    perf.add_argument("--random-seed", type=int, default=0, help="seed for every random step")
    perf.add_argument(
        "--stop-on-first-crash", action="store_true", help="stop at the first failed node"
    )
    perf.add_argument(
        "--resource-monitor", action="store_true", help="record Nipype's resource use per node"
    )
    perf.add_argument(
        "-v", "--verbose", action="count", default=0, help="more output (repeat: -vv)"
    )
    perf.add_argument(
        "--progress",
        action="store_true",
        help="show progress bars (tqdm, on stderr) of the long steps: training, tiled "
        "inference, filtering; progress lines are logged every 30 s without it",
    )
    return parser


def _plugin_from_file(path: Path) -> tuple[str | None, dict]:

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read plugin configuration ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: plugin configuration must be a mapping with 'plugin:'")
    args = data.get("plugin_args") or {}
    if not isinstance(args, dict):
        raise ValueError(f"{path}: 'plugin_args' must be a mapping")
    return data.get("plugin"), args


def _bids_filters(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON filter file ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the filter file must hold a JSON object")
    return data


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _check_slice_options(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """Slice options that describe no scan stop here (the image-dependent checks, such as a
    thickness above 3 slice spacings, run per T1w before the run)."""
    if opts.slice_thickness is not None and not (opts.slice_thickness > 0):
        parser.error(f"--slice-thickness must be positive, got {opts.slice_thickness:g}")
    if opts.slice_gap is not None:
        if not opts.evaluate or opts.degradation != "slice":
            parser.error("--slice-gap is used only with --evaluate --degradation slice")
        if opts.slice_thickness is not None:
            parser.error("give --slice-thickness or --slice-gap, not both")
    if opts.evaluate and opts.slice_thickness is not None and opts.degradation != "slice":
        parser.error("--slice-thickness in evaluation mode needs --degradation slice")


def parse_args(argv: list[str] | None = None) -> Config:
    """Parse and check the command line; return the run configuration."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    bids_dir = opts.bids_dir.absolute()
    output_dir = opts.output_dir.absolute()
    work_dir = opts.work_dir.absolute()

    if output_dir.resolve() == bids_dir.resolve():
        parser.error(f"output_dir {output_dir} must not be the bids_dir")
    if work_dir.resolve() == output_dir.resolve():
        # Nipype's cache and the selfsr models would sit among the derivatives
        parser.error(f"work directory {work_dir} must not be the output_dir; use a folder of "
                     "its own (e.g. a work/ beside or inside it)")  # fmt: skip
    if _inside(work_dir, bids_dir):
        parser.error(f"work directory {work_dir} must not be inside bids_dir {bids_dir}")
    if _inside(output_dir, bids_dir) and not _inside(output_dir, bids_dir / "derivatives"):
        # pybids would index its outputs as inputs of the next run
        parser.error(f"output_dir {output_dir} is inside bids_dir {bids_dir}: use a folder "
                     "under its derivatives/ or outside the dataset")  # fmt: skip
    if opts.scale and len(opts.scale) not in (1, 3):
        parser.error(f"--scale takes one factor or three, got {len(opts.scale)}")
    if opts.scale and opts.output_resolution:
        parser.error("give either --scale or --output-resolution, not both")
    if opts.evaluate and opts.output_resolution:
        parser.error("--evaluate degrades by --scale factors; --output-resolution cannot be used")
    if opts.combine_runs and opts.evaluate:
        parser.error("--combine-runs combines super-resolved images; it cannot be used with "
                     "--evaluate")
    if opts.derivatives and not opts.evaluate:
        parser.error("--derivatives is used only with --evaluate")
    _check_slice_options(parser, opts)
    methods = [opts.method] if isinstance(opts.method, str) else list(dict.fromkeys(opts.method))
    if "{" in opts.t2w_reference or "}" in opts.t2w_reference:
        try:
            check_t2w_pattern(opts.t2w_reference)
        except ValueError as exc:
            parser.error(str(exc))
    elif opts.t2w_reference not in ("auto", "none"):
        if not Path(opts.t2w_reference).is_file():
            parser.error(f"--t2w-reference {opts.t2w_reference}: file does not exist "
                         "(give auto, none, or a pattern with {subject}/{session})")
    if opts.t2w_reference not in ("auto", "none"):
        opts.t2w_reference = os.path.abspath(opts.t2w_reference)
    suffixes = list(dict.fromkeys(opts.reference_suffix)) if opts.reference_suffix else None
    if suffixes == ["T2w"] and opts.t2w_reference == "none":
        parser.error("--reference-suffix T2w and --t2w-reference none exclude each other")
    if opts.tile_size is not None:
        _check_tile_size(parser, opts.tile_size, methods)
    omp = opts.omp_nthreads or min(8, opts.nprocs)
    if omp > opts.nprocs:
        parser.error(f"--omp-nthreads ({omp}) must not exceed --nprocs ({opts.nprocs})")

    plugin, plugin_args = opts.plugin, {}
    try:
        if opts.plugin_config:
            plugin_from_file, plugin_args = _plugin_from_file(opts.plugin_config)
            plugin = plugin_from_file or plugin
        filters = _bids_filters(opts.bids_filter_file)
    except ValueError as exc:
        parser.error(str(exc))

    return Config(
        execution=Execution(
            bids_dir=bids_dir,
            output_dir=output_dir,
            analysis_level=opts.analysis_level,
            work_dir=work_dir,
            participant_label=list(opts.participant_label or []),
            session_label=list(opts.session_label or []),
            bids_filters=filters,
            bids_database_dir=opts.bids_database_dir.absolute() if opts.bids_database_dir else None,
            skip_bids_validation=opts.skip_bids_validation,
            verbose=opts.verbose,
            progress=opts.progress,
            log_dir=output_dir / "logs",
        ),
        workflow=Workflow(
            methods=methods,
            fast=opts.fast,
            t2w_reference=opts.t2w_reference,
            reference_suffixes=suffixes,
            reference_session=opts.reference_session,
            evaluate=opts.evaluate,
            degradation=opts.degradation,
            derivatives=list(opts.derivatives or []),
            # neither --scale nor --output-resolution: per image, image.default_factors
            # (evaluation mode simulates ×2 of its HR input)
            scale=list(opts.scale) if opts.scale else ([2.0] if opts.evaluate else []),
            output_resolution=opts.output_resolution,
            weights=opts.weights,
            device=opts.device,
            tile_size=opts.tile_size,
            tile_overlap=opts.tile_overlap,
            amp=opts.amp,
            slice_thickness=opts.slice_thickness,
            slice_gap=opts.slice_gap,
            slice_profile=opts.slice_profile,
            data_consistency=opts.data_consistency,
            combine_runs=opts.combine_runs,
        ),
        nipype=Nipype(
            plugin=plugin,
            plugin_args=plugin_args,
            nprocs=opts.nprocs,
            omp_nthreads=omp,
            mem_gb=opts.mem_gb,
            stop_on_first_crash=opts.stop_on_first_crash,
            resource_monitor=opts.resource_monitor,
        ),
        seeds=Seeds(random_seed=opts.random_seed),
    )
