"""Nipype interfaces of the gradient-filter learner.

``LearnGradientFilters`` learns a filter file from HR images; ``ApplyGradientFilters`` is the
generic :class:`~bids_sr.interfaces.superresolve.SuperResolve` with the method fixed to
``gradfilter`` and the filter file given as ``filters``.

Example
-------
>>> from nipype.pipeline import engine as pe
>>> learn = pe.Node(LearnGradientFilters(factor=[2.0]), name="learn")
>>> learn.inputs.in_files = ["sub-01_T1w.nii.gz", "sub-02_T1w.nii.gz"]  # doctest: +SKIP
>>> apply = pe.Node(ApplyGradientFilters(scale=[2.0]), name="apply")
"""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_sr.degrade import PRESETS
from bids_sr.interfaces.superresolve import SuperResolve, SuperResolveInputSpec


class LearnGradientFiltersInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True,
                                desc="high-resolution training images (3D NIfTI)")
    degradation = traits.Enum(*PRESETS, usedefault=True,
                              desc="degradation that simulates the LR images")
    factor = traits.List(traits.Float, minlen=1, maxlen=3, value=[2.0], usedefault=True,
                         desc="one factor or three per-axis factors")
    patch_size = traits.Int(7, usedefault=True, desc="filter size per axis (odd)")
    stride = traits.Int(3, usedefault=True, desc="sample every stride-th voxel per axis")
    augment = traits.Bool(True, usedefault=True,
                          desc="add a random symmetric copy (flips/permutations) of each sample")
    seed = traits.Int(0, usedefault=True, desc="random seed")
    out_filters = traits.Str("gradfilter.safetensors", usedefault=True,
                             desc="output filter file name (a .card.json is written beside it)")


class LearnGradientFiltersOutputSpec(TraitedSpec):
    out_filters = File(exists=True, desc="learned filters (safetensors)")
    # nipype deletes unconnected outputs from the node folder: connect out_card to a sink
    # (or an outputnode) to keep the card beside the filters
    out_card = File(exists=True, desc="model card <stem>.card.json beside the filters")


class LearnGradientFilters(SimpleInterface):
    """Learn per-bucket gradient filters from HR images (see :mod:`bids_sr.gradfilter.learn`)."""

    input_spec = LearnGradientFiltersInputSpec
    output_spec = LearnGradientFiltersOutputSpec

    def _run_interface(self, runtime):
        # late: the learner loads in the node that runs it, not when the workflow is built
        from bids_sr.cards.paths import card_path
        from bids_sr.training.gradfilter import train_gradfilter

        out = train_gradfilter(
            [Path(p) for p in self.inputs.in_files],
            Path(runtime.cwd) / self.inputs.out_filters,
            self.inputs.factor,
            degradation=self.inputs.degradation,
            seed=self.inputs.seed,
            progress=False,
            card_extra={"interface": "LearnGradientFilters"},
            patch_size=self.inputs.patch_size,
            stride=self.inputs.stride,
            augment=self.inputs.augment,
        )
        self._results["out_filters"] = str(out)
        self._results["out_card"] = str(card_path(out))
        return runtime


class ApplyGradientFiltersInputSpec(SuperResolveInputSpec):
    method = traits.Enum("gradfilter", usedefault=True, desc="fixed: gradfilter")
    filters = File(exists=True, desc="filter file (default: the shipped one for the factor)")


class ApplyGradientFilters(SuperResolve):
    """Super-resolve one image with learned gradient filters (``filters`` → ``weights``)."""

    input_spec = ApplyGradientFiltersInputSpec

    def _run_interface(self, runtime):
        if isdefined(self.inputs.filters):
            self.inputs.weights = self.inputs.filters
        return super()._run_interface(runtime)
