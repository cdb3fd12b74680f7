"""The optional pool mask of the global attention: removing atoms from the pool, and only that."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scannet.batch import collate_graphs
from scannet.featurizer import featurize
from scannet.model import SCANN, preset

VARIANTS = {"scann+": preset("demo", targets=("a", "b")), "scann": preset("demo", g_update=False)}


@pytest.fixture(scope="module", params=list(VARIANTS))
def model(request) -> SCANN:
    torch.manual_seed(0)
    model = SCANN(VARIANTS[request.param]).eval()
    model.set_target_statistics(torch.tensor([-6.5, 6.8])[: len(model.config.targets)], torch.tensor([0.6, 1.3])[:1])
    return model


@pytest.fixture(scope="module")
def graphs(molecules):
    return [featurize(atoms) for atoms in molecules]


def run(model: SCANN, batch, mask=None):
    with torch.no_grad():
        return model(batch, pool_mask=mask)


def test_masking_no_atom_equals_the_unmasked_model_exactly(model, graphs):
    batch = collate_graphs(graphs)
    plain, unmasked = run(model, batch), run(model, batch, torch.ones(len(batch["numbers"]), dtype=torch.bool))
    for field in ("prediction", "normalized", "ga_scores"):
        assert torch.equal(getattr(plain, field), getattr(unmasked, field)), field
    split = model.readout(model.encode(batch), batch["graph_index"], len(graphs))
    assert torch.equal(split.prediction, plain.prediction)  # forward is readout(encode(batch)), nothing else


def test_masked_pool_renormalises_the_kept_ga_weights(model, graphs):
    batch = collate_graphs(graphs[:3])
    mask = torch.ones(len(batch["numbers"]), dtype=torch.bool)
    mask[[0, 2, 8]] = False  # two atoms of CH3CHO, one of C6H6
    out = run(model, batch, mask)
    full = run(model, batch)
    with torch.no_grad():
        keys = model.global_attention.key(model.encode(batch))  # [A, D]
    weights = torch.where(mask, full.ga_scores, torch.zeros_like(full.ga_scores))  # [A]
    index = batch["graph_index"]
    pooled = torch.zeros(3, keys.shape[1]).index_add_(0, index, weights[:, None] * keys)  # [B, D]
    pooled = pooled / torch.zeros(3).index_add_(0, index, weights)[:, None]
    with torch.no_grad():
        expected = torch.stack([head(pooled) for head in model.heads], 1) * model.target_std + model.target_mean
    torch.testing.assert_close(out.prediction, expected)
    assert torch.all(out.ga_scores[~mask] == 0)
    torch.testing.assert_close(torch.zeros(3).index_add_(0, index, out.ga_scores), torch.ones(3))
    assert not torch.allclose(out.prediction[:2], full.prediction[:2])  # the masked structures changed ...
    assert torch.equal(out.prediction[2], full.prediction[2])  # ... the untouched one did not


def test_masking_all_but_one_atom_gives_that_atoms_contribution(model, graphs):
    graph = graphs[0]  # CH3CHO, 7 atoms
    batch = collate_graphs([graph])
    with torch.no_grad():
        keys = model.global_attention.key(model.encode(batch))  # [A, D]
    for atom in range(graph.n_atoms):
        mask = torch.zeros(graph.n_atoms, dtype=torch.bool)
        mask[atom] = True
        out = run(model, batch, mask)
        with torch.no_grad():
            alone = torch.stack([head(keys[atom : atom + 1]) for head in model.heads], 1)  # [1, T]
        torch.testing.assert_close(out.normalized, alone)
        assert out.ga_scores.tolist() == mask.float().tolist()


def test_masking_is_invariant_to_atom_permutation(model, molecules):
    rng = np.random.default_rng(3)
    for atoms in molecules[:4]:
        n = len(atoms)
        mask = rng.random(n) < 0.5
        mask[rng.integers(n)] = True
        perm = rng.permutation(n)
        a = run(model, collate_graphs([featurize(atoms)]), torch.from_numpy(mask))
        b = run(model, collate_graphs([featurize(atoms[perm])]), torch.from_numpy(mask[perm]))
        torch.testing.assert_close(a.prediction, b.prediction, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.ga_scores[perm], b.ga_scores, rtol=1e-5, atol=1e-6)


def test_a_masked_structure_alone_equals_it_inside_a_batch(model, graphs):
    batch = collate_graphs(graphs[:4])
    mask = torch.ones(len(batch["numbers"]), dtype=torch.bool)
    mask[graphs[0].n_atoms + 1] = False  # an atom of the second structure
    together = run(model, batch, mask)
    alone = run(model, collate_graphs(graphs[1:2]), mask[graphs[0].n_atoms : graphs[0].n_atoms + graphs[1].n_atoms])
    torch.testing.assert_close(together.prediction[1], alone.prediction[0], rtol=1e-5, atol=1e-6)


def test_bad_masks_are_refused_with_the_reason(model, graphs):
    batch = collate_graphs(graphs[:2])
    n = len(batch["numbers"])
    empty = torch.ones(n, dtype=torch.bool)
    empty[graphs[0].n_atoms :] = False  # every atom of structure 1
    with pytest.raises(ValueError, match=r"removes every atom of structures \[1\]"):
        run(model, batch, empty)
    with pytest.raises(ValueError, match="bool tensor of shape"):
        run(model, batch, torch.ones(n))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        run(model, batch, torch.ones(n - 1, dtype=torch.bool))
