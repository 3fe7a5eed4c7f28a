"""The generic SuperResolve interface: any method, chosen by name, on one NIfTI image.

Thin over the numerical core: load and check the image, normalise intensities, run
:func:`bids_sr.superresolve.super_resolve`, restore the input's intensity scale, write the
result on the upsampled grid (affine from :func:`bids_sr.image.upsampled_affine`) and a JSON
report of what was done. Family interfaces (networks, gradient filters) subclass it.

Guided methods (``srrecnn-t2w``) take the registered T2w as ``reference_file``. When it is
missing, or ``reference_usable`` is False (the registration failed its quality check), the
node does not produce a result corrupted by a misaligned guide: it runs ``fallback_method``
instead (the mono model, or bspline) and says so in the report (``fallback_from``,
``fallback_reason``). Deciding inside the node keeps the workflow graph independent of
results computed at run time. A guided ``selfsr`` also falls back to ``selfsr`` when the
reference did not help on the scan's own slices (:mod:`bids_sr.selfsr.method`); its report
says so the same way.

Example
-------
>>> from nipype.pipeline import engine as pe
>>> from bids_sr.interfaces.superresolve import SuperResolve
>>> node = pe.Node(SuperResolve(method="bspline", scale=[2.0]), name="sr")
>>> node.inputs.in_file = "sub-01_T1w.nii.gz"  # doctest: +SKIP
>>> node.run()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_sr.acquisition import PROFILES, Acquisition, describe_acquisition
from bids_sr.fileio import read_sidecar
from bids_sr.image import (
    Volume,
    effective_factors,
    hr_shape,
    load_volume,
    requested_factors,
    robust_normalisation,
    save_volume,
    upsampled_affine,
    voxel_sizes,
)
from bids_sr.progress import subject
from bids_sr.recipes import SELFSR, SelfSRRecipe
from bids_sr.superresolve import GUIDED_METHODS, METHODS, REFERENCE_SUFFIXES, super_resolve

LOGGER = logging.getLogger("nipype.interface")
# progress a user sees between "super-resolving N T1w image(s)" and "done" (INFO, the app's logger)
PROGRESS = logging.getLogger("bids_sr")


#: The contrasts a guided method can take, in the order a tie prefers them.
GUIDE_CONTRASTS = tuple(dict.fromkeys(REFERENCE_SUFFIXES.values()))


class SuperResolveInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="low-resolution 3D NIfTI image")
    method = traits.Enum(
        "auto", *METHODS, usedefault=True,
        desc="super-resolution method; auto (the default, as on the command line): chosen "
        "when the node runs, from the model cards' evidence for this image's acquisition "
        "family and factors (outputs method and method_choice say what and why)",
    )
    fast = traits.Bool(
        False, usedefault=True,
        desc="method auto: prefer a validated fast cohort mode (selfsr-fast: the prior alone, "
        "no per-scan training) over a slower method, as --fast on the command line",
    )
    scale = traits.List(
        traits.Float, minlen=1, maxlen=3, desc="one factor or three per-axis factors"
    )
    output_resolution = traits.Float(desc="target voxel size in mm (alternative to scale)")
    weights = File(exists=True, desc="weights/filters file (default: the shipped ones)")
    reference_file = File(
        exists=True, desc="HR reference (registered T2w) on the output grid, for guided methods"
    )
    reference_usable = traits.Bool(
        True, usedefault=True, desc="whether the reference passed the registration quality check"
    )
    reference_summary = traits.Dict(desc="registration figures of the reference, for the report")
    reference_problem = traits.Str(
        desc="why no reference is given although one was found (e.g. not finer than the input)"
    )
    reference_source = File(
        exists=True,
        desc="method auto: the reference as acquired (native space, e.g. the raw T2w), whose "
        "header tells whether it is finer than the input along the axes being "
        "super-resolved, as the command line judges it; without it auto picks no guided "
        "method",
    )
    reference_suffix = traits.Enum(
        *GUIDE_CONTRASTS, usedefault=True, desc="method auto: the contrast of reference_source"
    )
    fallback_method = traits.Enum(
        *METHODS, desc="what a guided method runs instead when the reference is missing or "
        "unusable (unset: that is an error)"
    )
    fallback_note = traits.Str(desc="why this fallback method (for the report)")
    device = traits.Enum("auto", "cpu", "cuda", usedefault=True, desc="where to compute")
    tile_size = traits.Int(desc="inference tile size in LR voxels (default: method's own)")
    tile_overlap = traits.Float(desc="fraction of overlap between tiles")
    seed = traits.Int(0, usedefault=True, desc="random seed")
    amp = traits.Enum("none", "bf16", "fp16", usedefault=True, desc="mixed precision on CUDA")
    progress = traits.Bool(
        False, usedefault=True, nohash=True,
        desc="show progress bars on stderr (not hashed: a cached result stays valid)",
    )
    out_name = traits.Str(
        desc="output file name (default: the input's name with '_sr', e.g. "
        "sub-01_T1w_sr.nii.gz)"
    )
    slice_thickness = traits.Float(
        desc="slice thickness (mm) of a 2D input (default: the sidecar's SliceThickness, "
        "else the slice spacing)"
    )
    slice_profile = traits.Enum(*PROFILES, usedefault=True, desc="slice profile of a 2D input")
    data_consistency = traits.Bool(
        True, usedefault=True,
        desc="correct the result so that it projects back onto the input (acquisition model)",
    )
    in_metadata = traits.Dict(
        desc="the input's JSON sidecar (BIDS metadata: SliceThickness, ...); an input, not a "
        "file the node opens, so that editing the sidecar reruns the node (Nipype's cache "
        "hashes inputs only); default: the sidecar beside in_file"
    )
    read_files = traits.Dict(
        traits.Str, traits.Str,
        desc="sha256 of each file the node reads beyond its File inputs (the weights' model "
        "card, the shipped weights): in its hash, so that an edited or upgraded file reruns it",
    )  # fmt: skip
    selfsr_recipe = traits.Dict(
        desc="the fields of the recipe a self-supervised method (selfsr) learns with "
        "(bids_sr.recipes.SelfSRRecipe; default: the shipped recipe); hashed, so another "
        "recipe reruns the node"
    )
    model_dir = traits.Str(
        nohash=True,
        desc="folder where a self-supervised method (selfsr) saves its per-scan model and "
        "looks it up on a rerun (default: the node's own folder; not hashed: the model file "
        "is keyed by its input and settings)",
    )
    use_gpu = traits.Bool(
        False,
        usedefault=True,
        nohash=True,
        desc="scheduling hint: the node computes on a GPU, so Nipype's MultiProc counts it "
        "against n_gpu_procs (not hashed: a cached result stays valid on a CPU node)",
    )


class SuperResolveOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="super-resolved image on the upsampled grid")
    report_json = File(exists=True, desc="JSON report: method, factors, device, runtime, ...")
    uncertainty_file = File(
        desc="a self-supervised method's uncertainty map on the output grid (half the "
        "absolute difference of its two through-plane orientations, in input intensity units)"
    )
    method = traits.Str(desc="the method that ran (auto's choice, or a guided method's fallback)")
    method_choice = traits.Str(
        desc="why that method: auto's MethodChoice sentence (the model card's evidence), or "
        "that it was named"
    )


def optional_input(value):
    """A Nipype input's value, or None when it is Undefined."""
    return value if isdefined(value) else None


class SuperResolve(SimpleInterface):
    """Super-resolve one 3D image with the method named in ``method`` (default ``auto``).

    Intensities are normalised with robust percentiles before the method and restored after,
    so the output is on the input's scale; both percentiles go in the report.

    With ``method='auto'`` the node decides when it runs, from the same evidence as the
    command line (:func:`bids_sr.planning.auto.auto_choice`): the image's header and sidecar give
    its acquisition family and factors, the shipped model cards the validated gains; a
    guided method is considered only with ``reference_source`` (its header must be finer
    along the axes being super-resolved) and runs only with ``reference_file`` (the
    reference registered onto the output grid), else its validated fallback runs.

    Inputs: ``in_file`` (mandatory), ``method``, ``scale`` or ``output_resolution``,
    ``weights``, ``reference_file``/``reference_usable``/``reference_summary``/
    ``reference_source``/``reference_suffix`` (guides), ``fallback_method``,
    ``slice_thickness``/``slice_profile`` (2D scans), ``data_consistency``, ``device``,
    ``tile_size``/``tile_overlap``/``amp`` (networks), ``seed``, ``model_dir`` and
    ``selfsr_recipe`` (selfsr), ``out_name``. Outputs: ``out_file`` (the super-resolved
    image, named after the input), ``report_json`` (everything the sidecar records),
    ``method`` and ``method_choice`` (what ran and why), ``uncertainty_file`` (selfsr's map,
    when it ran).
    """

    input_spec = SuperResolveInputSpec
    output_spec = SuperResolveOutputSpec

    def _factors(self, affine: np.ndarray) -> tuple[float, float, float]:
        return requested_factors(
            affine, optional_input(self.inputs.scale), optional_input(self.inputs.output_resolution)
        )

    def _metadata(self) -> dict:
        """The input's sidecar metadata: ``in_metadata``, else read beside ``in_file``."""
        if isdefined(self.inputs.in_metadata):
            return dict(self.inputs.in_metadata)
        return read_sidecar(self.inputs.in_file)

    def _acquisition(self, affine: np.ndarray) -> Acquisition:
        """The acquisition model of the input: header voxel sizes, sidecar, user's options."""
        return describe_acquisition(
            voxel_sizes(affine),
            slice_thickness=optional_input(self.inputs.slice_thickness),
            sidecar_thickness=self._metadata().get("SliceThickness"),
            profile=self.inputs.slice_profile,
        )

    def _reference(self, normalise_shape: tuple[int, int, int]) -> np.ndarray | None:
        if not isdefined(self.inputs.reference_file):
            return None
        ref = load_volume(self.inputs.reference_file)
        if ref.data.shape != normalise_shape:
            raise ValueError(
                f"{self.inputs.reference_file}: reference shape {ref.data.shape} is not the "
                f"output grid {normalise_shape}; resample it first"
            )
        return robust_normalisation(ref.data).apply(ref.data)

    def _auto_choice(self, affine: np.ndarray):
        """What ``auto`` runs on ``in_file``: :func:`bids_sr.planning.auto.auto_choice` on the
        image's factors and acquisition family and, with ``reference_source``, its guide."""
        from bids_sr.planning.auto import auto_choice
        from bids_sr.planning.references import describe_references

        factors = self._factors(affine)
        references = []
        if isdefined(self.inputs.reference_source):
            references = describe_references(
                self.inputs.in_file, {self.inputs.reference_suffix: self.inputs.reference_source},
                factors,
            )  # fmt: skip
        return auto_choice(factors, self._acquisition(affine).family, references=references,
                           weights=optional_input(self.inputs.weights),
                           fast=bool(self.inputs.fast))  # fmt: skip

    def _fallback_reason(self, method: str) -> str | None:
        """Why a guided ``method`` cannot use its reference (None: it can, or needs none)."""
        if method not in GUIDED_METHODS:
            return None
        suffix = REFERENCE_SUFFIXES[method]
        if not isdefined(self.inputs.reference_file):
            return optional_input(self.inputs.reference_problem) or (
                f"no {suffix} reference was found for this T1w"
            )
        if self.inputs.reference_usable:
            return None
        summary = optional_input(self.inputs.reference_summary) or {}
        nmi = summary.get("RegistrationQualityNMI")
        threshold = summary.get("RegistrationQualityThreshold")
        if nmi is not None and threshold is not None and nmi < threshold:
            return (f"the {suffix} registration failed the quality check (normalised mutual "
                    f"information {nmi} < {threshold})")  # fmt: skip
        overlap = summary.get("RegistrationOverlap")
        return f"the {suffix} registration failed the quality check (overlap {overlap} too small)"

    def _run_interface(self, runtime):
        volume = load_volume(self.inputs.in_file, reject_constant=True)
        factors = effective_factors(volume.data.shape, self._factors(volume.affine))
        method, weights = self.inputs.method, optional_input(self.inputs.weights)
        fallback = optional_input(self.inputs.fallback_method)
        note = optional_input(self.inputs.fallback_note)
        provenance = {}
        if method == "auto":
            choice = self._auto_choice(volume.affine)
            method, weights = choice.method, str(choice.weights) if choice.weights else None
            provenance["method_choice"] = choice.sentence
            if choice.fallback is not None and fallback is None:
                fallback, note = choice.fallback.method, choice.fallback.note
            PROGRESS.info("%s: %s", Path(self.inputs.in_file).name, choice.sentence)
        if isdefined(self.inputs.reference_summary):
            provenance["registration"] = dict(self.inputs.reference_summary)
        reason = self._fallback_reason(method)
        if reason is None:
            guided = self.inputs.method != "auto" or method in GUIDED_METHODS
            reference = self._reference(hr_shape(volume.data.shape, factors)) if guided else None
        else:
            if fallback is None:
                raise ValueError(f"{self.inputs.in_file}: {method} needs a "
                                 f"{REFERENCE_SUFFIXES[method]}: {reason}")
            note = note or fallback
            LOGGER.warning("%s: %s; running %s instead of %s", self.inputs.in_file, reason,
                           fallback, method)  # fmt: skip
            provenance.update(fallback_from=method, fallback_reason=f"{reason}; ran {note}")
            method, weights, reference = fallback, None, None
        with subject(Path(self.inputs.in_file).name):  # progress lines name the image
            report = self._super_resolve(runtime, volume, method, weights, reference,
                                         provenance)  # fmt: skip
        self._results["method"] = report.get("method", method)
        self._results["method_choice"] = provenance.get(
            "method_choice", f"{self.inputs.method} was named (method input)"
        )
        return runtime

    def _out_name(self) -> str:
        """``out_name``, else the input's name with ``_sr`` (sub-01_T1w → sub-01_T1w_sr)."""
        if isdefined(self.inputs.out_name):
            return self.inputs.out_name
        name = Path(self.inputs.in_file).name
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
        return f"{stem}_sr.nii.gz"

    def _super_resolve(
        self, runtime, volume: Volume, method: str, weights: str | None,
        reference: np.ndarray | None, provenance: dict,
    ) -> dict:
        """Run ``method`` on ``volume`` (``in_file``); write the image and ``report.json``
        into the node's folder and return the report."""
        requested = self._factors(volume.affine)
        factors = effective_factors(volume.data.shape, requested)
        norm = robust_normalisation(volume.data)
        maps: dict[str, np.ndarray] = {}
        source = Path(self.inputs.in_file).name
        PROGRESS.info("%s: %s started (×%s)", source, method, "x".join(f"{f:g}" for f in factors))
        model_dir = optional_input(self.inputs.model_dir) or str(Path(runtime.cwd) / "models")
        hr, report = super_resolve(
            norm.apply(volume.data),
            factors,
            method,
            weights=weights,
            reference=reference,
            device=self.inputs.device,
            tile_size=optional_input(self.inputs.tile_size),
            tile_overlap=optional_input(self.inputs.tile_overlap),
            seed=self.inputs.seed,
            progress=self.inputs.progress,
            amp=None if self.inputs.amp == "none" else self.inputs.amp,
            acquisition=self._acquisition(volume.affine),
            data_consistency=self.inputs.data_consistency,
            model_dir=model_dir,
            uncertainty=maps,
            selfsr_recipe=SelfSRRecipe(**self.inputs.selfsr_recipe)
            if isdefined(self.inputs.selfsr_recipe) else SELFSR,
        )
        out_affine = upsampled_affine(volume.affine, factors)
        if "map" in maps:  # a difference of intensities: scaled, not shifted, back
            spread = maps.pop("map") * np.float32(norm.high - norm.low)
            name = self._out_name().replace(".nii", "_uncertainty.nii")
            self._results["uncertainty_file"] = str(
                save_volume(spread, out_affine, Path(runtime.cwd) / name, volume.header)
            )
        out_file = save_volume(
            norm.restore(hr),
            out_affine,
            Path(runtime.cwd) / self._out_name(),
            volume.header,
        )
        report.update(
            {
                "in_file": os.path.abspath(self.inputs.in_file),
                "requested_factors": list(requested),
                "factors": list(factors),
                "input_shape": list(volume.data.shape),
                "output_shape": list(hr.shape),
                "input_voxel_size_mm": list(voxel_sizes(volume.affine)),
                "output_voxel_size_mm": list(voxel_sizes(out_affine)),
                "intensity_normalisation": {"low": norm.low, "high": norm.high},
                "requested_method": self.inputs.method,
                **provenance,
            }
        )
        PROGRESS.info("%s: %s finished in %.0f s (DataConsistencyPSNR %.1f dB)", source,
                      report.get("method", method), report.get("runtime_s", float("nan")),
                      report.get("data_consistency_psnr", float("nan")))  # fmt: skip
        report_path = Path(runtime.cwd) / "report.json"
        report_path.write_text(json.dumps(report, indent=2, default=str))
        self._results["out_file"] = str(out_file)
        self._results["report_json"] = str(report_path)
        return report
