"""The first screen of a subject report: what a reader needs to trust each output.

Per super-resolved image, in this order and in plain sentences:

1. the method that ran (and what was asked for, when that differs);
2. why it was chosen: the sidecar's ``MethodChoice`` (``auto``), the reason of a fallback,
   or that it was requested, with the ``MethodWarning`` when its card does not back it;
3. its validated gain over B-spline for this kind of input (acquisition family and scale
   factors), read from the shipped model cards (:mod:`bids_sr.cards.evidence`), the same
   evidence ``auto`` decides from;
4. the per-scan self-check, when the method learned from the scan (``selfsr``): its error
   on the scan's own slices relative to B-spline's (``SelfCheckL1Ratio``), and for a
   guided run whether the guide beat the unguided model (``GuideCheck``);
5. the uncertainty map (``desc-selfsrUncertainty``) as a figure with its colour scale;
6. data consistency: what it guarantees (the output, re-acquired through the acquisition
   model, returns the input), why the ~150 dB after the correction is true by construction
   and says nothing about the detail added between the acquired samples, and the
   before-correction figure, which does say how far the method itself was from the data.

Everything after this section (slices, registration, provenance) is detail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bids_sr.recipes import SELFSR
from bids_sr.reports import html

#: After the correction, a PSNR at least this high means "equal up to float rounding".
BY_CONSTRUCTION_DB = 100.0
#: ``selfsr-fast`` (the prior alone) at or above this ratio: the prior fits this scan
#: poorly, and the per-scan training of ``selfsr`` is worth its minutes (on a real held-out
#: 1×1×3 mm clinical T1w the prior alone reached 0.958, where training was visibly sharper).
POOR_PRIOR_RATIO = 0.9
INTERPOLATION = ("nearest", "linear", "bspline")


def _factors_text(factors: Any) -> str:
    if isinstance(factors, (int, float)):
        factors = [factors]
    return "×" + "x".join(f"{float(f):g}" for f in factors or [])


def card_evidence(sidecar: Mapping[str, Any]):
    """The shipped model card's evidence (:class:`bids_sr.cards.evidence.Evidence`) for the
    output's method on inputs like this one (its ``AcquisitionModel`` family and
    ``ScaleFactor``), or None. When several weights of the method are validated, the one
    the output ran with (``Weights``) if it is among them, else the best."""
    from bids_sr.cards import paths
    from bids_sr.cards.evidence import shipped_evidence

    method, factors = sidecar.get("Method"), sidecar.get("ScaleFactor")
    if not method or not factors or method in INTERPOLATION:
        return None
    if isinstance(factors, (int, float)):
        factors = [factors] * 3
    family = sidecar.get("AcquisitionModel", "isotropic")
    found = [e for e in shipped_evidence(paths.WEIGHTS_DIR, family, factors,
                                         guided_ok=True) if e.method == method]  # fmt: skip
    used = Path(str(sidecar.get("Weights", ""))).name
    return next((e for e in found if e.weights.name == used), found[0] if found else None)


def method_text(sidecar: Mapping[str, Any]) -> str:
    method = str(sidecar.get("Method", "unknown"))
    requested = sidecar.get("RequestedMethod")
    if sidecar.get("FallbackFrom"):
        return f"{method}, in place of {sidecar['FallbackFrom']}"
    if requested and requested != method:
        return f"{method} (requested: {requested})"
    return method


def why_text(sidecar: Mapping[str, Any]) -> str:
    """Why this method ran, from the sidecar."""
    if sidecar.get("FallbackFrom"):
        return (f"{sidecar['FallbackFrom']} could not run as asked: "
                f"{sidecar.get('FallbackReason', 'no reason recorded')}.")  # fmt: skip
    if sidecar.get("MethodChoice"):
        text = str(sidecar["MethodChoice"])
        return text[0].upper() + text[1:] + "."
    text = f"{sidecar.get('Method', 'This method')} was requested (--method)."
    if sidecar.get("MethodWarning"):
        text += f" Warning: {sidecar['MethodWarning']}."
    return text


def gain_text(sidecar: Mapping[str, Any], evidence=None) -> str:
    """The validated gain over B-spline for this kind of input, from the model card."""
    method = sidecar.get("Method")
    family = sidecar.get("AcquisitionModel", "isotropic")
    where = f"{family} inputs at {_factors_text(sidecar.get('ScaleFactor'))}"
    if method == "bspline":
        return ("None to claim: bspline (cubic B-spline interpolation) is the baseline the "
                "learned methods are measured against.")  # fmt: skip
    if method in INTERPOLATION:
        return f"None: {method} is an interpolation baseline, below bspline."
    if evidence is None:
        return (f"Not validated: no shipped model card shows a gain of {method} over bspline "
                f"for {where}; treat the result as unproven.")  # fmt: skip
    scales = ", ".join(dict.fromkeys(_factors_text(r["factors"]) for r in evidence.records))
    card = evidence.card_file.name
    text = (f"At least {evidence.gain:+.2f} dB brain PSNR over bspline on every held-out "
            f"image ({evidence.image_list()}) of {family} inputs at {scales}, from its model card "
            f"({card}).")  # fmt: skip
    if evidence.gain_over_mono is not None:
        text += f" The guided model gained at least {evidence.gain_over_mono:+.2f} dB over its " \
                "unguided twin there."  # fmt: skip
    return text


def self_check_text(sidecar: Mapping[str, Any]) -> str:
    """The per-scan self-check of a method that learns from the scan, in words."""
    ratio = sidecar.get("SelfCheckL1Ratio")
    if ratio is None and str(sidecar.get("Method", "")).startswith("selfsr"):
        return "Not recorded: this per-scan model (closed-form filters) has no self-check."
    if ratio is None and sidecar.get("Method") in INTERPOLATION:
        return f"None: {sidecar['Method']} is an interpolation; it learns nothing to check."
    if ratio is None:
        return (f"None: {sidecar.get('Method', 'this method')} does not learn from the scan; "
                "its evidence is the model card above.")  # fmt: skip
    ratio = float(ratio)
    # at or above its recipe's collapsed_ratio a per-scan network learned nothing (sidecars
    # written before the recipe was recorded: the shipped recipe's)
    recipe = sidecar.get("Recipe") if isinstance(sidecar.get("Recipe"), Mapping) else {}
    fast = sidecar.get("Method") == "selfsr-fast"  # the prior as shipped: it learns nothing
    if ratio >= float(recipe.get("CollapsedRatio", SELFSR.collapsed_ratio)):
        verdict = ("no better than B-spline on the slices it could check" if fast
                   else "it learned nothing from this scan, so the result is B-spline's")
    else:
        verdict = f"{100 * (1 - ratio):.0f}% less error than B-spline on slices it could check"
    text = (f"On the scan's own slices (degraded like the acquisition and predicted back), its "
            f"error is {ratio:.3f} of B-spline's: {verdict}.")  # fmt: skip
    if fast and ratio >= POOR_PRIOR_RATIO:
        if card_evidence({**sidecar, "Method": "selfsr", "Weights": ""}) is not None:
            text += (" The shipped prior fits this scan poorly: selfsr, which trains on the "
                     "scan's own slices, is likely to gain more (--method selfsr, minutes "
                     "more).")  # fmt: skip
        else:  # e.g. ×13: the per-scan training lost to B-spline on held-out images there
            text += (" The shipped prior fits this scan poorly, and no method that trains on "
                     "the scan is validated at this slice factor: read the result with care.")
    guide = sidecar.get("GuideCheck")
    if isinstance(guide, Mapping) and guide.get("GuidedL1Ratio") is not None:
        used = "used" if guide.get("Used") else "not used (it did not help on this scan)"
        text += (f" With the reference: {float(guide['GuidedL1Ratio']):.3f}, without: "
                 f"{float(guide['MonoL1Ratio']):.3f}; the reference was {used}.")  # fmt: skip
    return text


def consistency_text(sidecar: Mapping[str, Any]) -> str:
    """What data consistency guarantees and what its numbers mean."""
    after, before = sidecar.get("DataConsistencyPSNR"), sidecar.get("DataConsistencyPSNRBefore")
    model = sidecar.get("AcquisitionModel", "isotropic")
    how = ("averaged over each acquired slice" if model == "slice"
           else "blurred and sampled like a 3D acquisition")  # fmt: skip
    if after is None:
        return "Not measured for this output."
    if sidecar.get("DataConsistency") is False:
        return (f"Off (--no-data-consistency): nothing forces the output to agree with the "
                f"acquired data; {how}, it reproduces the input at {after} dB PSNR inside "
                "the head.")  # fmt: skip
    text = (f"Guaranteed: the output, re-acquired through the acquisition model ({how}), "
            f"returns the input: {after} dB PSNR inside the head")
    if isinstance(after, (int, float)) and math.isfinite(after) and after >= BY_CONSTRUCTION_DB:
        text += (", equal up to float rounding. That number is true by construction (the "
                 "correction enforces it) and is not a measure of quality: it says nothing "
                 "about the detail the method added between the acquired samples")  # fmt: skip
    text += "."
    if before is not None:
        text += (f" Before the correction, the method's own output reproduced the input at "
                 f"{before} dB: the lower this is, the more the correction had to change.")
    return text


def trust_rows(sidecar: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (question, answer) rows of one output (see the module docstring)."""
    return [
        ("Method", method_text(sidecar)),
        ("Why this method", why_text(sidecar)),
        ("Validated gain over B-spline", gain_text(sidecar, card_evidence(sidecar))),
        ("Self-check on this scan", self_check_text(sidecar)),
        ("Data consistency", consistency_text(sidecar)),
    ]


UNCERTAINTY_NOTE = (
    "Uncertainty: half the absolute difference between the method's two through-plane "
    "estimates (slice axis with each in-plane axis), in the T1w's intensity units (colour "
    "bar); dark where they agree, bright where the scan's own in-plane data did not predict "
    "the structure. Read bright regions with care."
)


def trust_section(entries: Sequence[Mapping[str, Any]], figure) -> str:
    """The report's first section: per output, the trust rows and, when the output has one,
    its uncertainty map drawn by ``figure(entry) -> data URI``."""
    parts = ['<section id="trust">', "<h2>Can this result be trusted?</h2>"]
    for entry in entries:
        sidecar = entry.get("sidecar") or {}
        parts.append(f"<h3>{html.escape(Path(entry['output_path']).name)}</h3>")
        parts.append(html.table(("question", "answer"), trust_rows(sidecar), numeric=False))
        if entry.get("uncertainty_path"):
            parts.append(f'<p class="note">{html.escape(UNCERTAINTY_NOTE)} File: '
                         f"{html.escape(Path(entry['uncertainty_path']).name)}.</p>")  # fmt: skip
            parts.append(html.image(figure(entry), "uncertainty map with its colour scale"))
    parts.append('<p class="note">The sections below show the slices, the registration and '
                 "the full provenance of each output.</p>")  # fmt: skip
    parts.append("</section>")
    return "\n".join(parts)
