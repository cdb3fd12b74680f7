"""MLflow tracking without Ray: the model is logged as code (no pickle), its one checkpoint is recorded by
name and SHA-256 and checked on the way back, versions say what the model is, a training run name has one
MLflow run, epochs are logged live, plots carry their numbers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from ase.build import molecule

import scannet
from scannet.checkpoint import save_model
from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANN
from scannet.model.config import preset
from scannet.train.run import DatasetInfo
from scannet_platform.metric_names import mae_metric
from scannet_platform.tracking import plots, registry, results, runs
from scannet_platform.tracking.registry import CheckpointIntegrityError, ModelRecord

REPORT = {"homo": (1000.0, "meV")}
PICKLE_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def make_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_model(path, SCANN(preset("demo", targets=("homo",))), FeaturizerConfig.molecules(), {"run": "t"})


def history(epochs: int = 3) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / (e + 1),
            "val_mae": 0.5 / (e + 1),
            "val_mae_per_target": {"homo": 0.3 / (e + 1)},
        }
        | {"lr": 1e-3}
        for e in range(epochs)
    ]


def record(split_file: Path, mae: float) -> ModelRecord:
    return ModelRecord(
        run_name="unit",
        dataset="qm9",
        dataset_sha256="0123456789abcdef",
        targets=("homo",),
        units={"homo": "eV"},
        report=dict(REPORT),
        split_file=split_file,
        elements=("H", "C", "N", "O", "F"),
        featurizer_hash=FeaturizerConfig.molecules().content_hash(),
        model="SCANN+ (preset demo)",
        parameters=1234,
        epochs_run=3,
        best_epoch=2,
        test_mae={"homo": mae},
        test_evaluated=4,
        test_total=4,
        scannet_version=scannet.__version__,
        git_revision="abc",
    )


def log(root: Path, checkpoint: Path, run_name: str = "unit", offset: float = 0.0) -> tuple[str, str, float]:
    """A finished run with a model version; returns (run id, version, test MAE in meV)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    split = root / "split.json"
    split.write_text('{"train": [0], "val": [1], "test": [2, 3, 4, 5]}')
    truth = np.array([[-6.0], [-6.5], [-7.0], [-5.5]])
    pred = truth + np.array([[0.1], [-0.2], [0.05], [0.15]]) + offset
    mae = float(np.abs(pred - truth).mean() * 1000)
    run_id = runs.begin_run(
        tracking_uri=uri, experiment="unit", run_name=run_name, run_dir=root / run_name, params={"a": {"b": 1}}
    )
    version = results.log_results(
        tracking_uri=uri,
        run_id=run_id,
        history=history(),
        predictions=pred,
        targets=truth,
        record=record(split, mae),
        files=[split],
        checkpoint=checkpoint,
        registered_model="scannet-unit-homo",
    )
    runs.end_run(uri, run_id, "FINISHED")
    return run_id, version, mae


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    run_id, version, mae = log(root, make_checkpoint(root / "ckpt" / "best_model.pt", seed=0))
    return root, f"sqlite:///{root / 'mlflow.db'}", run_id, version, mae


def stored_model_folder(uri: str, version: str) -> Path:
    """The model's folder in the (local) artifact store, where an attacker with write access would edit."""
    client = mlflow.MlflowClient(uri)
    source = client.get_model_version("scannet-unit-homo", version).source  # models:/m-<id>
    return Path(client.get_logged_model(source.split("/")[-1]).artifact_location)


def test_the_model_is_code_not_a_pickle(logged):
    root, uri, _, version, _ = logged
    folder = stored_model_folder(uri, version)
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert "python_model.pkl" not in files and not any(f.endswith(".pkl") for f in files)
    assert {"mlflow_model.py", "artifacts/best_model.pt", "MLmodel", "requirements.txt"} <= files
    flavor = mlflow.models.Model.load(str(folder / "MLmodel")).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in flavor
    assert (root / "mlartifacts").is_dir()  # the artifacts live next to the store, not in the working directory


def test_a_planted_checkpoint_is_never_picked(logged):
    _, uri, _, version, _ = logged
    folder = stored_model_folder(uri, version)
    planted = folder / "artifacts" / "a.pt"
    torch.save({"format": "scannet-model", "planted": True}, planted)
    try:
        assert sorted(folder.rglob("*.pt"))[0] == planted  # what the old glob would have loaded
        checkpoint = registry.download_checkpoint(f"models:/scannet-unit-homo/{version}", uri)
        assert checkpoint.name == "best_model.pt"
        assert scannet.load(checkpoint).targets == ("homo",)
    finally:
        planted.unlink()


def test_a_tampered_checkpoint_is_refused(logged):
    _, uri, _, version, _ = logged
    stored = stored_model_folder(uri, version) / "artifacts" / "best_model.pt"
    original = stored.read_bytes()
    make_checkpoint(stored, seed=99)  # a valid checkpoint, other weights
    try:
        with pytest.raises(CheckpointIntegrityError, match="SHA-256"):
            registry.download_checkpoint(f"models:/scannet-unit-homo/{version}", uri)
        with pytest.raises(CheckpointIntegrityError, match="SHA-256"):
            registry.load_registered("models:/scannet-unit-homo@best", uri)
    finally:
        stored.write_bytes(original)


def test_tampered_model_code_is_refused_before_mlflow_runs_it(logged):
    _, uri, _, version, _ = logged
    code = stored_model_folder(uri, version) / "mlflow_model.py"
    original = code.read_text()
    code.write_text(original + "\nraise SystemExit('tampered code ran')\n")
    try:
        with pytest.raises(CheckpointIntegrityError, match="code"):
            registry.load_registered(f"models:/scannet-unit-homo/{version}", uri)
    finally:
        code.write_text(original)


@contextlib.contextmanager
def restored(folder: Path):
    """The stored model folder, put back as it was (every file) after the block tampers with it."""
    backup = folder.with_name(folder.name + ".backup")
    shutil.copytree(folder, backup)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)
        backup.rename(folder)


def _edit_mlmodel(folder: Path, edit) -> None:
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    edit(meta["flavors"]["python_function"])
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))


class _PickledPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pickle ran')",)


def _tamper(kind: str, folder: Path, marker: Path) -> None:
    """Change the stored model as an attacker with write access to the artifact store would."""
    evil = f"open({str(marker)!r}, 'w').write('evil code ran')\n"
    if kind == "model_code_path":  # MLflow runs <folder>/<basename of model_code_path>
        (folder / "evil.py").write_text(evil + "import mlflow\nmlflow.models.set_model(lambda x: x)\n")
        _edit_mlmodel(folder, lambda flavor: flavor.update(model_code_path="/elsewhere/evil.py"))
    elif kind == "loader_module+code":  # MLflow puts <folder>/<code> on sys.path and imports loader_module
        (folder / "code").mkdir()
        (folder / "code" / "evil_loader.py").write_text(evil + "def _load_pyfunc(*args):\n    return None\n")
        _edit_mlmodel(folder, lambda flavor: flavor.update(loader_module="evil_loader", code="code"))
    elif kind == "loader_module+pickle":  # the cloudpickle loader, under a name other than python_model.pkl
        (folder / "model.bin").write_bytes(cloudpickle.dumps(_PickledPayload(marker)))
        _edit_mlmodel(
            folder,
            lambda flavor: (
                flavor.pop("model_code_path"),
                flavor.update(loader_module="mlflow.pyfunc.model", python_model="model.bin"),
            ),
        )
    elif kind == "added file":
        (folder / "notes.txt").write_text("harmless, but not logged\n")
    elif kind == "changed file":
        (folder / "requirements.txt").write_text((folder / "requirements.txt").read_text() + "evil-package==1.0\n")
    elif kind == "removed file":
        (folder / "input_example.json").unlink()
    else:
        raise AssertionError(kind)


TAMPERS = ["model_code_path", "loader_module+code", "loader_module+pickle", "added file", "changed file", "removed file"]


@pytest.mark.parametrize("kind", TAMPERS)
def test_every_tampered_model_file_is_refused_before_mlflow_reads_it(logged, tmp_path, kind):
    """MLflow decides what code to run from MLmodel (loader_module, model_code_path, code) and the files it names:
    every file of the logged model is checked against the manifest recorded when it was logged."""
    _, uri, _, version, _ = logged
    marker = tmp_path / "EVIL_RAN"
    with restored(stored_model_folder(uri, version)) as folder:
        _tamper(kind, folder, marker)
        with pytest.raises(CheckpointIntegrityError) as refused:
            registry.load_registered(f"models:/scannet-unit-homo/{version}", uri)
    assert not marker.exists()
    message = str(refused.value)
    assert "\n" not in message and "manifest" in message and f"models:/scannet-unit-homo/{version}" in message
    registry.load_registered(f"models:/scannet-unit-homo/{version}", uri)  # put back: it loads


def test_the_refusal_names_what_changed(logged, tmp_path):
    _, uri, _, version, _ = logged
    with restored(stored_model_folder(uri, version)) as folder:
        _tamper("model_code_path", folder, tmp_path / "EVIL_RAN")
        with pytest.raises(CheckpointIntegrityError, match=r"\(added evil.py, changed MLmodel\)"):
            registry.load_registered(f"models:/scannet-unit-homo/{version}", uri)


@pytest.mark.parametrize("kind", ["model_code_path", "loader_module+code", "loader_module+pickle"])
def test_an_mlmodel_naming_other_code_is_refused_even_when_recorded(logged, tmp_path, kind):
    """Should the recorded manifest itself be rewritten to match, MLmodel must still name our loader and file."""
    _, uri, _, version, _ = logged
    client = mlflow.MlflowClient(uri)
    tags = client.get_model_version("scannet-unit-homo", version).tags
    marker = tmp_path / "EVIL_RAN"
    with restored(stored_model_folder(uri, version)) as folder:
        _tamper(kind, folder, marker)
        manifest = registry.model_manifest(folder)
        client.set_model_version_tag(
            "scannet-unit-homo", version, registry.MODEL_MANIFEST_SHA_TAG, registry.manifest_sha(manifest)
        )
        try:
            with pytest.raises(CheckpointIntegrityError, match="names other code"):
                registry.load_registered(f"models:/scannet-unit-homo/{version}", uri)
        finally:
            client.set_model_version_tag(
                "scannet-unit-homo", version, registry.MODEL_MANIFEST_SHA_TAG, tags[registry.MODEL_MANIFEST_SHA_TAG]
            )
    assert not marker.exists()


def test_a_version_without_a_recorded_manifest_is_refused(logged):
    _, uri, _, version, _ = logged
    client = mlflow.MlflowClient(uri)
    manifest = client.get_model_version("scannet-unit-homo", version).tags[registry.MODEL_MANIFEST_SHA_TAG]
    assert len(manifest) == 64
    client.delete_model_version_tag("scannet-unit-homo", version, registry.MODEL_MANIFEST_SHA_TAG)
    try:
        with pytest.raises(CheckpointIntegrityError, match="no recorded manifest"):
            registry.load_registered(f"models:/scannet-unit-homo/{version}", uri)
    finally:
        client.set_model_version_tag("scannet-unit-homo", version, registry.MODEL_MANIFEST_SHA_TAG, manifest)


def test_mlflow_loads_the_model_with_pickle_deserialization_off(logged, monkeypatch):
    _, uri, _, version, _ = logged
    seen = []
    real = mlflow.pyfunc.load_model
    monkeypatch.setattr(
        mlflow.pyfunc, "load_model", lambda *a, **k: seen.append(os.environ.get(PICKLE_SWITCH)) or real(*a, **k)
    )
    monkeypatch.setenv(PICKLE_SWITCH, "true")
    registry.load_registered(f"models:/scannet-unit-homo/{version}", uri)
    assert seen == ["false"] and os.environ[PICKLE_SWITCH] == "true"  # for the load only


def test_the_registered_pyfunc_predicts_from_plain_columns(logged):
    _, uri, _, version, _ = logged
    model = registry.load_registered(f"models:/scannet-unit-homo/{version}", uri)
    water = molecule("H2O")
    out = model.predict(pd.DataFrame({"numbers": [water.numbers.tolist()], "positions": [water.positions.tolist()]}))
    assert list(out.columns) == ["homo", "ga_scores", "error"]
    assert np.isfinite(out["homo"][0]) and abs(sum(out["ga_scores"][0]) - 1) < 1e-5 and out["error"][0] == ""
    signature = mlflow.models.get_model_info(f"models:/scannet-unit-homo/{version}").signature
    assert [c.name for c in signature.inputs.inputs][:2] == ["numbers", "positions"]


def test_a_version_says_what_the_model_is(logged):
    _, uri, run_id, version, mae = logged
    client = mlflow.MlflowClient(uri)
    mv = client.get_model_version("scannet-unit-homo", version)
    tags = mv.tags
    assert tags["targets"] == "homo" and tags["units"] == "homo=eV" and tags["report_units"] == "homo=meV"
    assert tags["dataset"] == "qm9" and tags["elements"] == "H C N O F" and tags["run_name"] == "unit"
    assert tags["test_structures"] == "4 of 4" and float(tags["test_mae_homo_meV"]) == pytest.approx(mae)
    assert len(tags["split_sha256"]) == 64 and tags["featurizer_hash"] == FeaturizerConfig.molecules().content_hash()
    assert (
        tags[registry.CHECKPOINT_PATH_TAG] == "artifacts/best_model.pt" and len(tags[registry.CHECKPOINT_SHA_TAG]) == 64
    )
    assert "test MAE" in mv.description.replace("Test MAE", "test MAE") and "install" in mv.description
    assert str(client.get_model_version_by_alias("scannet-unit-homo", "best").version) == version
    requirements = (stored_model_folder(uri, version) / "requirements.txt").read_text().split()
    assert all("==" in r for r in requirements) and not any(r.startswith("scannet") for r in requirements)
    assert {r.split("==")[0] for r in requirements} >= {"torch", "numpy", "ase", "mlflow"}
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test_mae_homo_meV"] == pytest.approx(mae)
    assert {m.step for m in client.get_metric_history(run_id, "val_mae_homo_meV")} == {1, 2, 3}


def test_plots_carry_the_logged_numbers(logged):
    root, uri, run_id, _, _ = logged
    client = mlflow.MlflowClient(uri)
    texts = json.loads(Path(client.download_artifacts(run_id, "plots/plots.json", str(root))).read_text())
    metric = client.get_run(run_id).data.metrics["test_mae_homo_meV"]
    assert texts["parity"]["titles"] == [f"homo: test MAE {metric:.4g} meV"] and texts["parity"]["n"] == 4
    assert texts["dpi"] >= 150 and texts["learning_curve"]["best_epoch"] == 3
    from PIL import Image

    for name in ("parity.png", "learning_curve.png"):
        with Image.open(client.download_artifacts(run_id, f"plots/{name}", str(root))) as image:
            assert round(image.info["dpi"][0]) >= 150


def test_parity_axes_are_square_with_identity_line_and_numbers():
    truth = np.array([[1.0], [2.0], [3.0], [4.0]])
    pred = truth + np.array([[0.1], [-0.1], [0.2], [0.0]])
    figure = plots.parity_figure(pred, truth, ["homo"], REPORT, {"homo": 100.0})
    axis = figure.axes[0]
    assert axis.get_xlim() == axis.get_ylim() and axis.get_aspect() == 1.0
    assert axis.get_title() == "homo: test MAE 100 meV"
    texts = " ".join(t.get_text() for t in axis.texts)
    assert "N = 4" in texts and "R² = 0.98" in texts
    line = [ln for ln in axis.lines if ln.get_label() == "y = x"][0]
    assert list(line.get_xdata()) == list(line.get_ydata())
    with pytest.raises(ValueError, match="differs"):
        plots.parity_figure(pred, truth, ["homo"], REPORT, {"homo": 250.0})  # not the points' MAE


def test_learning_curve_in_report_units_integer_epochs_best_marked_legend_outside():
    figure = plots.learning_curve_figure(history(4), REPORT, best_epoch=3)
    top, bottom = figure.axes
    figure.canvas.draw()
    assert top.get_ylabel() == "MAE (meV)" and "best epoch 4" in top.get_title()
    values = top.lines[0].get_ydata()
    assert values[0] == pytest.approx(300.0)  # 0.3 eV in meV
    assert all(float(t).is_integer() for t in bottom.get_xticks())
    for axis in (top, bottom):
        legend = axis.get_legend().get_window_extent()
        assert legend.x0 >= axis.get_window_extent().x1  # right of the data
        assert any(ln.get_label() == "best epoch 4" for ln in axis.lines)


def test_one_mlflow_run_per_training_run_and_no_duplicate_version(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "a" / "best_model.pt", seed=1)
    first_run, first_version, _ = log(tmp_path, checkpoint, run_name="again")
    second_run, second_version, _ = log(tmp_path, checkpoint, run_name="again")  # re-launched, same weights
    assert (second_run, second_version) == (first_run, first_version)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("unit").experiment_id
    assert len(client.search_runs([experiment], "tags.`scannet.run_name` = 'again'")) == 1
    assert client.get_run(first_run).data.tags[runs.LAUNCHES_TAG] == "2"
    better = make_checkpoint(tmp_path / "b" / "best_model.pt", seed=2)
    _, third_version, _ = log(tmp_path, better, run_name="again", offset=-0.02)  # new weights, lower MAE
    assert third_version == str(int(first_version) + 1)
    assert str(client.get_model_version_by_alias("scannet-unit-homo", "best").version) == third_version
    worse = make_checkpoint(tmp_path / "c" / "best_model.pt", seed=3)
    _, fourth_version, _ = log(tmp_path, worse, run_name="other", offset=0.5)
    assert (
        str(client.get_model_version_by_alias("scannet-unit-homo", "best").version) == third_version != fourth_version
    )


def test_a_run_left_running_by_a_killed_driver_is_marked_killed(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = (
        "import os, signal, sys\n"
        "from scannet_platform.tracking import runs\n"
        f"runs.begin_run(tracking_uri={uri!r}, experiment='unit', run_name='dead', run_dir={str(tmp_path)!r}, "
        "params={})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr
    client = mlflow.MlflowClient(uri)
    (left,) = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert left.info.status == "RUNNING"
    resumed = runs.begin_run(tracking_uri=uri, experiment="unit", run_name="dead", run_dir=tmp_path, params={})
    assert resumed == left.info.run_id
    assert "which is gone; marked KILLED" in capsys.readouterr().out
    assert client.get_run(resumed).info.status == "RUNNING"
    with pytest.raises(RuntimeError, match="being trained now"):  # this driver holds it now, and is alive
        runs.begin_run(tracking_uri=uri, experiment="unit", run_name="dead", run_dir=tmp_path, params={})


def test_the_epoch_callback_logs_to_mlflow_as_the_epoch_ends(tmp_path):
    from scannet_platform.train.driver import epoch_printer

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = runs.begin_run(tracking_uri=uri, experiment="unit", run_name="live", run_dir=tmp_path, params={})
    dataset = DatasetInfo("qm9", tmp_path / "structures.parquet", {"homo": "eV"})
    lines = tmp_path / "epochs.log"
    callback = cloudpickle.loads(
        cloudpickle.dumps(epoch_printer(dataset, ("homo",), lines, uri, run_id))
    )  # as Ray ships it
    metrics = {"epoch": 0, "epochs": 3, "train_loss": 0.9, "val_mae": 0.4, "lr": 1e-3, "val_mae_homo": 0.25}
    callback.after_report(None, [metrics | {"seconds": 2.0, "train_per_s": 50.0}], None)
    logged = mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    assert logged["val_mae_homo_meV"] == pytest.approx(250.0)
    assert logged["train_loss_standardized"] == pytest.approx(0.9) and logged["val_mae_standardized"] == 0.4
    assert [m.step for m in mlflow.MlflowClient(uri).get_metric_history(run_id, "lr")] == [1]
    assert lines.read_text().startswith("epoch    1/3  loss 0.9000  val MAE homo 250 meV")  # the driver prints it


def test_metric_names_carry_the_report_unit():
    assert mae_metric("val", "homo", "meV") == "val_mae_homo_meV"
    assert mae_metric("test", "e_form", "meV/atom") == "test_mae_e_form_meV_per_atom"
    assert mae_metric("val", "cv", "cal/(mol K)") == "val_mae_cv_cal_per_mol_K"
    assert mae_metric("val", "alpha", "Bohr^3") == "val_mae_alpha_Bohr3"
    assert mae_metric("val", "x", "") == "val_mae_x"


def test_the_model_file_needs_only_mlflow_and_scannet():
    code = registry.MODEL_CODE.read_text().split('"""', 2)[2]  # after the docstring
    assert "scannet_platform" not in code and "mlflow.models.set_model(" in code


def test_relative_stores_are_made_absolute_for_the_ray_train_controller(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the controller actor runs in another folder
    assert runs.normalized_uri("sqlite:///m.db") == f"sqlite:///{tmp_path.resolve() / 'm.db'}"
    assert runs.normalized_uri("mlruns") == str(tmp_path.resolve() / "mlruns")
    for uri in ("sqlite:////abs/m.db", "http://host:5000", "file:///abs/mlruns", "databricks"):
        assert runs.normalized_uri(uri) == uri


def test_the_driver_prints_the_epoch_lines_the_controller_appends(tmp_path, capsys):
    from scannet_platform.train.driver import follow

    log = tmp_path / "epochs.log"
    log.write_text("epoch    1/9  from an earlier launch\n")
    with follow(log, interval=0.05):
        with open(log, "a") as handle:
            handle.write("epoch    2/9  new\n")
            handle.flush()
        time.sleep(0.3)
        with open(log, "a") as handle:
            handle.write("epoch    3/9  last\n")
    assert capsys.readouterr().out.splitlines() == ["epoch    2/9  new", "epoch    3/9  last"]


def test_new_experiments_open_in_the_model_training_view(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment(runs.experiment_id(client, "kind", uri))
    assert experiment.tags[runs.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_the_checkpoint_hash_and_path_are_run_tags_not_parameters(logged):
    _, uri, run_id, _, _ = logged
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert not [key for key in run.data.params if "checkpoint" in key], "no checkpoint_* column in the runs table"
    assert run.data.tags[registry.CHECKPOINT_SHA_TAG] and run.data.tags[registry.CHECKPOINT_PATH_TAG]


def test_logging_and_loading_a_model_print_no_advice_and_no_registry_chatter(tmp_path, capfd):
    import warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        _, version, _ = log(tmp_path, make_checkpoint(tmp_path / "a" / "best_model.pt", seed=0))
        log(tmp_path, make_checkpoint(tmp_path / "b" / "best_model.pt", seed=1), run_name="second")
        registry.load_registered(f"models:/scannet-unit-homo/{version}", f"sqlite:///{tmp_path / 'mlflow.db'}")
    printed = capfd.readouterr()
    assert not [w for w in shown if "type hints" in str(w.message)]
    assert "already exists" not in printed.err + printed.out and "Created version" not in printed.err + printed.out
