"""The applicability domain (scannet.domain): built from a run folder, saved beside its checkpoint and refused for
another one; nearest-neighbour distances and the threshold against brute force; the three criteria; every
prediction of ``Predictor`` and every row of ``scannet predict`` carries it."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import scannet
from scannet.checkpoint import CheckpointError, save_model
from scannet.cli import main as cli_main
from scannet.data.structures_table import write_structures
from scannet.domain import (
    QUANTILE,
    ApplicabilityDomain,
    build_domain,
    build_run_domain,
    domain_path,
    load_domain,
    nearest_distances,
)
from scannet.model import SCANN
from scannet.model.config import preset
from scannet.train.run import prepare_run, run_local
from scannet.train.run_config import build_run_config
from tests.screening import tiny_model


def brute_force(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    difference = queries[:, None, :].astype(np.float64) - reference[None, :, :].astype(np.float64)
    return np.sqrt((difference**2).sum(-1)).min(axis=1)


def test_nearest_distances_equal_brute_force_over_several_blocks():
    rng = np.random.default_rng(0)
    queries, reference = rng.normal(size=(37, 6)), rng.normal(size=(23, 6))
    assert np.allclose(nearest_distances(queries, reference, block=8), brute_force(queries, reference), atol=1e-5)


def small_domain(seed: int = 0) -> tuple[ApplicabilityDomain, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference, validation = rng.normal(2.0, 3.0, size=(50, 4)), rng.normal(2.0, 3.0, size=(40, 4))
    training = [np.array([6, 6, 1, 1]), np.array([8, 1, 1]), np.array([6, 7, 8, 1])]  # 1-3 heavy atoms, H C N O
    return build_domain(reference, validation, training, "0" * 64), reference, validation


def test_the_threshold_is_the_95th_percentile_of_validation_distances():
    domain, reference, validation = small_domain()
    standard = (reference - reference.mean(0)) / reference.std(0)
    distances = brute_force((validation - reference.mean(0)) / reference.std(0), standard.astype(np.float16))
    assert QUANTILE == 0.95
    assert domain.threshold == pytest.approx(np.percentile(distances, 95), rel=1e-4)
    assert np.mean(domain.distances(validation) <= domain.threshold) >= 0.95


def test_unknown_elements_and_too_many_heavy_atoms_are_out_of_the_domain():
    domain, reference, _ = small_domain()
    assert (domain.elements, domain.heavy_atoms_range) == ((1, 6, 7, 8), (1, 3))
    close = reference[:4]  # training vectors themselves: distance ~0
    fluorine, four_heavy, fine, no_model = domain.assess(
        [np.array([9, 6, 1]), np.array([6, 6, 6, 6, 1]), np.array([6, 8, 1, 1]), np.array([6, 1])], close
    )[:3] + domain.assess([np.array([6, 1])])
    assert fluorine.unknown_elements == ("F",) and not fluorine.in_domain
    assert four_heavy.heavy_atoms == 4 and not four_heavy.unknown_elements and not four_heavy.in_domain
    assert fine.in_domain and fine.nn_distance < 0.01 and fine.relative_distance == fine.nn_distance / domain.threshold
    assert no_model.nn_distance is None and not no_model.in_domain
    far = domain.assess([np.array([6, 1])], reference[:1] + 100 * reference.std(0))[0]
    assert far.nn_distance > domain.threshold and not far.in_domain


def test_save_load_round_trip_and_refusal_for_another_checkpoint(tmp_path):
    domain, _, _ = small_domain()
    checkpoint = tiny_model(tmp_path / "model.pt")
    from scannet.io.provenance import sha256_file

    domain = ApplicabilityDomain(**{**domain.__dict__, "checkpoint_sha256": sha256_file(checkpoint)})
    path = domain.save(domain_path(checkpoint))
    assert path == tmp_path / "model.domain.npz"
    loaded = load_domain(checkpoint)
    assert (loaded.elements, loaded.heavy_atoms_range, loaded.threshold) == (
        domain.elements,
        domain.heavy_atoms_range,
        domain.threshold,
    )
    assert np.array_equal(loaded.reference, domain.reference) and loaded.reference.dtype == np.float16
    other = tiny_model(tmp_path / "other.pt", seed=1)
    with pytest.raises(CheckpointError, match="built for the checkpoint with SHA-256"):
        ApplicabilityDomain.load(path, other)
    domain_path(other).write_bytes(path.read_bytes())  # a stale domain beside a retrained model
    with pytest.raises(CheckpointError, match="rebuild it"):
        scannet.load(other)


def tiny_run_config(tmp_path, **overrides):
    """The config of a tiny run on 32 small molecules (1-3 heavy atoms, H C N O)."""
    structures = [molecule(name) for name in ("CH4", "H2O", "NH3", "CH3OH", "HCN", "C2H6", "CH3CHO", "C2H4")] * 4
    rng = np.random.default_rng(0)
    for k, atoms in enumerate(structures):
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        atoms.info = {"homo": -6.0 - 0.1 * k}
    data = write_structures(tmp_path / "data" / "structures.parquet", structures, units={"homo": "eV"})
    paths = {"data": str(data), "storage_path": str(tmp_path / "runs"), "data_cache": str(tmp_path / "cache")}
    return build_run_config(None, name="tiny", **paths, **overrides)


def test_a_training_run_writes_the_domain_and_shipping_copies_it(tmp_path):
    import importlib.util
    import json
    import sys
    from pathlib import Path

    config = tiny_run_config(tmp_path, model_preset="demo", threads=1, train={"epochs": 1, "batch_size": 16})
    summary = run_local(config)
    assert domain_path(summary.checkpoint).name == "best_model.domain.npz"
    assert scannet.load(summary.checkpoint).domain.heavy_atoms_range == (1, 3)

    ship_model = sys.modules.get("ship_model")  # maintainer tooling outside the package, loaded by its path
    if ship_model is None:
        tool = Path(__file__).resolve().parents[2] / "tools" / "ship_model.py"
        spec = importlib.util.spec_from_file_location("ship_model", tool)
        ship_model = sys.modules["ship_model"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ship_model)
    out = ship_model.package(Path(summary.run_dir), "tiny", "a test", 2, "recipe.yaml", out_root=tmp_path / "shipped")
    card = json.loads((out / "card.json").read_text())
    assert load_domain(out / "model.pt").threshold == card["domain"]["threshold"]
    assert 0 <= card["domain"]["test_subset_in_domain"] <= 1
    assert "## Applicability domain" in (out / "README.md").read_text()


@pytest.fixture()
def run_with_domain(tmp_path):
    """A tiny training run folder with an untrained model and the domain built from it."""
    prepared = prepare_run(tiny_run_config(tmp_path))
    torch.manual_seed(0)
    checkpoint = save_model(
        prepared.run_dir / "best_model.pt", SCANN(preset("demo")), prepared.worker.featurizer, {"units": {"homo": "eV"}}
    )
    build_run_domain(prepared.run_dir, checkpoint, reference_size=10).save(domain_path(checkpoint))
    return checkpoint, prepared


def test_a_domain_built_from_a_run_folder_is_loaded_with_its_model(run_with_domain):
    checkpoint, prepared = run_with_domain
    domain = load_domain(checkpoint)
    assert len(domain.reference) == 10 and domain.n_validation == prepared.featurized_sizes["val"]
    assert set(domain.elements) <= {1, 6, 7, 8} and domain.heavy_atoms_range[1] <= 3
    predictor = scannet.load(checkpoint)
    assert predictor.domain is not None
    big = molecule("C6H6")  # 6 heavy atoms: more than any training molecule
    chlorine = Atoms("ClH", positions=[[0, 0, 0], [1.3, 0, 0]])  # not in the model's vocabulary: an error row
    ok, benzene, hcl = predictor.predict([molecule("CH4"), big, chlorine])
    assert ok.ok and ok.domain.nn_distance is not None and ok.domain.heavy_atoms == 1
    assert benzene.ok and benzene.domain.heavy_atoms == 6 and not benzene.domain.in_domain
    assert not hcl.ok and hcl.domain.unknown_elements == ("Cl",) and hcl.domain.nn_distance is None
    pooled = predictor.pooled([predictor.featurize(molecule("CH4"), "CH4")])
    assert ok.domain.nn_distance == pytest.approx(float(domain.distances(pooled)[0]), rel=1e-5)


def test_predict_writes_the_domain_columns(run_with_domain, tmp_path, capsys):
    checkpoint, _ = run_with_domain
    code = cli_main(
        ["predict", "--model", str(checkpoint), "--out", str(tmp_path / "out"), "--smiles", "C methane"]
        + ["--smiles", "c1ccccc1 benzene"]
    )
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "out" / "predictions.csv") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    header = list(rows["methane"])
    assert header.index("homo_eV") < header.index("heavy_atoms") < header.index("in_domain") < header.index("ga_file")
    assert rows["benzene"]["heavy_atoms"] == "6" and rows["benzene"]["in_domain"] == "0"
    assert rows["methane"]["heavy_atoms"] == "1" and float(rows["methane"]["domain_distance"]) >= 0
    assert rows["methane"]["unknown_elements"] == ""


def test_predict_without_a_domain_has_no_domain_columns(tmp_path, capsys):
    checkpoint = tiny_model(tmp_path / "model.pt")
    assert cli_main(["predict", "--model", str(checkpoint), "--out", str(tmp_path / "out"), "--smiles", "C"]) == 0
    with open(tmp_path / "out" / "predictions.csv") as handle:
        assert "in_domain" not in next(csv.reader(handle))


def test_the_shipped_model_carries_its_domain():
    from scannet import pretrained
    from scannet.data.smiles import embed_smiles
    from scannet.io.provenance import sha256_file

    card, path = pretrained.card(), domain_path(pretrained.model_path())
    assert sha256_file(path) == card["domain"]["sha256"] and path.stat().st_size < 4_000_000
    predictor = scannet.load()
    assert predictor.domain.heavy_atoms_range == tuple(card["domain"]["heavy_atoms"]) == (1, 9)
    ibuprofen = predictor.predict_one(embed_smiles("CC(C)Cc1ccc(cc1)C(C)C(=O)O"))
    assert ibuprofen.domain.heavy_atoms == 15 and not ibuprofen.domain.in_domain
