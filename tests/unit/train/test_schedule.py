"""The learning-rate schedules reproduce the reference's formulas (docs/model-spec.md §4.2)."""

from __future__ import annotations

import math

import pytest

from scannet.train.schedule import LearningRateSchedule


def test_cosine_follows_keras_cosine_decay_times_inverse_time_decay():
    s = LearningRateSchedule("cosine", lr=5e-4, min_lr=1e-4, steps_per_epoch=10, epochs=100)
    T = 500  # half of all steps
    assert s.lr_at(0) == pytest.approx(5e-4)
    mid = 1e-4 + (5e-4 - 1e-4) * 0.5  # cosine at T/2 is halfway
    assert s.lr_at(T // 2) == pytest.approx(mid / (1 + 1e-5 * (T // 2)))
    assert s.lr_at(T) == pytest.approx(1e-4 / (1 + 1e-5 * T))
    assert s.lr_at(3 * T) == pytest.approx(1e-4 / (1 + 1e-5 * 3 * T))  # flat at min_lr after T


def test_sgdr_cycles_and_shrinking_peaks():
    s = LearningRateSchedule("sgdr", lr=1.0, min_lr=0.0, steps_per_epoch=1, epochs=1000, inverse_time_decay=0.0)
    lrs = []
    for epoch in range(160):
        s.start_epoch()
        lrs.append(s.lr_at(epoch))
        s.end_epoch(val_mae=1.0 / (epoch + 1))  # always improving
    assert lrs[0] == 1.0  # before the trigger: lr_max
    # epoch 1 is t_cur = 2 of the first 50-epoch cycle
    assert lrs[1] == pytest.approx((1 + math.cos(math.pi * 2 / 50)) / 2)
    # epochs 1..49 are t_cur 2..50 (the last reaches min_lr), epoch 50 restarts a cycle of 100
    assert lrs[49] == pytest.approx(0.0, abs=1e-12)
    assert s.sgdr.cycle_length == 200  # after 50 + 100 epochs the third cycle has begun
    restart_peak = lrs[50] / ((1 + math.cos(math.pi / 100)) / 2)
    # peak_next = max(peak / 1.2, lr at the last improvement) = max(1/1.2, ~0) at epoch 49
    assert restart_peak == pytest.approx(1 / 1.2, rel=1e-9)


def test_sgdr_state_round_trip_resumes_identically():
    def run(s, epochs):
        out = []
        for e in epochs:
            s.start_epoch()
            out.append(s.lr_at(e))
            s.end_epoch(0.5 + 0.1 * math.sin(e))
        return out

    full = run(LearningRateSchedule("sgdr", 1e-3, 1e-5, 1, 300), range(120))
    first = LearningRateSchedule("sgdr", 1e-3, 1e-5, 1, 300)
    head = run(first, range(70))
    resumed = LearningRateSchedule("sgdr", 1e-3, 1e-5, 1, 300)
    resumed.load_state_dict(first.state_dict())
    assert head + run(resumed, range(70, 120)) == full


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown schedule"):
        LearningRateSchedule("linear", 1e-3, 1e-4, 1, 1)


def test_warmup_rises_linearly_then_the_cosine_spans_the_rest_to_the_last_step():
    s = LearningRateSchedule(
        "cosine",
        lr=1e-3,
        min_lr=1e-5,
        steps_per_epoch=10,
        epochs=10,
        inverse_time_decay=0.0,
        cosine_fraction=1.0,
        warmup_steps=20,
    )
    assert [s.lr_at(t) for t in (0, 9, 19)] == pytest.approx([1e-3 / 20, 1e-3 / 2, 1e-3])
    assert s.lr_at(20) == pytest.approx(1e-3)  # the cosine starts at its peak where the warm-up ends
    assert s.lr_at(60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # halfway through the 80 cosine steps
    assert s.lr_at(100) == pytest.approx(1e-5)  # the floor at the last step, not before
    assert s.lr_at(99) > s.lr_at(100)


def test_half_cosine_without_warmup_is_unchanged_by_the_new_options():
    old = LearningRateSchedule("cosine", 5e-4, 1e-5, 7, 30)
    new = LearningRateSchedule("cosine", 5e-4, 1e-5, 7, 30, cosine_fraction=0.5, warmup_steps=0)
    assert [old.lr_at(t) for t in range(210)] == [new.lr_at(t) for t in range(210)]
