"""Directional k-space fusion of selfsr's two orientation estimates."""

from __future__ import annotations

import numpy as np
import pytest

from bids_sr.selfsr.fusion import fuse_orientations


def _along(axis: int, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A zero-mean random profile that varies along ``axis`` only, broadcast to ``shape``."""
    profile = rng.standard_normal(shape[axis]).astype(np.float32)
    profile -= profile.mean()
    return np.broadcast_to(profile.reshape([-1 if a == axis else 1 for a in range(3)]),
                           shape).copy()


@pytest.mark.parametrize("shape", [(12, 10, 9), (9, 12, 10)])
def test_each_estimate_is_kept_where_the_spectrum_points_along_its_axis(shape):
    rng = np.random.default_rng(0)
    second = rng.standard_normal(shape).astype(np.float32)
    # the estimates differ by structure along axis 1 only: trust the one of axis 1 there
    first = second + _along(1, shape, rng)
    np.testing.assert_allclose(fuse_orientations(first, second, 1, 2), first, atol=1e-5)
    np.testing.assert_allclose(fuse_orientations(first, second, 2, 1), second, atol=1e-5)
    # along the slice axis (0) neither is favoured: the mean
    first = second + _along(0, shape, rng)
    np.testing.assert_allclose(fuse_orientations(first, second, 1, 2), 0.5 * (first + second),
                               atol=1e-5)


def test_agreeing_estimates_are_returned_unchanged_and_typed():
    volume = np.random.default_rng(1).random((8, 7, 6)).astype(np.float32)
    fused = fuse_orientations(volume, volume.copy(), 0, 1)
    assert fused.dtype == np.float32 and fused.shape == volume.shape
    np.testing.assert_allclose(fused, volume, atol=1e-6)


def test_bad_estimates_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        fuse_orientations(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), 0, 1)
    with pytest.raises(ValueError, match="different axes"):
        fuse_orientations(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), 1, 1)


def test_selfsr_returns_the_directional_fusion_of_its_two_orientations(monkeypatch):
    from bids_sr.acquisition import project, simulated_acquisition
    from bids_sr.selfsr import method, super_resolve_selfsr

    rng = np.random.default_rng(2)
    hr = np.zeros((24, 24, 24), np.float32)
    hr[4:20, 4:20, 4:20] = 0.5 + 0.5 * rng.random((16, 16, 16), np.float32)
    acq = simulated_acquisition((1.0, 1.0, 1.0), (1, 1, 3))
    lr = project(hr, acq, (24, 24, 8))
    estimates = []
    apply = method._Model.apply

    def keep(self, base, axis, other, *args, **kwargs):
        estimates.append((other, apply(self, base, axis, other, *args, **kwargs)))
        return estimates[-1][1]

    monkeypatch.setattr(method._Model, "apply", keep)
    out, _ = super_resolve_selfsr(lr, (1, 1, 3), acq, learner="filters")
    (first_axis, first), (second_axis, second) = estimates
    assert (first_axis, second_axis) == (0, 1) and not np.allclose(first, second)
    np.testing.assert_allclose(out, fuse_orientations(first, second, 0, 1), atol=1e-6)
