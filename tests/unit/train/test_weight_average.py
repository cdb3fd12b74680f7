"""The exponential moving average of the weights: its formula, its swap in and out, its checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from scannet.train.ema import WeightAverage


def test_average_follows_the_formula_with_warmup_and_leaves_the_weights_alone():
    model = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    ema = WeightAverage(model, decay=0.9)
    expected = [p.clone() for p in start]
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        d = min(0.9, (1 + step) / (10 + step))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
        ema.update()
    for got, want in zip(ema.average, expected):
        torch.testing.assert_close(got, want)
    weights = [p.detach().clone() for p in model.parameters()]
    with ema.applied():
        for p, want in zip(model.parameters(), expected):
            torch.testing.assert_close(p.detach(), want)
    for p, w in zip(model.parameters(), weights):
        assert torch.equal(p.detach(), w)  # restored exactly after the block


def test_weights_are_restored_when_the_block_raises():
    model = torch.nn.Linear(2, 2)
    ema = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(3.0)
    before = model.weight.detach().clone()
    with pytest.raises(RuntimeError), ema.applied():
        raise RuntimeError("evaluation failed")
    assert torch.equal(model.weight.detach(), before)


def test_state_round_trip_and_a_foreign_state_is_refused():
    model = torch.nn.Linear(3, 2)
    ema = WeightAverage(model, decay=0.99)
    ema.update()
    other = WeightAverage(torch.nn.Linear(3, 2), decay=0.99)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and all(torch.equal(a, b) for a, b in zip(other.average, ema.average))
    with pytest.raises(ValueError, match="other parameters"):
        WeightAverage(torch.nn.Sequential(torch.nn.Linear(3, 2)), 0.99).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)
