"""bids_sr.workflows: Nipype workflow factories, for the app and for your own pipelines.

Each ``init_*_wf`` takes keyword-only arguments and returns a ``pe.Workflow`` with an
``inputnode`` and an ``outputnode``; its docstring lists their fields. Building a workflow
reads no file: paths may be known only when it runs (DataGrabber, iterables).

- :func:`init_anat_sr_wf` — super-resolve one T1w (``method='auto'`` by default).
- :func:`init_reference_wf` — register a T2w/FLAIR to the T1w, resample it onto the
  output grid (the guide of a guided method).
- :func:`init_combine_runs_wf` — combine super-resolved runs of one session.
- :func:`init_evaluation_wf` — score methods on a T1w used as the high-resolution truth.
- :func:`init_bids_sr_wf`, :func:`init_single_subject_wf` — the app's whole run.
- the app's derivative writers, ``init_ds_*_wf``, stay in :mod:`bids_sr.workflows.outputs`
  (they name files after the app's BIDS conventions).

See ``examples/nipype_pipeline.py`` for a pipeline: DataGrabber → init_anat_sr_wf (auto) →
your node → DataSink.
"""

from bids_sr.workflows.anatomical import init_anat_sr_wf
from bids_sr.workflows.base import init_bids_sr_wf, init_single_subject_wf
from bids_sr.workflows.combine import init_combine_runs_wf
from bids_sr.workflows.evaluation import init_evaluation_wf
from bids_sr.workflows.reference import init_reference_wf

__all__ = [
    "init_anat_sr_wf",
    "init_bids_sr_wf",
    "init_combine_runs_wf",
    "init_evaluation_wf",
    "init_reference_wf",
    "init_single_subject_wf",
]
