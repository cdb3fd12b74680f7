"""The study's ASHA scheduler, fed reported results directly: it reads the keys a trial reports (epochs done,
the objective in report units) and stops a trial worse than its rung's best, deterministically. Whether ASHA
stops a trial in a real study depends on the order trials reach a rung, so the end-to-end study test does not
assert it; this does."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from scannet_platform.metric_names import objective_metric
from scannet_platform.tune.config import load_study
from scannet_platform.tune.driver import scheduler
from scannet_platform.tune.trial import EPOCHS_DONE
from tests.unit.platform.test_tune_config import write

REPORT = {"homo": ("eV", "meV")}


def asha(tmp_path, **scheduler_changes):
    study = load_study(
        write(tmp_path, metric="val_mae_homo", scheduler={"type": "asha", "grace_period": 1, **scheduler_changes})
    )
    objective = objective_metric(study.metric, REPORT)
    chosen = scheduler(study, epochs=4)
    chosen.set_search_properties(objective, study.mode)
    return chosen, objective


def report(chosen, objective, trial, epoch, mae):
    return chosen.on_trial_result(None, trial, {EPOCHS_DONE: epoch, objective: mae})


def test_a_trial_worse_than_its_rungs_best_is_stopped(tmp_path):
    chosen, objective = asha(tmp_path, reduction_factor=2)
    good, bad = SimpleNamespace(trial_id="good"), SimpleNamespace(trial_id="bad")
    for trial in (good, bad):
        chosen.on_trial_add(None, trial)
    assert objective == "val_mae_homo_meV"
    assert report(chosen, objective, good, 1, 100.0) == TrialScheduler.CONTINUE  # first at the rung
    assert report(chosen, objective, bad, 1, 300.0) == TrialScheduler.STOP
    assert report(chosen, objective, good, 2, 90.0) == TrialScheduler.CONTINUE


def test_a_better_trial_continues_and_the_budget_ends_every_trial(tmp_path):
    chosen, objective = asha(tmp_path, reduction_factor=2)
    first, better = SimpleNamespace(trial_id="first"), SimpleNamespace(trial_id="better")
    for trial in (first, better):
        chosen.on_trial_add(None, trial)
    assert report(chosen, objective, first, 1, 200.0) == TrialScheduler.CONTINUE
    assert report(chosen, objective, better, 1, 100.0) == TrialScheduler.CONTINUE
    assert report(chosen, objective, better, 4, 80.0) == TrialScheduler.STOP  # max_t = the study's epochs


def test_results_without_the_objective_never_stop_a_trial(tmp_path):
    chosen, objective = asha(tmp_path)
    trial = SimpleNamespace(trial_id="t")
    chosen.on_trial_add(None, trial)
    assert chosen.on_trial_result(None, trial, {EPOCHS_DONE: 1, "val_mae_homo": 1e9}) == TrialScheduler.CONTINUE


def test_fifo_studies_have_no_scheduler(tmp_path):
    study = load_study(write(tmp_path, scheduler={"type": "fifo"}))
    assert scheduler(study, epochs=4) is None
