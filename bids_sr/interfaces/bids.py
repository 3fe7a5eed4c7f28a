"""DerivativesDataSink: write one derivative image and its JSON sidecar, atomically.

Every derivative of the app goes through this interface (from ``workflows/outputs.py``), so
the naming and the sidecar are decided in one place: the file name keeps every source entity
and adds ``res-``/``desc-`` (:func:`bids_sr.bids.derivative_path`); the sidecar holds the BIDS
fields (Description, Sources, SkullStripped, Resolution, SpatialReference), metadata of the
source that stays valid after super-resolution, and our provenance from the method's report.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_sr.__about__ import __version__
from bids_sr.bids import bids_uri, derivative_path, resolution_field
from bids_sr.fileio import atomic_path, read_sidecar, sidecar_path, write_text_atomic
from bids_sr.superresolve import SELF_SUPERVISED_METHODS

# Acquisition metadata that remains true of a super-resolved image of the same acquisition
CARRIED_METADATA = (
    "Manufacturer", "ManufacturersModelName", "MagneticFieldStrength", "ReceiveCoilName",
    "PulseSequenceType", "ScanningSequence", "SequenceVariant", "MRAcquisitionType",
    "EchoTime", "InversionTime", "RepetitionTime", "FlipAngle",
)  # fmt: skip


# The acquisition model's fields (bids_sr.acquisition.Acquisition.describe)
ACQUISITION_FIELDS = (
    "AcquisitionModel", "InputSliceAxis", "InputSliceSpacing", "InputSliceThickness",
    "InputSliceGap", "InputSliceProfile", "InputSliceThicknessSource",
)  # fmt: skip


class DerivativesDataSinkInputSpec(BaseInterfaceInputSpec):
    base_directory = Directory(mandatory=True, desc="the derivatives dataset root")
    bids_dir = Directory(exists=True, mandatory=True, desc="the raw BIDS dataset root")
    source_file = File(exists=True, mandatory=True, desc="the raw file this one derives from")
    in_file = File(exists=True, mandatory=True, desc="the image to store")
    report_json = File(exists=True, desc="the method's JSON report (provenance)")
    desc = traits.Str(mandatory=True, desc="the desc- entity (the method's label)")
    res = traits.Str("hi", usedefault=True, desc="the res- entity")
    extra_metadata = traits.Dict(desc="more sidecar fields")
    omit_fields = traits.List(
        traits.Str, desc="sidecar fields of the report that do not describe this image"
    )
    out_path = traits.Str(
        desc="path relative to base_directory (default: source_file's entities + res + desc)"
    )


class DerivativesDataSinkOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the stored derivative")
    out_meta = File(exists=True, desc="its JSON sidecar")


def _source_metadata(source_file: str) -> dict:
    """Metadata of the source's sidecar that stays true; a sidecar that is not a JSON object
    is an error (the CLI refuses it before running), never silently dropped."""
    data = read_sidecar(source_file, strict=True)
    return {key: data[key] for key in CARRIED_METADATA if key in data}


def _camel(key: str) -> str:
    """A report key as a sidecar field: ``self_check_l1_ratio`` → ``SelfCheckL1Ratio``."""
    return "".join(part.capitalize() for part in key.split("_"))


def weights_field(method: str | None, weights: str | None) -> str | None:
    """The sidecar's ``Weights``: the file a learned method ran with, or, for a per-scan
    method (``selfsr``), what its model is: a path inside the work directory (which users
    delete, and which differs between reruns) would identify nothing; its checksum
    (``WeightsSha256``) does."""
    if not weights or method not in SELF_SUPERVISED_METHODS:
        return weights
    if method == "selfsr-fast":  # the prior as shipped: nothing is learned from the scan
        return (f"the shipped prior named in Prior, applied with no per-scan training "
                f"({Path(weights).name}, kept in the work directory's selfsr_models/; "
                "identified by WeightsSha256)")  # fmt: skip
    return (f"per-scan model learned by {method} from this image, not shipped "
            f"({Path(weights).name}, kept in the work directory's selfsr_models/; "
            "identified by WeightsSha256)")  # fmt: skip


def build_sidecar(source_file: str, bids_dir: str, desc: str, res: str, report: dict) -> dict:
    """The sidecar of one super-resolved image (BIDS fields first, provenance after).

    ``Method`` is the method that ran; ``RequestedMethod`` the one asked for, and
    ``FallbackFrom``/``FallbackReason`` are set when a guided method could not use its T2w
    (the file name keeps the requested method's desc-); the registration figures
    (``Registration*``) come from the T2w reference of a guided method, and
    ``GuidedMinusMono`` from its mono twin (:class:`bids_sr.interfaces.guidance.MonoTwin`);
    a combination of runs (``--combine-runs``) adds its ``Combination*`` fields; a method
    that learns per scan (``selfsr``) its ``Recipe`` (fields in CamelCase) and
    ``RecipeSha256`` (:mod:`bids_sr.recipes`)."""
    source = bids_uri(source_file, bids_dir)
    method = report.get("method", desc)
    voxel = report.get("output_voxel_size_mm", [])
    fallback_from = report.get("fallback_from")
    how = f"{method}, in place of {fallback_from}" if fallback_from else method
    sidecar = {
        "Description": f"T1w image super-resolved with bids_sr ({how}); intensities on "
        "the input's scale (normalised for the method, then restored).",
        "Sources": [source],
        "SpatialReference": source,
        "SkullStripped": False,
        "Resolution": resolution_field(voxel, method, res) if voxel else res,
        **_source_metadata(source_file),
        "Method": method,
        "RequestedMethod": report.get("requested_method"),
        "MethodChoice": report.get("method_choice"),
        "FallbackFrom": fallback_from,
        "FallbackReason": report.get("fallback_reason"),
        **report.get("registration", {}),
        **report.get("combination", {}),
        "ScaleFactor": report.get("factors"),
        "RequestedScaleFactor": report.get("requested_factors"),
        "InputVoxelSize": report.get("input_voxel_size_mm"),
        "OutputVoxelSize": voxel,
        "InputShape": report.get("input_shape"),
        "OutputShape": report.get("output_shape"),
        "IntensityNormalisation": report.get("intensity_normalisation"),
        "DataConsistency": report.get("data_consistency"),
        "DataConsistencyPSNR": report.get("data_consistency_psnr"),
        "DataConsistencyPSNRBefore": report.get("data_consistency_psnr_before"),
        "GuidedMinusMono": report.get("guided_minus_mono"),
        **{key: report[key] for key in ACQUISITION_FIELDS if key in report},
        "Device": report.get("device"),
        "RunTime": report.get("runtime_s"),
        "SoftwareVersion": f"bids_sr {__version__}",
    }
    for key in ("weights", "weights_sha256", "tiles", "tile_size", "amp", "peak_memory_mb",
                "model_reused", "self_check_l1_ratio", "flip_average", "guide_check", "prior",
                "prior_sha256", "recipe", "recipe_sha256", "precision"):
        value = report.get(key)
        if isinstance(value, dict):  # e.g. guide_check's figures: their keys as fields too
            value = {_camel(k): v for k, v in value.items()}
        if key == "weights":
            value = weights_field(method, value)
        if value is not None:
            sidecar[_camel(key)] = value
    return {k: v for k, v in sidecar.items() if v is not None}


class DerivativesDataSink(SimpleInterface):
    """Copy ``in_file`` to its BIDS derivative path and write its sidecar (temp, then rename)."""

    input_spec = DerivativesDataSinkInputSpec
    output_spec = DerivativesDataSinkOutputSpec

    def _out_file(self) -> Path:
        base = Path(self.inputs.base_directory)
        if isdefined(self.inputs.out_path):
            return base / self.inputs.out_path
        return base / derivative_path(
            self.inputs.source_file, desc=self.inputs.desc, res=self.inputs.res
        )

    def _run_interface(self, runtime):
        out_file = self._out_file()
        _copy_atomic(self.inputs.in_file, out_file)

        report = {}
        if isdefined(self.inputs.report_json):
            report = json.loads(Path(self.inputs.report_json).read_text())
        sidecar = build_sidecar(
            self.inputs.source_file, self.inputs.bids_dir, self.inputs.desc, self.inputs.res, report
        )
        if isdefined(self.inputs.extra_metadata):
            sidecar.update(self.inputs.extra_metadata)
        if isdefined(self.inputs.omit_fields):
            for key in self.inputs.omit_fields:
                sidecar.pop(key, None)
        meta = sidecar_path(out_file)
        text = json.dumps(sidecar, indent=2, default=str) + "\n"
        if not (meta.is_file() and meta.read_text() == text):
            write_text_atomic(text, meta)
        self._results["out_file"] = str(out_file)
        self._results["out_meta"] = str(meta)
        return runtime


class _OptionalDerivativesDataSinkInputSpec(DerivativesDataSinkInputSpec):
    in_file = traits.Str(mandatory=True, desc="the image to store, or '' when there is none")


class OptionalDerivativesDataSink(DerivativesDataSink):
    """A DerivativesDataSink for an image that exists only on some runs (a guided output's
    guided − mono map: '' when no mono twin ran, e.g. the guided method fell back).

    Given '', it writes nothing and removes the image and sidecar an earlier run left under
    the same name, so the folder never holds a map that this run's output does not match."""

    input_spec = _OptionalDerivativesDataSinkInputSpec

    def _run_interface(self, runtime):
        self._results.clear()  # nothing of an earlier run of this interface
        if self.inputs.in_file:
            return super()._run_interface(runtime)
        out_file = self._out_file()
        for path in (out_file, sidecar_path(out_file)):
            path.unlink(missing_ok=True)
        return runtime


class CopyToDerivativesInputSpec(BaseInterfaceInputSpec):
    base_directory = Directory(mandatory=True, desc="the derivatives dataset root")
    in_file = File(exists=True, mandatory=True, desc="the file to store")
    out_path = traits.Str(mandatory=True, desc="its path relative to base_directory")
    in_sidecar = File(exists=True, desc="a JSON sidecar, stored beside it with .json")


class CopyToDerivativesOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the stored file")
    out_meta = File(desc="the stored sidecar (when one was given)")


def _copy_atomic(source: str, target: Path) -> Path:
    """Copy ``source`` to ``target`` atomically, unless ``target`` already holds the same
    bytes (sinks always run: an unchanged output keeps its time stamp, so the nodes after it
    stay cached, while a deleted or truncated one is written again)."""
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return target
    with atomic_path(target, suffix=".tmp" + "".join(target.suffixes)) as tmp:
        shutil.copyfile(source, tmp)
    return target


class CopyToDerivatives(SimpleInterface):
    """Copy a finished file (a metrics table, a report) to a path chosen by
    ``workflows/outputs.py`` in the derivatives dataset, atomically (temp name, then rename)."""

    input_spec = CopyToDerivativesInputSpec
    output_spec = CopyToDerivativesOutputSpec

    def _run_interface(self, runtime):
        relative = Path(self.inputs.out_path)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"{relative}: out_path must stay inside the derivatives dataset")
        target = Path(self.inputs.base_directory) / relative
        self._results["out_file"] = str(_copy_atomic(self.inputs.in_file, target))
        if isdefined(self.inputs.in_sidecar):
            meta = sidecar_path(target)
            self._results["out_meta"] = str(_copy_atomic(self.inputs.in_sidecar, meta))
        return runtime
