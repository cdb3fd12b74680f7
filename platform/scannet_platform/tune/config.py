"""A hyperparameter study, declared in one YAML file (``tune_spaces/*.yaml``) and checked before anything runs.

    name: qm9-small-cpu                 # the study's folder and MLflow parent run; re-running it resumes
    run: {preset: demo, n_structures: 1000, train: {epochs: 4}}   # the run every trial starts from
    space:                              # dotted keys into the trial's train / model / featurizer settings
      train.lr: {type: loguniform, low: 1.0e-4, high: 3.0e-3}
      model.local_dim: {type: choice, values: [32, 64]}
      model.num_heads: {type: choice, values: [2, 4]}
      train.min_lr: {type: loguniform, low: 1.0e-5, high: 1.0e-4, when: {train.schedule: cosine}}
    metric: val_mae_homo                # val_mae (mean z-scored over targets) or val_mae_<target>
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2}   # max epochs: run.train.epochs
    searcher: {type: tpe, seed: 0}      # Optuna TPE, or random (Optuna's RandomSampler)
    num_samples: 8
    resources_per_trial: {cpu: 1, gpu: 0}   # fractional GPUs allowed

A parameter with ``when`` is sampled only when the earlier choice parameters it names take the given value(s);
otherwise the trial keeps the base run's value. ``featurizer.*`` parameters must be choices: each value is a
featurization of the whole dataset, made once before the trials start. :meth:`StudyConfig.model_grid` builds
the model of every reachable combination of the discrete model settings, so a width that the number of heads
does not divide is refused when the file is loaded, not in trial 17.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scannet.featurizer import FeaturizerConfig
from scannet.model import SCANNConfig
from scannet.model.config import preset as model_preset
from scannet.train import metrics as M
from scannet.train.config import TrainConfig
from scannet.train.run_config import NAME_PATTERN, RUN_PRESETS, RunConfig, layered_config
from scannet.typed_config import ConfigError, build, read_yaml_mapping
from scannet_platform.tracking.config import TrackingConfig

#: The settings a parameter may reach: ``<section>.<field>``.
SECTIONS: dict[str, type] = {"train": TrainConfig, "model": SCANNConfig, "featurizer": FeaturizerConfig}
#: Fields no study may search: the epoch budget belongs to the scheduler, the data's identity to the run.
FIXED = {"train.epochs", "model.targets", "model.elements", "model.max_atomic_number", "model.nonnegative_targets"}
MAX_GRID = 20_000  # discrete model combinations checked at load time

ParamType = Literal["loguniform", "uniform", "int", "choice"]


@dataclass(frozen=True)
class Parameter:
    """One dimension of the search space."""

    type: ParamType
    low: float | None = None  # loguniform, uniform, int
    high: float | None = None
    values: tuple[Any, ...] | None = None  # choice
    log: bool = False  # int: sample on a log scale
    when: dict[str, Any] = field(default_factory=dict)  # {earlier choice parameter: value or [values]}

    def candidates(self) -> tuple[Any, ...]:
        """The values checked at load time: every choice, else both ends of the range."""
        if self.type == "choice":
            return tuple(self.values)
        if self.type == "int":
            return (int(self.low), int(self.high))
        return (self.low, self.high)

    def active(self, chosen: dict[str, Any]) -> bool:
        """Whether this parameter is sampled, given the values chosen so far."""
        for name, wanted in self.when.items():
            options = wanted if isinstance(wanted, list | tuple) else [wanted]
            if name not in chosen or chosen[name] not in options:
                return False
        return True


@dataclass(frozen=True)
class SchedulerConfig:
    type: Literal["asha", "fifo"] = "asha"  # fifo: every trial runs its full epoch budget
    grace_period: int = 1  # epochs before ASHA may stop a trial
    reduction_factor: int = 2  # ASHA keeps 1 / reduction_factor of the trials at each rung


@dataclass(frozen=True)
class SearcherConfig:
    type: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    startup_trials: int = 4  # TPE samples at random until this many trials have finished


@dataclass(frozen=True)
class TrialResources:
    cpu: float = 1.0  # CPUs per trial (its torch threads: at least 1)
    gpu: float = 0.0  # GPUs per trial: 0.25 packs four trials on one GPU


@dataclass(frozen=True)
class StudyConfig(TrackingConfig):
    """Everything a study depends on; the ``run`` mapping is a :class:`RunConfig` (plus ``preset``); the MLflow
    keys (``mlflow_tracking_uri``, ``experiment``, ``registered_model``, ``verbose``) are :class:`TrackingConfig`'s."""

    name: str = "scannet-study"
    run: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)
    metric: str = M.VAL_MAE
    mode: Literal["min", "max"] = "min"
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    searcher: SearcherConfig = field(default_factory=SearcherConfig)
    num_samples: int = 8
    max_concurrent_trials: int | None = None  # None: as many as the cluster holds
    resources_per_trial: TrialResources = field(default_factory=TrialResources)
    reserve_cpus: float = 0.0  # CPUs never given to trials (other jobs, Ray Data, the driver)
    time_budget_s: float | None = None  # no new trials after this; running ones are stopped
    checkpoint_every: int = 0  # epochs between trial checkpoints; 0: only each trial's last epoch
    top_k: int = 3  # best trials exported as an ensemble (0: none)
    evaluate_best: bool = True  # evaluate the best trial on the test split and register it
    experiment: str = "scannet-tune"  # registered_model: default scannet-<data>-<targets>-tuned

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(f"name {self.name!r}: use letters, digits, '.', '_' or '-', at most 128 characters")
        if self.num_samples < 1:
            raise ConfigError(f"num_samples: must be >= 1, got {self.num_samples}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ConfigError(f"max_concurrent_trials: must be >= 1, got {self.max_concurrent_trials}")
        if self.resources_per_trial.cpu <= 0 or self.resources_per_trial.gpu < 0:
            raise ConfigError(f"resources_per_trial: need cpu > 0 and gpu >= 0, got {self.resources_per_trial}")
        if self.resources_per_trial.gpu > 1 and self.resources_per_trial.gpu != int(self.resources_per_trial.gpu):
            raise ConfigError(f"resources_per_trial.gpu {self.resources_per_trial.gpu}: above 1, whole GPUs only")
        for name in ("reserve_cpus", "checkpoint_every", "top_k"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.searcher.seed < 2**32 or self.searcher.startup_trials < 0:
            raise ConfigError(
                f"searcher.seed {self.searcher.seed} must be between 0 and 2**32 - 1 and searcher.startup_trials "
                f"{self.searcher.startup_trials} >= 0"
            )
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"time_budget_s: must be > 0, got {self.time_budget_s}")
        if self.scheduler.grace_period < 1 or self.scheduler.reduction_factor < 2:
            raise ConfigError("scheduler: grace_period must be >= 1 and reduction_factor >= 2")
        if not self.space:
            raise ConfigError("space: declare at least one parameter")
        base = self.base_run()
        if self.scheduler.type == "asha" and self.scheduler.grace_period >= base.train.epochs:
            raise ConfigError(
                f"scheduler.grace_period {self.scheduler.grace_period} must be below the epoch budget "
                f"run.train.epochs {base.train.epochs}, or ASHA never compares trials"
            )
        targets = {M.mae_key("val", t) for t in base.targets}
        if self.metric not in {M.VAL_MAE, *targets}:
            raise ConfigError(f"metric {self.metric!r}: choose {M.VAL_MAE} or one of {sorted(targets)}")
        self.model_grid(self.base_model())  # parses and checks the space too

    # ------------------------------------------------------------------------------------------ the run

    def base_run(self) -> RunConfig:
        """The run every trial starts from (named like the study)."""
        values = dict(self.run)
        run_preset = values.pop("preset", None)
        if "name" in values:
            raise ConfigError("run.name: the trials' run is named after the study; set name at the top level")
        try:
            return layered_config(RunConfig, RUN_PRESETS, run_preset, None, {**values, "name": self.name})
        except ConfigError as exc:
            raise ConfigError(f"run: {exc}") from None

    def base_model(self, periodic: bool = False) -> SCANNConfig:
        """The base run's model for molecules (or crystals); the driver uses the one made for the data."""
        run = self.base_run()
        base = model_preset(run.resolved_model_preset(periodic), targets=tuple(run.targets))
        return build(SCANNConfig, run.model_overrides, "run.model_overrides", base)

    def model_name(self, dataset: str) -> str:
        return self.registered_model or f"scannet-{dataset}-{'-'.join(self.base_run().targets)}-tuned"

    # ---------------------------------------------------------------------------------------- the space

    @property
    def parameters(self) -> dict[str, Parameter]:
        """The search space, in declaration order, every parameter checked."""
        parsed: dict[str, Parameter] = {}
        for name, spec in self.space.items():
            key = f"space.{name}"
            section, _, field_name = str(name).partition(".")
            if section not in SECTIONS or not field_name:
                raise ConfigError(f"{key}: parameters are <section>.<field> with a section of {sorted(SECTIONS)}")
            known = {f for f in SECTIONS[section].__dataclass_fields__}
            if field_name not in known:
                raise ConfigError(f"{key}: {SECTIONS[section].__name__} has no field {field_name!r}")
            if name in FIXED:
                raise ConfigError(f"{key}: cannot be searched (the epoch budget is run.train.epochs)")
            parameter = build(Parameter, spec, key)
            _check_parameter(name, parameter, parsed)
            parsed[name] = parameter
        return parsed

    def sampler(self) -> SpaceSampler:
        return SpaceSampler(tuple(self.parameters.items()))

    def apply(
        self, params: dict[str, Any], model: SCANNConfig, train: TrainConfig, featurizer: FeaturizerConfig
    ) -> tuple[SCANNConfig, TrainConfig, FeaturizerConfig]:
        """The trial's settings: the sampled ``params`` over the base run's."""
        sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for name, value in params.items():
            section, _, field_name = name.partition(".")
            sections[section][field_name] = value
        where = "trial parameters"
        return (
            build(SCANNConfig, sections["model"], f"{where} model", model),
            build(TrainConfig, sections["train"], f"{where} train", train),
            build(FeaturizerConfig, sections["featurizer"], f"{where} featurizer", featurizer),
        )

    def featurizer_choices(self, base: FeaturizerConfig) -> list[FeaturizerConfig]:
        """Every featurizer a trial can ask for (one graph table each)."""
        featurizer_params = {n: p for n, p in self.parameters.items() if n.startswith("featurizer.")}
        return _unique(s for _, _, s in self._combinations(featurizer_params, None, None, base))

    def model_grid(
        self, base_model: SCANNConfig, base_featurizer: FeaturizerConfig | None = None
    ) -> list[tuple[SCANNConfig, FeaturizerConfig]]:
        """The (model, featurizer) of every reachable combination of the discrete model and featurizer settings
        (continuous ones at both ends of their range); raises ConfigError naming the first combination that
        cannot be built."""
        base_featurizer = base_featurizer or self.base_run().resolved_featurizer(False)
        relevant = {n: p for n, p in self.parameters.items() if not n.startswith("train.")}
        grid = []
        for params, model, featurizer in self._combinations(relevant, base_model, TrainConfig(), base_featurizer):
            try:
                featurizer.check_distance_basis(model.gaussian_distance_max, f"model {params}")
            except ValueError as exc:
                raise ConfigError(f"space: {exc}") from None
            grid.append((model, featurizer))
        return grid

    def _combinations(self, parameters: dict[str, Parameter], model, train, featurizer):
        names = list(parameters)
        count = math.prod(len(p.candidates()) for p in parameters.values())
        if count > MAX_GRID:
            raise ConfigError(f"space: {count:,} discrete combinations of model settings to check (limit {MAX_GRID:,})")
        seen = []
        for values in itertools.product(*(parameters[n].candidates() for n in names)):
            chosen: dict[str, Any] = {}
            for name, value in zip(names, values):
                if parameters[name].active(chosen):
                    chosen[name] = value
            if chosen in seen:
                continue
            seen.append(chosen)
            try:
                built = self.apply(
                    chosen, model or SCANNConfig(), train or TrainConfig(), featurizer or FeaturizerConfig()
                )
            except ConfigError as exc:
                raise ConfigError(f"space: the combination {chosen} cannot be built: {exc}") from None
            yield chosen, built[0], built[2]


def _check_parameter(name: str, parameter: Parameter, earlier: dict[str, Parameter]) -> None:
    key = f"space.{name}"
    if parameter.type == "choice":
        if not parameter.values or parameter.low is not None or parameter.high is not None:
            raise ConfigError(f"{key}: a choice takes values: [...] (at least one) and no low/high")
        if any(not isinstance(v, bool | int | float | str) for v in parameter.values):
            raise ConfigError(f"{key}: choice values must be numbers, strings or booleans, got {parameter.values}")
    else:
        if parameter.low is None or parameter.high is None or parameter.values is not None:
            raise ConfigError(f"{key}: a {parameter.type} parameter takes low and high (and no values)")
        if not parameter.low < parameter.high:
            raise ConfigError(f"{key}: low {parameter.low} must be below high {parameter.high}")
        if parameter.type == "loguniform" and parameter.low <= 0:
            raise ConfigError(f"{key}: loguniform needs low > 0, got {parameter.low}")
        if parameter.type == "int" and (parameter.low != int(parameter.low) or parameter.high != int(parameter.high)):
            raise ConfigError(f"{key}: int bounds must be integers, got {parameter.low}, {parameter.high}")
    if parameter.log and parameter.type != "int":
        raise ConfigError(f"{key}: log applies to int parameters (use loguniform)")
    if name.startswith("featurizer.") and parameter.type != "choice":
        raise ConfigError(
            f"{key}: featurizer settings must be a choice (each value is a featurization of the whole dataset), "
            f"got {parameter.type}"
        )
    for other, wanted in parameter.when.items():
        if other not in earlier:
            raise ConfigError(f"{key}: when names {other!r}, which is not a parameter declared before it")
        if earlier[other].type != "choice":
            raise ConfigError(f"{key}: when may only depend on choice parameters; {other} is {earlier[other].type}")
        options = wanted if isinstance(wanted, list | tuple) else [wanted]
        unknown = [v for v in options if v not in earlier[other].values]
        if unknown:
            raise ConfigError(f"{key}: when {other} = {unknown}, which {other} never takes {earlier[other].values}")


def _unique(items) -> list:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


@dataclass(frozen=True)
class SpaceSampler:
    """Optuna's define-by-run space: samples the parameters in declaration order, honouring ``when``."""

    parameters: tuple[tuple[str, Parameter], ...]

    def __call__(self, trial) -> None:
        chosen: dict[str, Any] = {}
        for name, p in self.parameters:
            if not p.active(chosen):
                continue
            if p.type == "choice":
                chosen[name] = trial.suggest_categorical(name, list(p.values))
            elif p.type == "int":
                chosen[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
            else:
                chosen[name] = trial.suggest_float(name, p.low, p.high, log=p.type == "loguniform")


def load_study(path: str | Path, **overrides: Any) -> StudyConfig:
    """A study from its YAML file, then ``overrides`` (``None`` values ignored), every key and value checked."""
    path = Path(path)
    data = read_yaml_mapping(path, "--space")
    data.setdefault("name", path.stem)
    run_overrides = {k: v for k, v in overrides.pop("run", {}).items() if v is not None}
    if run_overrides:
        data["run"] = {**(data.get("run") or {}), **run_overrides}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return build(StudyConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
