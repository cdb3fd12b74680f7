"""One Tune trial: the library's worker loop (:func:`scannet.train.worker.run_worker`) as a plain Tune function
trainable, one process per trial with its own CPUs (and GPU share).

Plain function trainables, not a Train ``TorchTrainer`` nested in each trial: on Ray 2.60 a nested trainer
stopped by ASHA leaks its workers' placement groups unless the dashboard's state API is reachable, and the
nested Ray Data ingest starves when the trials hold every CPU (docs/tuning.md, Trials).
A trial here reads its graph table directly (no Ray Data), so it needs exactly the resources it declares.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from scannet.train import metrics as M
from scannet.train.worker import WorkerConfig, run_worker
from scannet_platform.metric_names import epoch_metrics
from scannet_platform.tune.config import StudyConfig

#: ASHA's clock: epochs finished, reported by the trial itself (Tune's iteration count restarts with a trial
#: that is restarted without a checkpoint; this does not).
EPOCHS_DONE = "epochs_done"
#: The worker's report keys a trial reports as they are (bookkeeping, not metrics of the model).
PASSED_ON = (M.EPOCH, M.EPOCHS, M.LAST, M.START_EPOCH)


@dataclass(frozen=True)
class TrialPlan:
    """What every trial needs, sent once through the object store (``tune.with_parameters``)."""

    study: StudyConfig
    worker: WorkerConfig  # the base run's: data, split, statistics, base model / recipe / featurizer
    graph_tables: dict[str, str]  # featurizer content hash -> graph table folder
    report: dict[str, tuple[float, str]]  # target -> (scale, report unit)
    trials_dir: str

    def worker_for(self, params: dict[str, Any], trial_id: str) -> WorkerConfig:
        """The base run with the trial's parameters; its run folder is ``trials/<trial_id>``."""
        model, train, featurizer = self.study.apply(
            params, self.worker.model, self.worker.train, self.worker.featurizer
        )
        run_dir = Path(self.trials_dir) / trial_id
        run_dir.mkdir(parents=True, exist_ok=True)
        return replace(
            self.worker,
            model=model,
            train=train,
            featurizer=featurizer,
            graph_table=self.graph_tables[featurizer.content_hash()],
            threads=max(1, int(self.study.resources_per_trial.cpu)),
            run_dir=str(run_dir),
            model_metadata={**self.worker.model_metadata, "study": self.study.name, "trial": trial_id},
        )


class TuneSession:
    """The calls the worker loop makes, answered by Ray Tune: one rank, sparse checkpoints, metrics in report
    units (the names MLflow logs)."""

    rank, world_size = 0, 1

    def __init__(self, plan: TrialPlan) -> None:
        from ray import tune

        self._tune = tune
        self.plan = plan

    def device(self) -> torch.device:
        return torch.device("cuda" if self.plan.study.resources_per_trial.gpu > 0 else "cpu")

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def checkpoint_dir(self):
        checkpoint = self._tune.get_checkpoint()
        return checkpoint.as_directory() if checkpoint is not None else nullcontext(None)

    def wants_checkpoint(self, metrics: dict[str, Any]) -> bool:
        """The last epoch of the trial, and every ``checkpoint_every`` epochs (each one costs a copy into the
        study folder; frequent ones cut the trials a study finishes)."""
        every = self.plan.study.checkpoint_every
        return bool(metrics[M.LAST]) or (every > 0 and (metrics[M.EPOCH] + 1) % every == 0)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        values = {
            **{key: metrics[key] for key in PASSED_ON},
            M.LAST: bool(metrics[M.LAST]),
            EPOCHS_DONE: metrics[M.EPOCH] + 1,
            **epoch_metrics(metrics, self.plan.report),
        }
        checkpoint = self._tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._tune.report(values, checkpoint=checkpoint)


def run_trial(params: dict[str, Any], plan: TrialPlan) -> None:
    """The Tune function trainable: ``tune.with_parameters(run_trial, plan=plan)``."""
    from ray import tune

    worker = plan.worker_for(params, tune.get_context().get_trial_id())
    run_worker(worker, TuneSession(plan))
