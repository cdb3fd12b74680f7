"""Study files: the shipped spaces load and build their models, bad files are refused with the key named,
conditional parameters are sampled only when their condition holds, resources are planned or refused."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml

from scannet.model import SCANN
from scannet.typed_config import ConfigError
from scannet_platform.metric_names import objective_metric
from scannet_platform.tune.config import load_study
from scannet_platform.tune.driver import TrialResult, check_study_resume, to_rows
from scannet_platform.tune.resources import plan_concurrency
from scannet_platform.tune.tracking import parameter_importances, write_results_csv

SPACES = sorted((Path(__file__).parents[3] / "tune_spaces").glob("*.yaml"))

BASE = {
    "name": "s",
    "run": {"n_structures": 100, "model_preset": "demo", "train": {"epochs": 3}},
    "space": {"train.lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-2}},
    "scheduler": {"grace_period": 1},
}


def write(tmp_path: Path, **changes) -> Path:
    data = {**BASE, **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_shipped_spaces_exist():
    assert {p.name for p in SPACES} >= {"small_cpu.yaml", "qm9_gpu.yaml"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_each_shipped_space_loads_and_builds_its_models(path):
    study = load_study(path)
    grid = study.model_grid(study.base_model())
    assert len(grid) > 1
    distinct = {model for model, _ in grid}
    for model in list(distinct)[:: max(1, len(distinct) // 12)]:  # a spread of them, full size
        parameters = sum(p.numel() for p in SCANN(model).parameters())
        assert parameters > 0
        assert model.local_dim % model.num_heads == 0


def test_the_gpu_space_pairs_each_distance_threshold_with_a_basis_that_covers_it():
    study = load_study(SPACES[[p.name for p in SPACES].index("qm9_gpu.yaml")])
    pairs = {(f.distance_threshold, m.gaussian_distance_max) for m, f in study.model_grid(study.base_model())}
    assert pairs == {(4.0, 4.0), (5.0, 5.0)}
    assert len(study.featurizer_choices(study.base_run().resolved_featurizer(False))) == 2


def test_the_study_is_named_after_its_file_unless_named(tmp_path):
    data = {k: v for k, v in BASE.items() if k != "name"}
    path = tmp_path / "my-study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_study(path).name == "my-study"
    assert load_study(path, name="other").name == "other"
    assert load_study(path, run={"n_structures": 50}).base_run().n_structures == 50


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sampels": 3}, "unknown StudyConfig keys ['sampels']"),
        ({"space": {"optimizer.lr": {"type": "uniform", "low": 0, "high": 1}}}, "space.optimizer.lr: parameters are"),
        ({"space": {"train.learning_rate": {"type": "uniform", "low": 0, "high": 1}}}, "has no field 'learning_rate'"),
        ({"space": {"train.lr": {"type": "loguniform", "low": 0.0, "high": 1.0}}}, "loguniform needs low > 0"),
        ({"space": {"train.lr": {"type": "uniform", "low": 1.0, "high": 0.5}}}, "low 1.0 must be below high 0.5"),
        ({"space": {"train.lr": {"type": "loguniform", "low": "1e-4", "high": 1.0}}}, "write 1.0e-4"),
        ({"space": {"train.lr": {"type": "gaussian", "low": 0, "high": 1}}}, "space.train.lr.type: must be one of"),
        ({"space": {"train.epochs": {"type": "int", "low": 1, "high": 9}}}, "space.train.epochs: cannot be searched"),
        ({"space": {"model.local_dim": {"type": "choice"}}}, "a choice takes values"),
        (
            {"space": {"featurizer.distance_threshold": {"type": "uniform", "low": 3.0, "high": 4.0}}},
            "featurizer settings must be a choice",
        ),
        (
            {"space": {"model.num_heads": {"type": "choice", "values": [3, 4]}}},
            "the combination {'model.num_heads': 3} cannot be built",
        ),
        (
            {
                "space": {
                    "train.min_lr": {"type": "uniform", "low": 0.0, "high": 1.0, "when": {"train.schedule": "cosine"}},
                    "train.schedule": {"type": "choice", "values": ["cosine", "sgdr"]},
                }
            },
            "when names 'train.schedule', which is not a parameter declared before it",
        ),
        (
            {
                "space": {
                    "train.schedule": {"type": "choice", "values": ["cosine", "sgdr"]},
                    "train.min_lr": {"type": "uniform", "low": 0.0, "high": 1.0, "when": {"train.schedule": "step"}},
                }
            },
            "when train.schedule = ['step']",
        ),
        ({"metric": "val_mae_lumo"}, "metric 'val_mae_lumo': choose val_mae or one of ['val_mae_homo']"),
        ({"scheduler": {"grace_period": 3}}, "grace_period 3 must be below the epoch budget"),
        ({"resources_per_trial": {"cpu": 0}}, "need cpu > 0"),
        ({"run": {"n_structures": 2}}, "run: "),
        ({"run": {"name": "x"}}, "run.name: the trials' run is named after the study"),
        ({"space": {}}, "declare at least one parameter"),
    ],
)
def test_a_bad_study_file_is_refused_naming_the_key(tmp_path, changes, message):
    with pytest.raises(ConfigError) as error:
        load_study(write(tmp_path, **changes))
    assert message in str(error.value)
    assert str(tmp_path / "study.yaml") in str(error.value)


def test_a_missing_or_malformed_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_study(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(bad)


def test_conditional_parameters_are_sampled_only_when_their_condition_holds(tmp_path):
    space = {
        "train.schedule": {"type": "choice", "values": ["cosine", "sgdr"]},
        "train.min_lr": {"type": "loguniform", "low": 1.0e-6, "high": 1.0e-4, "when": {"train.schedule": "cosine"}},
        "model.num_blocks": {"type": "int", "low": 1, "high": 4},
    }
    study = load_study(write(tmp_path, space=space))
    sampler = study.sampler()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trials.optimize(lambda trial: sampler(trial) or 0.0, n_trials=40)
    seen = {t.params["train.schedule"] for t in trials.trials}
    assert seen == {"cosine", "sgdr"}
    for trial in trials.trials:
        assert ("train.min_lr" in trial.params) == (trial.params["train.schedule"] == "cosine")
        assert 1 <= trial.params["model.num_blocks"] <= 4
        if "train.min_lr" in trial.params:
            assert 1.0e-6 <= trial.params["train.min_lr"] <= 1.0e-4
    # the sampled values build the trial's settings over the base run's
    study_params = trials.trials[0].params
    model, train, _ = study.apply(
        study_params, study.base_model(), study.base_run().train, study.base_run().resolved_featurizer(False)
    )
    assert train.schedule == study_params["train.schedule"] and model.num_blocks == study_params["model.num_blocks"]


def test_the_objective_is_the_reported_metric_in_report_units():
    report = {"homo": (1000.0, "meV"), "alpha": (1.0, "Bohr^3")}
    assert objective_metric("val_mae_homo", report) == "val_mae_homo_meV"
    assert objective_metric("val_mae_alpha", report) == "val_mae_alpha_Bohr3"
    assert objective_metric("val_mae", report) == "val_mae_standardized"


# ------------------------------------------------------------------------------------------ resources


def study_with(tmp_path, **changes):
    return load_study(write(tmp_path, **{"num_samples": 16, **changes}))


def test_concurrency_is_what_the_nodes_hold(tmp_path):
    count, reason = plan_concurrency(study_with(tmp_path), [{"CPU": 2.0}])
    assert count == 2 and "1 CPU, 0 GPU each" in reason
    count, _ = plan_concurrency(study_with(tmp_path, reserve_cpus=1), [{"CPU": 2.0}])
    assert count == 1
    count, reason = plan_concurrency(study_with(tmp_path, max_concurrent_trials=3), [{"CPU": 16.0}])
    assert count == 3 and "max_concurrent_trials" in reason
    count, _ = plan_concurrency(study_with(tmp_path, num_samples=2), [{"CPU": 16.0}])
    assert count == 2
    # four trials share each GPU, four CPUs each: 16 CPUs and 2 GPUs hold 4 (CPU-bound), not 8
    gpu = study_with(tmp_path, resources_per_trial={"cpu": 4, "gpu": 0.25})
    assert plan_concurrency(gpu, [{"CPU": 16.0, "GPU": 2.0}])[0] == 4
    assert plan_concurrency(gpu, [{"CPU": 64.0, "GPU": 2.0}])[0] == 8
    # a trial must fit on ONE node: two 2-CPU nodes do not hold a 3-CPU trial
    three = study_with(tmp_path, resources_per_trial={"cpu": 3})
    with pytest.raises(ConfigError, match=r"needs 3 CPUs and 0 GPUs on one node.*largest: 2 CPUs"):
        plan_concurrency(three, [{"CPU": 2.0}, {"CPU": 2.0}])


def test_settings_that_would_wait_forever_are_refused_with_the_numbers(tmp_path):
    gpu = study_with(tmp_path, resources_per_trial={"cpu": 1, "gpu": 0.5})
    with pytest.raises(ConfigError, match=r"0.5 GPUs on one node.*cluster: 2 CPUs, 0 GPUs"):
        plan_concurrency(gpu, [{"CPU": 2.0}])
    with pytest.raises(ConfigError, match=r"reserve_cpus 2 leaves 0 of the cluster's 2 CPUs, fewer than one trial's 1"):
        plan_concurrency(study_with(tmp_path, reserve_cpus=2), [{"CPU": 2.0}])


# --------------------------------------------------------------------------------------------- results


def test_results_rank_trials_by_their_best_epoch_and_keep_unfinished_ones_last(tmp_path):
    trials = [
        TrialResult("a", "completed", {"train.lr": 0.1}, [(10.0, 5.0), (11.0, 3.0), (12.0, 4.0)], 3.0, "ckpt-a"),
        TrialResult("b", "stopped early", {"train.lr": 0.2}, [(10.5, 6.0)], 1.0, None),
        TrialResult("c", "not started", {}, [], 0.0, None),
        TrialResult("d", "completed", {"train.lr": 0.3}, [(11.0, 2.5), (12.0, 2.0)], 2.0, "ckpt-d"),
    ]
    rows = to_rows(trials, "min")
    assert [r.trial_id for r in rows] == ["d", "a", "b", "c"]
    assert (rows[1].best, rows[1].best_epoch, rows[1].last, rows[1].epochs) == (3.0, 2, 4.0, 3)
    assert math.isnan(rows[3].best)
    assert [r.trial_id for r in to_rows(trials, "max")][:3] == ["b", "a", "d"]
    # times of epoch ends, from the start of the study's first epoch (trial a: 3 s over 3 epochs)
    assert min(t for r in rows for t, _ in r.curve) == pytest.approx(1.0)
    csv_path = write_results_csv(rows, ["train.lr"], "val_mae_homo_meV", tmp_path / "results.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("trial_id,outcome,epochs,best_val_mae_homo_meV")
    assert lines[1].startswith("d,completed,2,2.0,2,2.0") and lines[1].endswith(",0.3")


def test_importances_cover_the_parameters_every_finished_trial_has(tmp_path):
    space = {
        "train.schedule": {"type": "choice", "values": ["cosine", "sgdr"]},
        "train.min_lr": {"type": "loguniform", "low": 1.0e-6, "high": 1.0e-4, "when": {"train.schedule": "cosine"}},
        "train.lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-2},
    }
    study = load_study(write(tmp_path, space=space))
    trials = [
        TrialResult(str(k), "completed", params, [(float(k), value)], 1.0, None)
        for k, (params, value) in enumerate(
            [
                ({"train.schedule": "cosine", "train.min_lr": 1e-5, "train.lr": 1e-3}, 1.0),
                ({"train.schedule": "sgdr", "train.lr": 5e-3}, 3.0),
                ({"train.schedule": "cosine", "train.min_lr": 2e-6, "train.lr": 2e-4}, 1.2),
                ({"train.schedule": "sgdr", "train.lr": 1e-4}, 3.3),
            ]
        )
    ]
    importances = parameter_importances(to_rows(trials, "min"), study.parameters, "min")
    assert set(importances) == {"train.schedule", "train.lr"}  # train.min_lr: not in every trial
    assert sum(importances.values()) == pytest.approx(1.0)
    assert parameter_importances(to_rows(trials[:1], "min"), study.parameters, "min") == {}


def test_a_study_resumed_with_another_space_is_refused(tmp_path):
    import json

    from scannet.typed_config import to_plain

    study = load_study(write(tmp_path))
    (tmp_path / "study.json").write_text(json.dumps(to_plain(study)))
    check_study_resume(study, tmp_path)  # unchanged: fine
    check_study_resume(load_study(write(tmp_path, top_k=1)), tmp_path)  # a resumable key
    changed = load_study(write(tmp_path, space={"train.lr": {"type": "uniform", "low": 0.1, "high": 0.2}}))
    with pytest.raises(ConfigError, match="exists in .* with other settings .*space"):
        check_study_resume(changed, tmp_path)


def test_a_trial_gets_the_base_run_with_its_parameters_and_the_graph_table_of_its_featurizer(tmp_path):
    from scannet.featurizer import FeaturizerConfig
    from scannet.train.trainer import TrainConfig
    from scannet.train.worker import WorkerConfig
    from scannet_platform.tune.trial import TrialPlan, TuneSession

    space = {
        "featurizer.distance_threshold": {"type": "choice", "values": [4.0, 3.5]},
        "model.num_blocks": {"type": "int", "low": 1, "high": 3},
    }
    study = load_study(write(tmp_path, space=space, checkpoint_every=2, resources_per_trial={"cpu": 2.5}))
    base = WorkerConfig(
        graph_table="graphs-4",
        split_ids="split.parquet",
        model=study.base_model(),
        train=TrainConfig(epochs=3),
        featurizer=FeaturizerConfig.molecules(),
        target_mean=(0.0,),
        target_std=(1.0,),
        model_metadata={"run": "s"},
    )
    tables = {f.content_hash(): f"graphs-{f.distance_threshold}" for f in study.featurizer_choices(base.featurizer)}
    plan = TrialPlan(study, base, tables, {"homo": (1000.0, "meV")}, str(tmp_path / "trials"))
    worker = plan.worker_for({"featurizer.distance_threshold": 3.5, "model.num_blocks": 2}, "abc123")
    assert worker.graph_table == "graphs-3.5" and worker.featurizer.distance_threshold == 3.5
    assert worker.model.num_blocks == 2 and worker.model.local_dim == base.model.local_dim
    assert worker.threads == 2 and worker.run_dir == str(tmp_path / "trials" / "abc123")
    assert worker.model_metadata == {"run": "s", "study": "s", "trial": "abc123"}
    assert plan.worker_for({}, "base").graph_table == "graphs-4.0"
    # sparse checkpoints: every 2nd epoch and the last one (budget or early stopping)
    session = TuneSession.__new__(TuneSession)
    session.plan = plan
    wanted = [session.wants_checkpoint({"epoch": e, "last": e == 4}) for e in range(5)]
    assert wanted == [False, True, False, True, True]


def test_an_exported_ensemble_replaces_the_old_one_whole(tmp_path):
    """A smaller ensemble replaces a larger one: no stale members, the user's own files kept; an export that
    fails halfway leaves the previous ensemble as it was."""
    import json
    from types import SimpleNamespace

    from scannet_platform.tune.driver import export_ensemble
    from scannet_platform.tune.ensemble import EnsembleEvaluation

    def evaluations(n: int, tag: str) -> list:
        rows = []
        for k in range(n):
            checkpoint = tmp_path / f"{tag}-{k}.pt"
            checkpoint.write_text(f"{tag} {k}")
            summary = SimpleNamespace(checkpoint=checkpoint, test_mae={"gap": 0.1 * k})
            rows.append((SimpleNamespace(trial_id=f"{tag}{k}", best=float(k)), None, SimpleNamespace(summary=summary)))
        return rows

    study = SimpleNamespace(name="s", mode="min")
    uncalibrated = EnsembleEvaluation(("gap",), {"gap": "meV"}, 1, 1, {"gap": 0.1}, [], note="one member")
    export_ensemble(study, evaluations(3, "old"), uncalibrated, "val_mae", tmp_path)
    (tmp_path / "ensemble" / "notes.txt").write_text("mine")
    manifest = export_ensemble(study, evaluations(2, "new"), uncalibrated, "val_mae", tmp_path)
    folder = manifest.parent
    assert sorted(p.name for p in folder.iterdir()) == ["ensemble.json", "member-00.pt", "member-01.pt", "notes.txt"]
    assert (folder / "member-01.pt").read_text() == "new 1"
    assert [m["trial_id"] for m in json.loads(manifest.read_text())["members"]] == ["new0", "new1"]

    broken = evaluations(2, "broken")
    broken[1][2].summary.checkpoint = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError):
        export_ensemble(study, broken, uncalibrated, "val_mae", tmp_path)
    assert (folder / "member-00.pt").read_text() == "new 0"
    assert [m["trial_id"] for m in json.loads(manifest.read_text())["members"]] == ["new0", "new1"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left
