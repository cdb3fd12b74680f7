"""The plain training loop of the reference recipe (docs/model-spec.md §4): usable alone or inside a Ray worker.

Loss = RMSE of the z-scored targets + l2 · Σ‖W‖² over the kernels the spec lists; Adam (eps 1e-7);
cosine or SGDR schedule × inverse-time decay per step (optionally after a linear warm-up); early stopping on the
validation MAE (mean over targets of the z-scored MAE); the best weights are restored at the end. With
``ema_decay`` the validated, kept and saved weights are the moving average of the weights (:mod:`scannet.train.ema`),
and the raw weights' validation MAE is recorded beside theirs.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from scannet.batch import Batch, batch_to
from scannet.distributed import all_reduce_sum, world_size
from scannet.model.scann import SCANN
from scannet.precision import Precision, check_precision, precision_autocast
from scannet.static_shapes import real_output, real_targets
from scannet.train.config import TrainConfig
from scannet.train.data import GraphDataset, make_loader
from scannet.train.ema import WeightAverage
from scannet.train.schedule import LearningRateSchedule


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run stops instead of training on garbage."""


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_mae: float  # mean over targets of the z-scored MAE
    val_mae_per_target: dict[str, float]  # dataset units
    lr: float
    seconds: float | None = None  # wall time of the epoch, training and validation (None in older runs)
    raw_val_mae_per_target: dict[str, float] | None = None  # with an EMA: the raw weights' MAE (dataset units)


@dataclass
class History:
    records: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = -1
    best_val_mae: float = math.inf
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def target_statistics(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof 0) per target [T] of the training split; a constant target gets std 1."""
    mean = targets.mean(axis=0)
    std = targets.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def rmse_loss(normalized_prediction: torch.Tensor, normalized_target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The RMSE of the z-scored targets over the GLOBAL batch (all ranks), as (loss to backpropagate, value).

    With a process group, the squared errors and their count are summed over ranks first, so the value is
    the RMSE of the whole global batch, not a mean of per-rank RMSEs. The returned tensor is a surrogate
    whose gradient, averaged over ranks by DDP, equals the gradient of that global RMSE:
    d RMSE = dS / (2 N RMSE), S = Σ_ranks S_r, so rank r backpropagates W · S_r / (2 N RMSE).
    Without a process group (W = 1) the gradient is exactly that of ``sqrt(mean(err²))``.
    """
    squared = (normalized_prediction - normalized_target).square()  # [b, T]
    local_sum = squared.sum()
    total_sum, total_count = all_reduce_sum(
        torch.stack([local_sum.detach().double().cpu(), torch.tensor(float(squared.numel()), dtype=torch.float64)])
    )
    rmse = float(np.sqrt(total_sum / max(total_count, 1.0)))
    scale = world_size() / (2.0 * max(total_count, 1.0) * max(rmse, 1e-12))
    return local_sum * scale, rmse


@torch.no_grad()
def predict_batches(
    model: SCANN, batches: Iterable[Batch], device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(predictions [N, T], targets [N, T]) of ``model`` in eval mode, in the dataset's units, in batch order."""
    model.eval()
    predictions, targets = [], []
    for batch in batches:
        batch = batch_to(batch, device)
        predictions.append(real_output(model(batch), batch).prediction.cpu())
        targets.append(real_targets(batch).cpu())
    if not predictions:
        width = len(model.config.targets)
        return np.zeros((0, width), np.float32), np.zeros((0, width), np.float32)
    return torch.cat(predictions).numpy(), torch.cat(targets).numpy()


def _plain_floats(values: dict[str, Any]) -> dict[str, float]:
    """Plain Python floats (a checkpoint's history loads with ``weights_only``)."""
    return {key: float(value) for key, value in values.items()}


class TrainLoop:
    """The optimisation state of one run and its per-epoch steps over any iterable of batches.

    Data-agnostic: the in-memory :class:`Trainer` feeds it from a DataLoader, a Ray Train worker from
    its dataset shard. ``forward`` is the module called on batches (a DDP wrapper in distributed runs);
    ``model`` is the plain SCANN whose statistics, penalty and weights are read and saved.
    """

    def __init__(
        self,
        model: SCANN,
        config: TrainConfig,
        steps_per_epoch: int,
        device: str | torch.device = "cpu",
        forward: torch.nn.Module | None = None,
        precision: Precision = "fp32",
    ) -> None:
        check_precision(precision)
        self.config, self.device, self.precision = config, torch.device(device), precision
        self.model = model.to(self.device)
        self.forward = forward if forward is not None else self.model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, eps=config.adam_eps, fused=True)
        self.schedule = LearningRateSchedule(
            config.schedule,
            config.lr,
            config.min_lr,
            steps_per_epoch,
            config.epochs,
            config.inverse_time_decay,
            cosine_fraction=config.cosine_fraction,
            warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        )
        self.ema = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.epoch, self.step = 0, 0
        self.epoch_started = time.perf_counter()  # set again by every train_epoch
        self.history = History()
        self.best_state: dict[str, torch.Tensor] | None = None

    def autocast(self):
        """bf16 autocast of the forward pass when asked for (GPU mixed precision); a no-op for fp32."""
        return precision_autocast(self.device, self.precision)

    def train_epoch(self, batches: Iterable[Batch], progress: bool = False) -> float:
        """One pass over ``batches``; returns the mean over steps of the global-batch loss (RMSE + L2 term)."""
        self.epoch_started = time.perf_counter()
        self.forward.train()
        self.schedule.start_epoch()
        total, count = 0.0, 0
        for batch in tqdm(batches, desc=f"epoch {self.epoch}", leave=False, disable=not progress):
            batch = batch_to(batch, self.device)
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule.lr_at(self.step)
            with self.autocast():
                output = real_output(self.forward(batch), batch)  # a padded batch's dummy structures dropped
            target = (real_targets(batch) - self.model.target_mean) / self.model.target_std  # [b, T]
            rmse_term, rmse = rmse_loss(output.normalized.float(), target)
            penalty = self.config.l2 * self.model.l2_penalty()
            loss_value = rmse + float(penalty.detach())  # the same on every rank
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"epoch {self.epoch}, step {self.step}: the training loss is {loss_value} (lr "
                    f"{self.schedule.lr_at(self.step):.3g}); stopped before applying it. Resume continues from the "
                    "last checkpoint; lower the learning rate or check the targets for outliers"
                )
            self.optimizer.zero_grad(set_to_none=True)
            (rmse_term + penalty).backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            total += loss_value
            count += 1
        return total / max(count, 1)

    def kept_weights(self):
        """The context in which ``model`` holds the weights the run validates and keeps: the average with an EMA."""
        return self.ema.applied() if self.ema is not None else nullcontext()

    def predict(self, batches: Iterable[Batch], raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(predictions [N, T], targets [N, T]) in the dataset's units, in batch order, of the kept weights (the
        raw weights with ``raw``)."""
        with nullcontext() if raw else self.kept_weights():
            return predict_batches(self.model, batches, self.device)

    def error_sums(self, batches: Iterable[Batch], raw: bool = False) -> tuple[np.ndarray, int]:
        """(Σ|error| per target [T], number of structures): the parts a distributed MAE adds up."""
        predictions, targets = self.predict(batches, raw)
        return np.abs(predictions - targets).sum(axis=0, dtype=np.float64), len(targets)

    def mae_per_target(self, error_sum: np.ndarray, count: int) -> dict[str, float]:
        return dict(zip(self.model.config.targets, (error_sum / max(count, 1)).tolist()))

    def normalized_mae(self, mae_per_target: dict[str, float]) -> float:
        """Mean over targets of the MAE in z-scored units (the early-stopping metric)."""
        std = self.model.target_std.cpu().numpy()
        return float(np.mean(np.asarray(list(mae_per_target.values())) / std))

    def end_epoch(
        self,
        train_loss: float,
        val_mae_per_target: dict[str, float],
        lr: float,
        raw_val_mae_per_target: dict[str, float] | None = None,
    ) -> EpochRecord:
        """Record the epoch (the kept weights' validation MAE, and the raw weights' with an EMA), update the
        schedule and the best weights, advance the epoch counter."""
        val_mae = self.normalized_mae(val_mae_per_target)
        self.schedule.end_epoch(val_mae)
        raw = _plain_floats(raw_val_mae_per_target) if raw_val_mae_per_target is not None else None
        seconds = time.perf_counter() - self.epoch_started
        per_target = _plain_floats(val_mae_per_target)
        record = EpochRecord(self.epoch, float(train_loss), val_mae, per_target, float(lr), seconds, raw)
        self.history.records.append(record)
        if val_mae < self.history.best_val_mae:
            self.history.best_val_mae, self.history.best_epoch = val_mae, self.epoch
            with self.kept_weights():
                self.best_state = copy.deepcopy(self.model.state_dict())
        self.epoch += 1
        return record

    @property
    def should_stop(self) -> bool:
        """Finished, or no better validation MAE for ``patience`` epochs."""
        return self.epoch >= self.config.epochs or self.epoch - 1 - self.history.best_epoch >= self.config.patience

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly: weights, optimiser, schedule, RNG, history."""
        return {
            "model": self.model.state_dict(),
            "best_model": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": [asdict(r) for r in self.history.records],
            "best_epoch": self.history.best_epoch,
            "best_val_mae": self.history.best_val_mae,
            "torch_rng": torch.get_rng_state(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.best_state = state["best_model"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history.records = [EpochRecord(**r) for r in state["history"]]
        self.history.best_epoch, self.history.best_val_mae = state["best_epoch"], state["best_val_mae"]
        torch.set_rng_state(state["torch_rng"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError("the checkpoint holds no weight average; resume it without ema_decay")
            self.ema.load_state_dict(state["ema"])


class Trainer(TrainLoop):
    """The in-memory path: trains on a train/validation pair of :class:`GraphDataset`.

    The model's target statistics are set from the training split (unless ``set_statistics=False``,
    e.g. when fine-tuning or resuming a model that already has them).
    """

    def __init__(
        self,
        model: SCANN,
        config: TrainConfig,
        train_set: GraphDataset,
        val_set: GraphDataset,
        device: str | torch.device = "cpu",
        set_statistics: bool = True,
    ) -> None:
        if set_statistics:
            mean, std = target_statistics(train_set.targets)
            model.set_target_statistics(torch.as_tensor(mean), torch.as_tensor(std))
        self.train_set, self.val_set = train_set, val_set
        self.train_loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed)
        super().__init__(model, config, len(self.train_loader), device)

    def evaluate(self, dataset: GraphDataset, raw: bool = False) -> dict[str, float]:
        """MAE per target in the dataset's units (of the kept weights; of the raw ones with ``raw``)."""
        loader = make_loader(dataset, self.config.batch_size, shuffle=False)
        return self.mae_per_target(*self.error_sums(loader, raw))

    def run_epoch(self, progress: bool = False) -> EpochRecord:
        """Train one epoch, validate, update the schedule and the best weights."""
        lr = self.schedule.lr_at(self.step)
        train_loss = self.train_epoch(self.train_loader, progress)
        raw = self.evaluate(self.val_set, raw=True) if self.ema is not None else None
        return self.end_epoch(train_loss, self.evaluate(self.val_set), lr, raw)

    def fit(self, progress: bool = True, on_epoch_end: Callable[[EpochRecord], None] | None = None) -> History:
        """Train until ``config.epochs`` or early stopping; restores the best weights at the end."""
        bar = tqdm(total=self.config.epochs, initial=self.epoch, desc="training", disable=not progress)
        while not self.should_stop:
            record = self.run_epoch()
            bar.update(1)
            bar.set_postfix(loss=f"{record.train_loss:.4f}", val_mae=f"{record.val_mae:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(record)
        self.history.stopped_early = self.epoch < self.config.epochs
        bar.close()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.history

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "loader_rng": self.train_loader.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.train_loader.generator.set_state(state["loader_rng"])
