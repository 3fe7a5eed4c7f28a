"""What the model cards prove: validated gains per acquisition family and factor.

``auto`` decides from these records only. A card's ``evidence`` list holds one record per
validation run of ``bids_sr-train validate`` (:mod:`bids_sr.training.validate`; images never
used in training, the run's own pipeline: degrade, super-resolve, data consistency, score):

.. code-block:: json

    {"family": "slice", "degradation": "slice", "factors": [1, 1, 3],
     "thickness_ratio": 1.0, "profile": "rect", "data_consistency": true,
     "gain_over_bspline": {"chris": 0.41, "openms19": 0.63},
     "gain_over_mono": {"openms19": 1.2},
     "command": "bids_sr-train validate ..."}

A method is *validated* for an input when a record of the input's family brackets the
input's factor (or lies within the policy's ``factor_tolerance`` of it) and every image of
every such record gained over B-spline (and, for a guided model, over its mono twin by at
least ``min_gain_over_mono``: a guided run costs a second per-scan training or a reference
registration, and a margin within run-to-run noise does not pay for it). The policy is an
:class:`bids_sr.recipes.AutoPolicy` (default :data:`bids_sr.recipes.AUTO_POLICY`). The gain
``auto`` ranks by is the smallest per-image gain of the records used: the promise it can keep.

A method that learns per scan and ships no weights (``selfsr``) has a card too, with
``"weights": null``: its records are found the same way, and its :class:`Evidence` names the
card itself in place of a weights file.

A card with ``"speed": "fast"`` (``selfsr-fast``: the prior alone, about a tenth of
``selfsr``'s time) is a cohort mode: ``auto`` ranks it after every other validated method
unless the user asks for speed (``--fast``), when it ranks first where validated
(:func:`bids_sr.planning.auto.choose_auto`).

Why these queries live with the cards, not with ``auto`` (:mod:`bids_sr.planning.auto`): they
answer one question about the cards' contents — what does a card's evidence prove for an
input of this family and factor — and three readers ask it: ``auto`` (which method to
pick), the plan's warning for a method named outside its evidence, and the report's
trust section. The record format they read is the one the validation writes into the
cards; keeping the reader in the card subsystem keeps one owner of that format, and leaves
to :mod:`bids_sr.planning.auto` only the decision made from the answers (which reference
guides, the fast tier, the fallback, the sentence).

Reads JSON only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bids_sr.cards.paths import CARD_SUFFIX, card_files, card_path, weights_beside
from bids_sr.cards.read import card_reference_suffix, read_card, ships_no_weights
from bids_sr.recipes import AUTO_POLICY, AutoPolicy


@dataclass(frozen=True)
class Evidence:
    """Why a weights file may be used for an input: the records that validate it.

    ``weights`` is the card file itself for a method that ships no weights (see
    :attr:`shipped_weights`)."""

    weights: Path
    method: str
    family: str
    factor: float
    gain: float  # the smallest per-image gain over bspline of the records used (dB)
    gain_over_mono: float | None
    records: tuple[dict, ...]
    reference_suffix: str | None = None  # the contrast a guided model takes (T2w, FLAIR)
    fast: bool = False  # the card's ``"speed": "fast"``: a cohort mode (module docstring)

    @property
    def shipped_weights(self) -> Path | None:
        """The weights file to run with, or None for a method that ships none."""
        return None if self.weights.name.endswith(CARD_SUFFIX) else self.weights

    @property
    def card_file(self) -> Path:
        """The model card that holds the records (for a method without weights, ``weights``)."""
        return self.weights if self.shipped_weights is None else card_path(self.weights)

    def sentence(self) -> str:
        """How the log and the sidecar's MethodChoice state the evidence."""
        scales = ", ".join(dict.fromkeys(
            "×" + "x".join(f"{f:g}" for f in record["factors"]) for record in self.records
        ))  # fmt: skip
        images = self.image_list()
        text = (
            f"its model card ({self.card_file.name}) validates it on {self.family} inputs at "
            f"{scales}: at least {self.gain:+.2f} dB brain PSNR over bspline on each held-out "
            f"image ({images})"
        )
        if self.gain_over_mono is not None:
            text += f" and {self.gain_over_mono:+.2f} dB over the mono model"
        return text

    def image_list(self) -> str:
        """The held-out images of the records, for a sentence (:func:`image_list`)."""
        return image_list(sorted({n for r in self.records for n in r["gain_over_bspline"]}))


def image_list(images: Sequence[str]) -> str:
    """Held-out image names for a sentence; the many IXI subjects as one count."""
    ixi = [name for name in images if name.startswith("IXI")]
    named = [name for name in images if not name.startswith("IXI")]
    if len(ixi) > 2:
        named.append(f"{len(ixi)} IXI subjects")
    else:
        named += ixi
    return ", ".join(named)


def sr_factor(family: str, factors: Sequence[float],
              policy: AutoPolicy = AUTO_POLICY) -> float | None:  # fmt: skip
    """The one factor that a family's evidence is indexed by, or None when none applies.

    ``slice``: the factor along the slice axis (the largest), with the other axes left at
    about 1 (at most the policy's ``inplane_tolerance``); ``isotropic``: the common factor
    of three about equal factors.
    """
    values = sorted(float(f) for f in factors)
    if family == "slice":
        return values[2] if values[1] <= policy.inplane_tolerance and values[2] > 1 else None
    if values[2] <= 1 or values[2] > values[0] * 1.1:
        return None
    return values[2]


def _positive(record: dict, guided: bool, policy: AutoPolicy) -> bool:
    gains = list(record["gain_over_bspline"].values())
    if not gains or min(gains) <= 0:
        return False
    if guided:
        over_mono = list((record.get("gain_over_mono") or {}).values())
        return bool(over_mono) and min(over_mono) >= policy.min_gain_over_mono
    return True


def validated(
    weights: Path, method: str, card: dict, family: str, factors: Sequence[float], *,
    guided: bool = False, reference_suffix: str | None = None, policy: AutoPolicy = AUTO_POLICY,
) -> Evidence | None:
    """The evidence that ``weights`` (its ``card`` dict) help an input of ``family`` at
    ``factors`` under ``policy``, or None when the card does not show it."""

    def sr_factor_of(values: Sequence[float]) -> float | None:
        return sr_factor(family, values, policy)

    factor = sr_factor_of(factors)
    if factor is None:
        return None
    records = [
        r for r in card.get("evidence", [])
        if isinstance(r, dict) and r.get("gain_over_bspline") and r.get("family") == family
        and r.get("data_consistency", True) and sr_factor_of(r["factors"]) is not None
    ]  # fmt: skip
    tolerance = policy.factor_tolerance
    near = [r for r in records if abs(sr_factor_of(r["factors"]) - factor) <= tolerance]
    below = [r for r in records if sr_factor_of(r["factors"]) <= factor]
    above = [r for r in records if sr_factor_of(r["factors"]) >= factor]
    used: list[dict] = []
    # every record at the chosen factor(s): records of one factor for several slice
    # thicknesses or profiles must all show the gain (the smallest one counts)
    if near:
        closest = min(abs(sr_factor_of(r["factors"]) - factor) for r in near)
        used = [r for r in near if abs(sr_factor_of(r["factors"]) - factor) == closest]
    elif below and above:
        low = max(sr_factor_of(r["factors"]) for r in below)
        high = min(sr_factor_of(r["factors"]) for r in above)
        used = [r for r in records if sr_factor_of(r["factors"]) in (low, high)]
    if not used or not all(_positive(r, guided, policy) for r in used):
        return None
    gain = min(min(r["gain_over_bspline"].values()) for r in used)
    over_mono = None
    if guided:
        over_mono = min(min(r["gain_over_mono"].values()) for r in used)
    return Evidence(
        weights=Path(weights), method=method, family=family, factor=factor, gain=gain,
        gain_over_mono=over_mono, records=tuple(used), reference_suffix=reference_suffix,
        fast=card.get("speed") == "fast",
    )  # fmt: skip


def shipped_evidence(
    weights_dir: Path, family: str, factors: Sequence[float], *, guided_ok: bool,
    policy: AutoPolicy = AUTO_POLICY,
) -> list[Evidence]:
    """Every shipped weights file whose card validates it for the input, best gain first.

    Guided models are considered only when ``guided_ok`` (a usable reference exists); each
    Evidence says the contrast its model takes (``reference_suffix``). ``policy``: how the
    records are read (:func:`validated`).
    """
    found = []
    for card_file in card_files(weights_dir):
        try:
            card = read_card(card_file)
        except (OSError, ValueError):
            continue
        suffix = card_reference_suffix(card)
        guided = suffix is not None
        if guided and not guided_ok:
            continue
        if ships_no_weights(card):
            weights = card_file  # a per-scan method: the card is all it ships
        else:
            weights = weights_beside(card_file)
            if not weights.exists():
                continue
        evidence = validated(weights, card.get("method", ""), card, family, factors,
                             guided=guided, reference_suffix=suffix, policy=policy)  # fmt: skip
        if evidence is not None:
            found.append(evidence)
    return sorted(found, key=lambda e: (-e.gain, e.weights.name))
