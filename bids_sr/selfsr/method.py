"""The ``selfsr`` method: self-supervised thick-slice super-resolution of one 2D scan.

1. ``base``: cubic B-spline upsampling of the scan to the output grid (the baseline).
2. Learn: the acquired slices' in-plane data, degraded along each in-plane axis in turn with
   the scan's own acquisition model (:mod:`.pairs`), teach a learner the way back from the
   upsampled degraded planes to the sharp ones. Learners: ``cnn`` (default; a small 2D
   residual CNN trained per scan, :mod:`.network`) or ``filters`` (closed-form bucketed
   linear filters, :mod:`.filters`: seconds instead of minutes, about half the gain; see
   docs/benchmarks.md, thick-slice table). The model is saved in ``model_dir`` under a key of the
   input and the settings (:mod:`.store`); a rerun with the same input reuses it.
3. Apply: through-plane, in the planes spanned by the slice axis and each in-plane axis;
   the two results are fused by direction in k-space (:mod:`.fusion`: each trusted where
   the spectrum points along its own in-plane axis; guided, they are averaged, below), and
   half their absolute difference is the uncertainty map (0 where both orientations agree).

Guided (``selfsr-t2w``, ``selfsr-flair``): with a registered HR reference of another
contrast, the CNN also sees the reference's plane. Projected onto the acquired slices with
the acquisition model, the reference is sharp in-plane exactly where the T1w training
targets are, so the scan itself teaches how this reference's edges map onto this T1w's —
no contrast-randomised training is needed, and structure the T1w's own slices do not
support is not learned. Through-plane the reference is sharp where the T1w is not. Both
orientations then see the guide's through-plane edges, so neither is the better one along
its own axis: the two guided estimates are averaged (fused by direction, the guided output
lost 0.01 to 0.17 dB over B-spline on openms19 and mni152 at 1×1×3 to 1×1×5; docs/methods.md).
The guide must earn its place: the unguided network of the same scan is learned too (cached
in ``model_dir``, where the guided run's mono twin finds it) and the guided one is used only
when its error on the scan's own training pairs is lower by the recipe's
``guide_min_improvement`` (:class:`bids_sr.recipes.SelfSRRecipe`);
otherwise the result is ``selfsr``'s and the report says why (``guide_check``), so a guide
that carries nothing this scan can use (noise, a constant, a failed acquisition) costs nothing.

Data consistency (:func:`bids_sr.acquisition.enforce_consistency`) follows in the
dispatcher, as for every method. Part of the numerical core (never imports nipype/pybids);
torch and :mod:`.network` are imported inside the functions that use the CNN learner, so
a run of the filters learner does not load them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bids_sr.acquisition import Acquisition, project
from bids_sr.cards.paths import WEIGHTS_DIR
from bids_sr.fileio import write_json_atomic
from bids_sr.interpolation import upsample
from bids_sr.recipes import SELFSR, SelfSRRecipe
from bids_sr.selfsr.filters import apply_plane_filters, head_region, learn_plane_filters
from bids_sr.selfsr.fusion import fuse_orientations
from bids_sr.selfsr.pairs import inplane_axes
from bids_sr.selfsr.store import (
    ForeignModelError,
    checksum,
    filters_from_tensors,
    filters_to_tensors,
    load_model,
    model_key,
    save_model,
)

LEARNERS = ("cnn", "filters")
LOGGER = logging.getLogger("bids_sr")
#: The CNN's shipped starting point, pretrained on the slice family (scripts/pretrain_selfsr.py).
PRIOR = WEIGHTS_DIR / "selfsr_prior.safetensors"
#: The guided CNN's starting point (``scripts/pretrain_selfsr.py --guided``): the same slice
#: family with a guide plane — real references and contrast-randomised T1w copies — so a
#: per-scan guided network starts knowing that a guide's edges help, and spends its budget
#: on how this scan's guide relates to its T1w. Without it, :data:`PRIOR` with the guide's
#: weights at zero.
GUIDED_PRIOR = WEIGHTS_DIR / "selfsr_guided_prior.safetensors"
#: The reference contrasts whose guided method starts from :data:`GUIDED_PRIOR`: those whose
#: card was validated with it (``guided_prior_sha256`` in each record): the T2w and the FLAIR
#: (the guided prior trained on real T2w and FLAIR references). A contrast added here must
#: have its card's records made again first.
GUIDED_PRIOR_CONTRASTS = ("T2w", "FLAIR")
#: The guided CNN's starting point where the unguided one starts from :data:`FAST_MID_PRIOR`
#: (:func:`selfsr_prior`): the same guided pretraining, started from that prior. The guide
#: check compares the guided network with its unguided twin on the scan's own slices, which
#: isolates the guide only when both descend from one prior: with the guided network from
#: :data:`GUIDED_PRIOR` (a :data:`PRIOR` descendant) against a twin from the mid prior, a
#: noise guide passed the check at ×4 and cost 0.47 dB.
GUIDED_MID_PRIOR = WEIGHTS_DIR / "selfsr_guided_prior_mid.safetensors"
#: ``selfsr-fast``'s starting point: the slice-family prior pretrained further on the IXI
#: pool's pretraining subjects and slice factors up to 8 (``scripts/pretrain_selfsr.py
#: --ixi``); :data:`PRIOR` where it does not ship.
FAST_PRIOR = WEIGHTS_DIR / "selfsr_fast_prior.safetensors"
#: ``selfsr-fast``'s starting point for slices of ×4.5 to ×7: :data:`FAST_PRIOR` pretrained
#: 60000 steps further on 5 acquisitions of each IXI pretraining subject. On the 30 IXI
#: validation subjects it gains more at every factor (×5: +1.08 against +0.93 dB, ×6: +1.12
#: against +0.94), on chris and openms19 as much at ×5–×6 (+1.24 / +1.48 against +1.26 /
#: +1.46 at ×5) but less at ×4 (+1.44 / +1.08 against +1.50 / +1.18) and at ×3 it lost to
#: B-spline on openms19 (−0.41 against +0.25), hence the range.
FAST_MID_PRIOR = WEIGHTS_DIR / "selfsr_fast_prior_mid.safetensors"
#: ``selfsr-fast``'s starting point for very thick slices: :data:`FAST_PRIOR` pretrained
#: further with slice factors up to 13. Above ×7 it gains more on every validation image
#: (×8: chris +0.84 against +0.81 dB, openms19 +0.99 against +0.95, IXI mean +0.94 against
#: +0.87; ×13: +0.52 / +0.58 / +0.72 against +0.23 / +0.27 / +0.25) but less at ×3 (openms19
#: −0.15 against +0.25), so it takes over only above :data:`FAST_THICK_ABOVE`.
FAST_THICK_PRIOR = WEIGHTS_DIR / "selfsr_fast_prior_thick.safetensors"
#: The slice factors above which ``selfsr-fast`` starts from :data:`FAST_MID_PRIOR` and from
#: :data:`FAST_THICK_PRIOR`: midway between the records made from the priors either side
#: (×4 and ×5; ×6 and ×8).
FAST_MID_ABOVE = 4.5
FAST_THICK_ABOVE = 7.0


def selfsr_prior(factor: float | None = None) -> Path:
    """``selfsr``'s (and the guided methods' unguided twin's) starting point for a slice
    ``factor``: a longer-trained cohort prior that ``selfsr-fast`` also starts from
    (:func:`fast_prior`): :data:`FAST_THICK_PRIOR` above :data:`FAST_THICK_ABOVE`,
    :data:`FAST_MID_PRIOR` up to it, each where it ships; else, and without a factor,
    :data:`PRIOR`. Fine-tuned from them, the per-scan network gained on the 30 IXI validation
    subjects +0.76 / +0.93 / +0.92 / +0.91 / +0.79 / +0.52 dB over B-spline at ×3 / ×4 / ×5 /
    ×6 / ×8 / ×13 against +0.60 / +0.71 / +0.67 / +0.66 / +0.55 / +0.07 from :data:`PRIOR`,
    every subject more at every factor; on chris and openms19 within −0.10 / +0.11 dB of
    :data:`PRIOR`'s gains (both without mirror averaging, the recipe's ``flip_average``)."""
    if factor is None:
        return PRIOR
    return _prior_by_factor(factor, ((FAST_THICK_ABOVE, FAST_THICK_PRIOR),), FAST_MID_PRIOR)


def guided_prior_of(prior: Path | None) -> Path | None:
    """The guided CNN's starting point for an unguided twin starting from ``prior``: of the
    same lineage — :data:`GUIDED_PRIOR` for :data:`PRIOR`, :data:`GUIDED_MID_PRIOR` for
    :data:`FAST_MID_PRIOR` — or None where no guided prior of that lineage ships (the guided
    network then starts from ``prior`` itself, its guide input at zero weight)."""
    lineages = {PRIOR: GUIDED_PRIOR, FAST_MID_PRIOR: GUIDED_MID_PRIOR}
    guided = lineages.get(Path(prior)) if prior is not None else None
    return guided if guided is not None and guided.exists() else None


def fast_prior(factor: float | None = None) -> Path:
    """``selfsr-fast``'s starting point for a slice ``factor``: :data:`FAST_THICK_PRIOR`
    above :data:`FAST_THICK_ABOVE`, :data:`FAST_MID_PRIOR` above :data:`FAST_MID_ABOVE`,
    else :data:`FAST_PRIOR` — each where it ships, else the next thinner one's; :data:`PRIOR`
    where none ships."""
    ranges = ((FAST_THICK_ABOVE, FAST_THICK_PRIOR), (FAST_MID_ABOVE, FAST_MID_PRIOR))
    return _prior_by_factor(factor, ranges, FAST_PRIOR)


def _prior_by_factor(factor: float | None, ranges: Sequence[tuple[float, Path]],
                     thinnest: Path) -> Path:  # fmt: skip
    """The prior of the first of ``ranges`` (``(above, prior)``, thickest first) whose bound
    ``factor`` exceeds and whose file ships; else ``thinnest`` where it ships; else
    :data:`PRIOR`. The one range table of :func:`fast_prior` and :func:`selfsr_prior`."""
    for above, prior in ranges:
        if factor is not None and factor > above and prior.exists():
            return prior
    return thinnest if thinnest.exists() else PRIOR


class SelfSRError(ValueError):
    """An input the self-supervised method cannot process (the message says why)."""


def _slice_axis(lr_shape: Sequence[int], factors: Sequence[float],
                acquisition: Acquisition | None) -> int:  # fmt: skip
    """The slice axis to super-resolve: the acquisition's, which must be upsampled."""
    if acquisition is None or acquisition.slice_axis is None:
        raise SelfSRError(
            "selfsr super-resolves 2D scans (one coarse slice axis); this input's voxel sizes "
            "describe an isotropic 3D acquisition"
        )
    axis = int(acquisition.slice_axis)
    if float(factors[axis]) <= 1.0:
        raise SelfSRError(f"selfsr needs a factor above 1 along the slice axis {axis}, got "
                          f"{float(factors[axis]):g}")  # fmt: skip
    if lr_shape[axis] < 2:
        raise SelfSRError(f"selfsr needs at least 2 slices, got {lr_shape[axis]}")
    return axis


def _torch_device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise SelfSRError("--device cuda was asked for, but torch sees no CUDA device")
    return "cpu"


def _precision(learner: str, device: str) -> str:
    """What the learner computes in: the filters in float32, the CNN in
    :func:`bids_sr.precision.precision_name` (bfloat16 on CPUs with AMX)."""
    if learner == "filters":
        return "float32"
    from bids_sr.precision import precision_name  # imports torch: only for the CNN

    return precision_name(device)


def _learn_seconds(timing: Path) -> float | None:
    """How long a saved model took to learn (None when its timing file is missing)."""
    try:
        return float(json.loads(timing.read_text())["learn_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Model:
    """A learned per-scan model of either learner, applied in one orientation at a time.
    ``flip_average`` (the recipe's): the CNN also predicts each plane's mirror image
    (:func:`bids_sr.selfsr.network.apply_plane_net`); the filters have no such pass."""

    def __init__(self, learner: str, tensors: dict[str, np.ndarray], path: Path, device: str,
                 flip_average: bool = False):  # fmt: skip
        self.learner, self.device = learner, device
        self.flip_average = bool(flip_average and learner == "cnn")
        if learner == "filters":
            self.filters = filters_from_tensors(tensors, path)
        else:
            from bids_sr.selfsr.network import net_from_numpy

            try:
                self.net = net_from_numpy(tensors)
            except (KeyError, RuntimeError) as exc:
                raise ValueError(f"{path}: not a selfsr network ({exc})") from exc

    def apply(self, base, axis, other, n_lr, region, progress, reference=None) -> np.ndarray:
        if self.learner == "filters":
            return apply_plane_filters(base, self.filters, axis, other, n_lr, region=region,
                                       progress=progress)  # fmt: skip
        from bids_sr.selfsr.network import apply_plane_net

        return apply_plane_net(self.net, base, axis, other, n_lr, region=region,
                               device=self.device, progress=progress,
                               reference=reference, flip_average=self.flip_average)  # fmt: skip


def _learn(learner: str, training: np.ndarray, acquisition: Acquisition, factor: float,
           seed: int, device: str, progress: bool, iterations: int | None,
           prior: Path | None, recipe: SelfSRRecipe, reference: np.ndarray | None = None
           ) -> tuple[dict, dict]:  # fmt: skip
    """Train the per-scan model with ``recipe``: its tensors and a summary for the metadata.
    ``reference``: the guide at the acquired slices (``training``'s grid), CNN only."""
    if learner == "filters":
        filters = learn_plane_filters(training, acquisition, factor, seed=seed, progress=progress,
                                      min_detail_ratio=recipe.min_detail_ratio)  # fmt: skip
        return filters_to_tensors(filters), {"buckets": int(filters.spec.n_buckets),
                                             "patch": list(filters.patch)}  # fmt: skip
    import torch

    from bids_sr.selfsr.network import TrainSettings, state_to_numpy, train_plane_net

    init = None
    if prior is not None:  # fine-tune the slice-family weights at the recipe's fine_tune_lr
        tensors, _ = load_model(prior)
        init = {name: torch.from_numpy(np.asarray(value)) for name, value in tensors.items()}
    settings = TrainSettings.of(recipe, iterations, fine_tune=prior is not None)
    net, summary = train_plane_net(training, acquisition, factor, seed=seed, settings=settings,
                                   init=init, device=device, progress=progress,
                                   reference=reference, recipe=recipe)  # fmt: skip
    return state_to_numpy(net), {"iterations": summary["iterations"], "batch": settings.batch,
                                 "patch": settings.patch,
                                 "final_loss": round(summary["final_loss"], 6),
                                 "self_check_l1_ratio": round(summary["self_check_l1_ratio"], 4),
                                 "learned": summary["learned"],
                                 "attempts": summary["attempts"],
                                 "training_axes": summary["training_axes"]}  # fmt: skip


def _guide_check(guided: dict, mono: dict, min_improvement: float) -> dict:
    """Whether the guided model beat the unguided one on the scan's own pairs (the same
    pairs, the same fixed batches: :func:`bids_sr.selfsr.network.self_check`) by at least
    ``min_improvement`` (the recipe's ``guide_min_improvement``; brain PSNR on the synthetic
    scan of tests/test_selfsr_guided.py: 27.19 dB with a T2w-like guide, 22.59 with noise,
    22.63 with a constant, 22.72 unguided); the figures for the report."""
    with_guide = float(guided["self_check_l1_ratio"])
    without = float(mono["self_check_l1_ratio"])
    return {"guided_l1_ratio": with_guide, "mono_l1_ratio": without,
            "min_improvement": min_improvement,
            "used": bool(with_guide <= without * (1.0 - min_improvement))}  # fmt: skip


@dataclass
class _Found:
    """A per-scan model, learned now or reused from the model folder."""

    tensors: dict
    record: dict
    path: Path
    reused: bool
    learn_s: float | None


@dataclass
class _Learning:
    """What a per-scan model is learned from, and how; :meth:`model` finds or learns one."""

    lr: np.ndarray
    factors: Sequence[float]
    acquisition: Acquisition
    factor: float
    learner: str
    seed: int
    device: str
    progress: bool
    iterations: int | None
    prior: Path | None
    recipe: SelfSRRecipe
    guided_prior: Path | None = None

    def prior_for(self, guided: bool) -> Path | None:
        """The starting point of the unguided or guided model (None: from scratch)."""
        return (self.guided_prior or self.prior) if guided else self.prior

    def model(self, folder: Path, settings: dict, reference: np.ndarray | None) -> _Found:
        """The model of these settings (guided by ``reference`` when given, on the output
        grid) from ``folder`` under its key, learned and saved there when it is missing."""
        settings = dict(settings)
        prior = self.prior_for(reference is not None)
        settings["prior"] = checksum(prior) if prior else None
        if reference is not None:  # a guided model is also a function of the guide's gain
            from bids_sr.selfsr.network import REFERENCE_GAIN

            settings["reference_gain"] = REFERENCE_GAIN
        key = model_key(self.lr, settings, *([] if reference is None else [reference]))
        path = folder / f"selfsr-{self.learner}-{key[:24]}.safetensors"
        timing = path.with_name(path.name.replace(".safetensors", ".json"))
        if path.exists():
            try:
                tensors, record = load_model(path, key=key)
            except ForeignModelError as exc:  # another scan's model under this name
                LOGGER.warning("%s; not reused: retraining", exc)
            except ValueError as exc:  # truncated or corrupt (a killed copy, a full disk)
                LOGGER.warning("%s; discarding the cached model and learning it again", exc)
                path.unlink(missing_ok=True)
            else:
                return _Found(tensors, record, path, True, _learn_seconds(timing))
        start = time.perf_counter()
        axis = int(self.acquisition.slice_axis)
        # the acquired slices, brought to the output grid in-plane only: the training data
        inplane_factors = [1.0 if a == axis else float(self.factors[a]) for a in range(3)]
        training = upsample(self.lr, inplane_factors, order=3)
        guide = None
        if reference is not None:  # the guide as the acquired slices would show it
            guide = project(reference, self.acquisition, training.shape)
        tensors, record = _learn(self.learner, training, self.acquisition, self.factor,
                                 self.seed, self.device, self.progress, self.iterations,
                                 prior, self.recipe, guide)  # fmt: skip
        del training, guide
        save_model(tensors, path, {"key": key, **settings, **record})
        # the time goes beside the model, not in it: the model's checksum stays a function of
        # the input and the seed
        learn_s = round(time.perf_counter() - start, 2)
        write_json_atomic({"learn_s": learn_s}, timing)
        return _Found(tensors, {"key": key, **settings, **record}, path, False, learn_s)


def super_resolve_selfsr(
    lr: np.ndarray,
    factors: Sequence[float],
    acquisition: Acquisition | None,
    *,
    seed: int = 0,
    learner: str = "cnn",
    iterations: int | None = None,
    device: str = "auto",
    model_dir: str | os.PathLike | None = None,
    progress: bool = False,
    uncertainty: dict[str, np.ndarray] | None = None,
    reference: np.ndarray | None = None,
    reference_contrast: str | None = None,
    prior: Path | None = None,
    guided_prior: Path | None = None,
    recipe: SelfSRRecipe = SELFSR,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Super-resolve a normalised 2D scan along its slice axis; return HR and a report.

    ``learner``: ``cnn`` or ``filters``; ``iterations``: the CNN's training steps (None: its
    budget for the scan's size, :func:`bids_sr.selfsr.network.iterations_for`). ``recipe``:
    every other tunable constant (:class:`bids_sr.recipes.SelfSRRecipe`: budget, network,
    rates, collapse check, training axes, guide check); its hash keys the per-scan model, so
    a model learned with another recipe is never reused; so does the precision the CNN
    computes in (:mod:`bids_sr.precision`: bfloat16 on CPUs with AMX).
    ``model_dir``: where the per-scan model is saved and looked up (default: a temporary
    folder, removed afterwards). Pass a dict as ``uncertainty`` to receive the map
    (``"map"``: float32, ≥ 0, on the output grid). The report holds ``device``, ``precision``,
    ``weights`` (the model file; None without ``model_dir``), ``weights_sha256``,
    ``model_reused``, ``learner``, ``flip_average`` (the CNN averaged each plane's
    prediction with its mirror image's), ``prior`` and ``prior_sha256`` (the shipped slice-family
    starting point the CNN fine-tuned; None for the filters or without one), ``learn_s``
    (the time the model took to learn, also when it was reused), ``apply_s``,
    ``orientation_disagreement`` (mean of the map in the head), ``recipe`` (its fields) and
    ``recipe_sha256``.

    ``reference``: a registered HR guide of another contrast (T2w, FLAIR) on the output grid,
    normalised like ``lr`` (CNN only). The per-scan network then also sees the guide's plane:
    it learns on the scan's own slices — where the guide, projected onto the acquired slices
    with the acquisition model, is as sharp in-plane as the T1w targets — how the guide's
    edges relate to the T1w's, and applies that through-plane, where the guide is sharp and
    the T1w is not. ``prior``: the unguided CNN's starting point (default
    :func:`selfsr_prior` of the slice factor;
    ``selfsr-fast`` passes :func:`fast_prior` of its slice factor). A guided CNN starts from
    the guided prior (``guided_prior``, default :func:`guided_prior_of` the unguided one) where
    that file exists and
    ``reference_contrast`` (the guide's BIDS suffix) is one of
    :data:`GUIDED_PRIOR_CONTRASTS`, else from the unguided prior with the guide's weights at
    zero.
    The unguided model is learned as well (reused from ``model_dir`` when there); the report's
    ``guide_check`` compares the two on the scan's own pairs, and when the guide did not help
    (``used`` false) the result and the rest of the report are the unguided model's.
    """
    if learner not in LEARNERS:
        raise SelfSRError(f"unknown selfsr learner {learner!r}; choose from {', '.join(LEARNERS)}")
    if reference is not None and learner != "cnn":
        raise SelfSRError("a reference guides the selfsr CNN only, not the filters")
    lr = np.asarray(lr, dtype=np.float32)
    axis = _slice_axis(lr.shape, factors, acquisition)
    inplane = inplane_axes(axis)
    run_device = "cpu" if learner == "filters" else _torch_device(device)
    base = upsample(lr, factors, order=3)
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape != base.shape:
            raise SelfSRError(
                f"reference shape {reference.shape} differs from the output grid {base.shape}; "
                "register/resample it onto the output grid first"
            )
    factor = base.shape[axis] / lr.shape[axis]
    prior = Path(prior) if prior is not None else selfsr_prior(float(factors[axis]))
    prior = prior if learner == "cnn" and prior.exists() else None
    guided_prior = Path(guided_prior) if guided_prior is not None else guided_prior_of(prior)
    if not (learner == "cnn" and reference_contrast in GUIDED_PRIOR_CONTRASTS
            and guided_prior is not None and guided_prior.exists()):  # fmt: skip
        guided_prior = None
    # the CNN learns in bfloat16 on CPUs with AMX (bids_sr.precision): part of the model's key
    precision = _precision(learner, run_device)
    settings = {"recipe": recipe.sha256, "factors": [round(float(f), 6) for f in factors],
                "seed": int(seed), "learner": learner, "iterations": iterations,
                "acquisition": acquisition.describe(), "precision": precision}  # fmt: skip
    learning = _Learning(lr, factors, acquisition, factor, learner, seed, run_device, progress,
                         iterations, prior, recipe, guided_prior)  # fmt: skip
    guide_check = None
    with tempfile.TemporaryDirectory(prefix="selfsr-") as scratch:
        folder = Path(model_dir) if model_dir is not None else Path(scratch)
        found = learning.model(folder, settings, reference)
        if reference is not None:  # the guide must earn its place on the scan's own pairs
            mono = learning.model(folder, settings, None)
            guide_check = {**_guide_check(found.record, mono.record,
                                          recipe.guide_min_improvement),
                           "guided_weights_sha256": checksum(found.path),
                           # what the guided network fine-tuned (guided_prior_of the
                           # unguided prior, or that prior widened by a zero-weight guide
                           # input): part of its recipe
                           "guided_prior_sha256": found.record.get("prior"),
                           # and what the unguided twin it must beat fine-tuned
                           # (selfsr_prior of the slice factor)
                           "mono_prior_sha256": mono.record.get("prior"),
                           "guided_model_reused": found.reused,
                           "guided_learn_s": found.learn_s}  # fmt: skip
            if not guide_check["used"]:
                LOGGER.warning(
                    "the reference did not help on the scan's own slices (L1 error %.4f of "
                    "B-spline's with it, %.4f without): the unguided selfsr result is used",
                    guide_check["guided_l1_ratio"], guide_check["mono_l1_ratio"],
                )  # fmt: skip
                found, reference = mono, None
        model = _Model(learner, found.tensors, found.path, run_device, recipe.flip_average)
        sha = checksum(found.path)
        start = time.perf_counter()
        region = head_region(base)
        first = model.apply(base, axis, inplane[0], lr.shape[axis], region, progress, reference)
        second = model.apply(base, axis, inplane[1], lr.shape[axis], region, progress, reference)
        apply_s = time.perf_counter() - start
    del base
    prior = learning.prior_for(reference is not None)
    if reference is None:
        hr = fuse_orientations(first, second, inplane[0], inplane[1])
    else:  # guided, both orientations saw the guide's through-plane edges: the mean (module doc)
        hr = 0.5 * (first + second)
    spread = 0.5 * np.abs(first - second)
    del first, second
    if uncertainty is not None:
        uncertainty["map"] = spread.astype(np.float32, copy=False)
    # the CNN's self-check (the filters have none): the recipe's collapsed_ratio
    check = found.record.get("self_check_l1_ratio")
    prior_alone = found.record.get("iterations") == 0  # the shipped prior as is (selfsr-fast)
    if prior_alone and not found.record.get("learned", True):
        # the prior as shipped (selfsr-fast): nothing was learned, and the output is the
        # prior's, not B-spline's (at ×13 on 2 mm IXI scans a ratio above 1 came with
        # +0.35 to +1.2 dB over B-spline through-plane: few in-plane pairs are left to check)
        LOGGER.warning("selfsr-fast: the shipped prior predicts the scan's own slices no better "
                       "than B-spline (%.3f of its error on them)", check)  # fmt: skip
    elif not found.record.get("learned", True):
        LOGGER.warning("selfsr learned nothing from the scan's own slices (its error is %.3f "
                       "of B-spline's on them): the result is B-spline's", check)  # fmt: skip
    report = {
        "device": run_device,
        "precision": precision,
        "weights": str(found.path) if model_dir is not None else None,
        "weights_sha256": sha,
        "model_reused": bool(found.reused),
        "learner": learner,
        "guided": reference is not None,
        "prior": prior.name if prior else None,
        "prior_sha256": checksum(prior) if prior else None,
        "learn_s": found.learn_s,
        # the CNN averaged its predictions of each plane and its mirror image
        "flip_average": model.flip_average,
        # the model's L1 error on the scan's own pairs over B-spline's (< 1: it learned)
        "self_check_l1_ratio": check,
        "apply_s": round(apply_s, 2),
        # guided: both networks' errors on the scan's own pairs, and whether the guide was used
        "guide_check": guide_check,
        "orientation_disagreement": round(float(spread[region].mean()) if region.any() else 0.0,
                                          5),  # fmt: skip
        # how the per-scan model was learned: every tunable constant, and their hash
        "recipe": recipe.fields(),
        "recipe_sha256": recipe.sha256,
    }
    return hr.astype(np.float32, copy=False), report
