"""EvaluateSuperResolution: score methods on a simulated low-resolution copy of an HR image.

Thin over :func:`bids_sr.evaluation.evaluate_image`: load the HR image (the truth) and the
optional brain mask (resampled onto the image grid if it comes from another grid) and T2w
reference, run the protocol, and write into the node's folder

- ``metrics.tsv`` + ``metrics.json``: one row per method (the baselines nearest, linear and
  bspline always), BIDS-style, with the sidecar describing every column plus ``Sources``,
  ``Mask``, ``Degradation`` and ``TissueSegmentation`` (what segmented the images for the
  Dice columns, or why they are empty);
- the images the report shows: ``truth.nii.gz`` (normalised, cropped HR), ``input.nii.gz``
  (the simulated LR image) and ``sr_<method>.nii.gz`` (each kept method);
- ``report.json``: where those images are, and the rows (for the subject report).

Example
-------
>>> from bids_sr.interfaces.evaluation import EvaluateSuperResolution
>>> node = EvaluateSuperResolution(methods=["bspline"], scale=[2.0], degradation="gaussian")
>>> node.inputs.in_file = "sub-01_T1w.nii.gz"  # doctest: +SKIP
>>> node.run().outputs.out_tsv  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_sr.__about__ import __version__
from bids_sr.acquisition import PROFILES, simulated_acquisition
from bids_sr.degrade import PRESETS
from bids_sr.evaluation import evaluate_image, sidecar_path, write_metrics_tsv
from bids_sr.image import load_volume, save_volume
from bids_sr.interfaces.superresolve import optional_input
from bids_sr.masks import mask_on_grid
from bids_sr.segmentation import provenance as segmentation_provenance
from bids_sr.superresolve import GUIDED_METHODS, METHODS, REFERENCE_SUFFIXES

COMPUTED_MASK = "bids_sr.masks.brain_mask of the HR image"


class EvaluateSuperResolutionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="high-resolution 3D image: the truth")
    methods = traits.List(
        traits.Enum(*METHODS), minlen=1, mandatory=True,
        desc="methods to score (nearest, linear and bspline are always added)",
    )  # fmt: skip
    scale = traits.List(
        traits.Float, [2.0], minlen=1, maxlen=3, usedefault=True,
        desc="degradation and upsampling factor(s): one, or three per axis",
    )  # fmt: skip
    degradation = traits.Enum(*PRESETS, usedefault=True, desc="bids_sr.degrade preset")
    weights = traits.Dict(
        traits.Str, traits.Str, desc="method → weights file (default: the shipped ones)"
    )
    device = traits.Enum("auto", "cpu", "cuda", usedefault=True, desc="where learned methods run")
    mask_file = File(
        exists=True,
        desc="brain mask of in_file (any grid; e.g. a desc-brain_mask derivative); default: "
        "bids_sr.masks.brain_mask of the HR image",
    )
    reference_file = File(exists=True, desc="T2w on in_file's grid, for guided methods")
    reference_usable = traits.Bool(
        True, usedefault=True,
        desc="whether the T2w registration passed its quality check (False: guided methods "
        "are left out of the table, and the sidecar says why)",
    )  # fmt: skip
    reference_summary = traits.Dict(desc="registration figures, copied into the sidecar")
    source = traits.Str(desc="text of the TSV's source column (default: in_file's name)")
    slice_thickness = traits.Float(desc="slice thickness (mm) of the simulated 2D scan")
    slice_gap = traits.Float(desc="gap (mm) between the simulated slices (instead of thickness)")
    slice_profile = traits.Enum(*PROFILES, usedefault=True, desc="simulated slice profile")
    data_consistency = traits.Bool(
        True, usedefault=True, desc="run every method with data consistency, as a run does"
    )
    auto_choice = traits.Enum(
        *METHODS, desc="the method --method auto picks for this simulated input: a row "
        "'auto' repeats its scores"
    )
    report_methods = traits.List(
        traits.Str, desc="methods whose results are kept as images (default: every method)"
    )
    read_files = traits.Dict(
        traits.Str, traits.Str,
        desc="sha256 of each file the node reads beyond its File inputs (the shipped weights, "
        "a weights file's card): in its hash, so that an edited or upgraded file reruns it",
    )  # fmt: skip


class EvaluateSuperResolutionOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="metrics table, one row per method")
    out_json = File(exists=True, desc="its sidecar (column descriptions and provenance)")
    out_report = File(exists=True, desc="JSON: paths of truth, input and results, and the rows")


def _image_name(method: str) -> str:
    return "sr_" + re.sub(r"[^A-Za-z0-9]", "_", method) + ".nii.gz"


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


class EvaluateSuperResolution(SimpleInterface):
    """Degrade ``in_file`` by ``scale`` with ``degradation``, super-resolve it back with each
    method and score each result against it (PSNR, SSIM, gradient error; brain and whole)."""

    input_spec = EvaluateSuperResolutionInputSpec
    output_spec = EvaluateSuperResolutionOutputSpec

    def _mask(self, volume) -> tuple[np.ndarray | None, str]:
        if not isdefined(self.inputs.mask_file):
            return None, COMPUTED_MASK
        path = self.inputs.mask_file
        try:
            img = nib.load(path)
            data = np.asarray(img.dataobj)
            mask = mask_on_grid(data, img.affine, volume.data.shape, volume.affine)
        except Exception as exc:
            raise ValueError(f"{path}: unusable brain mask ({exc})") from exc
        return mask, str(Path(path).resolve())

    def _run_interface(self, runtime):
        cwd = Path(runtime.cwd)
        volume = load_volume(self.inputs.in_file)
        mask, mask_source = self._mask(volume)
        methods, skipped = list(self.inputs.methods), None
        reference = None
        if isdefined(self.inputs.reference_file) and self.inputs.reference_usable:
            reference = load_volume(self.inputs.reference_file).data
        elif isdefined(self.inputs.reference_file):
            skipped = [m for m in methods if m in GUIDED_METHODS]
            methods = [m for m in methods if m not in GUIDED_METHODS]
        source = self.inputs.source
        if not isdefined(source):
            source = Path(self.inputs.in_file).name
        arrays: dict = {}
        factors = list(self.inputs.scale) * (3 if len(self.inputs.scale) == 1 else 1)
        acquisition = None
        if self.inputs.degradation == "slice":
            acquisition = simulated_acquisition(
                volume.zooms, factors,
                thickness=optional_input(self.inputs.slice_thickness),
                gap=optional_input(self.inputs.slice_gap),
                profile=self.inputs.slice_profile,
            )  # fmt: skip
        rows = evaluate_image(
            volume.data,
            volume.affine,
            factors=list(self.inputs.scale),
            degradation=self.inputs.degradation,
            methods=methods,
            mask=mask,
            weights=dict(self.inputs.weights) if isdefined(self.inputs.weights) else None,
            reference=reference,
            device=self.inputs.device,
            source=source,
            arrays=arrays,
            acquisition=acquisition,
            data_consistency=self.inputs.data_consistency,
            auto_choice=optional_input(self.inputs.auto_choice),
            tissues=True,
        )
        rows = [{key: _plain(value) for key, value in row.items()} for row in rows]

        tsv = write_metrics_tsv(rows, cwd / "metrics.tsv")
        sidecar = sidecar_path(tsv)
        meta = json.loads(sidecar.read_text())
        meta.update(
            Sources=[source],
            Degradation=self.inputs.degradation,
            DataConsistency=bool(self.inputs.data_consistency),
            **(acquisition.describe() if acquisition else {"AcquisitionModel": "isotropic"}),
            ScaleFactor=list(self.inputs.scale),
            Mask=mask_source,
            **segmentation_provenance(),
            SoftwareVersion=f"bids_sr {__version__}",
        )
        if isdefined(self.inputs.reference_summary):
            meta.update(self.inputs.reference_summary)
        if skipped:
            meta["SkippedMethods"] = {
                m: f"the {REFERENCE_SUFFIXES[m]} registration failed its quality check"
                for m in skipped
            }
        sidecar.write_text(json.dumps(meta, indent=2) + "\n")

        kept = self.inputs.report_methods if isdefined(self.inputs.report_methods) else None
        hr_affine, lr_affine, header = arrays["hr_affine"], arrays["lr_affine"], volume.header
        images = {
            "truth": save_volume(arrays["truth"], hr_affine, cwd / "truth.nii.gz", header),
            "input": save_volume(arrays["input"], lr_affine, cwd / "input.nii.gz", header),
            "sr": {
                method: save_volume(data, hr_affine, cwd / _image_name(method), header)
                for method, data in arrays["sr"].items()
                if kept is None or method in kept
            },
        }
        report = {
            "source": source,
            "in_file": str(Path(self.inputs.in_file).resolve()),
            "mask": mask_source,
            "degradation": self.inputs.degradation,
            "scale": list(self.inputs.scale),
            **images,
            "rows": rows,
        }
        report_path = cwd / "report.json"
        report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        self._results.update(out_tsv=str(tsv), out_json=str(sidecar), out_report=str(report_path))
        return runtime

