"""Self-supervised thick-slice super-resolution (``--method selfsr``).

The scan teaches itself: its sharp in-plane data, degraded along one in-plane axis with the
scan's own acquisition model, gives training pairs for through-plane filters, which are then
applied along both in-plane orientations and fused (their disagreement is an uncertainty
map). Implemented from the published principle of SMORE/ECLARE (no code taken from them),
with closed-form RAISR-style bucketed filters as the learner. Modules: :mod:`.pairs`,
:mod:`.features`, :mod:`.filters`, :mod:`.store`, :mod:`.method`. Never imports nipype or
pybids.
"""

from bids_sr.selfsr.method import SelfSRError, super_resolve_selfsr

__all__ = ["SelfSRError", "super_resolve_selfsr"]
