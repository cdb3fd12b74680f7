"""What a screen writes: bad records quarantined without loss, duplicate ids reported, ensemble uncertainty,
top-k equal to a brute-force sort, resumable launches, OOM bisection (in-process executor: no Ray)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ase import Atoms
from ase.io import write

from scannet.data.structures_table import write_structures
from scannet.typed_config import ConfigError
from scannet_platform.screen.chunk import run_bisecting
from tests.screening import candidates, tiny_model
from tests.unit.platform.test_screen_inputs import assert_exactly_once, outputs, screen

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    a = tiny_model(folder / "a.pt", seed=0)
    b = tiny_model(folder / "b.pt", seed=1)
    twin = folder / "a-copy.pt"
    shutil.copy(a, twin)
    alpha = tiny_model(folder / "alpha.pt", targets=("alpha",), seed=2)
    return {"a": a, "b": b, "twin": twin, "alpha": alpha}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    path = tmp_path_factory.mktemp("library") / "lib.parquet"
    return write_structures(path, candidates(30), {})


def test_bad_records_are_quarantined_with_their_reason_and_the_rest_screened(tmp_path, models):
    good = candidates(12)
    bad = {
        "sulfur": Atoms("CS", positions=[[0, 0, 0], [1.8, 0, 0]]),
        "overlap": Atoms("CHH", positions=[[0, 0, 0], [1.0, 0, 0], [1.02, 0, 0]]),
        "empty": Atoms(),
        "nan": Atoms("CH", positions=[[0, 0, 0], [np.nan, 0, 0]]),
        "large": Atoms("C30", positions=np.arange(90, dtype=float).reshape(30, 3) * 1.5),
    }
    for name, atoms in bad.items():
        atoms.info["id"] = name
    mixed = good[:4] + list(bad.values())[:3] + good[4:8] + list(bad.values())[3:] + good[8:]
    table = write_structures(tmp_path / "lib.parquet", mixed, {})
    xyz = tmp_path / "frames.xyz"
    frames = candidates(2, seed=3)
    for k, atoms in enumerate(frames):
        atoms.info["id"] = f"x{k}"
    write(xyz, frames, format="extxyz")
    with open(xyz, "a") as handle:
        handle.write("not-a-count\nC 0 0 0\n")
    summary, scan = screen(tmp_path / "out", [table, xyz], [models["a"]], max_atoms=20)
    predictions, quarantine = outputs(tmp_path / "out")
    reasons = {r["id"]: r["reason"] for r in quarantine.to_pylist()}
    assert (summary.n_input, summary.n_screened, summary.n_quarantined) == (20, 14, 6)
    assert "not in the model's vocabulary" in reasons["sulfur"]
    assert "overlap" in reasons["overlap"] and "no atoms" in reasons["empty"] and "non-finite" in reasons["nan"]
    assert "30 atoms, over the limit of 20" in reasons["large"]
    assert "expected an atom count" in reasons[f"{xyz}:2"]
    assert sorted(predictions["id"].to_pylist()) == sorted([m.info["id"] for m in good] + ["x0", "x1"])
    assert_exactly_once(tmp_path / "out", 20)
    assert [r["id"] for r in scan.quarantine_sample] == ["sulfur", "overlap", "empty", "nan", "large", f"{xyz}:2"]


def test_the_command_exits_0_with_quarantined_records_1_with_strict_and_2_for_a_missing_model(
    tmp_path, models, capsys
):
    from scannet.cli import main

    table = write_structures(
        tmp_path / "lib.parquet", [*candidates(3), Atoms("CS", positions=[[0, 0, 0], [2, 0, 0]])], {}
    )
    base = ["screen", str(table), "--local", "--no-mlflow", "--no-progress"]
    assert main([*base, "--model", str(models["a"]), "--out", str(tmp_path / "out")]) == 0
    assert "screened 3 of 4 structures, quarantined 1" in capsys.readouterr().out
    assert main([*base, "--model", str(models["a"]), "--out", str(tmp_path / "out"), "--strict"]) == 1  # resumes
    assert "screened 3 of 4 structures, quarantined 1" in capsys.readouterr().out
    assert main([*base, "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out2")]) == 2
    assert "missing.pt: no such checkpoint file" in capsys.readouterr().err


def test_without_a_model_the_shipped_default_model_screens(tmp_path, capsys):
    import scannet
    from scannet import pretrained
    from scannet.cli import main

    molecules = candidates(4)
    table = write_structures(tmp_path / "lib.parquet", molecules, {})
    assert main(["screen", str(table), "--local", "--no-mlflow", "--no-progress", "--out", str(tmp_path / "out")]) == 0
    assert f"model: the shipped {pretrained.DEFAULT_MODEL}" in capsys.readouterr().out
    predictions, _ = outputs(tmp_path / "out")
    rows = {r["id"]: r for r in predictions.to_pylist()}
    expected = scannet.load().predict(molecules)
    for atoms, result in zip(molecules, expected):
        for target in ("homo", "lumo", "gap"):
            assert rows[atoms.info["id"]][f"{target}_eV"] == pytest.approx(result.values[target], abs=1e-4)


def test_duplicate_ids_are_reported_and_every_row_kept(tmp_path, models):
    molecules = candidates(8)
    molecules[5].info["id"] = molecules[1].info["id"]  # c0001 twice
    molecules[7].info["id"] = molecules[6].info["id"] = "twin"
    table = write_structures(tmp_path / "lib.parquet", molecules, {})
    summary, scan = screen(tmp_path / "out", [table], [models["a"]], chunk_size=3)
    predictions, _ = outputs(tmp_path / "out")
    assert predictions.num_rows == 8 and summary.n_screened == 8
    assert (summary.n_duplicate_ids, summary.n_duplicate_rows) == (2, 4)
    assert [(d["id"], d["row"]) for d in scan.duplicates.to_pylist()] == [("c0001", 1), ("c0001", 5), ("twin", 6), ("twin", 7)]
    lines = (tmp_path / "out" / "duplicates.csv").read_text().splitlines()
    assert lines[0] == "reason,key,row,id,canonical_smiles,source,where" and len(lines) == 5
    assert lines[1].startswith("same id,c0001,1,c0001,")


def test_an_ensemble_gives_mean_and_standard_deviation(tmp_path, models, library):
    _, _ = screen(tmp_path / "a", [library], [models["a"]])
    _, _ = screen(tmp_path / "b", [library], [models["b"]])
    _, _ = screen(tmp_path / "ab", [library], [models["a"], models["b"]])
    _, _ = screen(tmp_path / "twins", [library], [models["a"], models["twin"]])
    read = {name: outputs(tmp_path / name)[0].sort_by("row") for name in ("a", "b", "ab", "twins")}
    single_a, single_b = read["a"]["gap_eV"].to_numpy(), read["b"]["gap_eV"].to_numpy()
    np.testing.assert_allclose(read["ab"]["gap_eV"].to_numpy(), (single_a + single_b) / 2, rtol=1e-6)
    np.testing.assert_allclose(read["ab"]["gap_eV_std"].to_numpy(), np.abs(single_a - single_b) / 2, rtol=1e-5)
    assert np.all(read["ab"]["gap_eV_std"].to_numpy() > 0) and np.all(read["ab"]["homo_eV_std"].to_numpy() > 0)
    assert np.all(read["twins"]["gap_eV_std"].to_numpy() == 0), "identical members: no spread"
    assert "gap_eV_std" not in read["a"].schema.names, "a single model has no uncertainty column"
    for ga in read["ab"]["ga_scores"].to_pylist():
        assert abs(sum(ga) - 1) < 1e-4, "the members' mean GA scores still sum to 1"


def test_an_ensemble_folder_and_a_second_target_model(tmp_path, models, library):
    folder = tmp_path / "study"
    folder.mkdir()
    members = []
    for k, name in enumerate(("a", "b")):
        shutil.copy(models[name], folder / f"member-{k:02d}.pt")
        members.append({"checkpoint": f"member-{k:02d}.pt", "trial_id": f"t{k}", "val_metric": 0.1 * k})
    (folder / "ensemble.json").write_text(json.dumps({"study": "s", "metric": "val", "members": members}))
    summary, _ = screen(tmp_path / "out", [library], [folder, models["alpha"]])
    predictions = outputs(tmp_path / "out")[0].sort_by("row")
    reference = outputs_of(tmp_path / "ref", library, [models["a"], models["b"]])
    np.testing.assert_allclose(predictions["gap_eV_std"].to_numpy(), reference["gap_eV_std"].to_numpy(), rtol=1e-6)
    assert {"alpha_Bohr^3", "ga_scores_homo_gap", "ga_scores_alpha"} <= set(predictions.schema.names)
    assert predictions["models"][0].as_py() == f"homo,gap=ensemble of 2 ({folder}); alpha={models['alpha']}"
    with pytest.raises(Exception, match="must hold ensemble.json"):
        screen(tmp_path / "bad", [library], [tmp_path])


def outputs_of(out, library, models):
    screen(out, [library], models)
    return outputs(out)[0].sort_by("row")


@pytest.mark.parametrize("rank, filters", [("gap:max", []), ("gap:min", ["homo between -10 10", "n_atoms >= 5"])])
def test_top_k_equals_a_brute_force_sort(tmp_path, models, rank, filters):
    table = write_structures(tmp_path / "lib.parquet", candidates(60, seed=4), {})
    summary, scan = screen(
        tmp_path / "out", [table], [models["a"]], chunk_size=7, top_k=9, rank=[rank], filters=filters
    )
    everything = outputs(tmp_path / "out")[0].to_pandas()
    passing = everything
    if filters:
        passing = everything[(everything.homo_eV.between(-10, 10)) & (everything.n_atoms >= 5)]
    ascending = rank.endswith("min")
    expected = passing.sort_values(["gap_eV", "row"], ascending=[ascending, True]).head(9)
    top = scan.tops["gap_eV"].to_pandas()
    assert top["row"].tolist() == expected["row"].tolist() and summary.n_passing == len(passing)
    stem = f"top-gap_eV-{rank.split(':')[1]}"
    csv_rows = (tmp_path / "out" / f"{stem}.csv").read_text().splitlines()
    assert len(csv_rows) == 10 and csv_rows[1].split(",")[1] == str(expected["row"].iloc[0])
    assert (tmp_path / "out" / f"{stem}.md").read_text().startswith("# Top 9 by gap_eV")
    assert (tmp_path / "out" / "plots" / "hist-gap_eV.png").stat().st_size > 1000


def test_a_launch_into_a_finished_folder_skips_it_and_a_missing_part_is_redone_once(tmp_path, models, library):
    out = tmp_path / "out"
    first, _ = screen(out, [library], [models["a"]])
    before = outputs(out)[0].sort_by("row")
    again, _ = screen(out, [library], [models["a"]])
    assert (again.n_chunks_skipped, again.screened_now, again.n_screened) == (first.n_chunks, 0, 30)
    (out / "predictions" / "part-000003.parquet").unlink()
    third, _ = screen(out, [library], [models["a"]])
    assert (third.n_chunks_skipped, third.screened_now) == (first.n_chunks - 1, 4)
    assert outputs(out)[0].sort_by("row").select(["row", "id", "gap_eV"]).equals(before.select(["row", "id", "gap_eV"]))
    assert_exactly_once(out, 30)
    with pytest.raises(ConfigError, match="holds a screen made with other models"):
        screen(out, [library], [models["b"]])


def test_a_refused_launch_leaves_the_staged_library_of_the_folder_untouched(tmp_path, models):
    write(tmp_path / "a.xyz", candidates(5), format="extxyz")
    write(tmp_path / "b.xyz", candidates(7, seed=5), format="extxyz")
    screen(tmp_path / "out", [tmp_path / "a.xyz"], [models["a"]])
    manifest = (tmp_path / "out" / "library" / "manifest.json").read_text()
    with pytest.raises(ConfigError, match="holds a screen made with other library"):
        screen(tmp_path / "out", [tmp_path / "b.xyz"], [models["a"]])
    assert (tmp_path / "out" / "library" / "manifest.json").read_text() == manifest
    again, _ = screen(tmp_path / "out", [tmp_path / "a.xyz"], [models["a"]])
    assert (again.n_input, again.screened_now) == (5, 0)


def test_a_batch_that_runs_out_of_memory_is_split_until_it_fits():
    import torch

    calls = []

    def run(items):
        calls.append(len(items))
        if len(items) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if any(key == 5 for key, _ in items):
            raise RuntimeError("a broken structure")
        return [key * 10 for key, _ in items]

    results, errors = {}, {}
    splits = run_bisecting(run, [(k, None) for k in range(8)], results, errors)
    assert results == {k: k * 10 for k in range(8) if k != 5}
    assert errors == {5: "the model failed: RuntimeError: a broken structure"}
    assert splits >= 3 and max(calls[1:]) <= 4


@pytest.mark.parametrize(
    "rule, message",
    [
        ("gap within 4 6", "COLUMN between LOW HIGH"),
        ("energy < 3", "unknown column 'energy'"),
        ("gap between 6 4", "lower bound 6 is above the upper bound 4"),
        ("gap < many", "'many' is not a number"),
    ],
)
def test_bad_filters_are_refused_with_the_reason(tmp_path, models, library, rule, message):
    with pytest.raises(ConfigError, match=message):
        screen(tmp_path / "out", [library], [models["a"]], filters=[rule])
    assert not (tmp_path / "out" / "predictions").exists()


def test_output_schema_keeps_units_and_provenance(tmp_path, models, library):
    screen(tmp_path / "out", [library], [models["alpha"]])
    schema = pq.read_schema(sorted((tmp_path / "out" / "predictions").glob("part-*.parquet"))[0])
    assert schema.field("alpha_Bohr^3").metadata == {b"unit": b"Bohr^3"}
    assert schema.field("ga_scores").type == pa.list_(pa.float32())
    assert schema.names[-4:] == ["models", "featurizer_hash", "code_version", "run_id"]


def test_a_bf16_screen_is_close_to_fp32_records_its_precision_and_cannot_resume_an_fp32_one(tmp_path, models, library):
    screen(tmp_path / "fp32", [library], [models["a"]])
    screen(tmp_path / "bf16", [library], [models["a"]], precision="bf16")
    fp32, bf16 = (outputs(tmp_path / name)[0].sort_by("row") for name in ("fp32", "bf16"))
    difference = np.abs(np.array(fp32["gap_eV"]) - np.array(bf16["gap_eV"]))
    assert 0 < difference.max() < 0.05 * (np.ptp(fp32["gap_eV"]) + 1e-3)
    assert all(m.endswith("[bf16]") for m in bf16["models"].to_pylist())
    assert not any("[bf16]" in m for m in fp32["models"].to_pylist())
    with pytest.raises(ConfigError, match="holds a screen made with other precision"):
        screen(tmp_path / "fp32", [library], [models["a"]], precision="bf16")
    with pytest.raises(ConfigError, match="precision: must be one of .*, got 'fp16'"):
        screen(tmp_path / "fp16", [library], [models["a"]], precision="fp16")
