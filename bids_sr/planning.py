"""Planning a run: which methods each T1w gets, which T2w guides it, and why.

The command line names methods (``--method``: names, ``all``, ``auto``) and a T2w policy
(``--t2w-reference``). Before any workflow is built, :func:`plan_methods` turns them into a
:class:`MethodPlan` per T1w and checks that every learned method has weights, so that a bad
request fails before anything is written. The plan depends only on the dataset and the
weights on disk, never on results computed during the run: what a guided method does when
its T2w registers badly is decided inside its node (see
:class:`bids_sr.interfaces.superresolve.SuperResolve`), so the graph has one shape.

``auto`` picks, per T1w: the guided model ``srrecnn-t2w`` when a T2w was found and the
model has weights; else the mono model ``srrecnn`` when it has weights; else ``bspline``. The
sentence that says why goes into the log and the sidecar (``MethodChoice``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bids_sr.bids import EXIT_DATA, EXIT_USAGE, BIDSError
from bids_sr.config import Config
from bids_sr.fileio import card_path
from bids_sr.superresolve import GUIDED_METHODS, INTERPOLATION_METHODS, METHODS, default_weights
from bids_sr.weights_lookup import default_weights_path, format_factors

LOGGER = logging.getLogger("bids_sr")

#: The unguided network a guided method falls back to (same architecture, one channel).
MONO_METHOD = "srrecnn"
#: What runs when no learned model can: cubic B-spline interpolation.
BASELINE_METHOD = "bspline"


@dataclass(frozen=True)
class Fallback:
    """What a guided method runs instead when its T2w is missing or badly registered."""

    method: str
    note: str  # why this method (a sentence fragment for FallbackReason)


@dataclass
class MethodPlan:
    """The concrete work of a run, per T1w path.

    ``methods``: the methods to run on it, in order (no ``all``/``auto`` left);
    ``t2w``: the T2w that guides it (only T1ws that have one and may use it);
    ``choices``: the ``MethodChoice`` sentence of the method ``auto`` picked for it;
    ``auto_methods``: that method; ``fallbacks``: what its guided methods fall back to.
    """

    methods: dict[str, list[str]] = field(default_factory=dict)
    t2w: dict[str, str] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    auto_methods: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, Fallback] = field(default_factory=dict)

    @property
    def all_methods(self) -> list[str]:
        """Every method of the run, each once, in order of first use."""
        return list(dict.fromkeys(m for methods in self.methods.values() for m in methods))

    def method_choice(self, t1w_file: str, method: str) -> str | None:
        """The MethodChoice sentence when ``method`` is the one ``auto`` picked for the T1w."""
        if self.auto_methods.get(t1w_file) == method:
            return self.choices.get(t1w_file)
        return None

    @classmethod
    def uniform(cls, methods: Sequence[str], t1w_files: Sequence[str]) -> MethodPlan:
        """Every (concrete) method on every T1w, with no T2w: for callers that build
        workflows directly. Guided methods then fall back to bspline in their node."""
        tokens = [m for m in methods if m not in METHODS]
        if tokens:
            raise ValueError(f"{', '.join(tokens)}: resolve 'all'/'auto' with plan_methods")
        fallback = Fallback(BASELINE_METHOD, "bspline (no fallback was planned)")
        return cls(
            methods={t1w: list(dict.fromkeys(methods)) for t1w in t1w_files},
            fallbacks={t1w: fallback for t1w in t1w_files},
        )


def t1w_factors(config: Config, t1w_file: str) -> tuple[float, float, float]:
    """The scale factors a T1w is processed with (from --scale or --output-resolution)."""
    from bids_sr.image import as_factors, factors_for_resolution, load_volume

    if config.workflow.output_resolution:
        affine = load_volume(t1w_file).affine
        return factors_for_resolution(affine, config.workflow.output_resolution)
    return as_factors(config.workflow.scale)


def missing_weights(method: str, factors: Sequence[float]) -> str | None:
    """Why ``method`` has no shipped weights for ``factors`` (None: it has, or needs none)."""
    if method in INTERPOLATION_METHODS:
        return None
    try:
        default_weights(method, factors)
    except FileNotFoundError as exc:
        return str(exc)
    return None


def fallback_for(factors: Sequence[float]) -> Fallback:
    """The mono model when its shipped weights exist for ``factors``, else bspline."""
    if missing_weights(MONO_METHOD, factors) is None:
        return Fallback(MONO_METHOD, f"{MONO_METHOD}, the same network without the T2w channel")
    return Fallback(
        BASELINE_METHOD,
        f"{BASELINE_METHOD}, because the mono model {MONO_METHOD} has no shipped weights at "
        f"×{format_factors(factors)} either",
    )


def weights_method(weights: Path) -> str:
    """The method a ``--weights`` file was made for (from its metadata); BIDSError if none."""
    from bids_sr.models.weights import WeightsError, read_metadata

    try:
        return read_metadata(weights)["method"]
    except WeightsError as exc:
        raise BIDSError(
            f"{exc}; with --method auto the weights must name their method (or name the "
            "method with --method)",
            EXIT_USAGE,
        ) from exc


def falls_short(method: str, factors: Sequence[float]) -> bool:
    """True when the shipped weights' model card says they missed their acceptance figure.

    ``auto`` then prefers the next method rather than a model that validated worse; the
    user can still ask for it by name.
    """
    card = card_path(default_weights_path(method, factors))
    try:
        acceptance = json.loads(card.read_text())["validation"]["acceptance"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return acceptance.get("met") is False


def choose_auto(
    factors: Sequence[float], t2w_file: str | None, *, t2w_mode: str = "auto"
) -> tuple[str, str]:
    """The method ``auto`` runs on one T1w and the sentence that says why."""
    scale = f"×{format_factors(factors)}"
    guided = GUIDED_METHODS[0]
    guided_missing = missing_weights(guided, factors)
    guided_short = not guided_missing and falls_short(guided, factors)
    mono_ready = missing_weights(MONO_METHOD, factors) is None
    if t2w_file and not guided_missing and not (guided_short and mono_ready):
        fallback = fallback_for(factors)
        return guided, (
            f"auto chose {guided} (T2w-guided) because a T2w ({Path(t2w_file).name}) was "
            f"found and {guided} has shipped weights at {scale}; if the T2w registers badly "
            f"it falls back to {fallback.method}"
        )
    if t2w_file and guided_missing is None:
        why = (
            f"the shipped {guided} weights at {scale} fall short of their validation target "
            f"(see their model card); ask for --method {guided} to use them anyway"
        )
    elif t2w_file:
        why = f"{guided} has no shipped weights at {scale}"
    elif t2w_mode == "none":
        why = "--t2w-reference none"
    else:
        why = "no T2w of this participant was found"
    if mono_ready:
        return MONO_METHOD, f"auto chose {MONO_METHOD} (the mono model) because {why}"
    return BASELINE_METHOD, (
        f"auto chose {BASELINE_METHOD} (cubic B-spline interpolation) because {why} and "
        f"{MONO_METHOD} has no shipped weights at {scale} either"
    )


def _expand(
    config: Config,
    t1w_file: str,
    factors: tuple[float, float, float],
    t2w_file: str | None,
    plan: MethodPlan,
    given_method: str | None,
) -> list[str]:
    """The concrete methods of one T1w: ``all`` and ``auto`` replaced, duplicates dropped."""
    methods: list[str] = []
    for token in config.workflow.methods:
        if token == "all":
            methods += [
                m for m in METHODS
                if missing_weights(m, factors) is None and (m not in GUIDED_METHODS or t2w_file)
            ]  # fmt: skip
        elif token == "auto":
            if given_method:
                method = given_method
                sentence = f"auto chose {method}, the method of --weights {config.workflow.weights}"
            else:
                method, sentence = choose_auto(
                    factors, t2w_file, t2w_mode=config.workflow.t2w_reference
                )
            plan.auto_methods[t1w_file] = method
            plan.choices[t1w_file] = sentence
            LOGGER.warning("%s: %s", Path(t1w_file).name, sentence)
            methods.append(method)
        else:
            methods.append(token)
    return list(dict.fromkeys(methods))


def plan_methods(
    config: Config,
    t1w_by_subject: Mapping[str, Sequence[str]],
    t2w_files: Mapping[str, str | None] | None = None,
) -> MethodPlan:
    """Resolve ``config.workflow.methods`` per T1w (see the module docstring).

    ``t2w_files`` maps a T1w to its T2w (:func:`bids_sr.bids.select_t2w`; absent or None:
    none). ``all`` = the interpolation baselines and every learned method whose shipped
    weights exist for the T1w's factors (the guided one only when the T1w has a T2w). A
    learned method named explicitly without weights stops the run (exit 65), or is skipped
    with a warning in evaluation mode; ``--weights`` must go with exactly one learned method
    (exit 64). A guided method on a T1w without T2w stays in the plan and falls back in its
    node (it is skipped in evaluation mode, which scores methods, not fallbacks).
    """
    wf_settings = config.workflow
    t2w_files = dict(t2w_files or {})
    given_method = None
    if wf_settings.weights is not None and "auto" in wf_settings.methods:
        given_method = weights_method(wf_settings.weights)
    plan = MethodPlan()
    for files in t1w_by_subject.values():
        for t1w_file in files:
            factors = t1w_factors(config, t1w_file)
            t2w_file = t2w_files.get(t1w_file)
            methods = _expand(config, t1w_file, factors, t2w_file, plan, given_method)
            if any(m in GUIDED_METHODS for m in methods):
                plan.fallbacks[t1w_file] = fallback_for(factors)
                if t2w_file:
                    plan.t2w[t1w_file] = t2w_file
            plan.methods[t1w_file] = methods
    if wf_settings.weights is not None:
        learned = [m for m in plan.all_methods if m not in INTERPOLATION_METHODS]
        if len(learned) != 1:
            raise BIDSError(
                f"--weights {wf_settings.weights} needs exactly one learned method, got "
                f"{', '.join(learned) or 'none'}",
                EXIT_USAGE,
            )
    _check_weights_and_guides(config, plan)
    if not plan.all_methods:
        raise BIDSError("no method left to evaluate (none has weights)", EXIT_DATA)
    return plan


def _check_weights_and_guides(config: Config, plan: MethodPlan) -> None:
    """Stop (or, evaluating, skip) learned methods without weights; report missing guides."""
    wf_settings = config.workflow
    for t1w_file, methods in plan.methods.items():
        factors = t1w_factors(config, t1w_file)
        kept = []
        for method in methods:
            problem = None if wf_settings.weights else missing_weights(method, factors)
            if problem is None and method in GUIDED_METHODS and t1w_file not in plan.t2w:
                if wf_settings.evaluate:
                    problem = f"no T2w for {Path(t1w_file).name}"
                else:
                    fallback = plan.fallbacks[t1w_file]
                    LOGGER.warning(
                        "%s: no T2w reference (--t2w-reference %s): %s will fall back to %s",
                        Path(t1w_file).name, wf_settings.t2w_reference, method, fallback.note,
                    )  # fmt: skip
            if problem is None:
                kept.append(method)
            elif not wf_settings.evaluate:
                raise BIDSError(problem, EXIT_DATA)
            else:
                LOGGER.warning("skipping %s in the evaluation: %s", method, problem)
        plan.methods[t1w_file] = kept
        if not any(m in GUIDED_METHODS for m in kept):
            plan.t2w.pop(t1w_file, None)


def resolve_methods(
    config: Config,
    t1w_by_subject: Mapping[str, Sequence[str]],
    t2w_files: Mapping[str, str | None] | None = None,
) -> list[str]:
    """Every method the run will use (:func:`plan_methods`, flattened)."""
    return plan_methods(config, t1w_by_subject, t2w_files).all_methods
