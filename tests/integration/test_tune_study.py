"""A tiny study end to end on CPU: interrupted (SIGINT to the driver) after its first trial ended, then resumed
in this process; every trial ends completed or stopped early by ASHA (which of the two depends on the order
trials reach a rung, so it is not asserted here: tests/unit/platform/test_tune_scheduler.py pins the
scheduler's decisions), the finished trial is kept (not run again), every trial has
its child run under the study's parent run, the best trial is registered with tags pointing at the study,
the top-k export loads, and no placement group or actor is left behind. Guarded by timeouts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

STUDY = {
    "name": "tiny-study",
    "run": {
        "data": "qm9",
        "targets": ["homo"],
        "n_structures": 200,
        "model_preset": "demo",
        "model_overrides": {"num_blocks": 1, "local_dim": 16, "global_dim": 16, "dense_out": 16, "embedding_dim": 8},
        "train": {"epochs": 3, "schedule": "cosine", "lr": 1.0e-3, "patience": 3, "batch_size": 16},
        # epochs of >= 1 s: trials still run when the SIGINT sent after the first trial ended arrives
        "hooks": {"epoch_delay_s": 1.0},
    },
    "space": {
        "train.lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-3},
        "model.g_update": {"type": "choice", "values": [True, False]},
    },
    "metric": "val_mae_homo",
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "searcher": {"type": "random", "seed": 0},
    "num_samples": 4,
    "max_concurrent_trials": 2,
    "top_k": 2,
    # every trial, ASHA-stopped ones too, keeps a checkpoint: which trials ASHA stops depends on the order they
    # reach its rung, and the best trial and the top-k export must not depend on that
    "checkpoint_every": 1,
}


class Timeout(Exception):
    pass


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tune") / "tiny.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def interrupted(study_file):
    """The study run by ``scannet tune`` in its own process group, sent SIGINT once a trial has ended."""
    from scannet_platform.tune.config import load_study

    study = load_study(study_file)
    study_dir = study.base_run().runs_dir / study.name
    outcomes = study_dir / "outcomes.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "scannet.cli", "tune", "--space", str(study_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        while not outcomes.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert outcomes.exists(), "no trial ended before the deadline"
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:  # never leave it running: its whole group (driver and its local Ray)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return study, study_dir, process.returncode, output, json.loads(outcomes.read_text())


@pytest.fixture(scope="module")
def ray_here():
    import ray

    context = ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False, logging_level="ERROR")
    ray.dashboard_address = f"http://{context.dashboard_url}"  # this cluster's (others may run on the machine)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def resumed(interrupted, ray_here):
    from scannet_platform.tune.driver import run_study

    study = interrupted[0]

    def on_alarm(signum, frame):
        raise Timeout("the resumed study did not finish in 420 s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(420)
    try:
        summary = run_study(study)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return summary


def test_an_interrupted_study_says_so_and_keeps_its_ended_trials(interrupted):
    study, study_dir, code, output, ended = interrupted
    assert code == 1, output[-3000:]
    assert "interrupted: re-run the same command to resume" in output
    assert set(ended.values()) <= {"completed", "stopped early"} and ended
    assert (study_dir / "tune").is_dir() and (study_dir / "results.csv").exists()


def test_the_resumed_study_finishes_every_trial(interrupted, resumed):
    _, study_dir, _, _, ended_first = interrupted
    assert not resumed.interrupted
    assert sum(resumed.counts.values()) == STUDY["num_samples"]
    assert set(resumed.counts) <= {"completed", "stopped early"}
    assert resumed.counts.get("completed", 0) >= 1  # the first trial at ASHA's last rung always goes on
    outcomes = json.loads((study_dir / "outcomes.json").read_text())
    for trial_id, outcome in ended_first.items():  # kept as they were, not run again
        assert outcomes[trial_id] == outcome
    lines = (study_dir / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + STUDY["num_samples"]
    assert resumed.best_trial == lines[1].split(",")[0]


def test_mlflow_holds_a_parent_run_with_one_child_per_trial(interrupted, resumed):
    from mlflow import MlflowClient

    from scannet_platform.tracking.runs import normalized_uri
    from scannet_platform.tune.tracking import OUTCOME_TAG, PARENT_TAG, TRIAL_TAG

    study, study_dir, _, _, ended_first = interrupted
    client = MlflowClient(normalized_uri(study.tracking_uri))
    parent = client.get_run(resumed.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["scannet.best_trial"] == resumed.best_trial
    assert parent.data.tags["scannet.best_trial.model.g_update"] == str(resumed.best_params["model.g_update"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
    )
    by_trial: dict[str, list] = {}
    for child in sorted(children, key=lambda c: c.info.start_time):
        by_trial.setdefault(child.data.tags[TRIAL_TAG], []).append(child)
    assert len(by_trial) == STUDY["num_samples"]
    outcomes = json.loads((study_dir / "outcomes.json").read_text())
    for attempts in by_trial.values():  # a trial restarted without a checkpoint: its earlier attempts KILLED
        for earlier in attempts[:-1]:
            assert earlier.info.status == "KILLED"
            assert earlier.data.tags[OUTCOME_TAG].startswith("interrupted after epoch")
    for trial_id, child in ((t, a[-1]) for t, a in by_trial.items()):
        assert child.info.status == "FINISHED"
        assert child.data.tags[OUTCOME_TAG] == outcomes[trial_id]
        assert {"train.lr", "model.g_update"} <= set(child.data.params)  # (+ the registered model's config)
        history = client.get_metric_history(child.info.run_id, "val_mae_homo_meV")
        steps = [m.step for m in history]
        assert steps == sorted(set(steps)), f"trial {trial_id}: epochs logged twice {steps}"
        epochs = STUDY["run"]["train"]["epochs"]
        if outcomes[trial_id] == "completed":
            assert max(steps) == epochs
        else:  # stopped by ASHA at a rung before the budget
            assert max(steps) < epochs
    for trial_id in ended_first:  # ended before the interruption: one run, logged in the first launch
        assert len(by_trial[trial_id]) == 1
    names = [a[-1].info.run_name for a in by_trial.values()]  # short and unique in the runs table
    assert len(set(names)) == len(names), names
    for attempts in by_trial.values():  # attempt n > 1 (a restart without a checkpoint) is named so
        for n, run in enumerate(attempts, start=1):
            suffix = f"-attempt{n}" if n > 1 else ""
            assert re.fullmatch(r"t\d\d-lr[0-9.e-]+-gu[TF]" + suffix, run.info.run_name), run.info.run_name
    assert all(f"best_{resumed.objective}" in a[-1].data.metrics for a in by_trial.values())
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/objective_by_trial.png", "plots/objective_by_time.png", "plots/importance.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "study_files")} >= {"study_files/results.csv"}


def test_the_best_trial_is_registered_with_tags_pointing_at_the_study(interrupted, resumed):
    from mlflow import MlflowClient

    from scannet_platform.tracking.runs import normalized_uri

    study = interrupted[0]
    client = MlflowClient(normalized_uri(study.tracking_uri))
    name, version = resumed.model_uri[len("models:/") :].split("/")
    tags = client.get_model_version(name, version).tags
    assert tags["scannet.study"] == study.name
    assert tags["scannet.study_run_id"] == resumed.mlflow_run_id
    assert tags["scannet.trial_id"] == resumed.best_trial
    assert resumed.test_mae["homo"] > 0


def test_the_top_k_trials_are_exported_as_an_ensemble_that_loads(interrupted, resumed):
    import scannet
    from scannet_platform.screen.models import resolve_models
    from scannet_platform.tracking.runs import normalized_uri

    manifest = json.loads(Path(resumed.ensemble).read_text())
    assert [m["trial_id"] for m in manifest["members"]][0] == resumed.best_trial
    values = [m["val_metric"] for m in manifest["members"]]
    assert len(values) == STUDY["top_k"] and values == sorted(values)
    for member in manifest["members"]:
        model = scannet.load(Path(resumed.ensemble).parent / member["checkpoint"])
        assert model is not None
    # evaluated and calibrated: the mean's test MAE, a std scale fitted on val, the test coverage and its plot
    assert manifest["test_mae"]["homo"] > 0 and manifest["std_scale"]["homo"] > 0
    assert set(manifest["calibration"]["after"]["homo"]) == {"within_1sigma", "within_2sigma"}
    assert (Path(resumed.ensemble).parent / "ensemble_reliability.png").is_file()
    assert any(line.startswith("calibration: homo std x") for line in resumed.lines())
    # logged on the parent run, where scannet screen --model runs:/<parent>/ensemble finds it
    assert resumed.ensemble_uri == f"runs:/{resumed.mlflow_run_id}/ensemble"
    (group,) = resolve_models([resumed.ensemble_uri], normalized_uri(interrupted[0].tracking_uri))
    assert len(group.members) == STUDY["top_k"] and group.std_scale == manifest["std_scale"]


def test_no_placement_group_or_actor_is_left_behind(resumed, ray_here):
    from ray.util.state import list_actors

    groups = ray_here.util.placement_group_table()
    assert [g for g in groups.values() if g["state"] != "REMOVED"] == []
    assert list_actors(address=ray_here.dashboard_address, filters=[("state", "=", "ALIVE")]) == []


def test_a_time_budget_ends_the_study_and_its_best_trial_is_still_registered(ray_here, tmp_path):
    from scannet_platform.tune.config import load_study
    from scannet_platform.tune.driver import run_study

    space = tmp_path / "budget.yaml"
    budgeted = {**STUDY, "name": "budget-study", "num_samples": 200, "max_concurrent_trials": 1, "top_k": 1}
    budgeted["run"] = {**STUDY["run"], "hooks": {"epoch_delay_s": 0.0}}  # trials of about a second
    space.write_text(yaml.safe_dump({**budgeted, "time_budget_s": 15}, sort_keys=False))
    summary = run_study(load_study(space))
    assert summary.budget_reached and not summary.interrupted
    assert 0 < summary.ended_this_launch < 200
    assert summary.model_uri is not None and summary.test_mae["homo"] > 0
    assert "time budget: reached before every trial ended" in "\n".join(summary.lines())
