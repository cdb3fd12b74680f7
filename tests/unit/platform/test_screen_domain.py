"""A screen with a model that has an applicability domain: every prediction row carries the domain columns, the
filters use them, the top-k tables and summary.json count the rows outside (in-process executor: no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase.build import molecule

import scannet
from scannet.data.structures_table import write_structures
from scannet.domain import build_domain, domain_path
from scannet.io.provenance import sha256_file
from scannet_platform.screen.job import build_screen_config, run_screen
from tests.screening import candidates, tiny_model

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def model_with_domain(tmp_path_factory):
    """A tiny model whose domain was 'trained' on CH4, H2O, NH3 and HCN: 1-2 heavy atoms, elements H C N O."""
    path = tiny_model(tmp_path_factory.mktemp("model") / "model.pt")
    predictor = scannet.load(path)
    training = [molecule(name) for name in ("CH4", "H2O", "NH3", "HCN")]
    pooled = predictor.pooled([predictor.featurize(atoms, atoms.get_chemical_formula()) for atoms in training])
    build_domain(pooled, pooled, [a.numbers for a in training], sha256_file(path)).save(domain_path(path))
    return path


def screen(out, inputs, models, **settings):
    config = {"inputs": [str(i) for i in inputs], "models": [str(m) for m in models], "out": str(out)}
    config |= {"executor": "local", "mlflow": False, "progress": False, "chunk_size": 4, "top_k": 20} | settings
    return run_screen(build_screen_config(config))


def test_prediction_rows_carry_the_domain_and_the_filters_use_it(tmp_path, model_with_domain):
    molecules = candidates(10)  # CH3CHO C6H6 CH3CH2OH H2O CH4 HCN CH3COOH C4H4O CF4 NH3
    library = write_structures(tmp_path / "lib.parquet", molecules, {})
    summary, scan = screen(tmp_path / "out", [library], [model_with_domain])
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "predictions").to_pylist()}
    heavy = {m.info["id"]: int(np.count_nonzero(m.numbers > 1)) for m in molecules}
    assert {i: r["heavy_atoms"] for i, r in rows.items()} == heavy
    assert rows["c0008"]["unknown_elements"] == "F" and rows["c0008"]["in_domain"] == 0  # CF4
    assert rows["c0001"]["in_domain"] == 0 and rows["c0001"]["domain_distance"] > 0  # benzene: 6 heavy atoms
    outside = sum(r["in_domain"] == 0 for r in rows.values())
    assert outside >= 5 and scan.n_out_of_domain == outside
    record = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert record["n_out_of_domain"] == outside

    markdown = (tmp_path / "out" / "top-homo_eV-max.md").read_text()
    assert f"{outside} of the 10 rows shown, and {outside} of all 10 screened structures, lie outside" in markdown
    assert "| heavy_atoms | unknown_elements | domain_distance | in_domain |" in markdown
    html = (tmp_path / "out" / "top-homo_eV-max.html").read_text()
    assert "applicability domain" in html and "in_domain" in html

    _, inside = screen(tmp_path / "in", [library], [model_with_domain], filters=["in_domain == 1"])
    assert inside.n_passing == 10 - outside
    _, small = screen(tmp_path / "small", [library], [model_with_domain], filters=["heavy_atoms <= 2"])
    assert small.n_passing == sum(h <= 2 for h in heavy.values())


def test_an_ensemble_is_in_the_domain_only_when_every_member_says_so():
    from scannet.domain import DomainRow
    from scannet_platform.screen.chunk import ensemble_domain

    inside = DomainRow(4, (), 1.0, 2.0, True)  # distance 0.5 x its threshold
    outside = DomainRow(4, ("S", "Cl"), 3.0, 2.5, False)  # 1.2 x its threshold
    assert ensemble_domain([inside, outside]) == ("S,Cl", 1.2, 0)
    assert ensemble_domain([inside, inside]) == ("", 0.5, 1)
