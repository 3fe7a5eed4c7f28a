"""Group level: a TSV and a self-contained HTML page summarising the participant outputs."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

COLUMNS = (
    "participant_id", "session_id", "file", "method", "scale_factor", "input_voxel_size_mm",
    "output_voxel_size_mm", "output_shape", "device", "runtime_s",
)  # fmt: skip


def collect_outputs(output_dir: Path) -> list[dict]:
    """One row per super-resolved image found in the derivatives (from its sidecar)."""
    rows = []
    for sidecar in sorted(output_dir.glob("sub-*/**/anat/*_desc-*_T1w.json")):
        meta = json.loads(sidecar.read_text())
        image = sidecar.with_name(sidecar.name[: -len(".json")] + ".nii.gz")
        entities = dict(p.split("-", 1) for p in sidecar.name.split("_")[:-1] if "-" in p)
        rows.append(
            {
                "participant_id": f"sub-{entities['sub']}",
                "session_id": f"ses-{entities['ses']}" if "ses" in entities else "n/a",
                "file": image.relative_to(output_dir).as_posix(),
                "method": meta.get("Method", "n/a"),
                "scale_factor": _fmt(meta.get("ScaleFactor")),
                "input_voxel_size_mm": _fmt(meta.get("InputVoxelSize")),
                "output_voxel_size_mm": _fmt(meta.get("OutputVoxelSize")),
                "output_shape": _fmt(meta.get("OutputShape")),
                "device": meta.get("Device", "n/a"),
                "runtime_s": f"{meta['RunTime']:.2f}" if "RunTime" in meta else "n/a",
                "_image": image,
            }
        )
    return rows


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return "x".join(f"{float(v):.3g}" for v in value)
    return str(value)


def mid_slices_png(image_path: Path) -> str:
    """Base64 PNG of three orthogonal mid slices (RAS-reoriented) of an image."""
    img = nib.as_closest_canonical(nib.load(str(image_path)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    zooms = img.header.get_zooms()[:3]
    vmax = float(np.percentile(data, 99.5)) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    cuts = [
        (data[data.shape[0] // 2].T, zooms[2] / zooms[1]),
        (data[:, data.shape[1] // 2].T, zooms[2] / zooms[0]),
        (data[:, :, data.shape[2] // 2].T, zooms[1] / zooms[0]),
    ]
    for ax, (cut, aspect) in zip(axes, cuts, strict=True):
        ax.imshow(cut, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect=aspect)
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_group_summary(output_dir: Path) -> tuple[Path, Path]:
    """Write ``group_summary.tsv`` and ``group_summary.html`` in ``output_dir``."""
    rows = collect_outputs(output_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=COLUMNS, delimiter="\t", extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    tsv = output_dir / "group_summary.tsv"
    _atomic_write(tsv, buffer.getvalue())

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>bids_sr group summary</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}</style></head><body>",
        f"<h1>bids_sr group summary</h1><p>{len(rows)} super-resolved image(s) in "
        f"{html.escape(str(output_dir))}</p><table><tr>",
        "".join(f"<th>{c}</th>" for c in COLUMNS),
        "</tr>",
    ]
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in COLUMNS))
        parts.append("</tr>")
    parts.append("</table>")
    for row in rows:
        parts.append(f"<h2>{html.escape(row['file'])}</h2>")
        if row["_image"].exists():
            parts.append(f"<img alt='{html.escape(row['file'])}' "
                         f"src='data:image/png;base64,{mid_slices_png(row['_image'])}'>")
    parts.append("</body></html>")
    page = output_dir / "group_summary.html"
    _atomic_write(page, "\n".join(parts))
    return tsv, page
