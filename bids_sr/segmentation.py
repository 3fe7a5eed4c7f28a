"""Tissue segmentation (GM/WM/CSF) of T1-weighted images and agreement between segmentations.

Part of the numerical core (never imports nipype or pybids). The evaluation uses it to
judge a super-resolved image by what users do next with it: segment it. The truth, each
super-resolved result and cubic B-spline are segmented with the *same* established method
and settings, and each result's segmentation is compared with the truth's (Dice per tissue,
GM volume error).

The segmentation is ANTs Atropos (Avants et al. 2011, *Neuroinformatics* 9:381) through
``antspyx``, an optional extra (``pip install bids_sr[seg]``): k-means initialisation with
3 classes inside the brain mask, an MRF smoothing of 0.2 over a 1-voxel neighbourhood and
5 EM iterations (Atropos's defaults in ANTsPy), with a fixed random seed so that the same
image always gets the same labels. K-means classes are ordered by mean
intensity, so on a T1-weighted image class 1 is CSF, 2 grey matter and 3 white matter.
Without ``antspyx`` :func:`atropos_available` is False and the evaluation leaves the
agreement columns empty; no other segmentation is substituted, so the figures always mean
the same thing.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import numpy as np

#: label values of :func:`segment_tissues` (0 is outside the mask)
TISSUES = {"csf": 1, "gm": 2, "wm": 3}
#: how to get the segmentation when antspyx is missing (logged once by the evaluation)
INSTALL_HINT = (
    "tissue agreement (Dice of GM/WM/CSF, GM volume error) needs ANTs Atropos: "
    "pip install 'bids_sr[seg]' (antspyx); its columns are n/a"
)
#: Atropos settings, the same for the truth and every result
ATROPOS_INIT = "kmeans[3]"
ATROPOS_MRF = "[0.2,1x1x1]"
ATROPOS_CONVERGENCE = "[5,0]"


def atropos_available() -> bool:
    """Whether ``antspyx`` (module ``ants``) can be imported, without importing it."""
    return importlib.util.find_spec("ants") is not None


def provenance() -> dict[str, str]:
    """What segmented the images, for a sidecar: software and version with the settings, or
    why the agreement columns are empty."""
    if not atropos_available():
        return {"TissueSegmentation": "not run: " + INSTALL_HINT}
    try:
        release = version("antspyx")
    except PackageNotFoundError:
        release = "unknown version"
    return {
        "TissueSegmentation": f"ANTs Atropos (antspyx {release}): -i {ATROPOS_INIT} "
        f"-m {ATROPOS_MRF} -c {ATROPOS_CONVERGENCE} -r 0, inside the brain mask; labels "
        "1 CSF, 2 GM, 3 WM",
    }


def segment_tissues(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    threads: int | None = None,
) -> np.ndarray:
    """Label ``image`` into CSF (1), GM (2) and WM (3) inside ``mask`` with ANTs Atropos.

    ``image`` is a T1-weighted 3D array, ``mask`` a boolean array of the same shape (the
    voxels to classify), ``spacing`` the voxel size in mm (the MRF neighbourhood is in
    voxels, but ANTs keeps the geometry). ``threads``: ITK threads (default: the
    ``OMP_NUM_THREADS`` setting, else 1), so a run honours ``--omp-nthreads``. Returns a
    uint8 array, 0 outside the mask. Raises ImportError when antspyx is not installed.
    """
    import ants  # optional extra; imported here so the core works without it

    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 3 or mask.shape != image.shape:
        raise ValueError(f"need a 3D image and a mask of its shape, got {image.shape}, "
                         f"{mask.shape}")  # fmt: skip
    if not mask.any():
        raise ValueError("the mask is empty: nothing to segment")
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, threads))
    spacing = tuple(float(s) for s in spacing)
    ants_image = ants.from_numpy(np.ascontiguousarray(image), spacing=spacing)
    ants_mask = ants.from_numpy(mask.astype(np.float32), spacing=spacing)
    # ANTsPy writes Atropos's probability maps to tempfile's folder and never deletes them:
    # point that folder at one that is removed afterwards
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="bids_sr_atropos_") as scratch:
        tempfile.tempdir = scratch
        try:
            result = ants.atropos(
                a=ants_image, x=ants_mask, i=ATROPOS_INIT, m=ATROPOS_MRF,
                c=ATROPOS_CONVERGENCE, r=0,  # r=0: fixed seed, the same labels every run
            )  # fmt: skip
        finally:
            tempfile.tempdir = previous
        labels = result["segmentation"].numpy().astype(np.uint8)
    labels[~mask] = 0
    return labels


def timed_segmentation(
    image: np.ndarray, mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[np.ndarray, float, float]:
    """:func:`segment_tissues`, its wall-clock time and this process's CPU time (seconds;
    the CPU time says what it costs on a busy machine, where wall-clock time inflates)."""
    start, cpu = time.perf_counter(), time.process_time()
    labels = segment_tissues(image, mask, spacing)
    return labels, time.perf_counter() - start, time.process_time() - cpu


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A∩B| / (|A| + |B|) of two boolean masks; 1.0 when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def tissue_agreement(truth: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """How well ``labels`` (a result's segmentation) agrees with ``truth``'s, both from
    :func:`segment_tissues` on the same grid.

    Returns ``dice_gm``, ``dice_wm``, ``dice_csf`` (Dice per tissue) and
    ``gm_volume_error``: the signed GM volume difference in % of the truth's GM volume,
    100 · (V_result − V_truth) / V_truth (None when the truth has no GM). Voxel counts
    suffice since both label maps share one grid.
    """
    truth, labels = np.asarray(truth), np.asarray(labels)
    if truth.shape != labels.shape:
        raise ValueError(f"label maps differ in shape: {truth.shape} vs {labels.shape}")
    out: dict[str, float | None] = {
        f"dice_{name}": dice(truth == value, labels == value) for name, value in TISSUES.items()
    }
    gm_truth = int((truth == TISSUES["gm"]).sum())
    gm_result = int((labels == TISSUES["gm"]).sum())
    out["gm_volume_error"] = 100.0 * (gm_result - gm_truth) / gm_truth if gm_truth else None
    return {key: out[key] for key in ("dice_gm", "dice_wm", "dice_csf", "gm_volume_error")}
