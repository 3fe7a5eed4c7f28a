"""The run configuration: one object built from the command line, saved as TOML.

Sections follow fMRIPrep's: ``execution`` (paths, selection), ``workflow`` (what to compute),
``nipype`` (how to execute), ``seeds``. The file written to ``<output>/logs/`` lets a run be
reproduced and lets child processes see the same settings; nothing else in the package keeps
module-level mutable state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bids_sr.fileio import write_text_atomic
from bids_sr.recipes import REGISTRATION_QC, SELFSR, RegistrationQC, SelfSRRecipe

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclass
class Execution:
    bids_dir: Path
    output_dir: Path
    analysis_level: str = "participant"
    work_dir: Path = Path("work")
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    bids_filters: dict[str, Any] = field(default_factory=dict)
    bids_database_dir: Path | None = None
    skip_bids_validation: bool = False
    verbose: int = 0
    progress: bool = False  # tqdm bars of the long steps on stderr (--progress)
    run_uuid: str = field(
        default_factory=lambda: f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}_{uuid.uuid4()}"
    )
    log_dir: Path | None = None


@dataclass
class Workflow:
    """What to compute. ``methods``: method names, ``all`` or ``auto`` (resolved per T1w by
    :func:`bids_sr.planning.plan.plan_methods`; one derivative each); ``t2w_reference``: how the
    T2w guiding ``srrecnn-t2w`` is found (``auto``, ``none`` or a path pattern, see
    :func:`bids_sr.bids.select_reference`); ``reference_suffixes``: the contrasts allowed to guide
    (``T2w``, ``FLAIR``; None: both, ``auto`` picks; given: forced, a T1w whose guided method
    has none of them stops the run); ``evaluate``: treat each T1w as the HR truth,
    degrade it with ``degradation``, score the methods (see :mod:`bids_sr.evaluation`)
    instead of writing super-resolved images; ``derivatives``: datasets searched for a
    brain-mask derivative in evaluation mode; ``slice_*``: the acquisition model of 2D
    inputs (see :mod:`bids_sr.acquisition`; ``slice_gap`` only for the simulated slices of
    evaluation mode); ``data_consistency``: correct results so they project back onto the
    input; ``combine_runs``: also combine the T1w runs of a session into one image
    (:mod:`bids_sr.combine`); ``selfsr_recipe``, ``registration_qc``: the recipes of the
    per-scan training and of the reference's registration check (:mod:`bids_sr.recipes`;
    no command-line options: the shipped ones, unless a Python caller or a test sets
    another)."""

    methods: list[str] = field(default_factory=lambda: ["auto"])
    #: ``--fast``: ``auto`` prefers a validated fast cohort mode (``selfsr-fast``)
    fast: bool = False
    t2w_reference: str = "auto"
    reference_suffixes: list[str] | None = None
    #: ``any``: a reference of another session may guide (with a warning); ``same``: not
    reference_session: str = "any"
    evaluate: bool = False
    degradation: str = "gaussian"
    derivatives: list[Path] = field(default_factory=list)
    #: per-axis factors; empty (the command line's default): per image, a 2D scan becomes
    #: isotropic at its finest voxel size and a 3D scan is doubled (image.default_factors)
    scale: list[float] = field(default_factory=lambda: [2.0])
    output_resolution: float | None = None
    weights: Path | None = None
    device: str = "auto"
    tile_size: int | None = None
    tile_overlap: float | None = None
    amp: str = "none"
    slice_thickness: float | None = None
    slice_gap: float | None = None
    slice_profile: str = "rect"
    data_consistency: bool = True
    combine_runs: bool = False
    selfsr_recipe: SelfSRRecipe = SELFSR
    registration_qc: RegistrationQC = REGISTRATION_QC


@dataclass
class Nipype:
    plugin: str = "MultiProc"
    plugin_args: dict[str, Any] = field(default_factory=dict)
    nprocs: int = field(default_factory=lambda: os.cpu_count() or 1)
    omp_nthreads: int = 0
    mem_gb: float | None = None
    stop_on_first_crash: bool = False
    resource_monitor: bool = False
    n_gpu_procs: int = 1  # GPU nodes MultiProc runs at once (inference uses one device)


@dataclass
class Seeds:
    random_seed: int = 0


@dataclass
class Config:
    execution: Execution
    workflow: Workflow = field(default_factory=Workflow)
    nipype: Nipype = field(default_factory=Nipype)
    seeds: Seeds = field(default_factory=Seeds)

    def plugin_settings(self) -> dict[str, Any]:
        """The ``plugin`` and ``plugin_args`` to hand to ``Workflow.run``."""
        args = dict(self.nipype.plugin_args)
        if self.nipype.plugin in ("MultiProc", "LegacyMultiProc"):
            args.setdefault("n_procs", self.nipype.nprocs)
            if self.nipype.mem_gb:
                args.setdefault("memory_gb", self.nipype.mem_gb)
            args.setdefault("raise_insufficient", False)
            args.setdefault("n_gpu_procs", self.nipype.n_gpu_procs)
        return {"plugin": self.nipype.plugin, "plugin_args": args}

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def save(self, path: Path) -> Path:
        """Write the configuration as TOML (atomically)."""
        return write_text_atomic(dumps_toml(self.to_dict()), path)

    @classmethod
    def load(cls, path: Path) -> Config:
        """Read a configuration written by :meth:`save`."""
        data = tomllib.loads(Path(path).read_text())
        execution = data["execution"]
        for key in ("bids_dir", "output_dir", "work_dir", "bids_database_dir", "log_dir"):
            if execution.get(key):
                execution[key] = Path(execution[key])
        workflow = data.get("workflow", {})
        if "method" in workflow:  # files written before several methods were allowed
            workflow.setdefault("methods", [workflow.pop("method")])
        if workflow.get("weights"):
            workflow["weights"] = Path(workflow["weights"])
        workflow["derivatives"] = [Path(p) for p in workflow.get("derivatives", [])]
        for key, recipe in (("selfsr_recipe", SelfSRRecipe), ("registration_qc", RegistrationQC)):
            if key in workflow:  # files written before the recipes were saved: the shipped ones
                workflow[key] = recipe(**workflow[key])
        return cls(
            execution=Execution(**execution),
            workflow=Workflow(**workflow),
            nipype=Nipype(**data.get("nipype", {})),
            seeds=Seeds(**data.get("seeds", {})),
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(data: dict[str, dict[str, Any]]) -> str:
    """TOML for a two-level mapping of sections to plain values (what Config holds)."""
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)
