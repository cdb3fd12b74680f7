"""Checkpoints round-trip exactly; predictors report bad structures by name and keep going."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

import scannet
from scannet.checkpoint import FORMAT_VERSION, CheckpointError, load_model, save_model
from scannet.explain import GA_ARRAY, write_ga_xyz
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN, SCANNConfig
from scannet.predictor import Predictor
from scannet.structures import StructureError


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = SCANN(SCANNConfig(targets=("homo", "gap")))
    model.set_target_statistics(torch.tensor([-6.5, 6.8]), torch.tensor([0.6, 1.3]))
    featurizer = FeaturizerConfig.molecules(distance_threshold=3.5)
    path = save_model(tmp_path / "m" / "model.pt", model, featurizer, metadata={"units": {"homo": "eV"}})
    return path, model.eval(), featurizer


def test_round_trip_gives_identical_outputs(saved, molecules):
    path, model, featurizer = saved
    original = Predictor(model, featurizer).predict(molecules)
    loaded = scannet.load(path)
    assert loaded.featurizer_config == featurizer
    assert loaded.metadata == {"units": {"homo": "eV"}}
    assert loaded.model.config == model.config
    for a, b in zip(original, loaded.predict(molecules)):
        assert a.values == b.values
        np.testing.assert_array_equal(a.ga_scores, b.ga_scores)


def test_checkpoint_is_loadable_with_weights_only(saved):
    payload = torch.load(saved[0], weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION
    assert payload["model_config"]["elements"] == (1, 6, 7, 8, 9)
    torch.testing.assert_close(payload["state_dict"]["target_mean"], torch.tensor([-6.5, 6.8]))


def test_bad_checkpoint_files_are_named(tmp_path, saved):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt") as error:
        load_model(junk)
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)  # one line, no torch advice
    future = tmp_path / "future.pt"
    payload = torch.load(saved[0], weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, future)
    with pytest.raises(CheckpointError, match="newer"):
        load_model(future)


BAD_INPUTS = {
    "unknown-element": (Atoms("CS", positions=[[0, 0, 0], [1.8, 0, 0]]), "not in the model's vocabulary"),
    "empty": (Atoms(), "no atoms"),
    "nan-coordinates": (Atoms("CH", positions=[[0, 0, 0], [np.nan, 0, 0]]), "non-finite"),
    "inf-coordinates": (Atoms("CH", positions=[[0, 0, 0], [np.inf, 0, 0]]), "non-finite"),
    "huge-coordinates": (Atoms("CH", positions=[[0, 0, 0], [1e200, 0, 0]]), "beyond"),
    "overlapping": (Atoms("CHH", positions=[[0, 0, 0], [1.0, 0, 0], [1.05, 0, 0]]), "overlap"),
    "singular-cell": (
        Atoms("C2", positions=[[0, 0, 0], [0.7, 0.7, 0.7]], cell=[[2, 0, 0], [4, 0, 0], [0, 0, 2]], pbc=True),
        "not invertible",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_structures_are_named_and_the_rest_still_predicted(case, saved, molecules):
    bad, reason = BAD_INPUTS[case]
    bad = bad.copy()
    bad.info["name"] = f"bad-{case}"
    predictor = scannet.load(saved[0])
    batch = [molecules[0], bad, molecules[1]]
    results = predictor.predict(batch)
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].name == f"bad-{case}" and reason in results[1].error
    expected = predictor.predict([molecules[0], molecules[1]])
    assert results[0].values == pytest.approx(expected[0].values, rel=1e-6)
    assert results[2].values == pytest.approx(expected[1].values, rel=1e-6)
    with pytest.raises(StructureError, match=f"bad-{case}"):
        predictor.predict_one(bad)


def test_one_atom_structure_has_ga_one(saved):
    result = scannet.load(saved[0]).predict_one(Atoms("C", positions=[[0, 0, 0]]))
    assert result.ga_scores.tolist() == [1.0]
    assert all(np.isfinite(v) for v in result.values.values())


def test_ga_xyz_export_reads_back(tmp_path, saved, molecules):
    from ase.io import read

    result = scannet.load(saved[0]).predict_one(molecules[2])
    path = write_ga_xyz(tmp_path / "ga.xyz", molecules[2], result)
    back = read(path)
    np.testing.assert_allclose(back.arrays[GA_ARRAY], result.ga_scores, rtol=1e-7)
    np.testing.assert_allclose(back.positions, molecules[2].positions, atol=1e-7)  # extxyz keeps 8 decimals
    assert back.info["predicted_homo"] == pytest.approx(result.values["homo"])


@pytest.mark.slow
def test_a_compiled_predictor_predicts_as_the_eager_one(saved, molecules):
    """One compiled graph serves batches of every shape, down to one atom without neighbours (the lone carbon,
    alone in the last batch of 3): values and GA scores as the eager model's."""
    path = saved[0]
    eager = scannet.load(path).predict(molecules, batch_size=3)
    compiled = scannet.load(path).compile()
    assert compiled._forward is not compiled.model
    for a, b in zip(eager, compiled.predict(molecules, batch_size=3)):
        assert a.ok and b.ok, (a.error, b.error)
        assert b.values == pytest.approx(a.values, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(b.ga_scores, a.ga_scores, rtol=1e-4, atol=1e-6)


def test_a_static_shape_predictor_pads_every_batch_to_a_bucket_and_predicts_as_the_packed_one(saved, molecules, monkeypatch):
    """``compile(static_shapes=True)``: the model sees padded batches of bucket sizes (``torch.compile`` stubbed
    out here: compiling one graph per shape takes tens of seconds on CPU; tests/unit/model/test_static_shapes.py
    compiles them), and the values and GA scores are the packed batches' (the padding is dropped)."""
    from scannet.static_shapes import GRAPH_MASK, ShapeBuckets

    monkeypatch.setattr(torch, "compile", lambda model, **options: model)
    packed = scannet.load(saved[0]).predict(molecules, batch_size=3)
    predictor = scannet.load(saved[0]).compile(static_shapes=True)
    seen = []
    predictor.model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    padded = predictor.predict(molecules, batch_size=3)
    assert seen and all(GRAPH_MASK in batch for batch in seen)
    buckets = ShapeBuckets()
    for batch in seen:
        for n in (len(batch["numbers"]), len(batch["edge_center"]), len(batch["n_atoms"])):
            assert buckets.size(n) == n
    for a, b in zip(packed, padded):
        assert a.ok and b.ok, (a.error, b.error)
        assert b.values == pytest.approx(a.values, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(b.ga_scores, a.ga_scores, rtol=1e-5, atol=1e-7)


def test_a_predictor_that_cannot_compile_says_why(saved, monkeypatch):
    from scannet.typed_config import ConfigError

    def broken(model, **options):
        def forward(batch):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

        return forward

    monkeypatch.setattr(torch, "compile", broken)
    predictor = scannet.load(saved[0])
    with pytest.raises(ConfigError, match="compile: torch.compile failed on this machine: .*C\\+\\+ compiler"):
        predictor.compile()
    assert predictor._forward is predictor.model  # still usable, uncompiled


def test_bf16_predictions_stay_close_to_fp32_and_an_unknown_precision_is_refused(saved, molecules):
    """The shipped-model figures are in benchmarks/README.md; here: bf16 changes the numbers (it is really on),
    slightly, the GA scores still sum to 1, and the outputs are float32."""
    from scannet.typed_config import ConfigError

    fp32 = scannet.load(saved[0]).predict(molecules)
    bf16_predictor = scannet.load(saved[0], precision="bf16")
    bf16 = bf16_predictor.predict(molecules)
    differences = []
    for a, b in zip(fp32, bf16):
        assert a.ok and b.ok, (a.error, b.error)
        differences += [abs(a.values[t] - b.values[t]) for t in a.values]
        assert b.ga_scores.dtype == np.float32 and b.ga_scores.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(b.ga_scores, a.ga_scores, atol=0.05)
    scale = max(abs(v) for a in fp32 for v in a.values.values())
    assert 0 < max(differences) < 0.05 * scale
    with pytest.raises(ConfigError, match="precision: must be one of .*, got 'fp16'"):
        scannet.load(saved[0], precision="fp16")
