"""SMILES embedding is bounded (issue 21): the atom count (hydrogens included) is checked on the parsed molecule
before RDKit embeds it, and each embedding runs under a time limit; a molecule refused or given up on is
quarantined with the reason, and the chunk goes on."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("ray")

from scannet.data import smiles as smiles_module  # noqa: E402
from scannet.data.smiles import EmbeddingError, embed_smiles  # noqa: E402
from scannet_platform.screen.job import build_screen_config, run_screen  # noqa: E402
from tests.screening import tiny_model  # noqa: E402

LONG_CHAIN = "C" * 300  # 902 atoms with hydrogens: embedding it takes minutes without the checks


def test_atoms_are_counted_before_embedding(monkeypatch):
    from rdkit.Chem import AllChem

    def never(*args, **kwargs):
        raise AssertionError("embedding must not start for a molecule over the atom limit")

    monkeypatch.setattr(AllChem, "EmbedMolecule", never)
    start = time.perf_counter()
    with pytest.raises(EmbeddingError) as caught:
        embed_smiles(LONG_CHAIN, max_atoms=900)
    assert time.perf_counter() - start < 2
    assert str(caught.value) == "902 atoms with hydrogens, over the limit of 900 atoms per structure (--max-atoms)"


def test_embedding_runs_under_a_time_limit(monkeypatch):
    from rdkit.Chem import AllChem

    seen = []
    original = AllChem.EmbedMolecule

    def recording(molecule, parameters):
        seen.append((parameters.timeout, parameters.maxIterations))
        return original(molecule, parameters)

    monkeypatch.setattr(AllChem, "EmbedMolecule", recording)
    atoms = embed_smiles("CCO")
    assert len(atoms) == 9
    assert seen and all(0 < timeout <= smiles_module.EMBED_TIMEOUT_S and iterations > 0 for timeout, iterations in seen)
    assert smiles_module.EMBED_TIMEOUT_S <= 60


def test_an_embedding_over_the_time_limit_gives_up_with_the_reason(monkeypatch):
    monkeypatch.setattr(smiles_module, "EMBED_TIMEOUT_S", 1)
    start = time.perf_counter()
    with pytest.raises(
        EmbeddingError, match=r"^RDKit gave up embedding after 1 s \(the time limit per molecule; 452 atoms\)$"
    ):
        embed_smiles("C" * 150)  # 452 atoms: ETKDG needs far longer than a second
    assert time.perf_counter() - start < 6


def test_screen_quarantines_a_smiles_over_the_atom_limit_before_embedding(tmp_path, monkeypatch):
    from rdkit.Chem import AllChem

    original = AllChem.EmbedMolecule
    embedded = []

    def counting(molecule, parameters):
        embedded.append(molecule.GetNumAtoms())
        if molecule.GetNumAtoms() > 100:
            raise AssertionError("embedding started for a molecule over the atom limit")
        return original(molecule, parameters)

    monkeypatch.setattr(AllChem, "EmbedMolecule", counting)
    model = tiny_model(tmp_path / "model.pt")
    library = tmp_path / "lib.smi"
    library.write_text(f"CCO ethanol\n{LONG_CHAIN} chain\nC methane\n")
    config = {"inputs": [str(library)], "models": [str(model)], "out": str(tmp_path / "out")}
    config |= {"executor": "local", "mlflow": False, "progress": False, "max_atoms": 100}
    start = time.perf_counter()
    summary, _ = run_screen(build_screen_config(config))
    assert time.perf_counter() - start < 60
    assert (summary.n_screened, summary.n_quarantined) == (2, 1)
    quarantine = pq.read_table(tmp_path / "out" / "quarantine").to_pylist()
    assert [q["id"] for q in quarantine] == ["chain"]
    assert (
        quarantine[0]["reason"] == "902 atoms with hydrogens, over the limit of 100 atoms per structure (--max-atoms)"
    )
    assert 902 not in embedded
