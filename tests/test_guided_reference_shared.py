"""The shipped guided models use their reference only where it helps (``../shared/data``).

On the held-out pair openms_patient19 (a 96³ centre crop; T1w 1×1×4 slices with a T2w or
FLAIR at 1 mm, and T1w ×2 Gaussian with the T2w at 1 mm), ``srrecnn-t2w`` and
``srrecnn-flair`` must gain over their mono twin ``srrecnn`` with the real reference, and
must not lose more than 0.2 dB of brain PSNR to it when the reference carries nothing:
pure noise, or a constant (issue 14: it learned to ignore what does not help).

Nor may a guided model import structures that exist only in the reference: the guide may
lend the T1w the reference's edges, not its structure. Four 8 mm spheres, bright or dark,
are inserted into the T2w inside the brain and each shipped guided model runs with the
original and the altered T2w (:func:`bids_sr.guidance.reference_only_structure_check`), on
the same crop simulated as a 1×1×4 rect-slice scan and as ×2 Gaussian (the cases of the two
shipped guided models). Bound: at most 6% of the inserted reference contrast may reach the
T1w output (mean over the spheres, both images robust-normalised; −24.4 dB). Measured
(seeds 0, 1, 2 of the sphere placement): srrecnn-t2w_x1x1x4 0.035–0.038 on openms19,
0.039–0.042 on mni152; srrecnn-t2w_x2x2x2 0.010–0.018 on openms19, 0.005–0.006 on mni152. A
guide that copies the reference's edges (bspline + half the reference's detail above a 1 mm
Gaussian, then data consistency) transfers 0.086 (slice) and 0.11 (×2): the bound tells it
apart.
"""


import numpy as np
import pytest
from conftest import SHARED_DATA, centre_crop
from scipy import ndimage

from bids_sr.acquisition import enforce_consistency
from bids_sr.cards.paths import default_weights_path
from bids_sr.evaluation import evaluate_image
from bids_sr.guidance import insert_structures, reference_only_structure_check, structure_transfer
from bids_sr.image import load_volume, voxel_sizes
from bids_sr.superresolve import super_resolve

SHARED = SHARED_DATA / "real_multicontrast"
T1W = SHARED / "openms_patient19_T1.nii.gz"
T2W = SHARED / "openms_patient19_T2.nii.gz"
FLAIR = SHARED / "openms_patient19_FLAIR.nii.gz"
#: measured 2026-12-04 for the shipped x2 pair: +0.55 dB with the real T2w, +0.31 with a
#: constant and +0.08 with noise (what the guided network's own training adds); a network
#: that ignored the reference would not reach the bound
MIN_GAIN_X2 = 0.4
#: case → (method, factors, degradation, its reference, the smallest gain over mono with the
#: real reference, dB); the FLAIR model gained +0.85 dB here when it shipped (issue 14 asks
#: +1 dB of the T2w models); the x2 case is the isotropic one (T1w x2 Gaussian, T2w at 1 mm)
CASES = {
    "srrecnn-t2w-1x1x4": ("srrecnn-t2w", (1, 1, 4), "slice", T2W, 1.0),
    "srrecnn-flair-1x1x4": ("srrecnn-flair", (1, 1, 4), "slice", FLAIR, 0.5),
    "srrecnn-t2w-x2": ("srrecnn-t2w", (2, 2, 2), "gaussian", T2W, MIN_GAIN_X2),
}


def _brain_psnr(hr, affine, method: str, factors, degradation: str,
                reference: np.ndarray | None = None) -> float:  # fmt: skip
    rows = evaluate_image(hr, affine, factors=factors, degradation=degradation,
                          methods=[method], reference=reference, device="cpu")  # fmt: skip
    return next(row["psnr_brain"] for row in rows if row["method"] == method)

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


@pytest.mark.parametrize("case", list(CASES))
def test_guided_model_helps_and_ignores_useless_references(case):
    method, factors, degradation, reference_file, min_gain = CASES[case]
    if not (T1W.exists() and reference_file.exists()):
        pytest.skip(f"../shared/data/real_multicontrast ({T1W.name}, {reference_file.name}) "
                    "is absent")
    if not default_weights_path(method, factors).exists():
        pytest.skip(f"no shipped {method} weights at {'x'.join(map(str, factors))}")
    volume = load_volume(T1W)
    hr = centre_crop(volume.data)
    t2w = centre_crop(load_volume(reference_file).data)
    mono = _brain_psnr(hr, volume.affine, "srrecnn", factors, degradation)
    references = {
        "real": t2w,
        "noise": np.random.default_rng(0).random(t2w.shape).astype(np.float32) * t2w.max(),
        "constant": np.full(t2w.shape, float(t2w.mean()), np.float32),
    }
    gain = {name: _brain_psnr(hr, volume.affine, method, factors, degradation, ref) - mono
            for name, ref in references.items()}  # fmt: skip
    assert gain["real"] >= min_gain, gain
    assert gain["noise"] >= -0.2, gain
    assert gain["constant"] >= -0.2, gain


MAX_TRANSFER = 0.06


def _simulated(factors, degradation: str) -> dict:
    """The evaluation protocol's LR T1w, normalised T2w, brain mask and acquisition."""
    volume = load_volume(T1W)
    arrays: dict = {}
    evaluate_image(centre_crop(volume.data), volume.affine, factors=factors, device="cpu",
                   degradation=degradation, methods=[],
                   reference=centre_crop(load_volume(T2W).data), arrays=arrays)  # fmt: skip
    return arrays


@pytest.mark.parametrize(
    ("factors", "degradation"), [((1, 1, 4), "slice"), ((2, 2, 2), "gaussian")]
)
def test_shipped_guided_models_do_not_import_reference_only_structures(factors, degradation):
    if not (T1W.exists() and T2W.exists()):
        pytest.skip(f"../shared/data/real_multicontrast ({T1W.name}, {T2W.name}) is absent")
    arrays = _simulated(factors, degradation)
    zooms = voxel_sizes(arrays["hr_affine"])
    common = {"mask": arrays["mask"], "zooms": zooms, "acquisition": arrays["acquisition"]}
    result = reference_only_structure_check(
        arrays["input"], factors, arrays["reference"], method="srrecnn-t2w", **common
    )
    assert result["spheres"] == 4
    assert result["transfer"] <= MAX_TRANSFER, result
    if degradation != "slice":
        return
    # the bound is not one every guide passes: copying the reference's edges fails it
    base = super_resolve(arrays["input"], factors, "bspline", acquisition=arrays["acquisition"])[0]

    def copy_edges(reference: np.ndarray) -> np.ndarray:
        detail = reference - ndimage.gaussian_filter(reference, 1.0)
        return enforce_consistency(base + 0.5 * detail, arrays["input"], arrays["acquisition"])

    altered, spheres = insert_structures(arrays["reference"], arrays["mask"], zooms)
    copied = structure_transfer(copy_edges, arrays["reference"], altered, spheres)
    assert copied["transfer"] > MAX_TRANSFER, copied
