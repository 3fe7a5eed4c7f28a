"""Planning a run: which methods each T1w gets, which reference (T2w, FLAIR) guides it, why.

The command line names methods (``--method``: names, ``all``, ``auto``) and a reference
policy (``--t2w-reference``, ``--reference-suffix``). Before any workflow is built,
:func:`bids_sr.planning.plan.plan_methods` turns them into a
:class:`~bids_sr.planning.plan.MethodPlan` per T1w and checks that every learned method has
weights, so that a bad request fails before anything is written. The plan depends only on
the dataset and the weights on disk, never on results computed during the run: what a
guided method does when its reference registers badly is decided inside its node (see
:class:`bids_sr.interfaces.superresolve.SuperResolve`), so the graph has one shape.

``auto`` decides from evidence only (:mod:`bids_sr.cards.evidence`): per T1w, from its
acquisition family (isotropic or a 2D scan, :func:`bids_sr.planning.inputs.t1w_acquisition`)
and factors, the shipped weights whose model card validates the largest gain over bspline
there on every held-out image; a guided model only when its card also shows a gain over its
mono twin and the reference is finer than the T1w along the axes being super-resolved
(:func:`bids_sr.planning.references.reference_problem`); else ``bspline``. Each guided
network takes one contrast (``srrecnn-t2w`` a T2w, ``srrecnn-flair`` a FLAIR); with both in
the session, ``auto`` guides with the finest along the SR axes for which a guided card shows
the gain (a tie: T2w), and a T1w gets one reference: a guided method of the other contrast
falls back in its node. The sentence that says which evidence decided goes into the log and
the sidecar (``MethodChoice``).

Modules, one job each:

- :mod:`bids_sr.planning.plan` — the plan of a run (:func:`~bids_sr.planning.plan.plan_methods`);
- :mod:`bids_sr.planning.auto` — the ``auto`` decision for one image, shared by the plan and
  the ``SuperResolve`` node; it asks the cards what they validate
  (:mod:`bids_sr.cards.evidence`) and decides from the answers;
- :mod:`bids_sr.planning.references` — the choice of a reference: which contrasts may guide,
  the candidates of each T1w (listed by the BIDS layer's query,
  :func:`bids_sr.bids.select_reference`), which is finer than the T1w along the SR axes,
  which is finest;
- :mod:`bids_sr.planning.fallback` — whether a method can run (weights) and what a guided
  method falls back to;
- :mod:`bids_sr.planning.inputs` — each T1w as the run sees it: factors, acquisition model,
  and the warnings about its metadata;
- :mod:`bids_sr.planning.settings` — what planning reads of the run configuration, as
  protocols (planning sits below :mod:`bids_sr.config` and does not import it).
"""
