"""bids_sr.interfaces: the Nipype interfaces, for the app's workflows and your pipelines.

Each is a ``SimpleInterface`` whose input and output specs describe every field (``desc``);
``help(Interface)`` or ``Interface.help()`` lists them.

- :class:`SuperResolve` — any method on one image; ``method='auto'`` (default) decides from
  the model cards when it runs, and outputs ``method`` and ``method_choice``.
- :class:`DeepSuperResolve`, :class:`ApplyGradientFilters` — one method family each.
- :class:`LearnGradientFilters` — learn RAISR-style filters from HR images.
- :class:`MonoTwin` — what a guide (T2w, FLAIR) contributed to a guided result.
- :class:`RegisterT2wToT1w`, :class:`ResampleToGrid`, :class:`UpsampledGrid` — bring a
  guide onto the super-resolved grid.
- :class:`CombineRuns` — combine super-resolved runs of one session.
- :class:`EvaluateSuperResolution` — score methods on a T1w used as the truth.
- :class:`DerivativesDataSink` — write a BIDS derivative with its sidecar;
  :class:`SubjectReport` — the HTML report.
"""

from bids_sr.interfaces.superresolve import SuperResolve  # noqa: I001 (first: the base class)
from bids_sr.interfaces.bids import DerivativesDataSink
from bids_sr.interfaces.combine import CombineRuns
from bids_sr.interfaces.deep import DeepSuperResolve
from bids_sr.interfaces.evaluation import EvaluateSuperResolution
from bids_sr.interfaces.gradfilter import ApplyGradientFilters, LearnGradientFilters
from bids_sr.interfaces.grid import UpsampledGrid
from bids_sr.interfaces.guidance import MonoTwin
from bids_sr.interfaces.registration import RegisterT2wToT1w, ResampleToGrid
from bids_sr.interfaces.reports import SubjectReport

__all__ = [
    "ApplyGradientFilters",
    "CombineRuns",
    "DeepSuperResolve",
    "DerivativesDataSink",
    "EvaluateSuperResolution",
    "LearnGradientFilters",
    "MonoTwin",
    "RegisterT2wToT1w",
    "ResampleToGrid",
    "SubjectReport",
    "SuperResolve",
    "UpsampledGrid",
]
