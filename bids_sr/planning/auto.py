"""The ``auto`` decision for one image: the method whose shipped model card validates the
largest gain over bspline for the image's acquisition family and factors, its weights, the
reference that guides a guided pick, what that pick falls back to, and the ``MethodChoice``
sentence that says why.

The command line's plan (:func:`bids_sr.planning.plan.plan_methods`) and a
:class:`bids_sr.interfaces.superresolve.SuperResolve` node left at ``method='auto'`` both call
:func:`auto_choice`, so the two make one decision from one evidence. What the cards validate
is asked of :func:`bids_sr.cards.evidence.shipped_evidence`; this module decides from the
answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bids_sr.cards import paths as card_paths
from bids_sr.cards.evidence import shipped_evidence
from bids_sr.cards.paths import format_factors
from bids_sr.errors import EXIT_USAGE, BIDSError
from bids_sr.planning.fallback import BASELINE_METHOD, Fallback
from bids_sr.planning.references import Reference, finest
from bids_sr.recipes import AUTO_POLICY, AutoPolicy
from bids_sr.superresolve import GUIDED_METHODS


def weights_method(weights: Path) -> str:
    """The method a ``--weights`` file was made for (from its metadata); BIDSError if none."""
    from bids_sr.models.weights import WeightsError, read_metadata  # torch: only with --weights

    try:
        return read_metadata(weights)["method"]
    except WeightsError as exc:
        raise BIDSError(
            f"{exc}; with --method auto the weights must name their method (or name the "
            "method with --method)",
            EXIT_USAGE,
        ) from exc


@dataclass(frozen=True)
class AutoChoice:
    """What ``auto`` runs on one T1w: the method, its shipped weights (None for bspline),
    the ``MethodChoice`` sentence, what a guided choice falls back to and its reference."""

    method: str
    weights: Path | None
    sentence: str
    fallback: Fallback | None = None
    reference: Reference | None = None  # the guide of a guided choice


def choose_auto(
    factors: Sequence[float],
    family: str,
    t2w_file: str | None = None,
    *,
    t2w_mode: str = "auto",
    reference_problem: str | None = None,
    references: Sequence[Reference] | None = None,
    fast: bool = False,
    policy: AutoPolicy = AUTO_POLICY,
) -> AutoChoice:
    """The method ``auto`` runs on one input, from the model cards' evidence only
    (read by ``policy``, :class:`bids_sr.recipes.AutoPolicy`).

    ``family`` is the input's acquisition family (``isotropic`` or ``slice``) and
    ``factors`` its scale factors; a learned method qualifies only when its card validates
    a gain over bspline there on every held-out image (a guided one also over its mono
    twin, and only with a usable reference of its contrast). ``references``: the T1w's
    candidate guides (:func:`~bids_sr.planning.references.describe_references`); without
    them, ``t2w_file`` with its ``reference_problem``. Among the usable ones for which a
    guided card shows the gain, the finest guides (a tie: T2w,
    :data:`~bids_sr.planning.references.GUIDE_SUFFIXES` order). The best validated gain
    wins; without any, bspline. A fast cohort mode (a card's ``"speed": "fast"``,
    ``selfsr-fast``) comes after every other validated method, or before them with ``fast``
    (``--fast``): on a real 1×1×3 mm clinical T1w the prior alone earned 4 % over B-spline
    on the scan's own slices, the per-scan training visibly more.
    """
    if references is None:
        references = [Reference(t2w_file, "T2w", 0.0, reference_problem)] if t2w_file else []
    scale = f"×{format_factors(factors)}"
    weights_dir = card_paths.WEIGHTS_DIR
    usable = [r for r in references if r.problem is None]
    evidence = shipped_evidence(weights_dir, family, factors, guided_ok=True, policy=policy)
    evidence.sort(key=lambda e: e.fast != fast)  # stable: best gain first within each tier
    eligible = [r for r in usable if r.suffix in {e.reference_suffix for e in evidence}]
    chosen = finest(eligible)
    # the mono models, and the guided ones of the chosen reference's contrast (still best first)
    found = [e for e in evidence if e.reference_suffix is None
             or (chosen is not None and e.reference_suffix == chosen.suffix)]  # fmt: skip
    notes = [f"; the {r.suffix} {Path(r.file).name} is not used: {r.problem}"
             for r in references if r.problem]  # fmt: skip
    if chosen is not None:
        notes += [f"; the {r.suffix} {Path(r.file).name} is not used: the {chosen.suffix} "
                  f"{Path(chosen.file).name} is finer or as fine"
                  for r in eligible if r is not chosen]  # fmt: skip
    if not references and t2w_mode == "none":
        notes.append("; --t2w-reference none")
    note = "".join(notes)
    if not found:
        return AutoChoice(BASELINE_METHOD, None, (
            f"auto chose {BASELINE_METHOD} (cubic B-spline interpolation) because no shipped "
            f"model card validates a gain over {BASELINE_METHOD} for {family} inputs at "
            f"{scale}{note}"
        ))  # fmt: skip
    best = found[0]
    fallback, reference, kind = None, None, ""
    if best.method in GUIDED_METHODS:
        mono = next((e for e in found if e.method not in GUIDED_METHODS), None)
        fallback = (
            Fallback(mono.method, f"{mono.method}, the best validated model without the "
                                  f"{chosen.suffix}")
            if mono
            else Fallback(BASELINE_METHOD, f"{BASELINE_METHOD}, as no mono model is validated "
                                           f"for {family} inputs at {scale}")
        )  # fmt: skip
        reference, kind = chosen, f" ({chosen.suffix}-guided by {Path(chosen.file).name})"
    sentence = f"auto chose {best.method}{kind} because {best.sentence()}{note}"
    return AutoChoice(best.method, best.shipped_weights, sentence, fallback, reference)


def auto_choice(
    factors: Sequence[float],
    family: str,
    *,
    references: Sequence[Reference] = (),
    weights: Path | str | None = None,
    t2w_mode: str = "auto",
    fast: bool = False,
) -> AutoChoice:
    """What ``auto`` runs on one image: the one decision shared by the command line's plan
    (:func:`~bids_sr.planning.plan.plan_methods`) and a
    :class:`~bids_sr.interfaces.superresolve.SuperResolve` node left at ``method='auto'``,
    which makes it at run time from the same evidence.

    With ``weights`` (``--weights``), the method those weights were made for; else
    :func:`choose_auto` on the model cards, for the image's scale ``factors``, acquisition
    ``family`` and candidate guides (``references``,
    :func:`~bids_sr.planning.references.describe_references`).
    """
    if weights is not None:
        method = weights_method(Path(weights))
        return AutoChoice(method, Path(weights),
                          f"auto chose {method}, the method of --weights {weights}")  # fmt: skip
    return choose_auto(factors, family, t2w_mode=t2w_mode, references=references, fast=fast)
