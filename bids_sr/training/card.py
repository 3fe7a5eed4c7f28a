"""Validation scores and model cards for trained weights.

The scores come from the project's own evaluation protocol
(:func:`bids_sr.evaluation.evaluate_image`): each held-out subject's HR T1w is degraded
with the training preset and super-resolved by the trained model and by the nearest,
trilinear and cubic B-spline baselines; PSNR/SSIM inside the brain mask and over the whole
volume are summarised as mean ± SD over subjects, with the paired difference to bspline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_sr.evaluation import METRIC_COLUMNS, evaluate_image, write_metrics_tsv
from bids_sr.image import load_volume

# acceptance at x2 (gaussian): deep models +1.5 dB over bspline in the brain, filters +0.5 dB
ACCEPTANCE_DB = {"gradfilter": 0.5}
DEFAULT_ACCEPTANCE_DB = 1.5


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "sd": sd, "n": int(arr.size)}


def summarise(rows: Sequence[dict[str, Any]], method: str) -> dict[str, Any]:
    """Mean ± SD over subjects per method and metric, and the paired difference of
    ``method`` to bspline (PSNR/SSIM brain and whole)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = {
        m: {c: _stats([r[c] for r in rows if r["method"] == m]) for c in METRIC_COLUMNS}
        for m in methods
    }
    by_source: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_source.setdefault(r["source"], {})[r["method"]] = r
    delta = {}
    for column in ("psnr_brain", "ssim_brain", "psnr_whole", "ssim_whole"):
        diffs = [
            s[method][column] - s["bspline"][column]
            for s in by_source.values()
            if method in s and "bspline" in s and s[method][column] is not None
        ]
        delta[column] = _stats(diffs)
    return {"per_method": table, "delta_vs_bspline": delta}


def validation_scores(
    method: str,
    weights: Path,
    subjects: Sequence[dict[str, Any]],
    factors: Sequence[float],
    degradation: str,
    *,
    device: str = "auto",
    tsv_path: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``weights`` on each subject (``{"label", "t1w", "reference"?}``) and summarise.

    Rows go to ``tsv_path`` (BIDS-style metrics TSV) when given. Guided methods use each
    subject's reference (T2w or FLAIR, on the T1w grid) as the second channel. ``progress`` shows a
    bar over the subjects (whole-volume inference takes minutes on a CPU).
    """
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    for subject in tqdm(subjects, desc=f"validating {method} (whole volumes)", unit="subject",
                        disable=not progress):
        vol = load_volume(subject["t1w"])
        reference = None
        if subject.get("reference"):
            reference = load_volume(subject["reference"]).data
        rows += evaluate_image(
            vol.data, vol.affine, factors=factors, degradation=degradation, methods=[method],
            weights={method: str(weights)}, reference=reference, device=device,
            source=f"sub-{subject['label']}",
        )
    if tsv_path is not None:
        write_metrics_tsv(rows, tsv_path)
    summary = summarise(rows, method)
    summary.update(
        rows=rows,
        subjects=[s["label"] for s in subjects],
        protocol="bids_sr.evaluation.evaluate_image: robust normalisation, crop_to_factor, "
        f"degrade({degradation}), super-resolve, PSNR/SSIM (data range 1) in "
        "bids_sr.masks.brain_mask and on the whole volume",
        acceptance=acceptance(method, factors, degradation,
                              summary["delta_vs_bspline"]["psnr_brain"]["mean"]),
    )
    return summary


def acceptance(method: str, factors: Sequence[float], degradation: str, gain: float
               ) -> dict[str, Any]:
    """The acceptance check, defined at x2 isotropic with the gaussian preset (deep models
    +1.5 dB brain PSNR over bspline, gradfilter +0.5 dB); ``met`` is None elsewhere."""
    threshold = ACCEPTANCE_DB.get(method, DEFAULT_ACCEPTANCE_DB)
    applicable = degradation == "gaussian" and all(float(f) == 2.0 for f in factors)
    return {
        "criterion": f"psnr_brain - bspline >= {threshold} dB at x2 isotropic, gaussian preset",
        "gain_db": gain,
        "met": bool(np.isfinite(gain) and gain >= threshold) if applicable else None,
    }


def update_card(card_file: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into an existing JSON card (the sha256 of the weights is unchanged)."""
    card = json.loads(card_file.read_text())
    card.update(extra)
    card_file.write_text(json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n")
    return card


def _pm(stat: dict[str, float], digits: int) -> str:
    if not stat or stat.get("n", 0) == 0:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def score_table(summary: dict[str, Any]) -> str:
    """Markdown table: one row per method, PSNR/SSIM brain and whole, mean ± SD."""
    lines = [
        "| method | PSNR brain (dB) | SSIM brain | PSNR whole (dB) | SSIM whole |",
        "|---|---|---|---|---|",
    ]
    for method, stats in summary["per_method"].items():
        lines.append(
            f"| {method} | {_pm(stats['psnr_brain'], 2)} | {_pm(stats['ssim_brain'], 4)} | "
            f"{_pm(stats['psnr_whole'], 2)} | {_pm(stats['ssim_whole'], 4)} |"
        )
    return "\n".join(lines)


def _verdict(met: bool | None) -> str:
    return "not applicable (defined at x2 gaussian)" if met is None else (
        "met" if met else "NOT met")


def render_markdown(card: dict[str, Any]) -> str:
    """A short human-readable rendering of a model card (``<stem>.md``)."""
    v = card.get("validation") or {}
    out = [
        f"# {card.get('file', card.get('method'))}",
        "",
        f"- method: `{card.get('method')}` — {card.get('description', '')}",
        f"- factors: {card.get('factors')}, degradation: `{card.get('degradation')}`",
        f"- training subjects: {', '.join(card.get('training_subjects', []))}",
        f"- validation subjects: {', '.join(card.get('validation_subjects', [])) or 'none'}",
        f"- iterations: {card.get('iterations')}, device: {card.get('device')}, "
        f"wall time: {card.get('train_wall_s', 0):.0f} s",
        f"- data licence: {card.get('data', {}).get('license', 'see card')}",
        f"- command: `{card.get('command')}`",
    ]
    if card.get("notes"):
        out += ["", *[f"> {note}" for note in card["notes"]]]
    if v.get("per_method"):
        d = v["delta_vs_bspline"]
        acc = v.get("acceptance", {})
        out += [
            "",
            "## Validation (mean ± SD over held-out subjects)",
            "",
            score_table(v),
            "",
            f"Paired gain over bspline: PSNR brain {_pm(d['psnr_brain'], 2)} dB, "
            f"SSIM brain {_pm(d['ssim_brain'], 4)}. "
            f"Acceptance ({acc.get('criterion', '')}): {_verdict(acc.get('met'))}.",
        ]
    if card.get("evidence"):
        out += ["", "## Evidence `auto` reads (bids_sr-train validate)", "",
                evidence_table(card["evidence"])]  # fmt: skip
    return "\n".join(out) + "\n"


def evidence_table(records: list[dict[str, Any]], weights: str | None = None) -> str:
    """Markdown table of evidence records: per image, PSNR and gain over bspline (and over
    the mono model for a guided one), with data consistency as in a run. ``weights`` adds
    a first column naming the file (for tables of several cards)."""
    first, rule = ("| weights ", "|---") if weights is not None else ("", "")
    lines = [
        f"{first}| family | degradation | factors | slice thickness / spacing | image | "
        "PSNR brain (dB) | bspline (dB) | gain (dB) | gain over mono (dB) |",
        f"{rule}|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        factors = "x".join(f"{float(f):g}" for f in record["factors"])
        for image, gain in record["gain_over_bspline"].items():
            over_mono = (record.get("gain_over_mono") or {}).get(image)
            mono_text = "n/a" if over_mono is None else f"{over_mono:+.2f}"
            if (record.get("guide_used") or {}).get(image) is False:  # selfsr's own result
                mono_text += " (guide not used)"
            lines.append(
                (f"| {weights} " if weights is not None else "")
                + f"| {record['family']} | {record.get('degradation')} | {factors} | "
                f"{record.get('thickness_ratio', 'n/a')} | {image} | "
                f"{record.get('psnr_brain', {}).get(image, 'n/a')} | "
                f"{record.get('psnr_brain_bspline', {}).get(image, 'n/a')} | {gain:+.2f} | "
                f"{mono_text} |"
            )
    return "\n".join(lines)


def shipped_evidence_table(weights_dir: Path) -> str:
    """One markdown table of every card's evidence records (what ``auto`` decides from)."""
    tables = []
    for card_file in sorted(Path(weights_dir).glob("*.card.json")):
        card = json.loads(card_file.read_text())
        if card.get("evidence"):
            name = card_file.name.removesuffix(".card.json")
            tables.append(evidence_table(card["evidence"], weights=name).splitlines())
    if not tables:
        return ""
    return "\n".join(tables[0][:2] + [row for table in tables for row in table[2:]])


def shipped_scores_table(weights_dir: Path) -> str:
    """Markdown table of every model card in ``weights_dir``: brain/whole PSNR and SSIM of
    the model and of bspline (mean ± SD), the paired brain-PSNR gain, acceptance, wall time."""
    lines = [
        "| weights | degradation | iterations | subjects | PSNR brain (dB) | bspline | "
        "gain (dB) | SSIM brain | bspline | PSNR whole (dB) | SSIM whole | acceptance | "
        "train wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(Path(weights_dir).glob("*.card.json")):
        card = json.loads(path.read_text())
        v = card.get("validation") or {}
        if not isinstance(v, dict) or not v.get("per_method"):  # a prior, a per-scan method
            continue
        m, b = v["per_method"][card["method"]], v["per_method"]["bspline"]
        acc = v["acceptance"]
        lines.append(
            f"| {card['file']} | {card.get('degradation')} | {card.get('iterations')} | "
            f"{', '.join(v['subjects'])} | {_pm(m['psnr_brain'], 2)} | "
            f"{_pm(b['psnr_brain'], 2)} | {_pm(v['delta_vs_bspline']['psnr_brain'], 2)} | "
            f"{_pm(m['ssim_brain'], 4)} | {_pm(b['ssim_brain'], 4)} | "
            f"{_pm(m['psnr_whole'], 2)} | {_pm(m['ssim_whole'], 4)} | "
            f"{_verdict(acc['met'])} | {card.get('train_wall_s', 0):.0f} |"
        )
    return "\n".join(lines)
