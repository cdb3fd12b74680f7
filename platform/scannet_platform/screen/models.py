"""The models of a screen: checkpoints, MLflow URIs and ensemble folders, grouped by the targets they predict.

Every ``--model`` value is a checkpoint file, an MLflow model URI (``models:/name/version``,
``models:/name@alias``, ``runs:/...``; downloaded and SHA-256-checked by the platform) or the folder of an
ensemble written by a Tune study::

    <dir>/ensemble.json = {"study": str, "metric": str,
                           "members": [{"checkpoint": "member-00.pt", "trial_id": str, "val_metric": float}, ...],
                           "std_scale": {target: float}}

with the checkpoints beside it, or that folder logged on the study's parent run (``runs:/<run id>/ensemble``).
Models predicting the same targets form one group: one model gives the predictions, several (an ensemble) give
their mean and standard deviation (over members, ddof 0) as the uncertainty, multiplied by the ensemble's
``std_scale`` (fitted on the validation split by the study, docs/tuning.md) when the group is exactly one
ensemble folder (any other mix of models gives the members' plain standard deviation). Groups must not share a target. Prediction columns are named ``<target>_<unit>`` as in
``scannet predict`` (:func:`scannet.cli.predict.target_columns`), the uncertainty ``<target>_<unit>_std``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scannet.checkpoint import CheckpointError, resolve_checkpoint
from scannet.io.provenance import sha256_file
from scannet.typed_config import ConfigError
from scannet_platform.tracking.ensembles import ENSEMBLE_FILE, STD_SCALE_KEY

STD_SUFFIX = "_std"
GA_COLUMN = "ga_scores"


@dataclass(frozen=True)
class Member:
    """One model: how it was given (``reference``), the local checkpoint and its SHA-256."""

    reference: str
    path: str
    sha256: str


@dataclass
class ModelGroup:
    """Models of the same targets: one model, or an ensemble (mean and standard deviation)."""

    targets: tuple[str, ...]
    members: list[Member]
    columns: dict[str, str]  # target -> prediction column
    units: dict[str, str | None]
    ga_column: str = GA_COLUMN
    sources: list[str] = field(default_factory=list)  # the --model values (an ensemble folder once)
    std_scale: dict[str, float] = field(default_factory=dict)  # target -> factor of the std (calibrated ensemble)
    #: target -> the test MAE recorded in the checkpoint (the smallest of an ensemble's members), in the target's
    #: unit; a target without a record is absent
    test_mae: dict[str, float] = field(default_factory=dict)

    @property
    def ensemble(self) -> bool:
        return len(self.members) > 1

    def std_column(self, target: str) -> str:
        return self.columns[target] + STD_SUFFIX

    def describe(self) -> str:
        """``gap=models:/qm9-gap/3`` or ``gap=ensemble of 4 (study-dir)``."""
        what = (
            f"ensemble of {len(self.members)} ({', '.join(self.sources)})"
            if self.ensemble
            else self.members[0].reference
        )
        return f"{','.join(self.targets)}={what}"



def ensemble_members(folder: Path) -> list[str]:
    """The checkpoint paths of an ensemble folder (``ensemble.json`` with the checkpoints beside it)."""
    manifest = folder / ENSEMBLE_FILE
    if not manifest.is_file():
        raise CheckpointError(f"{folder}: a folder given as --model must hold {ENSEMBLE_FILE} (an ensemble)")
    try:
        members = json.loads(manifest.read_text())["members"]
        paths = [str(folder / m["checkpoint"]) for m in members]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest}: not an ensemble manifest ({type(exc).__name__}: {exc})") from exc
    if not paths:
        raise CheckpointError(f"{manifest}: the ensemble has no members")
    return paths


def ensemble_folder(reference: str, tracking_uri: str | None) -> Path | None:
    """The ensemble folder ``reference`` names (a folder, or ``runs:/<run id>/ensemble`` downloaded and
    checked), or None for a single model."""
    if Path(reference).is_dir():
        return Path(reference)
    from scannet.checkpoint import MODEL_URI_PREFIXES

    if reference.startswith(MODEL_URI_PREFIXES):
        from scannet_platform.tracking.registry import download_ensemble, is_ensemble_uri

        if is_ensemble_uri(reference):
            from scannet.home import tracking_uri as default_tracking_uri

            return download_ensemble(reference, default_tracking_uri(tracking_uri))
    return None


def ensemble_std_scale(folder: Path) -> dict[str, float]:
    """The ensemble's calibration factors (target -> factor); empty for an uncalibrated ensemble."""
    return {t: float(v) for t, v in json.loads((folder / ENSEMBLE_FILE).read_text()).get(STD_SCALE_KEY, {}).items()}


def recorded_test_mae(metadata: dict, units: dict[str, str | None]) -> dict[str, float]:
    """Target -> the test MAE that training recorded in a checkpoint's metadata (``test_mae`` in
    ``test_mae_units``: the target's unit or its report unit, :mod:`scannet.units`), in the target's own unit;
    targets without a usable record are left out."""
    import math

    from scannet.units import report_unit

    maes, mae_units = metadata.get("test_mae"), metadata.get("test_mae_units")
    if not isinstance(maes, dict) or not isinstance(mae_units, dict):
        return {}
    found = {}
    for target, unit in units.items():
        value, recorded = maes.get(target), mae_units.get(target)
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            continue
        scale, reported = report_unit(unit or "")
        if recorded == (unit or ""):
            found[target] = float(value)
        elif recorded == reported:
            found[target] = float(value) / scale
    return found


def resolve_models(
    references: Sequence[str], tracking_uri: str | None = None, reserved: Sequence[str] = ()
) -> list[ModelGroup]:
    """Resolve and inspect every model (on the driver), grouped by targets; ConfigError / CheckpointError with
    the model named for a model that cannot be used."""
    import scannet
    from scannet.cli.predict import target_columns

    if not references:
        raise ConfigError("no model: give --model a checkpoint, an MLflow model URI or an ensemble folder")
    groups: dict[tuple[str, ...], ModelGroup] = {}
    for reference in references:
        folder = ensemble_folder(reference, tracking_uri)
        refs = ensemble_members(folder) if folder is not None else [reference]
        for ref in refs:
            path = resolve_checkpoint(ref, tracking_uri)
            predictor = scannet.load(path)
            targets = tuple(predictor.targets)
            columns = target_columns(predictor)
            units = {t: predictor.unit(t) for t in targets}
            member = Member(ref, str(path.resolve()), sha256_file(path))
            maes = recorded_test_mae(predictor.metadata, units)
            group = groups.get(targets)
            if group is None:
                clash = [t for g in groups for t in g if t in targets]
                if clash:
                    raise ConfigError(
                        f"model {ref}: predicts {list(targets)}, but {clash} come from another model with other "
                        "targets; an ensemble's models must predict the same targets"
                    )
                scale = ensemble_std_scale(folder) if folder is not None else {}
                groups[targets] = ModelGroup(
                    targets, [member], columns, units, sources=[reference], std_scale=scale, test_mae=maes
                )
                continue
            if units != group.units:
                raise ConfigError(
                    f"model {ref}: units {units} differ from {group.units} of the other models of {list(targets)}"
                )
            group.members.append(member)
            group.test_mae |= {t: min(v, group.test_mae.get(t, v)) for t, v in maes.items()}
            if reference not in group.sources:
                group.sources.append(reference)
                group.std_scale = {}  # fitted for one ensemble, not for this mix
    result = list(groups.values())
    for group in result:
        group.columns = {t: c if c not in reserved else f"predicted_{c}" for t, c in group.columns.items()}
        if len(result) > 1:
            group.ga_column = f"{GA_COLUMN}_{'_'.join(group.targets)}"
    return result
