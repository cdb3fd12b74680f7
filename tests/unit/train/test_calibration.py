"""The ensemble calibration math on known numbers (scannet.train.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from scannet.train.calibration import Coverage, coverage, gaussian_quantile, reliability, std_scale


def test_the_scale_is_the_root_mean_square_of_the_z_scores():
    errors = np.array([1.0, -2.0, 3.0, 0.0])
    std = np.array([1.0, 1.0, 1.0, 2.0])
    assert std_scale(errors, std) == pytest.approx(np.sqrt((1 + 4 + 9 + 0) / 4))


def test_the_scale_is_fitted_per_target_and_skips_rows_of_zero_spread():
    errors = np.array([[2.0, 1.0], [2.0, 5.0], [-2.0, 3.0]])
    std = np.array([[1.0, 0.5], [1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(std_scale(errors, std), [2.0, np.sqrt((4 + 9) / 2)])


def test_a_target_of_identical_members_is_refused():
    with pytest.raises(ValueError, match="identical members"):
        std_scale(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]]))


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        coverage(np.zeros(3), np.ones(4), 1.0)
    with pytest.raises(ValueError, match="empty"):
        std_scale(np.zeros(0), np.zeros(0))


def test_coverage_counts_errors_within_k_sigma():
    errors = np.array([0.5, -1.0, 1.5, -2.5])
    std = np.ones(4)
    assert coverage(errors, std, 1.0) == 0.5  # |e| <= sigma: 0.5 and 1.0
    assert coverage(errors, std, 2.0) == 0.75
    assert Coverage.of(errors, std) == Coverage(0.5, 0.75)


def test_scaling_a_gaussian_sample_to_its_true_width_gives_the_gaussian_coverages():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 2.0, 200_000)
    errors = rng.normal(0.0, 3.0 * std)  # the spread is 3 times too small
    scale = std_scale(errors, std)
    assert scale == pytest.approx(3.0, rel=0.01)
    assert Coverage.of(errors, scale * std).within_1sigma == pytest.approx(0.6827, abs=0.005)
    assert Coverage.of(errors, scale * std).within_2sigma == pytest.approx(0.9545, abs=0.005)
    curve = reliability(errors, scale * std, (0.5, 0.9))
    np.testing.assert_allclose(curve, [0.5, 0.9], atol=0.005)


def test_gaussian_quantiles():
    assert gaussian_quantile(0.6827) == pytest.approx(1.0, abs=1e-3)
    assert gaussian_quantile(0.95) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        gaussian_quantile(1.0)
