"""A screen's settings (:class:`ScreenConfig`): plain values, importable without torch or Ray, so that
``scannet screen --help`` shows their defaults at once. The job itself is :mod:`scannet_platform.screen.job`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from scannet.precision import Precision
from scannet.typed_config import build
from scannet_platform.tracking.config import TrackingConfig

DEFAULT_EXPERIMENT = "scannet-screening"


@dataclass(frozen=True)
class ScreenConfig(TrackingConfig):
    """Everything a screen needs; built with :func:`build_screen_config` (every value checked). The MLflow keys
    are :class:`TrackingConfig`'s (a screen registers no model)."""

    inputs: tuple[str, ...] = ()  # structures tables, xyz/extxyz, ASE db, folders, .smi/.csv SMILES
    models: tuple[str, ...] = ()  # checkpoints, MLflow model URIs, ensemble folders
    out: str = ""  # output folder (resumable)
    chunk_size: int = 1024  # records per chunk: the unit of work, of a shard and of a restart
    atom_budget: int = 4096  # most atoms per model batch (whole structures; one larger structure alone)
    max_atoms: int = 1000  # larger structures are quarantined
    top_k: int = 100  # rows per top-k table (0: none)
    rank: tuple[str, ...] = ()  # COLUMN:max|min, a top-k table each; none: the first target, max
    filters: tuple[str, ...] = ()  # "gap_eV between 4 6", "homo_eV < -5.5"
    smiles_column: str | None = None  # CSV inputs: default smiles / SMILES
    id_column: str | None = None  # CSV inputs: default id / name, else <file stem>:<line>
    seed: int = 0  # RDKit embedding seed
    executor: Literal["ray", "local"] = "ray"
    actors: int | None = None  # default: CPUs / cpus_per_actor (GPUs / gpus_per_actor on GPU)
    cpus_per_actor: float = 1.0
    #: Ray: featurize actors (default the CPUs the model actors leave, at least 1); local: featurize processes
    #: (default 0: featurize and predict one chunk after the other in this process)
    featurize_workers: int | None = None
    batches_in_flight: int = 2  # featurized chunks queued per model actor (local: beyond the featurize processes)
    graphs_cache: bool = True  # keep each chunk's graphs (the graph store) and reuse them on a later screen
    graphs_dir: str | None = None  # the graph store's root (default: <scannet home>/data)
    gpus_per_actor: float = 0.0  # > 0 with device cuda
    device: str = "cpu"
    threads: int | None = None  # torch threads per actor (default: cpus_per_actor)
    compile: bool = False  # torch.compile the models in each actor (Predictor.compile): pays off on large libraries
    static_shapes: bool = False  # with compile: batches padded to bucket shapes (scannet.static_shapes; CUDA graphs)
    precision: Precision = "fp32"  # "bf16": the models under bfloat16 autocast (scannet.precision)
    mlflow: bool = True
    experiment: str = DEFAULT_EXPERIMENT
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out: the output folder is required")
        if self.registered_model is not None:
            raise ValueError("registered_model: a screen registers no model")
        for name in ("chunk_size", "atom_budget", "max_atoms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"actors must be at least 1, got {self.actors}")
        if self.featurize_workers is not None and self.featurize_workers < 0:
            raise ValueError(f"featurize_workers must be >= 0 when given, got {self.featurize_workers}")
        if self.batches_in_flight < 1:
            raise ValueError(f"batches_in_flight must be at least 1, got {self.batches_in_flight}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1 when given, got {self.threads}")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be between 0 and 2**31 - 1 (RDKit's), got {self.seed}")
        if self.static_shapes and not self.compile:
            raise ValueError("static_shapes pads batches for compiled graphs: use it with compile")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise ValueError("cpus_per_actor must be > 0 and gpus_per_actor >= 0")
        if self.device.startswith("cuda") and self.executor == "ray" and self.gpus_per_actor == 0:
            raise ValueError("device cuda on Ray needs gpus_per_actor > 0 (e.g. 1, or 0.5 for two actors per GPU)")


def build_screen_config(values: dict[str, Any]) -> ScreenConfig:
    return build(ScreenConfig, {k: v for k, v in values.items() if v is not None})
