"""The files of a training run folder (``<runs_dir>/<name>/``), named in this one place.

Written by :mod:`scannet.train.run` (both runners), the worker loop (:mod:`scannet.train.worker`) and the
platform's Ray Train driver; read by ``scannet explain --faithfulness``, ``tools/ship_model.py`` and the
MLflow logging. A shipped model folder (``scannet/pretrained/<name>/``) holds the run's ``run_config.json`` and
``split_ids.parquet`` under the same names, so it is a run folder for the faithfulness test too. A tuning study's
folder is a run folder of the base run (its ``summary.json`` is the study's); each trial's is ``trials/<id>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scannet.io.paths import OutputFolder

if TYPE_CHECKING:
    from ase import Atoms

    from scannet.train.run_config import RunConfig

RUN_CONFIG_FILE = "run_config.json"
SPLIT_FILE = "split.json"
SPLIT_IDS_FILE = "split_ids.parquet"
INIT_WEIGHTS_FILE = "init_weights.pt"
LAUNCH_FILE = "launch.json"
LAUNCHES_FILE = "launches.jsonl"
CHECKPOINTS_FOLDER = "checkpoints"
RAY_TRAIN_FOLDER = "ray_train"
EPOCH_LOG = "epochs.log"
EPOCH_RECORDS = "epochs.jsonl"
BEST_MODEL_FILE = "best_model.pt"
HISTORY_FILE = "history.json"
SUMMARY_FILE = "summary.json"

# inside one checkpoint folder (``checkpoints/latest/``, a Ray Train or Tune checkpoint)
LATEST_CHECKPOINT = "latest"
TRAIN_STATE = "train_state.pt"
MODEL_FILE = "model.pt"

#: What a run writes in its folder: none of it may be a symbolic link (:func:`checked_run_dir`).
RUN_ENTRIES = (
    RUN_CONFIG_FILE,
    SPLIT_FILE,
    SPLIT_IDS_FILE,
    INIT_WEIGHTS_FILE,
    LAUNCH_FILE,
    LAUNCHES_FILE,
    RAY_TRAIN_FOLDER,
    EPOCH_LOG,
    EPOCH_RECORDS,
    BEST_MODEL_FILE,
    HISTORY_FILE,
    SUMMARY_FILE,
)


def checked_run_dir(runs_dir: str | Path, name: str, entries: tuple[str, ...] = ()) -> Path:
    """``runs_dir / name`` under the one rule for output folders (:class:`scannet.io.paths.OutputFolder`): the runs
    folder is a folder (or missing), and neither the run folder, nor what a run writes there (:data:`RUN_ENTRIES`,
    ``entries``, anything in ``checkpoints/``) is a symbolic link; raises
    :class:`~scannet.io.paths.OutputPathError` (one line, exit code 2) before anything is read or written."""
    run_dir = OutputFolder(runs_dir).path(name)
    folder = OutputFolder(run_dir)
    folder.check(*RUN_ENTRIES, *entries)
    folder.check_tree(CHECKPOINTS_FOLDER)
    return run_dir


def _file(name: str, doc: str) -> property:
    def get(self: RunFolder) -> Path:
        return self.path / name

    return property(get, doc=f"``{name}``: {doc}")


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder's files: ``RunFolder(run_dir).summary`` is ``run_dir / "summary.json"``."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    run_config = _file(RUN_CONFIG_FILE, "the run's config; a re-run of the name is checked against it")
    split = _file(SPLIT_FILE, "the seeded split (indices, seed, sizes, sha256)")
    split_ids = _file(SPLIT_IDS_FILE, "the split as (id, part) rows, read by every rank")
    init_weights = _file(INIT_WEIGHTS_FILE, "fine-tuning: the state dict the run starts from")
    launch = _file(LAUNCH_FILE, "the epoch this launch's worker group started at (written by rank 0)")
    launches = _file(LAUNCHES_FILE, "one JSON line per launch of the Ray-free runner: when, how long, which epochs, where")
    checkpoints = _file(CHECKPOINTS_FOLDER, "the Ray-free runner's checkpoints (the latest in ``latest/``)")
    ray_train = _file(RAY_TRAIN_FOLDER, "Ray Train's storage (the platform's runner)")
    epoch_log = _file(EPOCH_LOG, "one line per epoch (the platform's runner; the driver prints it)")
    epoch_records = _file(EPOCH_RECORDS, "the reported metrics of each epoch, for MLflow when live logging could not")
    best_model = _file(BEST_MODEL_FILE, "the best weights, evaluated on the whole test split")
    history = _file(HISTORY_FILE, "one record per epoch")
    summary = _file(SUMMARY_FILE, "what the finished run reports")

    def read_run_config(self) -> RunConfig:
        """The run's :class:`~scannet.train.run_config.RunConfig` from ``run_config.json``; the keys a runner adds
        to it (the platform's job config: workers, MLflow, ...) are left out, so any run folder reads back."""
        import dataclasses
        import json

        from scannet.train.run_config import RunConfig
        from scannet.typed_config import build

        recorded = json.loads(self.run_config.read_text())
        known = {field.name for field in dataclasses.fields(RunConfig)}
        return build(RunConfig, {key: value for key, value in recorded.items() if key in known})

    def sample_split(self, part: str, n_structures: int, seed: int = 0, min_atoms: int = 1) -> list[Atoms]:
        """A seeded sample of ``n_structures`` (all when fewer) of the ``part`` (train, val, test) of the split the
        run recorded (``split_ids.parquet``), read from the data its ``run_config.json`` names. Only structures
        with at least ``min_atoms`` atoms are drawn; the sample is in id order, so it does not depend on the
        table's order. Raises FileNotFoundError naming the missing file."""
        import numpy as np
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from scannet.data import schema as S
        from scannet.data.structures_table import table_to_structures
        from scannet.train.run import resolve_dataset
        from scannet.train.worker import split_part_ids

        for path in (self.run_config, self.split_ids):
            if not path.is_file():
                raise FileNotFoundError(f"{self.path}: no {path.name}; give the folder of a training run (scannet train)")
        config = self.read_run_config()
        structures = resolve_dataset(config.data, config.cache_dir).structures
        table = pq.read_table(structures, filters=pc.is_in(pc.field(S.ID), split_part_ids(self.split_ids, part)))
        table = table.filter(pc.greater_equal(pc.list_value_length(table.column(S.NUMBERS)), min_atoms))
        table = table.take(pc.sort_indices(table, [(S.ID, "ascending")]))
        chosen = np.random.default_rng(seed).choice(table.num_rows, min(n_structures, table.num_rows), replace=False)
        return table_to_structures(table.take(np.sort(chosen)))

    def injected_failure(self, rank: int) -> Path:
        """The marker of a failure injected once into ``rank`` (test hooks)."""
        return self.path / f"injected_failure.rank{rank}"
