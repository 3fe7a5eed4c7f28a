"""The plan of a run: per T1w, the concrete methods (``all`` and ``auto`` resolved), the
reference that guides it, what each guided method falls back to, the weights ``auto``
validated and the warnings for methods named outside their evidence (see
:mod:`bids_sr.planning` for the rules)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bids_sr.cards import paths as card_paths
from bids_sr.cards.evidence import shipped_evidence
from bids_sr.cards.paths import format_factors
from bids_sr.errors import EXIT_DATA, EXIT_USAGE, BIDSError
from bids_sr.planning.auto import auto_choice
from bids_sr.planning.fallback import BASELINE_METHOD, Fallback, fallback_for, missing_weights
from bids_sr.planning.inputs import (
    t1w_acquisition,
    t1w_factors,
    warn_acquisition_metadata,
    warn_thick_slice_truth,
)
from bids_sr.planning.references import Reference, describe_references, finest
from bids_sr.planning.settings import RunSettings
from bids_sr.superresolve import (
    GUIDED_METHODS,
    INTERPOLATION_METHODS,
    METHODS,
    REFERENCE_SUFFIXES,
    SELF_SUPERVISED_METHODS,
)

LOGGER = logging.getLogger("bids_sr")


@dataclass
class MethodPlan:
    """The concrete work of a run, per T1w path.

    ``methods``: the methods to run on it, in order (no ``all``/``auto`` left);
    ``reference_files``: the reference (T2w or FLAIR) that guides it (only T1ws that have
    one and may use it); ``reference_suffixes``: that reference's BIDS suffix;
    ``choices``: the ``MethodChoice`` sentence of the method ``auto`` picked for it;
    ``auto_methods``: that method; ``method_fallbacks``: what each guided method falls back
    to (see :meth:`fallback`);
    ``weights``: the shipped weights file ``auto`` validated, per T1w and method;
    ``warnings``: per T1w and method, why an explicitly named method runs unvalidated;
    ``reference_problems``: per T1w, why its reference does not guide (not finer than the
    T1w);
    ``run_groups``: with ``--combine-runs``, the T1w runs of one session to combine
    (:func:`bids_sr.bids.group_runs`; the first is the reference).
    """

    methods: dict[str, list[str]] = field(default_factory=dict)
    reference_files: dict[str, str] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    auto_methods: dict[str, str] = field(default_factory=dict)
    method_fallbacks: dict[str, dict[str, Fallback]] = field(default_factory=dict)
    weights: dict[str, dict[str, Path]] = field(default_factory=dict)
    warnings: dict[str, dict[str, str]] = field(default_factory=dict)
    reference_problems: dict[str, str] = field(default_factory=dict)
    run_groups: list[tuple[str, ...]] = field(default_factory=list)
    reference_suffixes: dict[str, str] = field(default_factory=dict)

    def reference_suffix(self, t1w_file: str) -> str | None:
        """The BIDS suffix of the T1w's guiding reference (None: it has none)."""
        if t1w_file not in self.reference_files:
            return None
        return self.reference_suffixes.get(t1w_file, "T2w")

    def guides(self, t1w_file: str, method: str) -> bool:
        """Whether ``method`` (a guided one) gets the T1w's reference: same contrast."""
        suffix = self.reference_suffix(t1w_file)
        return suffix is not None and REFERENCE_SUFFIXES.get(method) == suffix

    def fallback(self, t1w_file: str, method: str) -> Fallback | None:
        """What the guided ``method`` runs on the T1w when its reference cannot guide it."""
        return self.method_fallbacks.get(t1w_file, {}).get(method)

    def weights_for(self, t1w_file: str, method: str) -> Path | None:
        """The shipped weights ``auto`` chose for ``method`` on the T1w (None: default)."""
        return self.weights.get(t1w_file, {}).get(method)

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
        guided = {m: fallback for m in methods if m in GUIDED_METHODS}
        return cls(
            methods={t1w: list(dict.fromkeys(methods)) for t1w in t1w_files},
            method_fallbacks={t1w: dict(guided) for t1w in t1w_files},
        )


def _expand(
    config: RunSettings,
    t1w_file: str,
    factors: tuple[float, float, float],
    references: Sequence[Reference],
    plan: MethodPlan,
) -> tuple[list[str], Reference | None]:
    """The concrete methods of one T1w (``all`` and ``auto`` replaced, duplicates dropped)
    and the reference ``auto`` chose to guide its pick (None: not a guided pick).

    ``all`` takes the guided methods of the finest candidate reference's contrast only."""
    methods: list[str] = []
    auto_reference = None
    family = t1w_acquisition(config, t1w_file).family
    top = finest(references)
    for token in config.workflow.methods:
        if token == "all":
            methods += [
                m for m in METHODS
                if missing_weights(m, factors, family) is None
                and (m not in GUIDED_METHODS or (top and REFERENCE_SUFFIXES[m] == top.suffix))
            ]  # fmt: skip
        elif token == "auto":
            choice = auto_choice(factors, family, references=references,
                                 weights=config.workflow.weights,
                                 t2w_mode=config.workflow.t2w_reference,
                                 fast=config.workflow.fast)  # fmt: skip
            method, sentence = choice.method, choice.sentence
            auto_reference = choice.reference
            if choice.weights is not None and config.workflow.weights is None:
                plan.weights.setdefault(t1w_file, {})[method] = choice.weights
            if choice.fallback is not None:
                plan.method_fallbacks.setdefault(t1w_file, {})[method] = choice.fallback
            plan.auto_methods[t1w_file] = method
            plan.choices[t1w_file] = sentence
            LOGGER.info("%s: %s", Path(t1w_file).name, sentence)
            methods.append(method)
        else:
            methods.append(token)
    return list(dict.fromkeys(methods)), auto_reference


def _warn_unvalidated(config: RunSettings, t1w_file: str, methods: Sequence[str],
                      factors: Sequence[float], plan: MethodPlan) -> None:  # fmt: skip
    """A learned method named explicitly outside what its card validates runs, with a
    warning in the log and the sidecar (``MethodWarning``)."""
    if config.workflow.weights is not None or config.workflow.evaluate:
        return
    family = t1w_acquisition(config, t1w_file).family
    validated = {
        e.method for e in shipped_evidence(card_paths.WEIGHTS_DIR, family, factors,
                                           guided_ok=True)
    }  # fmt: skip
    for method in methods:
        if method in INTERPOLATION_METHODS or method in validated:
            continue
        if plan.auto_methods.get(t1w_file) == method:
            continue
        text = (f"no shipped model card of {method} validates a gain over bspline for "
                f"{family} inputs at ×{format_factors(factors)}; it runs because you asked "
                f"for it")  # fmt: skip
        LOGGER.warning("%s: %s", Path(t1w_file).name, text)
        plan.warnings.setdefault(t1w_file, {})[method] = text


def plan_methods(
    config: RunSettings,
    t1w_by_subject: Mapping[str, Sequence[str]],
    references: Mapping[str, str | Mapping[str, str] | None] | None = None,
) -> MethodPlan:
    """Resolve ``config.workflow.methods`` per T1w (the rules: :mod:`bids_sr.planning`).

    ``references`` maps a T1w to its candidate references by suffix (``{"T2w": path,
    "FLAIR": path}``, :func:`~bids_sr.planning.references.find_references`) or to one T2w
    path (absent or None: none). One reference guides a T1w: the one ``auto`` chose, else
    the contrast of the first guided method named. ``all`` = the interpolation baselines and
    every learned method whose shipped weights exist for the T1w's factors (the guided ones
    only of the finest reference's contrast). A learned method named explicitly without
    weights stops the run (exit 65), or is skipped with a warning in evaluation mode;
    ``--weights`` must go with exactly one learned method (exit 64). A guided method on a
    T1w without its reference stays in the plan and falls back in its node (it is skipped in
    evaluation mode, which scores methods, not fallbacks).
    """
    wf_settings = config.workflow
    candidates = {t1w: _candidates(value) for t1w, value in (references or {}).items()}
    plan = MethodPlan()
    for files in t1w_by_subject.values():
        for t1w_file in files:
            factors = t1w_factors(config, t1w_file)
            acquisition = t1w_acquisition(config, t1w_file)  # impossible options: exit 64
            if not wf_settings.evaluate:  # evaluation simulates its input's acquisition
                warn_acquisition_metadata(t1w_file, acquisition)
            else:
                warn_thick_slice_truth(t1w_file)
            references = describe_references(t1w_file, candidates.get(t1w_file, {}), factors,
                                             evaluate=wf_settings.evaluate)  # fmt: skip
            methods, reference = _expand(config, t1w_file, factors, references, plan)
            _warn_unvalidated(config, t1w_file, methods, factors, plan)
            guided = [m for m in methods if m in GUIDED_METHODS]
            if guided:
                own = plan.method_fallbacks.setdefault(t1w_file, {})
                for method in guided:
                    own.setdefault(method, fallback_for(factors, method))
                reference = reference or next(
                    (r for m in guided for r in references if r.suffix == REFERENCE_SUFFIXES[m]),
                    None,
                )
                if reference:
                    _plan_reference(plan, t1w_file, reference)
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


def _candidates(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """``{suffix: path}`` from a plan_methods value (a bare path is a T2w)."""
    if not value:
        return {}
    return {"T2w": value} if isinstance(value, str) else dict(value)


def _plan_reference(plan: MethodPlan, t1w_file: str, reference: Reference) -> None:
    """Guide the T1w's guided methods of the reference's contrast only when it is finer
    along the SR axes; otherwise they fall back in their node and ``FallbackReason`` says
    why."""
    if reference.problem is None:
        plan.reference_files[t1w_file] = reference.file
        plan.reference_suffixes[t1w_file] = reference.suffix
        return
    text = f"the {reference.suffix} {Path(reference.file).name} is not used: {reference.problem}"
    plan.reference_problems[t1w_file] = text
    LOGGER.warning("%s: %s", Path(t1w_file).name, text)


def _check_weights_and_guides(config: RunSettings, plan: MethodPlan) -> None:
    """Stop (or, evaluating, skip) learned methods without weights; report missing guides."""
    wf_settings = config.workflow
    for t1w_file, methods in plan.methods.items():
        factors = t1w_factors(config, t1w_file)
        family = t1w_acquisition(config, t1w_file).family
        kept = []
        for method in methods:
            problem = None if wf_settings.weights else missing_weights(method, factors, family)
            if problem is not None and method in SELF_SUPERVISED_METHODS:
                problem = f"{Path(t1w_file).name}: {problem}"
            if problem is None and method in GUIDED_METHODS and not plan.guides(t1w_file, method):
                suffix = REFERENCE_SUFFIXES[method]
                if wf_settings.evaluate:
                    problem = f"no {suffix} for {Path(t1w_file).name}"
                else:
                    fallback = plan.fallback(t1w_file, method)
                    how = (f"--t2w-reference {wf_settings.t2w_reference}" if suffix == "T2w"
                           else "--reference-suffix")  # fmt: skip
                    LOGGER.warning(
                        "%s: no %s reference (%s): %s will fall back to %s",
                        Path(t1w_file).name, suffix, how, method, fallback.note,
                    )  # fmt: skip
            if problem is None:
                kept.append(method)
            elif not wf_settings.evaluate:
                raise BIDSError(problem, EXIT_DATA)
            else:
                LOGGER.warning("skipping %s in the evaluation: %s", method, problem)
        plan.methods[t1w_file] = kept
        if not any(m in GUIDED_METHODS for m in kept):
            plan.reference_files.pop(t1w_file, None)
            plan.reference_suffixes.pop(t1w_file, None)


def resolve_methods(
    config: RunSettings,
    t1w_by_subject: Mapping[str, Sequence[str]],
    references: Mapping[str, str | Mapping[str, str] | None] | None = None,
) -> list[str]:
    """Every method the run will use (:func:`plan_methods`, flattened)."""
    return plan_methods(config, t1w_by_subject, references).all_methods
