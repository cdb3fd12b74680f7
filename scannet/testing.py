"""A reusable harness of model checks: invariances, batching, GA normalisation.

Every model variant (and every shipped model) must pass :func:`run_all_checks`: the tests call it for
each variant, and users can call it on their own checkpoints. Each check raises ``AssertionError``
with the structure and the size of the deviation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from scipy.spatial.transform import Rotation

from scannet.predictor import Prediction, Predictor


def _predict_ok(predictor: Predictor, structures: Sequence[Atoms]) -> list[Prediction]:
    results = predictor.predict(list(structures))
    for result in results:
        assert result.ok, f"{result.name}: prediction failed: {result.error}"
    return results


def _assert_close(a: Prediction, b: Prediction, what: str, rtol: float, atol: float, perm: np.ndarray | None = None):
    for target in a.values:
        assert np.isclose(a.values[target], b.values[target], rtol=rtol, atol=atol), (
            f"{a.name}: {what} changed {target}: {a.values[target]!r} vs {b.values[target]!r}"
        )
    ga_b = b.ga_scores if perm is None else b.ga_scores[np.argsort(perm)]
    deviation = np.max(np.abs(a.ga_scores - ga_b))
    assert deviation <= atol + rtol * np.max(np.abs(a.ga_scores)), (
        f"{a.name}: {what} changed GA scores by {deviation:.3g}"
    )


def check_ga_normalised(predictor: Predictor, structures: Sequence[Atoms], atol: float = 1e-5) -> None:
    """GA scores are finite, non-negative, one per atom, and sum to 1 per structure."""
    for atoms, result in zip(structures, _predict_ok(predictor, structures)):
        assert len(result.ga_scores) == len(atoms), (
            f"{result.name}: {len(result.ga_scores)} GA scores for {len(atoms)} atoms"
        )
        assert np.all(np.isfinite(result.ga_scores)) and np.all(result.ga_scores >= 0), f"{result.name}: bad GA scores"
        assert abs(result.ga_scores.sum() - 1) <= atol, f"{result.name}: GA scores sum to {result.ga_scores.sum()}"
        assert all(np.isfinite(v) for v in result.values.values()), f"{result.name}: non-finite prediction"


def check_rigid_motion_invariance(
    predictor: Predictor, structures: Sequence[Atoms], seed: int = 0, rtol: float = 1e-4, atol: float = 1e-5
) -> None:
    """Predictions and GA scores do not change under a random rotation plus translation."""
    rng = np.random.default_rng(seed)
    moved = []
    for atoms in structures:
        rotation = Rotation.random(random_state=rng.integers(2**31)).as_matrix()
        copy = atoms.copy()
        copy.positions = atoms.positions @ rotation.T + rng.normal(scale=5.0, size=3)
        if np.any(atoms.pbc):
            copy.cell = np.asarray(atoms.cell) @ rotation.T
        moved.append(copy)
    for a, b in zip(_predict_ok(predictor, structures), _predict_ok(predictor, moved)):
        _assert_close(a, b, "a rotation + translation", rtol, atol)


def check_permutation_invariance(
    predictor: Predictor, structures: Sequence[Atoms], seed: int = 0, rtol: float = 1e-4, atol: float = 1e-5
) -> None:
    """Permuting the atoms leaves predictions unchanged and permutes the GA scores alike."""
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(len(atoms)) for atoms in structures]
    permuted = [atoms[perm] for atoms, perm in zip(structures, perms)]
    for a, b, perm in zip(_predict_ok(predictor, structures), _predict_ok(predictor, permuted), perms):
        _assert_close(a, b, "an atom permutation", rtol, atol, perm=perm)


def check_batching(predictor: Predictor, structures: Sequence[Atoms], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Each structure predicted alone equals the same structure inside a batch of all of them."""
    together = _predict_ok(predictor, structures)
    for atoms, in_batch in zip(structures, together):
        alone = _predict_ok(predictor, [atoms])[0]
        _assert_close(alone, in_batch, "batching", rtol, atol)
    reversed_batch = _predict_ok(predictor, list(structures)[::-1])[::-1]
    for a, b in zip(together, reversed_batch):
        _assert_close(a, b, "the order of the batch", rtol, atol)


def run_all_checks(predictor: Predictor, structures: Sequence[Atoms], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    check_ga_normalised(predictor, structures)
    check_rigid_motion_invariance(predictor, structures, rtol=rtol, atol=atol)
    check_permutation_invariance(predictor, structures, rtol=rtol, atol=atol)
    check_batching(predictor, structures, rtol=rtol, atol=atol)
