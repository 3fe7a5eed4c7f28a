"""Planning a run: which methods each T1w gets, which reference (T2w, FLAIR) guides it, why.

The command line names methods (``--method``: names, ``all``, ``auto``) and a reference
policy (``--t2w-reference``, ``--reference-suffix``). Before any workflow is built,
:func:`plan_methods` turns them into a :class:`MethodPlan` per T1w and checks that every
learned method has weights, so that a bad request fails before anything is written. The
plan depends only on the dataset and the weights on disk, never on results computed during
the run: what a guided method does when its reference registers badly is decided inside its node
(see :class:`bids_sr.interfaces.superresolve.SuperResolve`), so the graph has one shape.

``auto`` decides from evidence only (:mod:`bids_sr.evidence`): per T1w, from its acquisition
family (isotropic or a 2D scan, :func:`t1w_acquisition`) and factors, the shipped weights
whose model card validates the largest gain over bspline there on every held-out image; a
guided model only when its card also shows a gain over its mono twin and the T2w is finer
than the T1w along the axes being super-resolved (:func:`reference_problem`); else
``bspline``. Each guided network takes one contrast (``srrecnn-t2w`` a T2w, ``srrecnn-flair``
a FLAIR); with both in the session, ``auto`` guides with the finest along the SR axes for
which a guided card shows the gain (a tie: T2w), and a T1w gets one reference: a guided
method of the other contrast falls back in its node. The sentence that says which evidence
decided goes into the log and the sidecar (``MethodChoice``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_sr.acquisition import Acquisition
from bids_sr.config import Config
from bids_sr.errors import EXIT_DATA, EXIT_USAGE, BIDSError
from bids_sr.recipes import AUTO_POLICY, AutoPolicy
from bids_sr.superresolve import (
    GUIDED_METHODS,
    INTERPOLATION_METHODS,
    METHODS,
    REFERENCE_SUFFIXES,
    SELF_SUPERVISED_METHODS,
    default_weights,
)
from bids_sr.weights_lookup import format_factors

LOGGER = logging.getLogger("bids_sr")

#: What runs when no learned model can: cubic B-spline interpolation.
BASELINE_METHOD = "bspline"
#: A reference helps only where its voxels are at most this fraction of the T1w spacing.
REFERENCE_FINER = 0.75


@dataclass(frozen=True)
class Reference:
    """A candidate guide of one T1w: its file, BIDS suffix, how coarse it is along the SR
    axes (the largest ratio of its voxel extent to the T1w spacing there; smaller is finer)
    and why it cannot help (None: it is finer, :func:`reference_problem`)."""

    file: str
    suffix: str
    coarseness: float
    problem: str | None = None


@dataclass(frozen=True)
class Fallback:
    """What a guided method runs instead when its T2w is missing or badly registered."""

    method: str
    note: str  # why this method (a sentence fragment for FallbackReason)


@dataclass
class MethodPlan:
    """The concrete work of a run, per T1w path.

    ``methods``: the methods to run on it, in order (no ``all``/``auto`` left);
    ``t2w``: the reference (T2w or FLAIR) that guides it (only T1ws that have one and may
    use it); ``reference_suffixes``: that reference's BIDS suffix;
    ``choices``: the ``MethodChoice`` sentence of the method ``auto`` picked for it;
    ``auto_methods``: that method; ``method_fallbacks``: what each guided method falls back
    to (see :meth:`fallback`);
    ``weights``: the shipped weights file ``auto`` validated, per T1w and method;
    ``warnings``: per T1w and method, why an explicitly named method runs unvalidated;
    ``reference_problems``: per T1w, why its T2w does not guide (not finer than the T1w);
    ``run_groups``: with ``--combine-runs``, the T1w runs of one session to combine
    (:func:`bids_sr.bids.group_runs`; the first is the reference).
    """

    methods: dict[str, list[str]] = field(default_factory=dict)
    t2w: dict[str, str] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    auto_methods: dict[str, str] = field(default_factory=dict)
    method_fallbacks: dict[str, dict[str, Fallback]] = field(default_factory=dict)
    weights: dict[str, dict[str, Path]] = field(default_factory=dict)
    warnings: dict[str, dict[str, str]] = field(default_factory=dict)
    reference_problems: dict[str, str] = field(default_factory=dict)
    run_groups: list[tuple[str, ...]] = field(default_factory=list)
    reference_suffixes: dict[str, str] = field(default_factory=dict)

    def reference_suffix(self, t1w_file: str) -> str | None:
        """The BIDS suffix of the T1w's guiding reference (None: it has none)."""
        if t1w_file not in self.t2w:
            return None
        return self.reference_suffixes.get(t1w_file, "T2w")

    def guides(self, t1w_file: str, method: str) -> bool:
        """Whether ``method`` (a guided one) gets the T1w's reference: same contrast."""
        suffix = self.reference_suffix(t1w_file)
        return suffix is not None and REFERENCE_SUFFIXES.get(method) == suffix

    def fallback(self, t1w_file: str, method: str) -> Fallback | None:
        """What the guided ``method`` runs on the T1w when its reference cannot guide it."""
        return self.method_fallbacks.get(t1w_file, {}).get(method)

    def weights_for(self, t1w_file: str, method: str) -> Path | None:
        """The shipped weights ``auto`` chose for ``method`` on the T1w (None: default)."""
        return self.weights.get(t1w_file, {}).get(method)

    @property
    def all_methods(self) -> list[str]:
        """Every method of the run, each once, in order of first use."""
        return list(dict.fromkeys(m for methods in self.methods.values() for m in methods))

    def method_choice(self, t1w_file: str, method: str) -> str | None:
        """The MethodChoice sentence when ``method`` is the one ``auto`` picked for the T1w."""
        if self.auto_methods.get(t1w_file) == method:
            return self.choices.get(t1w_file)
        return None

    @classmethod
    def uniform(cls, methods: Sequence[str], t1w_files: Sequence[str]) -> MethodPlan:
        """Every (concrete) method on every T1w, with no T2w: for callers that build
        workflows directly. Guided methods then fall back to bspline in their node."""
        tokens = [m for m in methods if m not in METHODS]
        if tokens:
            raise ValueError(f"{', '.join(tokens)}: resolve 'all'/'auto' with plan_methods")
        fallback = Fallback(BASELINE_METHOD, "bspline (no fallback was planned)")
        guided = {m: fallback for m in methods if m in GUIDED_METHODS}
        return cls(
            methods={t1w: list(dict.fromkeys(methods)) for t1w in t1w_files},
            method_fallbacks={t1w: dict(guided) for t1w in t1w_files},
        )


def t1w_factors(config: Config, t1w_file: str) -> tuple[float, float, float]:
    """The scale factors a T1w is processed with (from --scale or --output-resolution, else
    the default grid of :func:`bids_sr.image.default_factors`). Reads the header only: the
    images were checked before planning, and this runs several times per T1w."""
    import nibabel as nib

    from bids_sr.image import as_factors, requested_factors

    if config.workflow.output_resolution or not config.workflow.scale:
        affine = nib.load(t1w_file).affine
        return requested_factors(affine, config.workflow.scale, config.workflow.output_resolution)
    return as_factors(config.workflow.scale)


def missing_weights(method: str, factors: Sequence[float], family: str | None = None) -> str | None:
    """Why ``method`` has no shipped weights for ``factors`` (None: it has, or needs none).

    A self-supervised method needs none, but only runs on 2D scans: for an input of
    ``family`` ``isotropic`` the reason is that.
    """
    if method in SELF_SUPERVISED_METHODS:
        if family == "isotropic":
            return (f"{method} super-resolves 2D (thick-slice) scans only; this input has no "
                    f"coarse slice axis")  # fmt: skip
        return None
    if method in INTERPOLATION_METHODS:
        return None
    try:
        default_weights(method, factors)
    except FileNotFoundError as exc:
        return str(exc)
    return None


def fallback_for(factors: Sequence[float], method: str) -> Fallback:
    """The guided ``method``'s mono twin when it can run at ``factors`` (shipped weights, or
    none needed), else bspline."""
    from bids_sr.guidance import mono_twin

    twin = mono_twin(method)
    if missing_weights(twin, factors) is None:
        return Fallback(twin, f"{twin}, the same method without the reference")
    return Fallback(
        BASELINE_METHOD,
        f"{BASELINE_METHOD}, because the mono model {twin} has no shipped weights at "
        f"×{format_factors(factors)} either",
    )


def weights_method(weights: Path) -> str:
    """The method a ``--weights`` file was made for (from its metadata); BIDSError if none."""
    from bids_sr.models.weights import WeightsError, read_metadata

    try:
        return read_metadata(weights)["method"]
    except WeightsError as exc:
        raise BIDSError(
            f"{exc}; with --method auto the weights must name their method (or name the "
            "method with --method)",
            EXIT_USAGE,
        ) from exc


@dataclass(frozen=True)
class AutoChoice:
    """What ``auto`` runs on one T1w: the method, its shipped weights (None for bspline),
    the ``MethodChoice`` sentence, what a guided choice falls back to and its reference."""

    method: str
    weights: Path | None
    sentence: str
    fallback: Fallback | None = None
    reference: Reference | None = None  # the guide of a guided choice


def choose_auto(
    factors: Sequence[float],
    family: str,
    t2w_file: str | None = None,
    *,
    t2w_mode: str = "auto",
    reference_problem: str | None = None,
    references: Sequence[Reference] | None = None,
    fast: bool = False,
    policy: AutoPolicy = AUTO_POLICY,
) -> AutoChoice:
    """The method ``auto`` runs on one input, from the model cards' evidence only
    (read by ``policy``, :class:`bids_sr.recipes.AutoPolicy`).

    ``family`` is the input's acquisition family (``isotropic`` or ``slice``) and
    ``factors`` its scale factors; a learned method qualifies only when its card validates
    a gain over bspline there on every held-out image (a guided one also over its mono
    twin, and only with a usable reference of its contrast). ``references``: the T1w's
    candidate guides (:func:`describe_references`); without them, ``t2w_file`` with its
    ``reference_problem``. Among the usable ones for which a guided card shows the gain,
    the finest guides (a tie: T2w, :data:`bids_sr.bids.GUIDE_SUFFIXES` order). The best
    validated gain wins; without any, bspline. A fast cohort mode (a card's
    ``"speed": "fast"``, ``selfsr-fast``) comes after every other validated method, or
    before them with ``fast`` (``--fast``): on a real 1×1×3 mm clinical T1w the prior alone
    earned 4 % over B-spline on the scan's own slices, the per-scan training visibly more.
    """
    from bids_sr import weights_lookup
    from bids_sr.evidence import shipped_evidence

    if references is None:
        references = [Reference(t2w_file, "T2w", 0.0, reference_problem)] if t2w_file else []
    scale = f"×{format_factors(factors)}"
    weights_dir = weights_lookup.WEIGHTS_DIR
    usable = [r for r in references if r.problem is None]
    evidence = shipped_evidence(weights_dir, family, factors, guided_ok=True, policy=policy)
    evidence.sort(key=lambda e: e.fast != fast)  # stable: best gain first within each tier
    eligible = [r for r in usable if r.suffix in {e.reference_suffix for e in evidence}]
    chosen = finest(eligible)
    # the mono models, and the guided ones of the chosen reference's contrast (still best first)
    found = [e for e in evidence if e.reference_suffix is None
             or (chosen is not None and e.reference_suffix == chosen.suffix)]  # fmt: skip
    notes = [f"; the {r.suffix} {Path(r.file).name} is not used: {r.problem}"
             for r in references if r.problem]  # fmt: skip
    if chosen is not None:
        notes += [f"; the {r.suffix} {Path(r.file).name} is not used: the {chosen.suffix} "
                  f"{Path(chosen.file).name} is finer or as fine"
                  for r in eligible if r is not chosen]  # fmt: skip
    if not references and t2w_mode == "none":
        notes.append("; --t2w-reference none")
    note = "".join(notes)
    if not found:
        return AutoChoice(BASELINE_METHOD, None, (
            f"auto chose {BASELINE_METHOD} (cubic B-spline interpolation) because no shipped "
            f"model card validates a gain over {BASELINE_METHOD} for {family} inputs at "
            f"{scale}{note}"
        ))  # fmt: skip
    best = found[0]
    fallback, reference, kind = None, None, ""
    if best.method in GUIDED_METHODS:
        mono = next((e for e in found if e.method not in GUIDED_METHODS), None)
        fallback = (
            Fallback(mono.method, f"{mono.method}, the best validated model without the "
                                  f"{chosen.suffix}")
            if mono
            else Fallback(BASELINE_METHOD, f"{BASELINE_METHOD}, as no mono model is validated "
                                           f"for {family} inputs at {scale}")
        )  # fmt: skip
        reference, kind = chosen, f" ({chosen.suffix}-guided by {Path(chosen.file).name})"
    sentence = f"auto chose {best.method}{kind} because {best.sentence()}{note}"
    return AutoChoice(best.method, best.shipped_weights, sentence, fallback, reference)


def auto_choice(
    factors: Sequence[float],
    family: str,
    *,
    references: Sequence[Reference] = (),
    weights: Path | str | None = None,
    t2w_mode: str = "auto",
    fast: bool = False,
) -> AutoChoice:
    """What ``auto`` runs on one image: the one decision shared by the command line's plan
    (:func:`plan_methods`) and a :class:`bids_sr.interfaces.superresolve.SuperResolve` node
    left at ``method='auto'``, which makes it at run time from the same evidence.

    With ``weights`` (``--weights``), the method those weights were made for; else
    :func:`choose_auto` on the model cards, for the image's scale ``factors``, acquisition
    ``family`` and candidate guides (``references``, :func:`describe_references`).
    """
    if weights is not None:
        method = weights_method(Path(weights))
        return AutoChoice(method, Path(weights),
                          f"auto chose {method}, the method of --weights {weights}")  # fmt: skip
    return choose_auto(factors, family, t2w_mode=t2w_mode, references=references, fast=fast)


def finest(references: Sequence[Reference]) -> Reference | None:
    """The finest reference along the SR axes; on a tie (within 1 %), the first suffix of
    :data:`bids_sr.bids.GUIDE_SUFFIXES` (T2w before FLAIR)."""
    from bids_sr.bids import GUIDE_SUFFIXES

    def rank(ref: Reference) -> tuple[float, int]:
        order = GUIDE_SUFFIXES.index(ref.suffix) if ref.suffix in GUIDE_SUFFIXES else 99
        return round(ref.coarseness, 2), order

    return min(references, key=rank, default=None)


def t1w_acquisition(config: Config, t1w_file: str) -> Acquisition:
    """The acquisition model of a T1w as a run sees it (exit 64 for impossible options).

    Evaluation mode simulates its input: a 2D scan for ``--degradation slice``, else an
    isotropic one, whatever the truth's own header says.
    """
    import nibabel as nib

    from bids_sr.acquisition import AcquisitionError, describe_acquisition, simulated_acquisition
    from bids_sr.fileio import read_sidecar
    from bids_sr.image import voxel_sizes

    wf_settings = config.workflow
    if wf_settings.evaluate:
        factors = t1w_factors(config, t1w_file)
        spacing = tuple(float(f) for f in factors)
        if wf_settings.degradation != "slice":
            return Acquisition(spacing=spacing)
        try:  # the slices the evaluation node will simulate: a gap above the spacing stops here
            simulated_acquisition(voxel_sizes(nib.load(t1w_file).affine), factors,
                                  thickness=wf_settings.slice_thickness, gap=wf_settings.slice_gap,
                                  profile=wf_settings.slice_profile)  # fmt: skip
        except AcquisitionError as exc:
            raise BIDSError(f"{t1w_file}: {exc} (--slice-gap/--slice-thickness against the "
                            "simulated slice spacing)", EXIT_USAGE) from exc  # fmt: skip
        return Acquisition(spacing=spacing, slice_axis=int(max(range(3), key=factors.__getitem__)),
                           thickness=max(spacing), profile=wf_settings.slice_profile)  # fmt: skip
    try:
        return describe_acquisition(
            voxel_sizes(nib.load(t1w_file).affine),
            slice_thickness=wf_settings.slice_thickness,
            sidecar_thickness=read_sidecar(t1w_file).get("SliceThickness"),
            profile=wf_settings.slice_profile,
        )
    except AcquisitionError as exc:
        raise BIDSError(f"{t1w_file}: {exc}", EXIT_USAGE) from exc


def warn_acquisition_metadata(t1w_file: str, acquisition: Acquisition) -> None:
    """Warn where the model of how ``t1w_file`` was acquired departs from its sidecar: an
    invalid ``SliceThickness`` replaced by the slice spacing (the output sidecar's
    ``InputSliceThicknessSource`` says so too), or an ``MRAcquisitionType`` the voxel sizes
    contradict (the model follows the voxel sizes; the warning says which one was used)."""
    from bids_sr.fileio import read_sidecar

    name = Path(t1w_file).name
    source = acquisition.thickness_source or ""
    if source.startswith("slice spacing ("):
        LOGGER.warning("%s: %s; the slice thickness is taken as the slice spacing, %g mm "
                       "(--slice-thickness sets it)", name, source[len("slice spacing ("):-1],
                       acquisition.thickness)  # fmt: skip
    declared = read_sidecar(t1w_file).get("MRAcquisitionType")
    sizes = "×".join(f"{s:g}" for s in acquisition.spacing) + " mm"
    if declared == "3D" and acquisition.family == "slice":
        LOGGER.warning("%s: the sidecar says MRAcquisitionType 3D, but the voxel sizes %s have "
                       "one coarse axis (%d): modelled as a 2D scan, slices %g mm thick (%s "
                       "profile)", name, sizes, acquisition.slice_axis, acquisition.thickness,
                       acquisition.profile)  # fmt: skip
    elif declared == "2D" and acquisition.family == "isotropic":
        LOGGER.warning("%s: the sidecar says MRAcquisitionType 2D, but the voxel sizes %s are "
                       "nearly isotropic: modelled as an isotropic (3D) acquisition", name,
                       sizes)  # fmt: skip


def warn_thick_slice_truth(t1w_file: str) -> None:
    """``--evaluate`` takes each T1w as the truth: warn when its voxel sizes are those of a
    2D scan (thick slices), whose scores then measure a blurred truth along the slice axis."""
    import nibabel as nib

    from bids_sr.acquisition import coarse_axis
    from bids_sr.image import voxel_sizes

    sizes = voxel_sizes(nib.load(t1w_file).affine)
    axis = coarse_axis(sizes)
    if axis is not None:
        LOGGER.warning("%s: --evaluate takes it as the truth, but its voxel sizes %s are those "
                       "of a 2D scan (thick slices along axis %d): its scores measure how well "
                       "a blurred truth is recovered; evaluate on a 3D (isotropic) scan",
                       Path(t1w_file).name, "×".join(f"{s:g}" for s in sizes) + " mm",
                       axis)  # fmt: skip


def _extents(t1w_file: str, reference_file: str, factors: Sequence[float]
             ) -> list[tuple[int, float, float]]:  # fmt: skip
    """Per upsampled T1w axis: (axis, the reference's voxel extent along it — the projection
    of its voxel onto that direction, from both headers —, the T1w spacing there)."""
    import nibabel as nib

    t1w_axes = nib.load(t1w_file).affine[:3, :3]
    ref_axes = nib.load(reference_file).affine[:3, :3]
    out = []
    for axis, factor in enumerate(factors):
        if factor <= 1.0:
            continue
        spacing = float(np.linalg.norm(t1w_axes[:, axis]))
        direction = t1w_axes[:, axis] / spacing
        out.append((axis, float(np.abs(direction @ ref_axes).sum()), spacing))
    return out


def reference_problem(
    t1w_file: str, t2w_file: str, factors: Sequence[float], *, evaluate: bool = False
) -> str | None:
    """Why a reference (T2w, FLAIR) cannot help super-resolve a T1w (None: it is finer
    along every SR axis).

    Along each T1w axis that is upsampled, the reference's voxel extent (:func:`_extents`;
    the rigid registration changes it little) must be at most :data:`REFERENCE_FINER` times
    the T1w's spacing. In evaluation mode the reference sits on the HR truth's grid: finer
    by construction.
    """
    if evaluate:
        return None
    return _coarser_axis(_extents(t1w_file, t2w_file, factors))


def _coarser_axis(extents: Sequence[tuple[int, float, float]]) -> str | None:
    """The first SR axis (of :func:`_extents`) along which the reference is not finer."""
    for axis, extent, spacing in extents:
        if extent > REFERENCE_FINER * spacing:
            return (f"it is not finer than the T1w along array axis {axis} ({extent:.2f} mm "
                    f"against {spacing:.2f} mm)")  # fmt: skip
    return None


def describe_references(t1w_file: str, candidates: Mapping[str, str],
                        factors: Sequence[float], *, evaluate: bool = False
                        ) -> list[Reference]:  # fmt: skip
    """The candidate guides of a T1w (``{suffix: file}``) as :class:`Reference` records."""
    refs = []
    for suffix, path in candidates.items():
        if evaluate:  # the reference sits on the HR truth's grid (reference_problem)
            refs.append(Reference(path, suffix, 0.0, None))
            continue
        extents = _extents(t1w_file, path, factors)  # both headers read once per reference
        coarseness = max((extent / spacing for _, extent, spacing in extents), default=0.0)
        refs.append(Reference(path, suffix, coarseness, _coarser_axis(extents)))
    return refs


def _expand(
    config: Config,
    t1w_file: str,
    factors: tuple[float, float, float],
    references: Sequence[Reference],
    plan: MethodPlan,
) -> tuple[list[str], Reference | None]:
    """The concrete methods of one T1w (``all`` and ``auto`` replaced, duplicates dropped)
    and the reference ``auto`` chose to guide its pick (None: not a guided pick).

    ``all`` takes the guided methods of the finest candidate reference's contrast only."""
    methods: list[str] = []
    auto_reference = None
    family = t1w_acquisition(config, t1w_file).family
    top = finest(references)
    for token in config.workflow.methods:
        if token == "all":
            methods += [
                m for m in METHODS
                if missing_weights(m, factors, family) is None
                and (m not in GUIDED_METHODS or (top and REFERENCE_SUFFIXES[m] == top.suffix))
            ]  # fmt: skip
        elif token == "auto":
            choice = auto_choice(factors, family, references=references,
                                 weights=config.workflow.weights,
                                 t2w_mode=config.workflow.t2w_reference,
                                 fast=config.workflow.fast)  # fmt: skip
            method, sentence = choice.method, choice.sentence
            auto_reference = choice.reference
            if choice.weights is not None and config.workflow.weights is None:
                plan.weights.setdefault(t1w_file, {})[method] = choice.weights
            if choice.fallback is not None:
                plan.method_fallbacks.setdefault(t1w_file, {})[method] = choice.fallback
            plan.auto_methods[t1w_file] = method
            plan.choices[t1w_file] = sentence
            LOGGER.info("%s: %s", Path(t1w_file).name, sentence)
            methods.append(method)
        else:
            methods.append(token)
    return list(dict.fromkeys(methods)), auto_reference


def _warn_unvalidated(config: Config, t1w_file: str, methods: Sequence[str],
                      factors: Sequence[float], plan: MethodPlan) -> None:  # fmt: skip
    """A learned method named explicitly outside what its card validates runs, with a
    warning in the log and the sidecar (``MethodWarning``)."""
    from bids_sr import weights_lookup
    from bids_sr.evidence import shipped_evidence

    if config.workflow.weights is not None or config.workflow.evaluate:
        return
    family = t1w_acquisition(config, t1w_file).family
    validated = {
        e.method for e in shipped_evidence(weights_lookup.WEIGHTS_DIR, family, factors,
                                           guided_ok=True)
    }  # fmt: skip
    for method in methods:
        if method in INTERPOLATION_METHODS or method in validated:
            continue
        if plan.auto_methods.get(t1w_file) == method:
            continue
        text = (f"no shipped model card of {method} validates a gain over bspline for "
                f"{family} inputs at ×{format_factors(factors)}; it runs because you asked "
                f"for it")  # fmt: skip
        LOGGER.warning("%s: %s", Path(t1w_file).name, text)
        plan.warnings.setdefault(t1w_file, {})[method] = text


def plan_methods(
    config: Config,
    t1w_by_subject: Mapping[str, Sequence[str]],
    t2w_files: Mapping[str, str | Mapping[str, str] | None] | None = None,
) -> MethodPlan:
    """Resolve ``config.workflow.methods`` per T1w (see the module docstring).

    ``t2w_files`` maps a T1w to its candidate references by suffix (``{"T2w": path,
    "FLAIR": path}``, :func:`bids_sr.bids.select_reference`) or to one T2w path (absent or
    None: none). One reference guides a T1w: the one ``auto`` chose, else the contrast of
    the first guided method named. ``all`` = the interpolation baselines and every learned
    method whose shipped weights exist for the T1w's factors (the guided ones only of the
    finest reference's contrast). A
    learned method named explicitly without weights stops the run (exit 65), or is skipped
    with a warning in evaluation mode; ``--weights`` must go with exactly one learned method
    (exit 64). A guided method on a T1w without T2w stays in the plan and falls back in its
    node (it is skipped in evaluation mode, which scores methods, not fallbacks).
    """
    wf_settings = config.workflow
    candidates = {t1w: _candidates(value) for t1w, value in (t2w_files or {}).items()}
    plan = MethodPlan()
    for files in t1w_by_subject.values():
        for t1w_file in files:
            factors = t1w_factors(config, t1w_file)
            acquisition = t1w_acquisition(config, t1w_file)  # impossible options: exit 64
            if not wf_settings.evaluate:  # evaluation simulates its input's acquisition
                warn_acquisition_metadata(t1w_file, acquisition)
            else:
                warn_thick_slice_truth(t1w_file)
            references = describe_references(t1w_file, candidates.get(t1w_file, {}), factors,
                                             evaluate=wf_settings.evaluate)  # fmt: skip
            methods, reference = _expand(config, t1w_file, factors, references, plan)
            _warn_unvalidated(config, t1w_file, methods, factors, plan)
            guided = [m for m in methods if m in GUIDED_METHODS]
            if guided:
                own = plan.method_fallbacks.setdefault(t1w_file, {})
                for method in guided:
                    own.setdefault(method, fallback_for(factors, method))
                reference = reference or next(
                    (r for m in guided for r in references if r.suffix == REFERENCE_SUFFIXES[m]),
                    None,
                )
                if reference:
                    _plan_reference(plan, t1w_file, reference)
            plan.methods[t1w_file] = methods
    if wf_settings.weights is not None:
        learned = [m for m in plan.all_methods if m not in INTERPOLATION_METHODS]
        if len(learned) != 1:
            raise BIDSError(
                f"--weights {wf_settings.weights} needs exactly one learned method, got "
                f"{', '.join(learned) or 'none'}",
                EXIT_USAGE,
            )
    _check_weights_and_guides(config, plan)
    if not plan.all_methods:
        raise BIDSError("no method left to evaluate (none has weights)", EXIT_DATA)
    return plan


def _candidates(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """``{suffix: path}`` from a plan_methods value (a bare path is a T2w)."""
    if not value:
        return {}
    return {"T2w": value} if isinstance(value, str) else dict(value)


def _plan_reference(plan: MethodPlan, t1w_file: str, reference: Reference) -> None:
    """Guide the T1w's guided methods of the reference's contrast only when it is finer
    along the SR axes; otherwise they fall back in their node and ``FallbackReason`` says
    why."""
    if reference.problem is None:
        plan.t2w[t1w_file] = reference.file
        plan.reference_suffixes[t1w_file] = reference.suffix
        return
    text = f"the {reference.suffix} {Path(reference.file).name} is not used: {reference.problem}"
    plan.reference_problems[t1w_file] = text
    LOGGER.warning("%s: %s", Path(t1w_file).name, text)


def _check_weights_and_guides(config: Config, plan: MethodPlan) -> None:
    """Stop (or, evaluating, skip) learned methods without weights; report missing guides."""
    wf_settings = config.workflow
    for t1w_file, methods in plan.methods.items():
        factors = t1w_factors(config, t1w_file)
        family = t1w_acquisition(config, t1w_file).family
        kept = []
        for method in methods:
            problem = None if wf_settings.weights else missing_weights(method, factors, family)
            if problem is not None and method in SELF_SUPERVISED_METHODS:
                problem = f"{Path(t1w_file).name}: {problem}"
            if problem is None and method in GUIDED_METHODS and not plan.guides(t1w_file, method):
                suffix = REFERENCE_SUFFIXES[method]
                if wf_settings.evaluate:
                    problem = f"no {suffix} for {Path(t1w_file).name}"
                else:
                    fallback = plan.fallback(t1w_file, method)
                    how = (f"--t2w-reference {wf_settings.t2w_reference}" if suffix == "T2w"
                           else "--reference-suffix")  # fmt: skip
                    LOGGER.warning(
                        "%s: no %s reference (%s): %s will fall back to %s",
                        Path(t1w_file).name, suffix, how, method, fallback.note,
                    )  # fmt: skip
            if problem is None:
                kept.append(method)
            elif not wf_settings.evaluate:
                raise BIDSError(problem, EXIT_DATA)
            else:
                LOGGER.warning("skipping %s in the evaluation: %s", method, problem)
        plan.methods[t1w_file] = kept
        if not any(m in GUIDED_METHODS for m in kept):
            plan.t2w.pop(t1w_file, None)
            plan.reference_suffixes.pop(t1w_file, None)


def resolve_methods(
    config: Config,
    t1w_by_subject: Mapping[str, Sequence[str]],
    t2w_files: Mapping[str, str | None] | None = None,
) -> list[str]:
    """Every method the run will use (:func:`plan_methods`, flattened)."""
    return plan_methods(config, t1w_by_subject, t2w_files).all_methods
