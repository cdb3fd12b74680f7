"""The MLflow model registry: a SCANNet checkpoint logged as code (``mlflow_model.py``: nothing is pickled),
versions with tags that say what the model is, the alias ``best``, and verified reading back.

The logged model's one checkpoint has a recorded name and SHA-256 (model version tags), checked by
:func:`download_checkpoint` and :func:`load_registered` before anything reads it. Every file of the logged model
(``MLmodel``, which tells MLflow what code to run, the code, the environment files) has its SHA-256 in a manifest
whose own SHA-256 is recorded too: :func:`load_registered` refuses a model with any file added, changed or removed,
or an ``MLmodel`` that names other code, before MLflow reads it, and MLflow loads it with pickle deserialization off. A version carries a
description and tags (targets, units, dataset, split SHA-256, test MAE, elements, featurizer hash, run); the alias
``best`` points at the version with the lowest test MAE of the first target. A run re-launched without a new
checkpoint adds no version.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import mlflow
from mlflow import MlflowClient

from scannet.checkpoint import CheckpointError
from scannet.io.provenance import sha256_file
from scannet_platform.metric_names import mae_metric
from scannet_platform.tracking.ensembles import ENSEMBLE_FILE

#: The models-from-code file MLflow copies into every logged model (it only imports scannet).
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")


CHECKPOINT_ARTIFACT = "checkpoint"  # the artifact name mlflow_model.py reads


#: The artifact (a text file) holding the checkpoint's SHA-256, which mlflow_model.py checks before loading it;
#: an artifact, not ``model_config``, which MLflow would also log as run parameters (the runs table's columns).
CHECKPOINT_SHA_ARTIFACT = "checkpoint_sha256"


CHECKPOINT_SHA_TAG = "scannet.checkpoint_sha256"


CHECKPOINT_PATH_TAG = "scannet.checkpoint_path"  # inside the logged model, e.g. artifacts/best_model.pt


MODEL_CODE_SHA_TAG = "scannet.model_code_sha256"


MODEL_MANIFEST_SHA_TAG = "scannet.model_manifest_sha256"  # of the manifest: every file of the logged model


MODEL_MANIFEST_TAG = "scannet.model_manifest"  # the manifest itself (JSON: path -> SHA-256), to name what differs


#: Written by MLflow into every ``models:/`` download (the name and version): no part of the logged model.
DOWNLOAD_NOTE = "registered_model_meta"


#: The MLflow loader of a model logged as code, the only one our models use.
CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"


PICKLE_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


BEST_METRIC_TAG = "scannet.best_metric"  # the tag the alias `best` ranks versions by


BEST_ALIAS = "best"


class CheckpointIntegrityError(CheckpointError):
    """A logged checkpoint that is missing or differs from the SHA-256 recorded when it was logged."""


def model_requirements() -> list[str]:
    """scannet's runtime dependencies, MLflow and pandas, pinned to the installed versions.

    scannet itself is not on a package index: install it from the repository or its wheel (the version
    description and the ``scannet.install`` tag say so).
    """
    names = ["mlflow", "pandas"]
    for requirement in importlib.metadata.requires("scannet") or []:
        if "extra ==" not in requirement:
            names.append(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
    pinned = []
    for name in dict.fromkeys(names):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        pinned.append(f"{name}=={version.split('+', 1)[0]}")  # 2.13.0+cpu -> 2.13.0 (a local build label)
    return pinned


def model_signature(targets: Sequence[str]):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema(
        [
            ColSpec(Array("long"), "numbers"),
            ColSpec(Array(Array("double")), "positions"),
            ColSpec(Array(Array("double")), "cell", required=False),
            ColSpec(Array("boolean"), "pbc", required=False),
            ColSpec("string", "name", required=False),
        ]
    )
    outputs = Schema(
        [
            *(ColSpec("double", t) for t in targets),
            ColSpec(Array("double"), "ga_scores"),
            ColSpec("string", "error"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example():
    """Methane, one row: the input MLflow validates the model on when it is logged."""
    import pandas as pd
    from ase.build import molecule

    atoms = molecule("CH4")
    return pd.DataFrame(
        {"numbers": [atoms.numbers.tolist()], "positions": [atoms.positions.round(6).tolist()], "name": ["methane"]}
    )


@dataclass
class ModelRecord:
    """What the registry says about a model version (all in report units)."""

    run_name: str
    dataset: str
    dataset_sha256: str  # of the structures table (16 hex digits, the cache key)
    targets: tuple[str, ...]
    units: dict[str, str]  # stored
    report: dict[str, tuple[float, str]]
    split_file: Path
    elements: tuple[str, ...]  # symbols
    featurizer_hash: str
    model: str  # "SCANN+ (preset demo)"
    parameters: int
    epochs_run: int
    best_epoch: int  # 0-based
    test_mae: dict[str, float]  # report units
    test_evaluated: int
    test_total: int
    scannet_version: str
    git_revision: str | None

    def mae_text(self) -> str:
        maes = ", ".join(f"{t} {self.test_mae[t]:.4g} {self.report[t][1]}" for t in self.targets)
        return f"{maes} ({self.test_evaluated:,} of {self.test_total:,} test structures)"


INSTALL_NOTE = (
    "scannet is not on a package index: install it from the repository (pip install -e .) or its wheel, at the "
    "version and commit tagged here; the other requirements are pinned in the model's requirements.txt"
)


def version_tags(record: ModelRecord, checkpoint_sha: str, checkpoint_path: str) -> dict[str, str]:
    first = record.targets[0]
    tags = {
        "run_name": record.run_name,
        "dataset": record.dataset,
        "dataset_sha256": record.dataset_sha256,
        "targets": ",".join(record.targets),
        "units": ", ".join(f"{t}={record.units[t]}" for t in record.targets),
        "report_units": ", ".join(f"{t}={record.report[t][1]}" for t in record.targets),
        "split_sha256": sha256_file(record.split_file),
        "elements": " ".join(record.elements),
        "featurizer_hash": record.featurizer_hash,
        "model": record.model,
        "parameters": str(record.parameters),
        "epochs": str(record.epochs_run),
        "best_epoch": str(record.best_epoch + 1),
        "test_structures": f"{record.test_evaluated} of {record.test_total}",
        "test_mae": record.mae_text(),
        "scannet_version": record.scannet_version,
        "git_revision": record.git_revision or "unknown",
        "scannet.install": INSTALL_NOTE,
        CHECKPOINT_SHA_TAG: checkpoint_sha,
        CHECKPOINT_PATH_TAG: checkpoint_path,
        MODEL_CODE_SHA_TAG: sha256_file(MODEL_CODE),
        BEST_METRIC_TAG: mae_metric("test", first, record.report[first][1]),
    }
    for t in record.targets:
        tags[mae_metric("test", t, record.report[t][1])] = repr(record.test_mae[t])
    return tags


def version_description(record: ModelRecord, checkpoint_sha: str, checkpoint_path: str) -> str:
    return "\n".join(
        [
            f"SCANNet {record.model} model predicting {', '.join(record.targets)} "
            f"({', '.join(f'{t} in {record.units[t]}' for t in record.targets)}) of the {record.dataset} data "
            f"(elements {' '.join(record.elements)}), training run {record.run_name!r}.",
            f"Test MAE: {record.mae_text()}; best epoch {record.best_epoch + 1} of {record.epochs_run}; "
            f"{record.parameters:,} parameters.",
            f"Split SHA-256 {sha256_file(record.split_file)}; featurizer {record.featurizer_hash}.",
            f"Checkpoint {checkpoint_path}, SHA-256 {checkpoint_sha} (checked before loading).",
            "Load: scannet_platform.tracking.download_checkpoint(uri) then scannet.load(path), or "
            "scannet_platform.tracking.load_registered(uri) for the pyfunc (input: numbers, positions[, cell, pbc]).",
            INSTALL_NOTE + ".",
        ]
    )


def _registered_version_for(client: MlflowClient, model_name: str, run_id: str):
    """The latest version of ``model_name`` made by ``run_id``, or None."""
    versions = client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def update_best_alias(client: MlflowClient, model_name: str) -> str | None:
    """Point ``best`` at the version with the lowest test MAE of its first target; returns that version."""
    versions = client.search_model_versions(f"name='{model_name}'")
    ranked = []
    for version in versions:
        try:
            ranked.append((float(version.tags[version.tags[BEST_METRIC_TAG]]), int(version.version), version))
        except (KeyError, ValueError):
            continue  # a version without a recorded test MAE
    if not ranked:
        return None
    latest_metric = max(ranked, key=lambda r: r[1])[2].tags[BEST_METRIC_TAG]
    comparable = [r for r in ranked if r[2].tags[BEST_METRIC_TAG] == latest_metric]  # same target and unit
    best = min(comparable, key=lambda r: (r[0], r[1]))[2]
    client.set_registered_model_alias(model_name, BEST_ALIAS, best.version)
    return str(best.version)


def model_manifest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (a logged model), by its path inside it; a link is recorded as
    its target, so one added anywhere differs."""
    manifest = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if relative == DOWNLOAD_NOTE:
            continue
        if path.is_symlink():
            manifest[relative] = f"link {os.readlink(path)}"
        elif path.is_file():
            manifest[relative] = sha256_file(path)
    return manifest


def manifest_sha(manifest: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@contextlib.contextmanager
def pickle_deserialization_off() -> Iterator[None]:
    """``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` for the block (MLflow then refuses a cloudpickled model)."""
    previous = os.environ.get(PICKLE_SWITCH)
    os.environ[PICKLE_SWITCH] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PICKLE_SWITCH, None)
        else:
            os.environ[PICKLE_SWITCH] = previous


def _download(model_uri: str, into: str | None = None) -> Path:
    """The logged model; with ``into``, a copy there (a local store otherwise gives its own folder)."""
    return Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=into))


#: MLflow's advice on every log of a model whose ``predict`` has no type hints (ours takes tables, lists of dicts
#: and lists of ASE Atoms, which no type hint covers). MLflow re-enables it with its own warnings filter inside
#: ``log_model``, so it is dropped where it is shown instead.
TYPE_HINT_ADVICE = "Add type hints to the `predict` method"


@contextlib.contextmanager
def without_type_hint_advice() -> Iterator[None]:
    """Every warning is shown as before during the block, except MLflow's :data:`TYPE_HINT_ADVICE`."""
    import warnings

    show = warnings.showwarning

    def shown(message, category, filename, lineno, file=None, line=None):
        if TYPE_HINT_ADVICE not in str(message):
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = shown
    try:
        yield
    finally:
        warnings.showwarning = show


def log_model_version(
    client: MlflowClient, run_id: str, checkpoint: Path, model_name: str, record: ModelRecord
) -> tuple[str, bool]:
    """Log the model (as code) and register a version, unless the run's latest version holds this checkpoint
    already; returns (version, whether it is new)."""
    checkpoint_sha = sha256_file(checkpoint)
    previous = _registered_version_for(client, model_name, run_id) if _model_exists(client, model_name) else None
    if previous is not None and previous.tags.get(CHECKPOINT_SHA_TAG) == checkpoint_sha:
        return str(previous.version), False
    checkpoint_path = f"artifacts/{checkpoint.name}"  # where MLflow puts the artifact inside the model
    with (
        tempfile.TemporaryDirectory(prefix="scannet-sha-") as folder,
        mlflow.start_run(run_id=run_id),
        pickle_deserialization_off(),
        without_type_hint_advice(),
    ):
        sha_file = Path(folder) / f"{checkpoint.name}.sha256"
        sha_file.write_text(checkpoint_sha)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint), CHECKPOINT_SHA_ARTIFACT: str(sha_file)},
            pip_requirements=model_requirements(),
            signature=model_signature(record.targets),
            input_example=input_example(),
        )
    if not _model_exists(client, model_name):
        client.create_registered_model(
            model_name,
            description=f"SCANNet models of {record.dataset}: {', '.join(record.targets)}. Alias '{BEST_ALIAS}': the "
            f"version with the lowest test MAE of {record.targets[0]}.",
        )
    with tempfile.TemporaryDirectory(prefix="scannet-model-") as copy:  # as stored: every file MLflow reads back
        manifest = model_manifest(_download(info.model_uri, copy))
    tags = version_tags(record, checkpoint_sha, checkpoint_path)
    tags[MODEL_MANIFEST_SHA_TAG] = manifest_sha(manifest)
    tags[MODEL_MANIFEST_TAG] = json.dumps(manifest, sort_keys=True)
    # the client's call, not mlflow.register_model: that one prints "Registered model ... already exists"
    version = client.create_model_version(model_name, info.model_uri, tags=tags, model_id=info.model_id)
    client.update_model_version(
        model_name, version.version, version_description(record, checkpoint_sha, checkpoint_path)
    )
    client.set_tag(run_id, CHECKPOINT_SHA_TAG, checkpoint_sha)
    client.set_tag(run_id, CHECKPOINT_PATH_TAG, checkpoint_path)
    client.set_tag(run_id, MODEL_MANIFEST_SHA_TAG, tags[MODEL_MANIFEST_SHA_TAG])
    client.set_tag(run_id, MODEL_CODE_SHA_TAG, tags[MODEL_CODE_SHA_TAG])
    if len(tags[MODEL_MANIFEST_TAG]) <= 8000:  # a run tag's limit; the version tag always has it
        client.set_tag(run_id, MODEL_MANIFEST_TAG, tags[MODEL_MANIFEST_TAG])
    return str(version.version), True


def _model_exists(client: MlflowClient, model_name: str) -> bool:
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def recorded_tags(client: MlflowClient, model_uri: str) -> dict[str, str]:
    """The tags recorded for ``model_uri`` in the tracking store (model version tags for ``models:/name/version``
    and ``models:/name@alias``, run tags for ``runs:/``)."""
    if model_uri.startswith("models:/"):
        ref = model_uri[len("models:/") :].strip("/")
        if "@" in ref:
            name, alias = ref.split("@", 1)
            tags = client.get_model_version_by_alias(name, alias).tags
        elif ref.count("/") == 1 and ref.split("/")[1].isdigit():
            name, version = ref.split("/")
            tags = client.get_model_version(name, version).tags
        else:
            raise CheckpointIntegrityError(f"{model_uri}: give models:/<name>/<version> or models:/<name>@<alias>")
    elif model_uri.startswith("runs:/"):
        tags = client.get_run(model_uri[len("runs:/") :].split("/", 1)[0]).data.tags
    else:
        raise CheckpointIntegrityError(f"{model_uri}: only models:/ and runs:/ URIs carry a recorded checkpoint")
    return dict(tags)


def recorded_checkpoint(client: MlflowClient, model_uri: str) -> tuple[str, str, str | None]:
    """(SHA-256, path inside the model, model code SHA-256) recorded for ``model_uri`` in the tracking store."""
    return _recorded_checkpoint(model_uri, recorded_tags(client, model_uri))


def _recorded_checkpoint(model_uri: str, tags: dict[str, str]) -> tuple[str, str, str | None]:
    sha, path = tags.get(CHECKPOINT_SHA_TAG), tags.get(CHECKPOINT_PATH_TAG)
    if not sha or not path:
        raise CheckpointIntegrityError(
            f"{model_uri}: no recorded checkpoint name and SHA-256 (logged by an older scannet?); refusing to guess"
        )
    return sha, path, tags.get(MODEL_CODE_SHA_TAG)


def _inside(folder: Path, relative: str) -> Path:
    parts = PurePosixPath(relative)
    if parts.is_absolute() or ".." in parts.parts:
        raise CheckpointIntegrityError(f"recorded checkpoint path {relative!r} leaves the model folder")
    return folder.joinpath(*parts.parts)


def _download_verified(
    model_uri: str, tracking_uri: str | None, into: str | None = None
) -> tuple[Path, Path, dict[str, str]]:
    """(the downloaded model folder, its checkpoint checked against the recorded SHA-256, the recorded tags)."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    tags = recorded_tags(client, model_uri)
    expected, relative, _ = _recorded_checkpoint(model_uri, tags)
    folder = _download(model_uri, into)
    path = _inside(folder, relative)
    if not path.is_file():
        raise CheckpointIntegrityError(f"{model_uri}: the recorded checkpoint {relative} is missing from the model")
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointIntegrityError(
            f"{model_uri}: the checkpoint {relative} has SHA-256 {actual}, the registry recorded {expected}: it "
            "changed after it was logged; refusing to load it"
        )
    return folder, path, tags


def _check_manifest(model_uri: str, folder: Path, tags: dict[str, str]) -> None:
    """Every file of the downloaded model is the one logged: none added, changed or removed (``MLmodel`` included,
    which names the code MLflow runs)."""
    expected = tags.get(MODEL_MANIFEST_SHA_TAG)
    if not expected:
        raise CheckpointIntegrityError(
            f"{model_uri}: no recorded manifest of the model's files (logged by an older scannet?); refusing to load "
            "it (its checkpoint still loads: download_checkpoint, then scannet.load)"
        )
    manifest = model_manifest(folder)
    if manifest_sha(manifest) == expected:
        return
    what = "its files differ"
    try:
        logged = json.loads(tags.get(MODEL_MANIFEST_TAG) or "")
    except ValueError:
        logged = None
    if isinstance(logged, dict) and manifest_sha(logged) == expected:
        changes = [f"added {p}" for p in sorted(set(manifest) - set(logged))]
        changes += [f"removed {p}" for p in sorted(set(logged) - set(manifest))]
        changes += [f"changed {p}" for p in sorted(set(logged) & set(manifest)) if logged[p] != manifest[p]]
        what = ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
    raise CheckpointIntegrityError(
        f"{model_uri}: the model's files differ from the manifest recorded when it was logged ({what}); refusing "
        "to load it"
    )


def _check_mlmodel(model_uri: str, folder: Path) -> None:
    """``MLmodel`` names our loader and our code file only (no other code folder, no pickled model)."""
    try:
        flavor = mlflow.models.Model.load(str(folder / "MLmodel")).flavors["python_function"]
    except Exception as exc:
        raise CheckpointIntegrityError(f"{model_uri}: no readable MLmodel with a python_function flavor") from exc
    code_path = flavor.get("model_code_path")
    if (
        flavor.get("loader_module") != CODE_MODEL_LOADER
        or not isinstance(code_path, str)
        or PurePosixPath(code_path.replace("\\", "/")).name != MODEL_CODE.name
        or flavor.get("code")
        or flavor.get("data")
        or "python_model" in flavor
    ):
        raise CheckpointIntegrityError(
            f"{model_uri}: its MLmodel names other code than {MODEL_CODE.name} through {CODE_MODEL_LOADER} "
            "(loader_module, model_code_path, code, data or python_model); refusing to load it"
        )


def download_checkpoint(model_uri: str, tracking_uri: str | None = None) -> Path:
    """The checkpoint of a registered (``models:/name/version``, ``models:/name@best``) or logged
    (``runs:/``) model: the one file recorded by name, its SHA-256 checked against the tracking store."""
    return _download_verified(model_uri, tracking_uri)[1]


def resolve_model_uri(model_uri: str, tracking_uri: str) -> Path:
    """The ``scannet.resolvers: mlflow`` entry point: :func:`download_checkpoint`, with a registry miss (no such
    model, version or alias) reported as a one-line :class:`CheckpointError`."""
    try:
        return download_checkpoint(model_uri, tracking_uri)
    except mlflow.exceptions.MlflowException as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{model_uri}: not found in the MLflow store {tracking_uri} ({reason})") from exc


#: Run tag of a study's parent run: the SHA-256 of the ``ensemble.json`` logged under :data:`ENSEMBLE_ARTIFACT`.
ENSEMBLE_SHA_TAG = "scannet.ensemble_sha256"


ENSEMBLE_ARTIFACT = "ensemble"  # the parent run's artifact folder of a study's ensemble


def is_ensemble_uri(reference: str) -> bool:
    """``runs:/<run id>/ensemble``: a study's ensemble logged on its parent run."""
    parts = reference[len("runs:/") :].strip("/").split("/") if reference.startswith("runs:/") else []
    return len(parts) == 2 and parts[1] == ENSEMBLE_ARTIFACT


def download_ensemble(uri: str, tracking_uri: str | None = None) -> Path:
    """The ensemble folder logged on a study's parent run (``runs:/<run id>/ensemble``), downloaded, with its
    ``ensemble.json`` checked against the run's recorded SHA-256 and every member against the SHA-256 the
    manifest records; a CheckpointError names what differs."""
    client = MlflowClient(tracking_uri)
    run_id = uri[len("runs:/") :].strip("/").split("/")[0]
    try:
        expected = client.get_run(run_id).data.tags.get(ENSEMBLE_SHA_TAG)
        folder = Path(mlflow.artifacts.download_artifacts(uri, tracking_uri=tracking_uri))
    except mlflow.exceptions.MlflowException as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{uri}: not found in the MLflow store {tracking_uri} ({reason})") from exc
    manifest = folder / ENSEMBLE_FILE
    if not expected or not manifest.is_file() or sha256_file(manifest) != expected:
        raise CheckpointIntegrityError(
            f"{uri}: its ensemble.json is missing or differs from the SHA-256 recorded on run {run_id}; refusing it"
        )
    for member in json.loads(manifest.read_text())["members"]:
        path = _inside(folder, member["checkpoint"])
        if not path.is_file() or sha256_file(path) != member.get("sha256"):
            raise CheckpointIntegrityError(
                f"{uri}: member {member['checkpoint']} is missing or differs from the SHA-256 in ensemble.json"
            )
    return folder


def load_registered(model_uri: str, tracking_uri: str | None = None):
    """The model as an MLflow pyfunc, after checking the checkpoint's, the model code's and every other file's
    SHA-256 against the tracking store (MLflow runs the code ``MLmodel`` names when it loads the model), and that
    ``MLmodel`` names only our code; MLflow loads it with pickle deserialization off."""
    # a private copy (never a local store's own folder): what is checked is what MLflow then reads
    folder, _, tags = _download_verified(model_uri, tracking_uri, tempfile.mkdtemp(prefix="scannet-model-"))
    code_sha = tags.get(MODEL_CODE_SHA_TAG)
    code = folder / MODEL_CODE.name
    if code_sha is None or not code.is_file() or sha256_file(code) != code_sha:
        raise CheckpointIntegrityError(f"{model_uri}: the model's code {MODEL_CODE.name} differs from the one logged")
    if (folder / "python_model.pkl").exists():
        raise CheckpointIntegrityError(f"{model_uri}: holds a pickled python_model.pkl; refusing to load it")
    _check_manifest(model_uri, folder, tags)
    _check_mlmodel(model_uri, folder)
    with pickle_deserialization_off(), without_type_hint_advice():
        return mlflow.pyfunc.load_model(str(folder))
