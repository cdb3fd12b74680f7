"""The controlled deletion test of GA scores: per-unit-of-pool-weight effects, ratios and Student-t intervals over
seeds, the untrained control, the verdict, and ``scannet explain --faithfulness`` with ``--seeds``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from scannet.batch import collate_graphs
from scannet.checkpoint import save_model
from scannet.cli import main as cli_main
from scannet.data.structures_table import write_structures
from scannet.explain.faithfulness import (
    ControlledRow,
    DeletionConfig,
    DeletionRow,
    Interval,
    controlled_deletion_test,
    controlled_verdict,
    deletion_effects,
    deletion_test,
    format_controlled_tables,
    untrained_control,
)
from scannet.featurizer import featurize
from scannet.model import SCANN, preset
from scannet.train.run import prepare_run
from scannet.train.run_config import build_run_config


def row(ga, random, grad, ga_w=1.0, random_w=1.0, grad_w=1.0, target="homo", k=1, n=10):
    return DeletionRow(target, k, n, ga, random, 0.0, grad, ga_w, random_w, grad_w)


@pytest.fixture(scope="module")
def demo_model():
    torch.manual_seed(0)
    return SCANN(preset("demo", targets=("homo", "gap"))).eval()


# ------------------------------------------------------------------------------------------ figures


def test_per_weight_effect_is_the_change_over_the_removed_pool_weight():
    change = np.array([[0.2, 0.4], [0.3, 0.0]])  # [B, T]
    removed = np.array([0.5, 0.1])  # [B]
    effects = deletion_effects(change, removed)
    np.testing.assert_allclose(effects, [[0.5, 0.4], [0.2 / 0.5 + 0.3 / 0.1, 0.4 / 0.5]])


def test_deletion_test_per_weight_figures_match_a_hand_computation(demo_model, molecules):
    graphs = [featurize(atoms) for atoms in molecules[:4]]  # 7, 12, 9 and 3 atoms
    rows = deletion_test(demo_model, graphs, DeletionConfig(ks=(1,), n_random=2, batch_size=3))
    per_structure = []
    with torch.no_grad():
        for graph in graphs:
            full = demo_model(collate_graphs([graph]))
            top = int(full.ga_scores.argmax())
            mask = torch.ones(graph.n_atoms, dtype=torch.bool)
            mask[top] = False
            masked = demo_model(collate_graphs([graph]), pool_mask=mask)
            change = (masked.prediction - full.prediction).abs()[0]  # [T]
            per_structure.append((change.numpy(), change.numpy() / float(full.ga_scores[top])))
    for t, r in enumerate(rows):
        assert r.ga == pytest.approx(np.mean([c[t] for c, _ in per_structure]), rel=1e-4)
        assert r.ga_per_weight == pytest.approx(np.mean([w[t] for _, w in per_structure]), rel=1e-4)
        assert r.random_per_weight > 0 and r.grad_input_per_weight > 0


def test_ratios_of_known_rows_and_their_student_t_interval():
    trained = [row(4.0, 2.0, 8.0, 6.0, 2.0), row(6.0, 2.0, 3.0, 6.0, 3.0), row(8.0, 2.0, 4.0, 6.0, 6.0)]
    untrained = [row(3.0, 2.0, 1.0, 2.0, 2.0)] * 3
    controlled = ControlledRow.of(trained, untrained)
    assert controlled.n_structures == (10, 10, 10)
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # GA ÷ random per seed: 2, 3, 4 (sd 1)
    assert controlled.ga_vs_random == pytest.approx(Interval(3.0, 3.0 - half, 3.0 + half))
    assert controlled.ga_vs_random.low == pytest.approx(0.5159, abs=1e-4)
    assert controlled.untrained_ga_vs_random == Interval(1.5, 1.5, 1.5)  # identical seeds: zero width
    assert controlled.grad_input_vs_random.mean == pytest.approx((4.0 + 1.5 + 2.0) / 3)
    assert controlled.ga_vs_grad_input.mean == pytest.approx((0.5 + 2.0 + 2.0) / 3)
    assert controlled.ga_vs_random_per_weight.mean == pytest.approx((3.0 + 2.0 + 1.0) / 3)
    assert controlled.untrained_ga_vs_random_per_weight == Interval(1.0, 1.0, 1.0)
    assert controlled.random == Interval(2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="one target and k"):
        ControlledRow.of(trained, [row(3.0, 2.0, 1.0, k=2)] * 3)
    with pytest.raises(ValueError, match="one target and k"):
        ControlledRow.of(trained, untrained[:2])


def test_one_seed_has_no_interval_and_the_verdict_says_undecided():
    interval = Interval.of([2.5])
    assert interval.mean == 2.5 and not interval.known and interval.format() == "2.50 [n/a]"
    controlled = ControlledRow.of([row(4.0, 2.0, 5.0)], [row(3.0, 2.0, 1.0)])
    verdict = controlled_verdict([controlled])
    assert len(verdict) == 3 and all("undecided (no interval with one seed)" in line for line in verdict)
    assert "GA ÷ grad×input, k = 1: 0.80 [n/a]" in verdict[2]


def test_verdict_says_plainly_where_ga_is_not_better_than_gradient_times_input():
    def seeds(ga, grad, untrained_ga, k):
        trained = [row(ga + d, 1.0, grad, k=k) for d in (-0.1, 0.0, 0.1)]
        return ControlledRow.of(trained, [row(untrained_ga + d, 1.0, 1.0, k=k) for d in (-0.1, 0.0, 0.1)])

    rows = [seeds(3.0, 2.0, 1.5, 1), seeds(3.0, 3.0, 1.5, 2), seeds(2.0, 3.0, 2.0, 3)]
    verdict = controlled_verdict(rows)
    assert verdict[0].startswith("homo: trained GA ÷ random is above its untrained control at k = 1, 2 (")
    assert verdict[1].startswith("homo: trained GA ÷ random is NOT above its untrained control (the intervals overlap)")
    assert "at k = 3 (GA ÷ random, trained vs untrained, k = 3: 2.00 [1.75, 2.25] vs 2.00 [1.75, 2.25])" in verdict[1]
    grad = [line for line in verdict if "|gradient × input|" in line]
    assert grad == [
        "homo: GA is better than |gradient × input| at k = 1 (GA ÷ grad×input, k = 1: 1.50 [1.38, 1.62])",
        "homo: GA is not better than |gradient × input| (indistinguishable) at k = 2 "
        "(GA ÷ grad×input, k = 2: 1.00 [0.92, 1.08])",
        "homo: GA is WORSE than |gradient × input| at k = 3 (GA ÷ grad×input, k = 3: 0.67 [0.58, 0.75])",
    ]


# ------------------------------------------------------------------------------------------ the untrained control


def test_untrained_control_has_the_architecture_not_the_weights(demo_model):
    demo_model.set_target_statistics(torch.tensor([-6.0, 7.0]), torch.tensor([0.5, 1.2]))
    state = torch.get_rng_state()
    control = untrained_control(demo_model, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    assert control.config == demo_model.config and not control.training
    trained, fresh = demo_model.state_dict(), control.state_dict()
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in fresh.items()}
    assert torch.equal(fresh["target_mean"], trained["target_mean"]) and torch.equal(
        fresh["target_std"], trained["target_std"]
    )
    matrices = [k for k, v in trained.items() if v.ndim == 2]  # biases and norms start at constants
    assert len(matrices) > 10 and all(not torch.equal(trained[k], fresh[k]) for k in matrices)
    again, other = untrained_control(demo_model, seed=3).state_dict(), untrained_control(demo_model, 4).state_dict()
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)  # seeded
    assert not torch.equal(fresh["embedding.weight"], other["embedding.weight"])


def test_controlled_deletion_test_runs_both_models_on_each_seeds_sample(demo_model, molecules):
    graphs = [featurize(atoms) for atoms in molecules]
    config = DeletionConfig(ks=(1, 2), n_random=2, batch_size=4)
    samples = {5: graphs[:6], 6: graphs[3:]}
    rows = controlled_deletion_test(demo_model, samples, config)
    assert [(r.target, r.k) for r in rows] == [("homo", 1), ("gap", 1), ("homo", 2), ("gap", 2)]
    by_seed = {
        s: deletion_test(demo_model, g, DeletionConfig(ks=(1, 2), n_random=2, seed=s)) for s, g in samples.items()
    }
    control = {
        s: deletion_test(untrained_control(demo_model, s), g, DeletionConfig((1, 2), 2, s)) for s, g in samples.items()
    }
    assert rows[0].n_structures == tuple(by_seed[s][0].n_structures for s in samples)
    expected = np.mean([by_seed[s][0].ga / by_seed[s][0].random_mean for s in samples])
    assert rows[0].ga_vs_random.mean == pytest.approx(expected, rel=1e-5)
    untrained = np.mean([control[s][0].ga / control[s][0].random_mean for s in samples])
    assert rows[0].untrained_ga_vs_random.mean == pytest.approx(untrained, rel=1e-5)
    assert rows[0].untrained_ga_vs_random.mean != pytest.approx(rows[0].ga_vs_random.mean, rel=1e-3)
    lines = format_controlled_tables(rows, {"homo": "eV", "gap": "eV"}, len(samples))
    assert "untrained GA ÷ random" in lines[2] and "GA ÷ grad×input" in lines[2]
    with pytest.raises(ValueError, match="at least one seed"):
        controlled_deletion_test(demo_model, {}, config)


# ------------------------------------------------------------------------------------------ the command


def explain(capsys, *argv):
    code = cli_main(["explain", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def recorded_run(tmp_path, molecules):
    """A tiny training run folder (run_config.json, split_ids.parquet) with an untrained model saved in it."""
    structures = [atoms.copy() for atoms in molecules if len(atoms) >= 3 for _ in range(3)]  # k = 2 leaves one
    for k, atoms in enumerate(structures):
        atoms.info = {"homo": -6.0 - 0.1 * k}
    data = write_structures(tmp_path / "data" / "structures.parquet", structures, units={"homo": "eV"})
    config = build_run_config(
        None, name="tiny", data=str(data), storage_path=str(tmp_path / "runs"), data_cache=str(tmp_path / "cache")
    )
    prepared = prepare_run(config)  # writes run_config.json and split_ids.parquet, as a training run does
    torch.manual_seed(0)
    checkpoint = save_model(
        prepared.run_dir / "best_model.pt", SCANN(preset("demo")), prepared.worker.featurizer, {"units": {"homo": "eV"}}
    )
    return checkpoint, prepared.split_sizes["test"]


def test_faithfulness_prints_the_controls_over_seeds(recorded_run, capsys):
    checkpoint, n_test = recorded_run
    argv = ["--model", checkpoint, "--faithfulness", "--n-molecules", 5, "--k", 1, 2, "--random-seeds", 3]
    code, stdout, err = explain(capsys, *argv, "--seeds", 2)
    assert code == 0, err
    assert "over 2 seeds" in stdout and "sample seeds 0-1" in stdout
    header = next(line for line in stdout.splitlines() if line.startswith("| target | k | structures"))
    assert "untrained GA ÷ random" in header and "grad×input ÷ random" in header and "GA ÷ grad×input" in header
    homo = [line.split("|") for line in stdout.splitlines() if line.startswith("| homo |")]
    ratios = ["|".join(cells) for cells in homo if len(cells) == 10]  # the 8 columns of the ratio table
    per_weight = [cells for cells in homo if len(cells) == 9]  # the 7 columns of the per-weight table
    assert len(per_weight) == 2 and all(cells[3].strip().endswith("meV") for cells in per_weight)
    assert [line.split("|")[2].strip() for line in ratios] == ["1", "2"]
    assert all(line.split("|")[3].strip() == str(min(5, n_test)) for line in ratios)
    assert all(line.count("[") == 5 for line in ratios)  # the random figure and four ratios, each with its interval
    assert "Effect per unit of pool weight" in stdout
    assert sum(line.startswith("homo: ") for line in stdout.splitlines()) >= 3  # the verdict


def test_faithfulness_refuses_zero_seeds(recorded_run, capsys):
    with pytest.raises(SystemExit) as stop:
        explain(capsys, "--model", recorded_run[0], "--faithfulness", "--seeds", 0)
    assert stop.value.code == 2
    assert "--seeds: must be at least 1, got 0" in capsys.readouterr().err
