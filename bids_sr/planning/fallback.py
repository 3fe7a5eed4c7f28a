"""Whether a method can run on an input (shipped weights, or none needed) and what a guided
method runs instead when its reference is missing or registers badly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bids_sr.cards.paths import format_factors
from bids_sr.guidance import mono_twin
from bids_sr.superresolve import INTERPOLATION_METHODS, SELF_SUPERVISED_METHODS, default_weights

#: What runs when no learned model can: cubic B-spline interpolation.
BASELINE_METHOD = "bspline"


@dataclass(frozen=True)
class Fallback:
    """What a guided method runs instead when its T2w is missing or badly registered."""

    method: str
    note: str  # why this method (a sentence fragment for FallbackReason)


def missing_weights(method: str, factors: Sequence[float], family: str | None = None) -> str | None:
    """Why ``method`` has no shipped weights for ``factors`` (None: it has, or needs none).

    A self-supervised method needs none, but only runs on 2D scans: for an input of
    ``family`` ``isotropic`` the reason is that.
    """
    if method in SELF_SUPERVISED_METHODS:
        if family == "isotropic":
            return (f"{method} super-resolves 2D (thick-slice) scans only; this input has no "
                    f"coarse slice axis")  # fmt: skip
        return None
    if method in INTERPOLATION_METHODS:
        return None
    try:
        default_weights(method, factors)
    except FileNotFoundError as exc:
        return str(exc)
    return None


def fallback_for(factors: Sequence[float], method: str) -> Fallback:
    """The guided ``method``'s mono twin when it can run at ``factors`` (shipped weights, or
    none needed), else bspline."""
    twin = mono_twin(method)
    if missing_weights(twin, factors) is None:
        return Fallback(twin, f"{twin}, the same method without the reference")
    return Fallback(
        BASELINE_METHOD,
        f"{BASELINE_METHOD}, because the mono model {twin} has no shipped weights at "
        f"×{format_factors(factors)} either",
    )
