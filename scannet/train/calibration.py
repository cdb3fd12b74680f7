"""Calibrating an ensemble's standard deviation and measuring how well it covers the errors.

An ensemble's spread (the standard deviation of its members' predictions) is not a calibrated uncertainty: members
trained alike agree more than their common error warrants. One factor ``s`` per target makes ``s * std`` one:

    s = sqrt(mean((error / std) ** 2))

fitted on the validation split (the maximum-likelihood factor of a Gaussian whose width is ``s * std``: after it
the scaled z-scores have a mean square of 1). Coverage is then checked on the test split: the fraction of
``|error| <= k * std`` for k = 1 and 2 (68.3 % and 95.4 % for a calibrated Gaussian), and a reliability curve:
for each expected central coverage p, the observed fraction of ``|error| <= z_p * std`` with ``z_p`` the
Gaussian quantile ``Phi^-1((1 + p) / 2)``.

Arrays are ``[N]`` (one target) or ``[N, T]`` (one value per target column); errors and standard deviations in the
same unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: The expected central coverages of a reliability curve.
RELIABILITY_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def _checked(errors: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    errors, std = np.asarray(errors, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if errors.shape != std.shape:
        raise ValueError(f"errors {errors.shape} and standard deviations {std.shape} must have the same shape")
    if len(errors) == 0:
        raise ValueError("no errors to calibrate on (empty split)")
    if (std < 0).any() or not np.isfinite(std).all() or not np.isfinite(errors).all():
        raise ValueError("standard deviations must be finite and >= 0, errors finite")
    return errors, std


def std_scale(errors: np.ndarray, std: np.ndarray) -> np.ndarray | float:
    """``sqrt(mean((error / std)^2))`` over the rows with ``std > 0`` (per column for ``[N, T]``); a column
    whose standard deviations are all 0 (identical members) cannot be scaled: ValueError."""
    errors, std = _checked(errors, std)
    positive = std > 0
    if not positive.any(axis=0).all():
        raise ValueError("every standard deviation of a target is 0 (identical members): no scale fits it")
    z2 = np.where(positive, (errors / np.where(positive, std, 1.0)) ** 2, 0.0)
    scale = np.sqrt(z2.sum(axis=0) / positive.sum(axis=0))
    return float(scale) if scale.ndim == 0 else scale


def coverage(errors: np.ndarray, std: np.ndarray, k: float) -> np.ndarray | float:
    """The fraction of rows with ``|error| <= k * std`` (per column for ``[N, T]``)."""
    errors, std = _checked(errors, std)
    within = (np.abs(errors) <= k * std).mean(axis=0)
    return float(within) if within.ndim == 0 else within


def gaussian_quantile(level: float) -> float:
    """``z`` with ``P(|Z| <= z) = level`` for a standard Gaussian ``Z`` (1.0 for 68.27 %, 1.96 for 95 %)."""
    if not 0 < level < 1:
        raise ValueError(f"coverage level {level}: must be in (0, 1)")
    return NormalDist().inv_cdf((1 + level) / 2)


def reliability(errors: np.ndarray, std: np.ndarray, levels=RELIABILITY_LEVELS) -> np.ndarray:
    """Observed coverage at each expected coverage level: ``[L]`` for ``[N]`` inputs, ``[L, T]`` for ``[N, T]``."""
    return np.array([coverage(errors, std, gaussian_quantile(p)) for p in levels])


@dataclass(frozen=True)
class Coverage:
    """How often ``|error|`` falls within 1 and 2 standard deviations (one target, one split)."""

    within_1sigma: float
    within_2sigma: float

    @classmethod
    def of(cls, errors: np.ndarray, std: np.ndarray) -> Coverage:
        return cls(float(coverage(errors, std, 1.0)), float(coverage(errors, std, 2.0)))

    def text(self) -> str:
        """``68 % / 95 %``: within 1 / within 2 standard deviations."""
        return f"{100 * self.within_1sigma:.0f} % / {100 * self.within_2sigma:.0f} %"
