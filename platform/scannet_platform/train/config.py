"""The training job's config: the library's :class:`~scannet.train.run_config.RunConfig` plus tracking
(:class:`~scannet_platform.tracking.config.TrackingConfig`), scaling and checkpoint retention. Layered like it
(defaults -> preset -> YAML -> command line, every key and value checked) with the same presets."""

from __future__ import annotations

from dataclasses import dataclass, fields

from scannet.train.run_config import RUN_PRESETS, RunConfig, layered_config
from scannet.typed_config import ConfigError
from scannet_platform.tracking.config import TrackingConfig


@dataclass(frozen=True)
class TrainJobConfig(TrackingConfig, RunConfig):
    """A run on Ray Train: the run itself, how it is tracked (MLflow), then how it is scaled and kept."""

    num_workers: int = 2  # DDP ranks; train.batch_size is split evenly over them
    use_gpu: bool = False
    cpus_per_worker: int = 1  # also the torch threads of each worker
    keep_checkpoints: int = 2  # the most recent N epoch checkpoints (the best weights live in each)
    max_failures: int = 1  # worker-group restarts from the latest checkpoint

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, least in (("num_workers", 1), ("cpus_per_worker", 1), ("keep_checkpoints", 1), ("max_failures", 0)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name}: must be >= {least}, got {getattr(self, name)}")
        if self.launch_hours is not None:
            raise ConfigError(
                "launch_hours: the Ray-free runner's launch time limit (scannet train without --ray); a Ray run "
                "resumes from its checkpoints after any stop"
            )
        if self.train.batch_size % self.num_workers:
            raise ConfigError(
                f"train.batch_size {self.train.batch_size} is the global batch and must divide evenly over "
                f"num_workers {self.num_workers}"
            )

    def model_name(self, dataset: str) -> str:
        return self.registered_model or f"scannet-{dataset}-{'-'.join(self.targets)}"


def build_config(preset: str | None = None, yaml_file: str | None = None, **overrides) -> TrainJobConfig:
    """Defaults -> preset -> YAML file -> explicit overrides (``None`` values are ignored)."""
    return layered_config(TrainJobConfig, RUN_PRESETS, preset, yaml_file, overrides)


#: The keys the job adds to the run (tracking, scaling, retention): a re-run with the same name may change all of
#: them, since they never change the results (the batch size is global, so the recipe does not depend on the
#: number of workers).
PLATFORM_RESUMABLE_KEYS = frozenset(f.name for f in fields(TrainJobConfig)) - {f.name for f in fields(RunConfig)}
