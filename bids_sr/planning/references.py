"""The choice of a reference (guide) image for a T1w, in one place: which contrasts may
guide in a run, the candidate files of each T1w, which candidate can help (finer than the
T1w along the axes being super-resolved) and which is finest.

Listing a participant's images of a suffix is a pybids query, asked of the BIDS layer
(:func:`bids_sr.bids.select_reference`, which imports pybids only when it runs); everything
else here reads image headers only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from bids_sr.bids import select_reference
from bids_sr.errors import EXIT_MISSING, BIDSError
from bids_sr.planning.settings import RunSettings
from bids_sr.superresolve import GUIDED_METHODS

#: BIDS suffixes of the HR images that may guide a T1w (``--reference-suffix``), in the
#: order of preference when two are equally fine
GUIDE_SUFFIXES = ("T2w", "FLAIR")
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


def candidate_suffixes(config: RunSettings) -> list[str]:
    """The contrasts that may guide a T1w in this run (none when no requested method may
    use one): ``--reference-suffix``, else T2w and FLAIR; T2w not with --t2w-reference none."""
    wf_settings = config.workflow
    if not any(m in GUIDED_METHODS or m in ("all", "auto") for m in wf_settings.methods):
        return []
    suffixes = wf_settings.reference_suffixes or list(GUIDE_SUFFIXES)
    return [s for s in suffixes if not (s == "T2w" and wf_settings.t2w_reference == "none")]


def find_references(layout, config: RunSettings, t1w_by_subject: Mapping[str, Sequence[str]]
                    ) -> dict[str, dict[str, str]]:  # fmt: skip
    """Per T1w, its candidate references by suffix (``{"T2w": path, "FLAIR": path}``): for
    each contrast of :func:`candidate_suffixes`, the image
    :func:`bids_sr.bids.select_reference` finds in ``layout`` (the T2w as
    ``--t2w-reference`` says; only the same session with ``--reference-session same``).
    T1ws without any are left out; with ``--reference-suffix`` given (forced), a T1w that
    finds none of its contrasts stops the run (exit 66). Which candidate guides is decided
    by the plan (:func:`finest`, :func:`reference_problem`)."""
    wf_settings = config.workflow
    suffixes = candidate_suffixes(config)
    if not suffixes:
        return {}
    found: dict[str, dict[str, str]] = {}
    for files in t1w_by_subject.values():
        for t1w_file in files:
            candidates = {}
            for suffix in suffixes:
                mode = wf_settings.t2w_reference if suffix == "T2w" else "auto"
                path = select_reference(layout, t1w_file, suffix, mode,
                                        wf_settings.reference_session == "same")  # fmt: skip
                if path:
                    candidates[suffix] = path
            if candidates:
                found[t1w_file] = candidates
            elif wf_settings.reference_suffixes:
                raise BIDSError(
                    f"{t1w_file}: no {' or '.join(suffixes)} of this participant to guide it "
                    f"(--reference-suffix {' '.join(suffixes)})",
                    EXIT_MISSING,
                )
    return found


def finest(references: Sequence[Reference]) -> Reference | None:
    """The finest reference along the SR axes; on a tie (within 1 %), the first suffix of
    :data:`GUIDE_SUFFIXES` (T2w before FLAIR)."""

    def rank(ref: Reference) -> tuple[float, int]:
        order = GUIDE_SUFFIXES.index(ref.suffix) if ref.suffix in GUIDE_SUFFIXES else 99
        return round(ref.coarseness, 2), order

    return min(references, key=rank, default=None)


def _extents(t1w_file: str, reference_file: str, factors: Sequence[float]
             ) -> list[tuple[int, float, float]]:  # fmt: skip
    """Per upsampled T1w axis: (axis, the reference's voxel extent along it — the projection
    of its voxel onto that direction, from both headers —, the T1w spacing there)."""
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
    t1w_file: str, reference_file: str, factors: Sequence[float], *, evaluate: bool = False
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
    return _coarser_axis(_extents(t1w_file, reference_file, factors))


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
