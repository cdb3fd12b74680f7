"""Ray Tune: trials per hour of ``tune_spaces/small_cpu.yaml`` on this machine, and the overhead of the Tune
layer against the same trials run one after another without Tune.

    python benchmarks/bench_tune.py [--repeats 3] [--overhead-trials 4 --overhead-epochs 2] [--skip-study]

(a) The shipped study, as ``scannet tune --space tune_spaces/small_cpu.yaml`` runs it (8 trials of up to 4
    epochs on 1,000 QM9 molecules, ASHA, TPE, 2 trials at a time with 1 CPU each), under a new name each repeat
    (the data and graph tables are cached after the first): whole-study wall time (preparation, trials, the
    best trial's test evaluation and registration, MLflow) and trials per hour.
(b) Overhead: ``--overhead-trials`` configurations (on ``--overhead-structures`` molecules) sampled from the same space (Optuna's random sampler, seed
    0), ``--overhead-epochs`` epochs each, FIFO, one trial at a time with 1 CPU (1 torch thread), actors reused
    (as the study driver sets), checkpoint at the last epoch; timed from ``Tuner.fit()`` to its return (Ray is up and the graph table is cached: the
    study's fixed start-up is in (a)). Against: the same configurations run by ``run_worker`` in this process
    with a session that also checkpoints the last epoch only, 1 torch thread. Paths interleaved, each
    ``--repeats`` times; overhead = ratio of the medians, flagged when inside the noise. Goal: <= 10 %.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import _timing

ROOT = Path(__file__).resolve().parents[1]


def study_run(space: Path) -> dict:
    from scannet_platform.tune.config import load_study

    return dict(load_study(space).run)


def sampled_configs(study, count: int) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, configs = study.sampler(), []
    trials = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(count):
        trial = trials.ask()
        sampler(trial)
        configs.append(dict(trial.params))
        trials.tell(trial, 0.0)
    return configs


def tune_path(plan, configs: list[dict], folder: Path) -> float:
    from ray import tune

    from scannet_platform.tune.trial import run_trial

    def trial(config, plan):
        run_trial(config["params"], plan)

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trial, plan=plan), {"cpu": 1}),
        param_space={"params": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),  # as the study driver does
        run_config=tune.RunConfig(name="overhead", storage_path=str(folder), verbose=0),
    )
    started = time.perf_counter()
    results = tuner.fit()
    seconds = time.perf_counter() - started
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"Tune trials failed: {errors[0]}")
    return seconds


def plain_path(plan, configs: list[dict], folder: Path) -> float:
    from scannet.train.worker import LocalSession, run_worker

    class LastEpochCheckpoint(LocalSession):
        def wants_checkpoint(self, metrics):
            return bool(metrics["last"])

    started = time.perf_counter()
    for k, params in enumerate(configs):
        worker = plan.worker_for(params, f"plain-{k}-{time.time_ns()}")
        run_worker(worker, LastEpochCheckpoint(folder / f"plain-{k}"))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _timing.add_repeats_option(parser)
    parser.add_argument("--overhead-trials", type=int, default=4)
    parser.add_argument("--overhead-epochs", type=int, default=4, help="epochs per trial (small_cpu.yaml: 4)")
    parser.add_argument(
        "--overhead-structures", type=int, help="QM9 molecules of the (b) trials (default: the study's 1,000)"
    )
    parser.add_argument("--skip-study", action="store_true", help="only (b)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    os.environ.setdefault("SCANNET_HOME", str(home))
    print(f"SCANNET_HOME={os.environ['SCANNET_HOME']}; {_timing.load_line()}")
    from scannet_platform.runtime import ensure_ray
    from scannet_platform.tune.config import load_study
    from scannet_platform.tune.driver import prepare_study, run_study

    space = ROOT / "tune_spaces" / "small_cpu.yaml"
    with _timing.machine_load():
        if not args.skip_study:
            study_timing = _timing.Timing("small_cpu.yaml study (whole)")
            for repeat in range(args.repeats):
                study = load_study(space, name=f"bench-small-cpu-{repeat}-{time.time_ns()}", evaluate_best=True)
                started = time.perf_counter()
                summary = run_study(study)
                seconds = time.perf_counter() - started
                trials = sum(summary.counts.values())
                study_timing.add(seconds, trials=trials)
                print(f"study {repeat + 1}: {trials} trials {summary.counts} in {seconds:.1f} s; {_timing.load_line()}")
            print(study_timing.summary())
            rates = [r * 3600 for r in study_timing.rates()]
            print(f"trials per hour: median {sorted(rates)[len(rates) // 2]:.0f}, best {max(rates):.0f}")

        run = {**study_run(space), "train": {**study_run(space)["train"], "epochs": args.overhead_epochs}}
        if args.overhead_structures:
            run["n_structures"] = args.overhead_structures
        study = replace(load_study(space, name=f"bench-overhead-{run['n_structures']}"), run=run)
        _, plan = prepare_study(study)
        ensure_ray(False)
        configs = sampled_configs(study, args.overhead_trials)
        tune_timing = _timing.Timing(f"{len(configs)} trials through Tune")
        plain_timing = _timing.Timing(f"{len(configs)} trials without Tune")
        for repeat in range(args.repeats):  # interleaved
            folder = Path(tempfile.mkdtemp(prefix="overhead-", dir=home))
            tune_timing.add(tune_path(plan, configs, folder), trials=len(configs))
            plain_timing.add(plain_path(plan, configs, folder), trials=len(configs))
            print(
                f"repeat {repeat + 1}: Tune {tune_timing.seconds[-1]:.1f} s, plain {plain_timing.seconds[-1]:.1f} s; "
                f"{_timing.load_line()}"
            )
        print(tune_timing.summary())
        print(plain_timing.summary())
        overhead = tune_timing.median_seconds / plain_timing.median_seconds - 1
        print(
            f"Tune overhead: {100 * overhead:+.1f} % of the plain time (goal <= 10 %); Tune / plain trial rate "
            f"{_timing.ratio(tune_timing, plain_timing)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
