"""One training run, described once: data, targets, slice, split, model, featurizer and recipe.

:class:`RunConfig` is what the Ray-free runner (``scannet train``) executes; the platform's job config
extends it with scaling, storage and tracking only. Values are layered: dataclass defaults, then a named
preset (:data:`RUN_PRESETS`), then a YAML file, then command-line flags; every key and value is checked
(:mod:`scannet.typed_config`) before anything runs.

Presets:

- ``demo``: a 2,000-molecule QM9 slice, full SCANN+, 3 epochs: minutes on a laptop CPU.
- ``paper``: the published training recipe (docs/model-spec.md §4) on all of QM9 with SCANNet's defaults: the exact,
  box-free featurizer and the standard 110,000 / 10,000 / rest split of the table order.
- ``reference``: the published setup exactly: the reference's box10 featurizer, local-attention dropout
  0.05 (``--use_drop``), and the split of the list sorted by atom count (docs/model-spec.md §4.5).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scannet.data import SplitOrder
from scannet.featurizer import FeaturizerConfig
from scannet.featurizer.config import FeaturizerKind
from scannet.home import default_data_cache, default_runs_dir
from scannet.model.config import PRESETS as MODEL_PRESETS
from scannet.precision import Precision
from scannet.train.config import TrainConfig
from scannet.train.presets import RUN_PRESETS
from scannet.typed_config import ConfigError, build, read_yaml_mapping

#: The featurizer settings each model preset was made for (its distance basis matches d_t); covers every preset.
MODEL_FEATURIZERS: dict[str, FeaturizerKind] = {
    "qm9-scann+": "molecules",
    "qm9-scann": "molecules",
    "demo": "molecules",
    "mp2018-scann+": "crystals",
}
#: The model preset chosen when none is given: by whether the data is periodic.
DEFAULT_MODEL = {False: "qm9-scann+", True: "mp2018-scann+"}

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class FaultHooks:
    """Fault injection for tests of recovery; never set in real runs."""

    fail_once_at_epoch: int | None = None  # raise in the worker once, at the start of this epoch
    epoch_delay_s: float = 0.0  # sleep at the start of every epoch (a run slow enough to interrupt on time)


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run depends on; saved next to its results and logged."""

    name: str = "scannet-qm9"  # the run's folder name: re-running with the same name resumes it
    data: str = "qm9"  # "qm9" or the path of a structures table (`scannet data import`)
    targets: tuple[str, ...] = ("homo",)
    n_structures: int | None = None  # a seeded random slice of the data (None: all)
    model_preset: str | None = None  # scannet.model.PRESETS; None: qm9-scann+ (molecules) / mp2018-scann+ (periodic)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    featurizer: FeaturizerConfig | None = None  # None: the preset's settings; a mapping layers over them
    split_seed: int = 0  # seeds the slice and the split
    split_order: SplitOrder = "table"  # "atom_count": the reference's QM9 order
    val_fraction: float = 0.1  # datasets without a standard split; QM9 uses 110,000 / 10,000 / rest
    test_fraction: float = 0.1
    allow_missing_test: bool = False  # evaluate even if some test structures could not be featurized
    init_from: str | None = None  # fine-tune: a checkpoint file or a models:/ URI
    precision: Precision = "fp32"  # "bf16": autocast of the forward pass (GPU)
    compile: bool = False  # torch.compile the model
    static_shapes: bool = False  # pad training batches to bucket shapes (CUDA graphs with compile on CUDA)
    loader_workers: int = 0  # processes collating training batches (0: the training process itself)
    threads: int | None = None  # torch CPU threads per process (None: torch's default)
    launch_hours: float | None = None  # Ray-free runner: end this launch at the last epoch that fits; re-run resumes
    device: str = "cpu"  # the Ray-free runner's device ("cuda" on a GPU machine)
    storage_path: str | None = None  # runs folder; None: $SCANNET_HOME/runs
    data_cache: str | None = None  # structures and graph tables; None: $SCANNET_HOME/data
    hooks: FaultHooks = field(default_factory=FaultHooks)

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(
                f"name {self.name!r}: use letters, digits, '.', '_' or '-' (no paths), starting with a letter or "
                "digit, at most 128 characters"
            )
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"targets {self.targets}: give at least one, without repeats")
        if self.model_preset is not None and self.model_preset not in MODEL_PRESETS:
            raise ConfigError(f"model_preset {self.model_preset!r}: choose from {sorted(MODEL_PRESETS)}")
        if self.n_structures is not None and self.n_structures < 3:
            raise ConfigError(f"n_structures {self.n_structures}: need at least 3 (train, val and test)")
        if not 0 <= self.split_seed < 2**32:
            raise ConfigError(f"split_seed: must be between 0 and 2**32 - 1, got {self.split_seed}")
        if self.loader_workers < 0:
            raise ConfigError(f"loader_workers: must be >= 0, got {self.loader_workers}")
        if self.launch_hours is not None and not self.launch_hours > 0:
            raise ConfigError(f"launch_hours: must be > 0 when given, got {self.launch_hours}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: must be >= 1 when given, got {self.threads}")
        if not (0 < self.val_fraction and 0 < self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(
                f"val_fraction {self.val_fraction}, test_fraction {self.test_fraction}: need > 0, sum < 1"
            )

    @property
    def runs_dir(self) -> Path:
        return Path(self.storage_path).expanduser().resolve() if self.storage_path else default_runs_dir()

    @property
    def cache_dir(self) -> Path:
        return Path(self.data_cache).expanduser().resolve() if self.data_cache else default_data_cache()

    def resolved_model_preset(self, periodic: bool) -> str:
        return self.model_preset or DEFAULT_MODEL[periodic]

    def resolved_featurizer(self, periodic: bool) -> FeaturizerConfig:
        """The settings the model preset was made for (crystal settings for periodic data) with the keys of a
        partial ``featurizer:`` mapping over them; a FeaturizerConfig given as such is used as it is."""
        kind = "crystals" if periodic else MODEL_FEATURIZERS[self.resolved_model_preset(periodic)]
        implied = FeaturizerConfig.for_kind(kind)
        return implied if self.featurizer is None else self.featurizer.over(implied)


def layered_config(
    cls: type,
    presets: dict[str, dict[str, Any]],
    preset: str | None = None,
    yaml_file: str | None = None,
    overrides: dict[str, Any] | None = None,
):
    """``cls`` from its defaults, then ``presets[preset]``, then a YAML file, then ``overrides``.

    Nested ``train:`` / ``featurizer:`` / ``hooks:`` mappings are merged key by key; ``None`` overrides mean
    "not given". Every layer is validated with the key named.
    """
    config = cls()
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(presets)}")
        config = _apply(config, presets[preset], f"preset {preset}")
    if yaml_file is not None:
        config = _apply(config, read_yaml_mapping(yaml_file, "--config"), yaml_file)
    return _apply(config, {k: v for k, v in (overrides or {}).items() if v is not None}, "command line")


def _apply(config, values: dict[str, Any], where: str):
    """``values`` over ``config``. A ``featurizer:`` mapping is a partial override: its keys (with those of the
    earlier layers) are marked, so that :meth:`RunConfig.resolved_featurizer` lays them over the settings the
    model preset and the data imply rather than over the molecule defaults the dataclass fills in."""
    try:
        built = build(type(config), values, base=config)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    given = values.get("featurizer")
    if isinstance(given, Mapping) and built.featurizer is not None:
        earlier = config.featurizer.given if config.featurizer is not None else frozenset()
        if earlier is not None:  # None: a full FeaturizerConfig below, which the mapping only amends
            built = replace(built, featurizer=built.featurizer.partial(earlier | set(given)))
    return built


def build_run_config(preset: str | None = None, yaml_file: str | None = None, **overrides: Any) -> RunConfig:
    """The library run config: defaults -> preset -> YAML -> ``overrides``."""
    return layered_config(RunConfig, RUN_PRESETS, preset, yaml_file, overrides)
