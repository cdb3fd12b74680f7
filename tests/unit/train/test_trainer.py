"""The plain training loop: exact resume, early stopping, statistics from the training split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scannet.model import SCANN, SCANNConfig
from scannet.train import GraphDataset, TrainConfig, Trainer, seed_everything
from tests.conftest import synthetic_graph

SMALL = SCANNConfig(targets=("y",), local_dim=32, global_dim=32, dense_out=32, num_blocks=2, embedding_dim=16)


def datasets(n_train=48, n_val=16, seed=0):
    rng = np.random.default_rng(seed)
    graphs = [synthetic_graph(int(rng.integers(1, 12)), rng) for _ in range(n_train + n_val)]
    y = np.array([[g.n_atoms + 0.1 * float(np.sum(g.numbers == 6))] for g in graphs])  # a learnable target
    return GraphDataset(graphs[:n_train], y[:n_train]), GraphDataset(graphs[n_train:], y[n_train:])


def make_trainer(epochs, **kw):
    seed_everything(0)
    train, val = datasets()
    config = TrainConfig(epochs=epochs, batch_size=16, lr=1e-3, min_lr=1e-4, schedule="cosine", **kw)
    return Trainer(SCANN(SMALL), config, train, val)


def test_statistics_come_from_the_training_split():
    trainer = make_trainer(1)
    y = trainer.train_set.targets[:, 0]
    assert trainer.model.target_mean.item() == pytest.approx(y.mean(), rel=1e-6)
    assert trainer.model.target_std.item() == pytest.approx(y.std(), rel=1e-6)


def test_resume_from_state_continues_exactly():
    straight = make_trainer(4)
    for _ in range(4):
        straight.run_epoch()

    first = make_trainer(4)
    for _ in range(2):
        first.run_epoch()
    state = first.state_dict()
    torch.manual_seed(123)  # disturb the global RNG: the state must restore it
    resumed = make_trainer(4)
    resumed.load_state_dict(state)
    for _ in range(2):
        resumed.run_epoch()

    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    assert [r.val_mae for r in resumed.history.records] == [r.val_mae for r in straight.history.records]
    assert [r.seconds for r in resumed.history.records[:2]] == [r.seconds for r in first.history.records]
    assert all(r.seconds > 0 for r in resumed.history.records)  # epoch wall times survive the resume


def test_loss_falls_and_best_weights_are_restored():
    trainer = make_trainer(25)
    history = trainer.fit(progress=False)
    losses = [r.train_loss for r in history.records]
    assert losses[-1] < 0.5 * losses[0]
    best = min(r.val_mae for r in history.records)
    assert history.best_val_mae == best
    mae = trainer.evaluate(trainer.val_set)["y"]
    assert trainer.normalized_mae({"y": mae}) == pytest.approx(best, rel=1e-5)


def test_early_stopping_stops_after_patience():
    trainer = make_trainer(50, patience=2)
    trainer.history.best_val_mae = -1.0  # nothing can beat this: every epoch is "no improvement"
    history = trainer.fit(progress=False)
    assert history.stopped_early
    assert len(history.records) == 2


def test_non_finite_targets_are_rejected():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="NaN or inf"):
        GraphDataset([synthetic_graph(3, rng)], np.array([[np.nan]]))


def test_an_ema_run_keeps_the_average_records_both_curves_and_resumes_exactly():
    straight = make_trainer(4, ema_decay=0.9)
    straight.fit(progress=False)
    records = straight.history.records
    assert all(r.raw_val_mae_per_target is not None for r in records)
    assert any(r.raw_val_mae_per_target != r.val_mae_per_target for r in records)  # two different weight sets
    # the restored best weights are the average's: their MAE is the recorded (average) one, not the raw one
    best = records[straight.history.best_epoch]
    assert straight.evaluate(straight.val_set, raw=True)["y"] == pytest.approx(best.val_mae_per_target["y"], rel=1e-5)

    first = make_trainer(4, ema_decay=0.9)
    for _ in range(2):
        first.run_epoch()
    state = first.state_dict()  # before make_trainer reseeds the global RNG
    resumed = make_trainer(4, ema_decay=0.9)
    resumed.load_state_dict(state)
    resumed.fit(progress=False)
    assert [r.val_mae for r in resumed.history.records] == [r.val_mae for r in records]
    with pytest.raises(ValueError, match="no weight average"):
        make_trainer(4, ema_decay=0.9).load_state_dict(make_trainer(4).state_dict())
