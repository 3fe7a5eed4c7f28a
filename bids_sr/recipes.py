"""The per-method recipes: every tunable constant of an algorithm, in one frozen dataclass.

A recipe is a frozen dataclass of plain numbers whose :attr:`Recipe.sha256` is the sha256 of
a canonical JSON of its class name and fields. The hash stands for the recipe wherever a
result depends on it: it keys the per-scan model cache of ``selfsr`` (a changed recipe never
reuses a model learned with another) and goes into the output's sidecar (``RecipeSha256``,
with the fields as ``Recipe``), so an output says exactly how it was made. The defaults
(:data:`SELFSR`, :data:`REGISTRATION_QC`, :data:`AUTO_POLICY`) are the shipped behaviour;
functions take a recipe as a parameter with the default as its default value, so a test
builds a small one (``SelfSRRecipe(max_iterations=20)``) instead of patching module globals.

- :class:`SelfSRRecipe`: the per-scan training of :mod:`bids_sr.selfsr` (budget, network
  shape, learning rates, the collapse check, which in-plane axes give training pairs, the
  guide check of the guided methods).
- :class:`RegistrationQC`: when a rigid registration of a reference is good enough to guide
  (:mod:`bids_sr.registration`).
- :class:`AutoPolicy`: how ``auto`` reads the model cards' evidence (:mod:`bids_sr.cards.evidence`).

Part of the numerical core: imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """Base of the recipes: type checks of the fields, their canonical JSON and its hash.

    Fields annotated ``float`` are stored as floats (``10`` and ``10.0`` are one recipe, one
    hash); fields annotated ``int`` must be integers."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("float", float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise TypeError(f"{type(self).__name__}.{field.name} must be a number, "
                                    f"got {value!r}")  # fmt: skip
                object.__setattr__(self, field.name, float(value))
            elif field.type in ("int", int) and (isinstance(value, bool)
                                                 or not isinstance(value, int)):
                raise TypeError(f"{type(self).__name__}.{field.name} must be an integer, "
                                f"got {value!r}")  # fmt: skip

    def fields(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-able; what the sidecar records as ``Recipe``)."""
        return dataclasses.asdict(self)

    def canonical_json(self) -> str:
        """The class name and fields as JSON with sorted keys and no spaces: what is hashed."""
        return json.dumps({"recipe": type(self).__name__, "fields": self.fields()},
                          sort_keys=True, separators=(",", ":"))  # fmt: skip

    @property
    def sha256(self) -> str:
        """The sha256 (hex) of :meth:`canonical_json`: equal for equal recipes, in any
        process and on any machine."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


@dataclass(frozen=True)
class SelfSRRecipe(Recipe):
    """How ``selfsr`` learns per scan (:mod:`bids_sr.selfsr.method`, :mod:`.network`).

    Budget: :attr:`epochs` passes over the scan's training planes (both orientations),
    within [:attr:`min_iterations`, :attr:`max_iterations`] steps; 3000 steps of the shipped
    128-channel network are most of the 481 s selfsr took on a 256×256×48 clinical T1w on 2
    idle CPU cores in float32, and of the 75 s in bfloat16 on CPUs with AMX
    (:mod:`bids_sr.precision`). On chris at 1×1×3, 600 steps gained +0.42 dB over
    B-spline, 3000 +1.40, 6000 +1.65 (openms19: +0.60, +0.45, +0.39): 3000 is the budget.
    ``selfsr-fast`` (the cohort mode) takes :attr:`fast_iterations` steps from its prior
    (0: the prior alone; its own card holds its evidence).

    Network and batches: :attr:`batch` patches of :attr:`patch`² pixels; :attr:`width`
    channels (on chris at 1×1×3, from the prior, at full resolution: 32 channels +1.65 dB
    over B-spline, 64 channels +1.87 dB), :attr:`depth` layers, pixel-unshuffled by
    :attr:`unshuffle` (:class:`bids_sr.selfsr.network.PlaneNet`; a network fine-tuned from a
    prior keeps the prior's depth and unshuffle factor and is widened to :attr:`width`).
    Peak learning rate :attr:`lr` from scratch (1e-3 let the ReLUs die on 3 of 8 clinical
    scans and 3 of 5 seeds of one of them; 3e-4 trained all of them) and
    :attr:`fine_tune_lr` from the shipped prior (1e-4 gained less from the same 3000 steps:
    chris 1×1×3 +1.51 dB over B-spline against +1.65 at 3e-4, 1×1×5 +0.81 against +0.85,
    openms19 slices along axis 0 at ×3 +1.47 against +1.53).

    Collapse check: a trained network whose L1 error on its own training pairs is at least
    :attr:`collapsed_ratio` of the B-spline input's learned nothing (it collapsed to the
    identity) and is trained again from the same start at half the rate, at most
    :attr:`retries` times.

    Training pairs: an in-plane axis whose fine detail
    (:func:`bids_sr.selfsr.pairs.axis_detail`) is below :attr:`min_detail_ratio` of the
    other in-plane axis's was not acquired at the resolution its voxels claim (a reduced
    phase-encoding matrix, or an image resampled from slices along it) and gives no pairs.
    Ratios between the in-plane axes: the 26 scans of clinical_thick_slice 0.75-0.99; chris
    (isotropic 0.88 mm) 0.88-0.96; openms_patient19, resampled from 3 mm axial slices, 0.85
    with slices along axis 2 and 0.57 with slices along axis 0 (``experiments/truth_sharpness.py``).

    Mirror averaging: every per-scan CNN (the prior applied alone in ``selfsr-fast``, the
    fine-tuned network of ``selfsr``, the guided networks) predicts each plane and its
    mirror image along the in-plane axis, and averages the two (:attr:`flip_average`;
    :func:`bids_sr.selfsr.network.apply_plane_net`), for a second forward pass (a few
    seconds per scan). On the ``selfsr-fast`` records +0.01 to +0.04 dB on chris, +0.01 to
    +0.10 on openms19 and +0.013 to +0.020 on average over the 30 IXI validation subjects at
    ×3 to ×8 (every subject more); on the ``selfsr`` records +0.01 to +0.04 on chris, +0.02
    to +0.10 on openms19 and +0.006 to +0.018 on average over the IXI subjects at ×3 to ×13
    (every subject more or equal up to ×8); on the guided records +0.07 to +0.12.

    Guide check: a guided per-scan network is used only when its L1 error on the scan's own
    training pairs is at least :attr:`guide_min_improvement` below the unguided network's.
    On the synthetic scan of tests/test_selfsr_guided.py the ratio was 0.269 with a T2w-like
    guide, 0.334 with noise and 0.344 with a constant, against 0.329 unguided.
    """

    epochs: float = 10.0
    min_iterations: int = 100
    max_iterations: int = 3000
    fast_iterations: int = 0
    batch: int = 8
    patch: int = 48
    width: int = 128
    depth: int = 8
    unshuffle: int = 2
    lr: float = 3e-4
    fine_tune_lr: float = 3e-4
    collapsed_ratio: float = 0.995
    retries: int = 2
    min_detail_ratio: float = 0.7
    guide_min_improvement: float = 0.01
    flip_average: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.min_iterations <= self.max_iterations:
            raise ValueError(f"need 0 <= min_iterations <= max_iterations, got "
                             f"{self.min_iterations} and {self.max_iterations}")  # fmt: skip
        if min(self.batch, self.patch, self.width, self.depth, self.unshuffle) < 1:
            raise ValueError("batch, patch, width, depth and unshuffle must be at least 1")
        if self.fast_iterations < 0 or self.retries < 0:
            raise ValueError("fast_iterations and retries must not be negative")


@dataclass(frozen=True)
class RegistrationQC(Recipe):
    """When a rigid registration of a reference onto the T1w may guide super-resolution
    (:attr:`bids_sr.registration.RigidResult.usable`).

    :attr:`min_nmi`: the normalised mutual information (:mod:`bids_sr.registration`) below
    which a registration failed. Chosen from measurements at native resolution
    (``benchmarks/registration_quality.py``, four real same-subject pairs): correct
    registrations scored 1.036 (chris T1w ← thick-slice PD, whole head), 1.050 and 1.092
    (clinical sub-12 / sub-01 T1w ← T2w, 3 mm slices) and 1.112 (openms patient19 T1 ← T2,
    skull-stripped); the same results spoiled by a 40° rotation scored 1.002–1.020 and by a
    30 mm shift 1.001–1.009. 1.028 is the midpoint between the worst correct (1.036) and the
    best grossly wrong value (1.020); the margins are thin (±0.008), so the threshold catches
    gross failures. A T2w of a *different subject*, rigidly registered, scored 1.010, 1.012,
    1.024 and 1.030: most, not all, are rejected (BIDS entity matching, not this number,
    keeps other subjects' images out). :attr:`min_overlap`: the least fraction of the T1w
    foreground that the registered reference must cover.
    """

    min_nmi: float = 1.028
    min_overlap: float = 0.25


@dataclass(frozen=True)
class AutoPolicy(Recipe):
    """How ``auto`` reads the evidence of the model cards (:mod:`bids_sr.cards.evidence`).

    :attr:`factor_tolerance`: a record validates factors within this distance of its own;
    :attr:`inplane_tolerance`: the axes other than the SR axis of a 2D scan must be at most
    this factor; :attr:`min_gain_over_mono`: a guided model must beat its mono twin by at
    least this much (dB brain PSNR) on every image: re-runs of one per-scan validation on
    CPU differ by up to 0.02 dB, so a margin of that size is not evidence that the reference
    helped (and a guided run costs a second per-scan training or a reference registration).
    """

    factor_tolerance: float = 0.25
    inplane_tolerance: float = 1.05
    min_gain_over_mono: float = 0.1


#: The shipped recipes: what a run uses unless it is handed another.
SELFSR = SelfSRRecipe()
REGISTRATION_QC = RegistrationQC()
AUTO_POLICY = AutoPolicy()
