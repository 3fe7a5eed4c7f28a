"""Structure-tensor features and hashing of the gradient-filter learner."""

from __future__ import annotations

import numpy as np
import pytest

from bids_sr.gradfilter.buckets import BucketSpec, quantile_thresholds, symmetry_group
from bids_sr.gradfilter.features import (
    FEATURE_HALO,
    TENSOR_COMPONENTS,
    eig_sym3,
    local_features,
    structure_tensor,
)
from bids_sr.gradfilter.xp import get_backend

NP = get_backend("cpu")


def features_of(volume: np.ndarray):
    padded = np.pad(volume, FEATURE_HALO, mode="edge")
    tensor = structure_tensor(padded, NP.xp, NP.ndi)
    assert tensor.shape == (6,) + volume.shape
    return local_features(tensor.reshape(6, -1), np)


def planar_edge(normal, n: int = 24, width: float = 1.5) -> np.ndarray:
    normal = np.asarray(normal, float) / np.linalg.norm(normal)
    grid = np.mgrid[:n, :n, :n].astype(float) - (n - 1) / 2
    distance = np.tensordot(normal, grid, axes=1)
    return (1.0 / (1.0 + np.exp(-distance / width))).astype(np.float32)


def test_eig_matches_batched_eigh():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(2000, 3, 3))
    m = m @ m.transpose(0, 2, 1)
    m[:5] = np.eye(3)  # isotropic: no direction
    tensor = np.stack([m[:, i, j] for i, j in TENSOR_COMPONENTS])
    lam, v1 = eig_sym3(tensor, np)
    w, vectors = np.linalg.eigh(m)
    np.testing.assert_allclose(lam[::-1].T, w, atol=1e-9)
    cos = np.abs(np.einsum("in,ni->n", v1[:, 5:], vectors[5:, :, 2]))
    np.testing.assert_allclose(cos, 1.0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(v1, axis=0), 1.0)


@pytest.mark.parametrize(
    "phi_bin,theta_bin", [(0, 3), (2, 5), (5, 1), (7, 6)]
)
def test_planar_edge_lands_in_expected_angle_bin(phi_bin, theta_bin):
    spec = BucketSpec((8, 8, 3, 3), np.array([0.1, 0.2], np.float32),
                      np.array([0.1, 0.2], np.float32))
    phi = (phi_bin + 0.5) * np.pi / 8
    theta = (theta_bin + 0.5) * np.pi / 8
    normal = [np.cos(phi) * np.sin(theta), np.sin(phi) * np.sin(theta), np.cos(theta)]
    # the opposite normal is the same orientation and must hash identically (hemisphere fold)
    for sign in (1.0, -1.0):
        feats = features_of(planar_edge(np.multiply(sign, normal)))
        centre = slice(8, 16)
        idx = np.zeros((24, 24, 24), bool)
        idx[centre, centre, centre] = True
        idx = idx.ravel()
        phis, thetas = spec.angle_bins(feats.v1[:, idx], np)
        assert np.mean(phis == phi_bin) > 0.95
        assert np.mean(thetas == theta_bin) > 0.95


def test_coherence_high_on_edge_low_on_noise():
    edge = features_of(planar_edge([0.3, 0.5, 0.8]))
    noise = features_of(np.random.default_rng(1).normal(size=(24, 24, 24)).astype(np.float32))
    core = np.zeros((24, 24, 24), bool)
    core[8:16, 8:16, 8:16] = True
    core = core.ravel()
    assert np.median(edge.coherence[core]) > 0.9
    assert np.median(noise.coherence[core]) < 0.4
    assert np.median(edge.strength[core]) > 0


def test_structure_tensor_independent_of_slab_cut():
    volume = np.random.default_rng(2).random((20, 12, 14)).astype(np.float32)
    padded = np.pad(volume, FEATURE_HALO, mode="edge")
    whole = structure_tensor(padded, np, NP.ndi)
    top = structure_tensor(padded[: 7 + 2 * FEATURE_HALO], np, NP.ndi)
    np.testing.assert_allclose(top, whole[:, :7], rtol=1e-6, atol=1e-7)


def test_tertile_thresholds_split_in_thirds():
    values = np.random.default_rng(3).random(30000)
    cuts = quantile_thresholds(values, 3)
    assert cuts.shape == (2,)
    counts = np.bincount((values > cuts[0]).astype(int) + (values > cuts[1]).astype(int))
    assert np.all(np.abs(counts / values.size - 1 / 3) < 0.01)


def test_symmetry_remap_matches_features_of_transformed_image():
    """Bucket from the transformed orientation == bucket computed on the transformed image."""
    volume = planar_edge([0.2, 0.6, 0.75], n=20) + planar_edge([0.9, -0.1, 0.3], n=20)
    feats = features_of(volume)
    spec = BucketSpec((8, 8, 3, 3), quantile_thresholds(feats.strength, 3),
                      quantile_thresholds(feats.coherence, 3))
    for sym in symmetry_group((2, 2, 2))[1:48:7]:
        moved = features_of(np.ascontiguousarray(sym.apply_to_array(volume)))
        # map the transformed image's buckets back onto the original grid: invert by index
        index = sym.apply_to_array(np.arange(volume.size).reshape(volume.shape)).ravel()
        back = np.empty(volume.size, dtype=np.int64)
        back[index] = spec.bucket_of(moved, np)
        remapped = spec.bucket(sym.transform_orientation(feats.v1, np), feats.strength,
                               feats.coherence, np)
        assert np.mean(remapped == back) > 0.97


def test_symmetry_group_respects_anisotropic_factors():
    assert len(symmetry_group((2, 2, 2))) == 48
    group = symmetry_group((1, 1, 4))
    assert len(group) == 16
    assert all(g.perm[2] == 2 for g in group)
    assert group[0].perm == (0, 1, 2) and not any(group[0].flips)
