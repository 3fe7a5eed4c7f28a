"""Group level: aggregate the subjects' evaluation tables into one method comparison.

Per (degradation, scale, method, metric): the mean ± SD over images, and the *paired*
difference to cubic B-spline (same image, same degradation and scale) with a 95% confidence
interval from the t distribution (``scipy.stats.t``), which is what says whether a method
is better than interpolation on these data. Written as a BIDS-style TSV with a sidecar and
as a self-contained HTML page with a box plot per metric.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from bids_sr.evaluation import (  # noqa: E402
    METRIC_COLUMNS,
    TISSUE_COLUMNS,
    read_metrics_tsv,
    write_tsv,
)
from bids_sr.reports import html  # noqa: E402
from bids_sr.reports.figures import figure_png, png_data_uri  # noqa: E402

BASELINE = "bspline"
HIGHER_IS_BETTER = {"psnr_brain": True, "ssim_brain": True, "psnr_whole": True,
                    "ssim_whole": True, "gradient_error_brain": False,
                    "dice_gm": True, "dice_wm": True, "dice_csf": True}  # fmt: skip
#: signed errors, best at 0 (the GM volume error of the tissue segmentation)
BEST_AT_ZERO = ("gm_volume_error",)
GROUP_METRICS = (*METRIC_COLUMNS, *TISSUE_COLUMNS)


def load_tables(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows of many subjects' metrics TSVs; a row without ``source`` gets its file's name."""
    rows = []
    for path in paths:
        for row in read_metrics_tsv(path):
            row["source"] = row.get("source") or Path(path).name
            rows.append(row)
    return rows


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided ``level`` t-interval of ``values`` (NaN bounds below 2 values)."""
    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    half = float(
        stats.t.ppf(0.5 + level / 2, data.size - 1) * data.std(ddof=1) / np.sqrt(data.size)
    )
    return mean, mean - half, mean + half


def aggregate(
    rows: Iterable[Mapping[str, Any]],
    *,
    metrics: Sequence[str] = GROUP_METRICS,
    baseline: str = BASELINE,
) -> list[dict[str, Any]]:
    """Summary rows, one per (degradation, scale, method, metric), in first-seen order.

    Keys: degradation, scale, method, metric, n, mean, sd (ddof 1; None below 2 images),
    n_paired, diff_mean, diff_ci_low, diff_ci_high (method − baseline, per image).
    Missing values (a failed method) are left out.
    """
    values: dict[tuple, dict[str, float]] = defaultdict(dict)
    order: list[tuple] = []
    for row in rows:
        for metric in metrics:
            value = row.get(metric)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            key = (row.get("degradation"), row.get("scale"), row["method"], metric)
            if key not in values:
                order.append(key)
            values[key][str(row.get("source"))] = float(value)
    summary = []
    for key in order:
        degradation, scale, method, metric = key
        per_image = values[key]
        data = np.array(list(per_image.values()))
        out: dict[str, Any] = {
            "degradation": degradation,
            "scale": scale,
            "method": method,
            "metric": metric,
            "n": int(data.size),
            "mean": float(data.mean()),
            "sd": float(data.std(ddof=1)) if data.size > 1 else None,
            "n_paired": None,
            "diff_mean": None,
            "diff_ci_low": None,
            "diff_ci_high": None,
        }
        reference = values.get((degradation, scale, baseline, metric), {})
        shared = [source for source in per_image if source in reference]
        if method != baseline and shared:
            diffs = [per_image[s] - reference[s] for s in shared]
            mean, low, high = mean_ci(diffs)
            out.update(
                n_paired=len(shared),
                diff_mean=mean,
                diff_ci_low=None if math.isnan(low) else low,
                diff_ci_high=None if math.isnan(high) else high,
            )
        summary.append(out)
    return summary


def group_columns(baseline: str = BASELINE) -> dict[str, dict[str, str]]:
    """Columns of the group TSV with their BIDS sidecar descriptions."""
    text = {"Units": "n/a"}
    return {
        "degradation": {"LongName": "Degradation preset", "Description": "See the "
                        "subject-level metrics sidecar.", **text},
        "scale": {"LongName": "Scale factor", "Description": "Upsampling factor.", **text},
        "method": {"LongName": "Method", "Description": "bids_sr method name.", **text},
        "metric": {"LongName": "Metric", "Description": "A column of the subject-level "
                   "metrics table (psnr_* in dB, ssim_*, gradient_error_brain and dice_* "
                   "unitless, gm_volume_error in %).",
                   **text},
        "n": {"LongName": "Images", "Description": "Number of images with a value.", **text},
        "mean": {"LongName": "Mean", "Description": "Mean over images.", "Units": "metric"},
        "sd": {"LongName": "Standard deviation", "Description": "Sample SD over images "
               "(ddof 1); n/a for a single image.", "Units": "metric"},
        "n_paired": {"LongName": "Paired images", "Description": f"Images scored with both "
                     f"this method and {baseline}.", **text},
        "diff_mean": {"LongName": f"Mean difference to {baseline}", "Description": "Mean "
                      f"over images of (method - {baseline}) on the same image.",
                      "Units": "metric"},
        "diff_ci_low": {"LongName": "95% CI lower bound", "Description": "Lower bound of the "
                        "t-distribution 95% confidence interval of the paired difference.",
                        "Units": "metric"},
        "diff_ci_high": {"LongName": "95% CI upper bound", "Description": "Upper bound of the "
                         "t-distribution 95% confidence interval of the paired difference.",
                         "Units": "metric"},
    }  # fmt: skip


def write_group_tsv(summary: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write the summary (e.g. ``desc-evaluation_group.tsv``) and its sidecar, atomically."""
    return write_tsv(summary, path, group_columns())


def boxplot_png(rows: Sequence[Mapping[str, Any]], metric: str) -> bytes:
    """Box plot of ``metric`` per method (one box per degradation/scale/method)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        value = row.get(metric)
        if value is not None and np.isfinite(value):
            groups[f"{row['method']}\n{row.get('degradation')} ×{row.get('scale')}"].append(value)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) + 1.5), 3.4))
    if groups:
        ax.boxplot(list(groups.values()), showmeans=True)
        ax.set_xticks(range(1, len(groups) + 1), list(groups), fontsize=8)
    ax.set_ylabel(metric)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def _ci_text(row: Mapping[str, Any]) -> str:
    if row.get("diff_mean") is None:
        return "—"
    text = f"{row['diff_mean']:+.4g}"
    if row.get("diff_ci_low") is not None:
        text += f" [{row['diff_ci_low']:+.4g}, {row['diff_ci_high']:+.4g}]"
    return text


def build_group_report(
    rows: Sequence[Mapping[str, Any]],
    out_html: str | os.PathLike,
    *,
    summary: Sequence[Mapping[str, Any]] | None = None,
    title: str = "bids_sr method comparison",
) -> Path:
    """Write the group HTML page: per metric, a table (mean ± SD, paired Δ to B-spline with
    95% CI) and a box plot over images. Written atomically."""
    summary = list(summary) if summary is not None else aggregate(rows)
    sources = {str(row.get("source")) for row in rows}
    parts = [
        f'<p class="note">{len(sources)} image(s). Δ: paired difference to {BASELINE} on the '
        "same image, with the 95% confidence interval of the t distribution; an interval that "
        "excludes 0 means a consistent difference.</p>"
    ]
    for metric in dict.fromkeys(row["metric"] for row in summary):
        better = "higher" if HIGHER_IS_BETTER.get(metric, True) else "lower"
        better = "closer to 0" if metric in BEST_AT_ZERO else better
        parts.append(f"<h2>{html.escape(metric)} ({better} is better)</h2>")
        body = []
        for row in summary:
            if row["metric"] != metric:
                continue
            spread = f" ± {row['sd']:.4g}" if row.get("sd") is not None else ""
            body.append((row["method"], row["degradation"], row["scale"], row["n"],
                         f"{row['mean']:.4g}{spread}", _ci_text(row)))  # fmt: skip
        header = ("method", "degradation", "scale", "n", "mean ± SD", f"Δ vs {BASELINE} [95% CI]")
        parts.append(html.table(header, body))
        parts.append(html.image(png_data_uri(boxplot_png(rows, metric)), f"{metric} box plot"))
    return html.write_text_atomic(html.page(title, "\n".join(parts)), out_html)
