"""Static-shape batches (CUDA graphs): padding to bucket shapes changes no real structure's result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from scannet.batch import collate_graphs
from scannet.featurizer import FeaturizerConfig, featurize
from scannet.model import SCANN, preset
from scannet.static_shapes import GRAPH_MASK, ShapeBuckets, pad_batch, real_output, real_targets
from scannet.train.trainer import rmse_loss
from tests.conftest import synthetic_graph

VARIANTS = {  # Z up to 20: the periodic batch holds Na, Si and Cl
    "scann+": preset("demo", targets=("a", "b"), max_atomic_number=20),
    "scann": preset("demo", targets=("a",), g_update=False, max_atomic_number=20),
}
TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}


@pytest.fixture(scope="module", params=list(VARIANTS))
def model(request) -> SCANN:
    torch.manual_seed(0)
    model = SCANN(VARIANTS[request.param]).eval()  # eval: dropout off, so both paths see the same function
    width = len(model.config.targets)
    model.set_target_statistics(torch.tensor([-6.5, 6.8])[:width], torch.tensor([0.6, 1.3])[:width])
    return model


@pytest.fixture(scope="module", params=["molecules", "periodic"])
def batch(request, molecules):
    if request.param == "molecules":
        graphs = [featurize(atoms) for atoms in molecules]
    else:
        crystals = [bulk("Si", "diamond", a=5.43) * (2, 1, 1), bulk("NaCl", "rocksalt", a=5.64)]
        graphs = [featurize(atoms, FeaturizerConfig.crystals()) for atoms in crystals]
    targets = np.random.default_rng(1).normal(size=(len(graphs), 2))
    return collate_graphs(graphs, targets)


def with_targets_of(model: SCANN, batch):
    return {**batch, "targets": batch["targets"][:, : len(model.config.targets)]}


def test_padded_batches_have_bucket_sizes_and_a_real_prefix(batch):
    padded = pad_batch(batch)
    buckets = ShapeBuckets()
    A, E, B = len(batch["numbers"]), len(batch["edge_center"]), len(batch["n_atoms"])
    A_pad, E_pad, B_pad = len(padded["numbers"]), len(padded["edge_center"]), len(padded["n_atoms"])
    assert (A_pad, E_pad, B_pad) == (buckets.size(A + 1), buckets.size(E), buckets.size(B + 1))
    assert A_pad > A and B_pad > B and E_pad >= E
    assert padded[GRAPH_MASK].tolist() == [True] * B + [False] * (B_pad - B)
    assert int(padded["n_atoms"].sum()) == A_pad and torch.all(padded["graph_index"][A:] == B)
    assert torch.all(padded["edge_center"][E:] == A) and torch.all(padded["edge_neighbor"][E:] == A)
    assert torch.all(padded["graph_index"].diff() >= 0) and torch.all(padded["edge_center"].diff() >= 0)
    for key in batch:
        assert torch.equal(padded[key][: len(batch[key])], batch[key]), key


def test_padded_predictions_and_ga_scores_equal_the_packed_ones(model, batch):
    with torch.no_grad():
        packed = model(batch)
        padded_batch = pad_batch(batch)
        padded = real_output(model(padded_batch), padded_batch)
    for field in ("prediction", "normalized", "ga_scores", "pooled"):
        torch.testing.assert_close(getattr(padded, field), getattr(packed, field), **TOLERANCE, msg=field)
    assert real_output(packed, batch) is packed  # a packed batch passes through


def loss_and_gradients(model: SCANN, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    output = real_output(model(batch), batch)
    target = (real_targets(batch) - model.target_mean) / model.target_std
    surrogate, rmse = rmse_loss(output.normalized, target)
    surrogate.backward()
    return rmse, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_padded_loss_and_gradients_equal_the_packed_ones(model, batch):
    batch = with_targets_of(model, batch)
    packed_loss, packed_grads = loss_and_gradients(model, batch)
    padded_loss, padded_grads = loss_and_gradients(model, pad_batch(batch))
    assert padded_loss == pytest.approx(packed_loss, rel=1e-6)
    assert padded_grads.keys() == packed_grads.keys()
    for name, grad in packed_grads.items():  # fp32 sums in another order: ~1e-6 of the tensor's largest entry
        scale = float(grad.abs().max())
        torch.testing.assert_close(padded_grads[name], grad, rtol=2e-6, atol=2e-6 * scale, msg=name)
    assert torch.equal(real_targets(pad_batch(batch)), batch["targets"])


def test_an_epoch_of_qm9_sized_batches_has_few_padded_shapes():
    rng = np.random.default_rng(0)
    # QM9's sizes: 3 to 29 atoms, 18 +- 3; 40 full batches of 128 and a last one of 17
    sizes = np.clip(np.rint(rng.normal(18, 3, 128 * 40 + 17)), 3, 29)
    graphs = [synthetic_graph(int(n), rng, degree=int(rng.integers(4, 12))) for n in sizes]
    batches = [collate_graphs(graphs[start : start + 128]) for start in range(0, len(graphs), 128)]

    def shape(batch):
        return len(batch["numbers"]), len(batch["edge_center"]), len(batch["n_atoms"])

    packed = {shape(b) for b in batches}
    padded = {shape(pad_batch(b)) for b in batches}
    full = {s for s in padded if s[2] > 64}
    assert len(packed) == len(batches)  # a new shape every step without padding
    # the full batches' sums vary by a few percent: a few ladder steps (1/16 of an octave) per dimension
    atom_sizes, edge_sizes, graph_sizes = ({s[k] for s in full} for k in range(3))
    assert len(atom_sizes) <= 3 and len(edge_sizes) <= 4 and len(graph_sizes) == 1
    assert len(padded) <= len(atom_sizes) * len(edge_sizes) + 1  # + the last batch


def test_bucket_sizes_follow_a_fixed_ladder():
    buckets = ShapeBuckets(steps_per_octave=4)
    assert [buckets.size(n) for n in (1, 4, 5, 8, 9, 11, 17, 100)] == [4, 4, 5, 8, 10, 12, 20, 112]
    with pytest.raises(ValueError, match="power of two"):
        ShapeBuckets(steps_per_octave=3)


@pytest.mark.slow  # compiles one graph per shape: ~20 s each on this CPU
def test_compiled_static_shapes_record_one_graph_per_bucket_shape():
    from scannet.static_shapes import compile_forward

    torch.manual_seed(0)
    model = SCANN(VARIANTS["scann+"]).eval()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    forward = compile_forward(model, static_shapes=True, device=torch.device("cpu"))
    rng = np.random.default_rng(2)
    structures = [[synthetic_graph(int(n), rng) for n in rng.integers(5, 20, 16)] for _ in range(3)]
    structures.append(structures[0][::-1])  # other molecules in each place, the same bucket shape
    batches = [pad_batch(collate_graphs(graphs)) for graphs in structures]
    shapes = {(len(b["numbers"]), len(b["edge_center"]), len(b["n_atoms"])) for b in batches}
    with torch.no_grad():
        for batch in batches:
            torch.testing.assert_close(forward(batch).prediction, model(batch).prediction, rtol=1e-5, atol=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == len(shapes) < len(batches)
