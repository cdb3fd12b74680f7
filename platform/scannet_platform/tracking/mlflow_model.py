"""The MLflow pyfunc of a SCANNet checkpoint, logged as code (MLflow "models from code"): nothing is pickled.

``scannet_platform.tracking.log_run`` gives this file's path as ``python_model``; MLflow copies the file into
the model and runs it on ``mlflow.pyfunc.load_model``, where it only imports ``scannet`` (installed from the
repository or its wheel). The one checkpoint is the artifact ``checkpoint``; its SHA-256 (the artifact
``checkpoint_sha256``; ``model_config`` in versions logged before it) is checked before ``torch.load(weights_only=True)`` reads it. ``scannet_platform.tracking.load_registered``
also checks this file's own SHA-256, and every other file of the model (``MLmodel`` included), against the
registry before MLflow runs it.

Input, one structure per row (a pandas DataFrame or a list of dicts): ``numbers`` (atomic numbers),
``positions`` ([x, y, z] per atom, Å), optionally ``cell`` (3 x [x, y, z]) and ``pbc`` (3 booleans), ``name``.
A list of ASE ``Atoms`` works too. Output, one row per structure: one column per target (the model's units),
``ga_scores`` (one global-attention score per atom, summing to 1) and ``error`` (empty when it succeeded).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

from scannet.io.provenance import sha256_file

CHECKPOINT_ARTIFACT = "checkpoint"
CHECKPOINT_SHA_ARTIFACT = "checkpoint_sha256"


def _rows(model_input) -> list:
    if hasattr(model_input, "to_dict"):  # a pandas DataFrame
        return model_input.to_dict(orient="records")
    return list(model_input)


def _atoms(row: Any):
    from ase import Atoms

    if isinstance(row, Atoms):
        return row
    cell = row.get("cell")
    pbc = row.get("pbc")
    atoms = Atoms(
        numbers=[int(z) for z in row["numbers"]],
        positions=[[float(x) for x in p] for p in row["positions"]],
        cell=None if cell is None else [[float(x) for x in v] for v in cell],
        pbc=False if pbc is None else [bool(p) for p in pbc],
    )
    if row.get("name"):
        atoms.info["name"] = str(row["name"])
    return atoms


class SCANNetModel(PythonModel):
    """Predicts the model's targets and the GA scores of each structure."""

    def load_context(self, context) -> None:
        import scannet

        path = context.artifacts[CHECKPOINT_ARTIFACT]
        if CHECKPOINT_SHA_ARTIFACT in context.artifacts:
            with open(context.artifacts[CHECKPOINT_SHA_ARTIFACT]) as handle:
                expected = handle.read().strip()
        else:  # a version logged before the artifact existed
            expected = (context.model_config or {}).get("checkpoint_sha256")
        if expected and sha256_file(path) != expected:
            raise ValueError(f"{path}: SHA-256 differs from the one recorded when the model was logged; refusing it")
        self.predictor = scannet.load(path)

    def predict(self, context, model_input, params=None):
        import pandas as pd

        structures = [_atoms(row) for row in _rows(model_input)]
        rows = []
        for result in self.predictor.predict(structures):
            values = result.values or {}
            row = {t: values.get(t, float("nan")) for t in self.predictor.targets}
            row["ga_scores"] = [] if result.ga_scores is None else [float(g) for g in result.ga_scores]
            row["error"] = result.error or ""
            rows.append(row)
        return pd.DataFrame(rows, columns=[*self.predictor.targets, "ga_scores", "error"])


mlflow.models.set_model(SCANNetModel())
