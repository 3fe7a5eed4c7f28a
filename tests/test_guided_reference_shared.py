"""The shipped thick-slice guided models use their reference only where it helps
(``../shared/data``).

On the held-out pair openms_patient19 (T1w 1×1×4 slices, T2w or FLAIR at 1 mm, a 96³ centre
crop), ``srrecnn-t2w`` and ``srrecnn-flair`` must gain over their mono twin ``srrecnn`` with
the real reference, and must not lose more than 0.2 dB of brain PSNR to it when the
reference carries nothing: pure noise, or a constant (issue 14: it learned to ignore what
does not help).
"""

from pathlib import Path

import numpy as np
import pytest

from bids_sr.evaluation import evaluate_image
from bids_sr.image import load_volume
from bids_sr.weights_lookup import default_weights_path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_multicontrast"
T1W = SHARED / "openms_patient19_T1.nii.gz"
T2W = SHARED / "openms_patient19_T2.nii.gz"
FLAIR = SHARED / "openms_patient19_FLAIR.nii.gz"
#: method → (its reference, the smallest gain over mono with the real reference, dB); the
#: FLAIR model gained +0.85 dB here when it shipped (issue 14 asks +1 dB of the T2w model)
CASES = {"srrecnn-t2w": (T2W, 1.0), "srrecnn-flair": (FLAIR, 0.5)}


def _centre(data: np.ndarray, size: int = 96) -> np.ndarray:
    starts = [(n - size) // 2 for n in data.shape]
    return data[tuple(slice(s, s + size) for s in starts)]


def _brain_psnr(hr, affine, method: str, reference: np.ndarray | None = None) -> float:
    rows = evaluate_image(hr, affine, factors=(1, 1, 4), degradation="slice",
                          methods=[method], reference=reference, device="cpu")  # fmt: skip
    return next(row["psnr_brain"] for row in rows if row["method"] == method)


@pytest.mark.parametrize("method", list(CASES))
def test_guided_thick_slice_model_helps_and_ignores_useless_references(method):
    reference_file, min_gain = CASES[method]
    if not (T1W.exists() and reference_file.exists()):
        pytest.skip(f"../shared/data/real_multicontrast ({T1W.name}, {reference_file.name}) "
                    "is absent")
    if not default_weights_path(method, (1, 1, 4)).exists():
        pytest.skip(f"no shipped {method} weights at 1x1x4")
    volume = load_volume(T1W)
    hr = _centre(volume.data)
    t2w = _centre(load_volume(reference_file).data)
    mono = _brain_psnr(hr, volume.affine, "srrecnn")
    references = {
        "real": t2w,
        "noise": np.random.default_rng(0).random(t2w.shape).astype(np.float32) * t2w.max(),
        "constant": np.full(t2w.shape, float(t2w.mean()), np.float32),
    }
    gain = {name: _brain_psnr(hr, volume.affine, method, ref) - mono
            for name, ref in references.items()}  # fmt: skip
    assert gain["real"] >= min_gain, gain
    assert gain["noise"] >= -0.2, gain
    assert gain["constant"] >= -0.2, gain
