"""Gradient-filter learner (RAISR-style, 3D) on NumPy or CuPy.

Learned per-bucket linear filters that map the cheap (order-2 spline) upscale of an LR image
to its HR version; voxels are hashed into buckets by the orientation, strength and coherence
of the local structure tensor. Modules: :mod:`.xp` (NumPy/CuPy), :mod:`.features`,
:mod:`.buckets`, :mod:`.patches`, :mod:`.learn`, :mod:`.apply`, :mod:`.io`.
Never imports nipype or pybids.
"""

from bids_sr.gradfilter.apply import apply_gradient_filters, default_weights_path, filter_upscale
from bids_sr.gradfilter.filterset import FilterSet
from bids_sr.gradfilter.io import load_filters, save_filters
from bids_sr.gradfilter.learn import learn_gradient_filters

__all__ = [
    "FilterSet",
    "apply_gradient_filters",
    "default_weights_path",
    "filter_upscale",
    "learn_gradient_filters",
    "load_filters",
    "save_filters",
]
