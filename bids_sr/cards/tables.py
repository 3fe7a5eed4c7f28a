"""Markdown renderings of model cards: the ``<stem>.md`` beside a card, and the tables of
validation scores and evidence records (one card, or every card of a folder) that the
Models page (:mod:`bids_sr.cards.page`) is made of."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bids_sr.cards.paths import card_files, card_stem
from bids_sr.cards.read import read_card


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
    for card_file in card_files(weights_dir):
        card = read_card(card_file)
        if card.get("evidence"):
            name = card_stem(card_file)
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
    for path in card_files(weights_dir):
        card = read_card(path)
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
