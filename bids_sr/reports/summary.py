"""Group level: a TSV and a self-contained HTML page summarising the participant outputs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sr.bids import GUIDED_MINUS_MONO_DESC, UNCERTAINTY_DESC
from bids_sr.reports import html
from bids_sr.reports.figures import Layer, comparison_png, display_grid, png_data_uri

COLUMNS = (
    "participant_id", "session_id", "file", "method", "scale_factor", "input_voxel_size_mm",
    "output_voxel_size_mm", "output_shape", "data_consistency_psnr",
    "data_consistency_psnr_before", "self_check_l1_ratio", "uncertainty_map", "device",
    "runtime_s",
)  # fmt: skip
#: desc- suffixes of maps written beside a super-resolved image: not rows of their own
MAP_SUFFIXES = (UNCERTAINTY_DESC, GUIDED_MINUS_MONO_DESC)


def _entities(name: str) -> dict[str, str]:
    return dict(p.split("-", 1) for p in name.split("_")[:-1] if "-" in p)


def collect_outputs(output_dir: Path) -> list[dict]:
    """One row per super-resolved image found in the derivatives (from its sidecar); the
    maps beside it are not images of their own: its uncertainty map (a self-supervised
    method's ``desc-<method>Uncertainty``) fills its ``uncertainty_map`` column, and a
    guided output's guided − mono map is left out."""
    rows = []
    for sidecar in sorted(output_dir.glob("sub-*/**/anat/*_desc-*_T1w.json")):
        entities = _entities(sidecar.name)
        if entities.get("desc", "").endswith(MAP_SUFFIXES):
            continue
        meta = json.loads(sidecar.read_text())
        image = sidecar.with_name(sidecar.name[: -len(".json")] + ".nii.gz")
        desc = f"desc-{entities['desc']}_"
        uncertainty = image.with_name(image.name.replace(desc, f"desc-{entities['desc']}"
                                                          f"{UNCERTAINTY_DESC}_"))  # fmt: skip
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
                "data_consistency_psnr": _fmt(meta.get("DataConsistencyPSNR")),
                "data_consistency_psnr_before": _fmt(meta.get("DataConsistencyPSNRBefore")),
                "self_check_l1_ratio": _fmt(meta.get("SelfCheckL1Ratio")),
                "uncertainty_map": (uncertainty.relative_to(output_dir).as_posix()
                                    if uncertainty.exists() else "n/a"),  # fmt: skip
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


def mid_slices_png(image_path: Path) -> bytes:
    """PNG of the three orthogonal centre slices of an image (RAS display, see figures.py)."""
    img = nib.load(str(image_path))
    data = np.squeeze(np.asarray(img.dataobj, dtype=np.float32))
    grid, _ = display_grid(data, img.affine)
    return comparison_png([Layer(Path(image_path).name, data, img.affine)], grid, crop=False)


def write_group_summary(output_dir: Path) -> tuple[Path, Path]:
    """Write ``group_summary.tsv`` and ``group_summary.html`` in ``output_dir``."""
    rows = collect_outputs(output_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=COLUMNS, delimiter="\t", extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    tsv = html.write_text_atomic(buffer.getvalue(), output_dir / "group_summary.tsv")

    parts = [
        f'<p class="note">{len(rows)} super-resolved image(s) in '
        f"{html.escape(output_dir)}.</p>",
        html.table(COLUMNS, ([row[c] for c in COLUMNS] for row in rows), numeric=False),
    ]
    for row in rows:
        parts.append(f"<h2>{html.escape(row['file'])}</h2>")
        if row["_image"].exists():
            uri = png_data_uri(mid_slices_png(row["_image"]))
            parts.append(html.image(uri, row["file"]))
    page = html.page("bids_sr group summary", "\n".join(parts))
    return tsv, html.write_text_atomic(page, output_dir / "group_summary.html")
