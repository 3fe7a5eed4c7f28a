"""Data consistency on the held-out validation scans (``../shared/data``; skipped without it).

The correction must not cost an isotropic ×2 result more than 0.2 dB of brain PSNR, for the
interpolation baseline and for the shipped network, on each validation image.
"""


import pytest
from conftest import SHARED_DATA, centre_crop

from bids_sr.evaluation import evaluate_image
from bids_sr.image import load_volume

SHARED = SHARED_DATA
IMAGES = {
    "chris": SHARED / "real_t1" / "chris_T1w.nii.gz",
    "openms19": SHARED / "real_multicontrast" / "openms_patient19_T1.nii.gz",
}
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(p.exists() for p in IMAGES.values()),
        reason="../shared/data (validation scans chris_T1w, openms_patient19) is absent",
    ),
]


@pytest.mark.parametrize("name", list(IMAGES))
def test_consistency_keeps_isotropic_x2_results(name):
    volume = load_volume(IMAGES[name])
    hr = centre_crop(volume.data)
    scores = {}
    for enforce in (False, True):
        rows = evaluate_image(hr, volume.affine, factors=2, degradation="gaussian",
                              methods=["srrecnn"], device="cpu", data_consistency=enforce)
        scores[enforce] = {row["method"]: row["psnr_brain"] for row in rows}
    for method in ("bspline", "srrecnn"):
        assert scores[True][method] >= scores[False][method] - 0.2, (method, scores)
