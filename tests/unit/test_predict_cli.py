"""`scannet predict` and `scannet info` against hostile input: names that try to escape the output folder,
duplicate names, absurd coordinates, unreadable files, broken checkpoints; the table's format and the
exit codes (0 all predicted, 1 some inputs failed, 2 user error / nothing predicted)."""

from __future__ import annotations

import csv
import os

import numpy as np
import pandas as pd
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import read, write

import scannet
from scannet.checkpoint import save_model
from scannet.cli import main as cli_main
from scannet.explain import GA_ARRAY, safe_file_stem, unique_file_stems
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN, preset
from scannet.structures import MAX_ABS_COORDINATE, StructureError, validate_structure

COLUMNS = ["name", "source_file", "frame", "smiles", "formula", "n_atoms", "homo_eV", "ga_file", "ga_frame", "error"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = SCANN(preset("demo", targets=("homo",)))
    metadata = {"units": {"homo": "eV"}, "dataset": "qm9-300", "test_mae": {"homo": 0.1234}, "run": "unit"}
    return save_model(tmp_path_factory.mktemp("model") / "model.pt", model, FeaturizerConfig(), metadata)


def predict(capsys, model, *argv):
    code = cli_main(["predict", "--model", str(model), *map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table(out):
    return pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])


def xyz(path, atoms):
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, atoms, format="extxyz")
    return path


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


# 1. Names never escape --out; GA file names are safe and unique ------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../../x", "_.._.._.._x"),
        ("/etc/passwd", "_etc_passwd"),
        ("sub/missing/dir/x", "sub_missing_dir_x"),
        (".hidden", "_.hidden"),
        ("..", "_.."),
        ("", "structure"),
        ("a b*c?\x00é", "a_b_c___"),
        ("H2O-1.ok_name", "H2O-1.ok_name"),
    ],
)
def test_safe_file_stem(name, expected):
    stem = safe_file_stem(name)
    assert stem == expected
    assert stem and not stem.startswith(".") and "/" not in stem and "\\" not in stem


def test_safe_file_stem_keeps_only_ascii_letters_digits_and_dot_underscore_dash():
    stem = safe_file_stem("é∂ ñ" + "x" * 500)
    assert set(stem) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert 0 < len(stem) <= 100


def test_unique_file_stems_are_deterministic():
    stems = unique_file_stems(["H2O", "H2O", "H2O-2", "h2o", "a/b", "a_b"])
    assert stems == ["H2O", "H2O-2", "H2O-2-2", "h2o-3", "a_b", "a_b-2"]  # case-insensitive file systems too
    assert unique_file_stems(["H2O", "H2O", "H2O-2", "h2o", "a/b", "a_b"]) == stems


def test_hostile_names_stay_inside_out(model_path, tmp_path, capsys):
    work = tmp_path / "work"
    absolute = tmp_path / "abs" / "owned"
    names = ["../../../escaped", str(absolute), "sub/missing/dir/x", ".hidden", "ok"]
    frames = []
    for name in names:
        atoms = molecule("H2O")
        atoms.info["name"] = name
        frames.append(atoms)
    source = xyz(work / "in" / "hostile.extxyz", frames)
    out = work / "out"
    code, _, err = predict(capsys, model_path, source, "--out", out)
    assert code == 0, err
    assert files_under(tmp_path) == sorted(
        ["work/in/hostile.extxyz", "work/out/predictions.csv"]
        + [
            f"work/out/{f}"
            for f in ["_.._.._.._escaped_ga.xyz", "sub_missing_dir_x_ga.xyz", "_.hidden_ga.xyz", "ok_ga.xyz"]
        ]
        + [f"work/out/{safe_file_stem(str(absolute))}_ga.xyz"]
    )
    rows = table(out)
    assert rows["name"].tolist() == names  # the table keeps the original names and maps them to the files
    for ga_file in rows["ga_file"]:
        assert (out / ga_file).resolve().parent == out.resolve() and not ga_file.startswith(".")


def test_duplicate_names_get_unique_ga_files(model_path, tmp_path, capsys):
    sources = [
        xyz(tmp_path / "mols" / "H2O.xyz", molecule("H2O")),
        xyz(tmp_path / "mols2" / "H2O.xyz", molecule("CH4")),
        xyz(tmp_path / "mols3" / "H2O-2.xyz", molecule("NH3")),
    ]
    out = tmp_path / "out"
    code, _, err = predict(capsys, model_path, *sources, "--out", out)
    assert code == 0, err
    rows = table(out)
    assert rows["ga_file"].tolist() == ["H2O_ga.xyz", "H2O-2_ga.xyz", "H2O-2-2_ga.xyz"]
    assert rows["source_file"].tolist() == [str(s) for s in sources]
    for source, ga_file in zip(sources, rows["ga_file"]):
        np.testing.assert_allclose(read(out / ga_file).positions, read(source).positions, atol=1e-7)


def test_a_symlink_in_out_is_not_followed_outside(model_path, tmp_path, capsys):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "H2O_ga.xyz").symlink_to(outside)
    sources = [xyz(tmp_path / "H2O.xyz", molecule("H2O")), xyz(tmp_path / "CH4.xyz", molecule("CH4"))]
    code, _, err = predict(capsys, model_path, *sources, "--out", out)
    assert code == 1
    assert outside.read_text() == "keep me"
    rows = table(out)
    assert "outside" in rows["error"][0] and "H2O.xyz" in err
    assert rows["ga_file"].isna()[0] and rows["ga_file"][1] == "CH4_ga.xyz"


# 2. One bad structure never kills the batch ---------------------------------------------------------


@pytest.mark.parametrize("value", [1e200, -1e7, 2 * MAX_ABS_COORDINATE])
def test_absurd_coordinates_are_rejected_with_a_reason(value):
    atoms = molecule("H2O")
    atoms.positions[1, 0] = value
    with pytest.raises(StructureError, match="beyond"):
        validate_structure(atoms, "far")
    crystal = Atoms("C", positions=[[0, 0, 0]], cell=np.eye(3) * 3, pbc=True)
    crystal.cell[0, 0] = value
    with pytest.raises(StructureError, match="cell"):
        validate_structure(crystal, "huge-cell")


def test_large_but_sane_coordinates_are_accepted():
    atoms = molecule("H2O")
    atoms.positions += 0.5 * MAX_ABS_COORDINATE
    validate_structure(atoms, "far-but-fine")


def test_absurd_coordinates_do_not_stop_the_run(model_path, tmp_path, capsys):
    huge = molecule("H2O")
    huge.positions[0] = [1e200, 0, 0]
    sources = [xyz(tmp_path / "good.xyz", molecule("CH4")), xyz(tmp_path / "huge.xyz", huge)]
    out = tmp_path / "out"
    code, _, err = predict(capsys, model_path, *sources, "--out", out)
    assert code == 1
    rows = table(out)
    assert rows["error"].isna().tolist() == [True, False]
    assert "beyond" in rows["error"][1] and np.isfinite(rows["homo_eV"][0])
    assert f"{sources[1]}: frame 0: structure 'huge': " in err


def test_any_exception_for_one_structure_is_recorded(model_path, molecules, monkeypatch):
    import scannet.predictor as predictor_module

    original = predictor_module.featurize_each

    def flaky(structures, config, names):  # fails every call that holds benzene or water
        if "C6H6" in names:
            raise RuntimeError("boom")
        if "H2O" in names:
            raise KeyError()
        return original(structures, config, names)

    monkeypatch.setattr(predictor_module, "featurize_each", flaky)
    results = scannet.load(model_path).predict(molecules[:4])
    assert [r.ok for r in results] == [True, False, True, False]
    assert results[1].error == "featurization failed: RuntimeError: boom"
    assert results[3].error.startswith("featurization failed: KeyError")


def test_a_model_failure_on_one_structure_spares_the_rest_of_its_batch(model_path, molecules, monkeypatch):
    predictor = scannet.load(model_path)
    expected = predictor.predict(molecules[:3])
    forward = predictor.model.forward

    def fragile(batch):
        if 12 in batch["n_atoms"].tolist():  # benzene
            raise RuntimeError("CUDA out of memory")
        return forward(batch)

    monkeypatch.setattr(predictor.model, "forward", fragile)
    results = predictor.predict(molecules[:3])
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error == "the model failed: RuntimeError: CUDA out of memory"
    assert results[0].values == pytest.approx(expected[0].values, rel=1e-5)
    assert results[2].values == pytest.approx(expected[2].values, rel=1e-5)


# 3. Unreadable inputs: named, with a reason; exit codes --------------------------------------------

SINGULAR_CIF = """data_x
_cell_length_a 2
_cell_length_b 2
_cell_length_c 2
_cell_angle_alpha 0
_cell_angle_beta 0
_cell_angle_gamma 0
loop_
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
C 0 0 0
"""


def _truncated(path):
    write(path, molecule("CH3CH2OH"))
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


UNREADABLE = {
    "singular.cif": (lambda p: p.write_text(SINGULAR_CIF), "AssertionError"),
    "garbled.xyz": (lambda p: p.write_text("3\n\nX y z\n"), "could not convert string to float"),
    "truncated.xyz": (_truncated, "Frame has 5 atoms, expected 9"),
    "mol.pdf": (lambda p: p.write_text("CCO\n"), "unsupported file format"),
    "missing.xyz": (lambda p: None, "no such file"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_file_is_named_with_a_reason_and_exits_1(case, model_path, tmp_path, capsys):
    make, reason = UNREADABLE[case]
    bad = tmp_path / case
    make(bad)
    good = xyz(tmp_path / "good.xyz", molecule("CH4"))
    out = tmp_path / "out"
    code, stdout, err = predict(capsys, model_path, good, bad, "--out", out)
    assert code == 1
    line = next(line for line in err.splitlines() if str(bad) in line)
    assert f"{bad}: cannot read: " in line and reason in line and "()" not in line
    rows = table(out)
    assert rows["name"].tolist() == ["good", case.split(".")[0]]
    assert np.isfinite(rows["homo_eV"][0]) and reason in rows["error"][1] and rows["source_file"][1] == str(bad)
    assert "predicted 1 of 2" in stdout


def test_frame_of_a_truncated_multi_frame_file_is_named(model_path, tmp_path, capsys):
    path = tmp_path / "multi.xyz"
    write(path, [molecule("H2O"), molecule("CH4"), molecule("NH3")])
    path.write_text(path.read_text()[:-40])
    out = tmp_path / "out"
    code, _, err = predict(capsys, model_path, path, "--out", out)
    assert code == 1
    assert f"{path}: frame 2: cannot read: " in err
    rows = table(out)
    assert rows["name"].tolist() == ["multi-0", "multi-1", "multi-2"]
    assert rows["error"].isna().tolist() == [True, True, False] and rows["frame"].tolist() == [0, 1, 2]


def test_no_readable_input_is_a_user_error(model_path, tmp_path, capsys):
    bad = tmp_path / "mol.pdf"
    bad.write_text("CCO\n")
    code, _, err = predict(capsys, model_path, bad, tmp_path / "missing.xyz", "--out", tmp_path / "out")
    assert code == 2
    assert err.splitlines()[-1] == "scannet: error: no input could be read (2 inputs)"
    assert not (tmp_path / "out").exists()


def test_nothing_predicted_is_a_user_error_with_the_table_written(model_path, tmp_path, capsys):
    source = xyz(tmp_path / "h2s.xyz", molecule("SH2"))
    code, _, err = predict(capsys, model_path, source, "--out", tmp_path / "out")
    assert code == 2
    assert "vocabulary" in err and err.splitlines()[-1].startswith("scannet: error: no structure could be predicted")
    assert "vocabulary" in table(tmp_path / "out")["error"][0]


def test_all_predicted_exits_0(model_path, tmp_path, capsys):
    code, stdout, err = predict(capsys, model_path, xyz(tmp_path / "w.xyz", molecule("H2O")), "--out", tmp_path / "o")
    assert code == 0 and err == "" and "predicted 1 of 1 structures" in stdout


class NotAllowed:
    pass


BAD_CHECKPOINTS = {
    "missing.pt": (None, "no such checkpoint file"),
    "junk.pt": (lambda p: p.write_bytes(b"not a checkpoint"), "not a PyTorch checkpoint"),
    "empty.pt": (lambda p: p.write_bytes(b""), "the file is empty"),
    "truncated.pt": ("truncate", "truncated or corrupted"),
    "pickled-class.pt": (lambda p: torch.save({"x": NotAllowed()}, p), "refuses"),
    "other.pt": (lambda p: torch.save({"a": 1}, p), "not a SCANNet model checkpoint"),
}


@pytest.mark.parametrize("command", ["predict", "info"])
@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_one_line_and_exit_2(case, command, model_path, tmp_path, capsys):
    make, reason = BAD_CHECKPOINTS[case]
    path = tmp_path / case
    if make == "truncate":
        data = model_path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif make is not None:
        make(path)
    good = xyz(tmp_path / "w.xyz", molecule("H2O"))
    argv = (
        ["info", str(path)]
        if command == "info"
        else ["predict", "--model", str(path), str(good), "--out", str(tmp_path / "out")]
    )
    code = cli_main(argv)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"scannet: error: {path}: ")
    assert reason in captured.err and "weights_only" not in captured.err and captured.out == ""


# 4. The table: quoted, with units and provenance; parquet; multi-frame GA; options -----------------


def test_csv_is_quoted_and_has_units_and_provenance(model_path, tmp_path, capsys):
    odd = molecule("CH4")
    odd.info["name"] = 'comma, "quote"'
    sources = [
        xyz(tmp_path / "odd.extxyz", odd),
        xyz(tmp_path / "h2s.xyz", molecule("SH2")),  # its error names elements with commas
        xyz(tmp_path / "two.extxyz", [molecule("H2O"), molecule("NH3")]),
    ]
    out = tmp_path / "out"
    code, _, _ = predict(capsys, model_path, *sources, "--out", out)
    assert code == 1
    with open(out / "predictions.csv", newline="") as handle:
        assert next(csv.reader(handle)) == COLUMNS
    rows = table(out)
    assert rows.columns.tolist() == COLUMNS
    assert rows["name"].tolist() == ['comma, "quote"', "h2s", "two-0", "two-1"]
    assert rows["formula"].tolist() == ["CH4", "H2S", "H2O", "H3N"]
    assert rows["n_atoms"].tolist() == [5, 3, 3, 4] and rows["frame"].tolist() == [0, 0, 0, 1]
    assert "['S'] are not in the model's vocabulary ['H', 'C', 'N', 'O', 'F']" in rows["error"][1]
    expected = scannet.load(model_path).predict([odd, molecule("H2O"), molecule("NH3")])
    assert rows["homo_eV"][[0, 2, 3]].tolist() == pytest.approx([r.values["homo"] for r in expected], rel=1e-12)
    assert np.isnan(rows["homo_eV"][1]) and rows["ga_file"].isna()[1]


def test_bare_target_names_without_units(tmp_path, capsys):
    path = save_model(tmp_path / "plain.pt", SCANN(preset("demo", targets=("homo", "gap"))), FeaturizerConfig())
    out = tmp_path / "out"
    code, _, _ = predict(capsys, path, xyz(tmp_path / "w.xyz", molecule("H2O")), "--out", out)
    assert code == 0 and table(out).columns.tolist()[6:8] == ["homo", "gap"]


def test_parquet_format(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    sources = [xyz(tmp_path / "w.xyz", molecule("H2O")), xyz(tmp_path / "h2s.xyz", molecule("SH2"))]
    code, _, _ = predict(capsys, model_path, *sources, "--out", out, "--format", "parquet")
    assert code == 1 and not (out / "predictions.csv").exists()
    frame = pd.read_parquet(out / "predictions.parquet")
    assert frame.columns.tolist() == COLUMNS
    assert frame["n_atoms"].tolist() == [3, 3] and frame["error"].isna().tolist() == [True, False]
    assert np.isfinite(frame["homo_eV"][0]) and frame["homo_eV"].isna()[1]


def test_ga_multiframe_writes_one_extxyz(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    sources = [
        xyz(tmp_path / "a" / "w.xyz", molecule("H2O")),
        xyz(tmp_path / "h2s.xyz", molecule("SH2")),
        xyz(tmp_path / "b" / "w.xyz", molecule("CH4")),
    ]
    code, _, _ = predict(capsys, model_path, *sources, "--out", out, "--ga-multiframe")
    assert code == 1
    assert files_under(out) == ["ga_scores.extxyz", "predictions.csv"]
    frames = read(out / "ga_scores.extxyz", index=":")
    assert [f.info["name"] for f in frames] == ["w", "w"] and [len(f) for f in frames] == [3, 5]
    assert [f.info["source_file"] for f in frames] == [str(sources[0]), str(sources[2])]
    rows = table(out)
    assert rows["ga_file"].tolist()[::2] == ["ga_scores.extxyz"] * 2 and rows["ga_frame"].tolist()[::2] == [0, 1]
    for frame in frames:
        assert frame.arrays[GA_ARRAY].sum() == pytest.approx(1.0, abs=1e-5)


def test_batch_size_device_and_progress(model_path, tmp_path, capsys):
    sources = [xyz(tmp_path / f"{n}.xyz", molecule(n)) for n in ("H2O", "CH4", "NH3", "C6H6", "CH3CH2OH")]
    values = {}
    for batch_size in (1, 2, 128):
        out = tmp_path / f"out{batch_size}"
        code, _, err = predict(
            capsys, model_path, *sources, "--out", out, "--batch-size", batch_size, "--device", "cpu"
        )
        assert code == 0, err
        values[batch_size] = table(out)["homo_eV"].tolist()
    assert values[1] == pytest.approx(values[128], rel=1e-5) and values[2] == pytest.approx(values[128], rel=1e-5)
    code = cli_main(["predict", "--model", str(model_path), *map(str, sources), "--out", str(tmp_path / "bar")])
    assert code == 0 and "5/5" in capsys.readouterr().err  # tqdm's bar over structures
    for option in (["--batch-size", "0"], ["--format", "json"]):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["predict", "--model", str(model_path), str(sources[0]), *option])
        assert exit_info.value.code == 2
    capsys.readouterr()
    code, _, err = predict(capsys, model_path, sources[0], "--out", tmp_path / "dev", "--device", "no-such-device")
    assert code == 2 and err.count("\n") == 1 and "no-such-device" in err


def test_predictor_moves_the_model_to_the_device(model_path):
    predictor = scannet.load(model_path, device="cpu")
    assert next(predictor.model.parameters()).device == torch.device("cpu")
    with pytest.raises(ValueError, match="no-such-device"):
        scannet.load(model_path, device="no-such-device")


# 5. scannet info -----------------------------------------------------------------------------------


def test_info_shows_symbols_units_test_mae_and_training_data(model_path, capsys):
    assert cli_main(["info", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "elements  : H, C, N, O, F" in out
    assert "targets   : homo (eV)" in out
    assert "test MAE  : homo 0.1234 eV" in out
    assert "trained on: qm9-300" in out
    assert "[1, 6, 7, 8, 9]" not in out
