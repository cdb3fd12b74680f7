"""Command-line front end of the training jobs (``jobs/train_qm9.py``, ``jobs/train.py``)."""

from __future__ import annotations

import argparse
import sys

from scannet_platform.train_config import PRESETS, build_config


def parser(description: str, data_required: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", choices=sorted(PRESETS), help="demo (small, CPU) or paper (the reference recipe)")
    p.add_argument("--config", help="a YAML file of TrainJobConfig keys (train: and featurizer: nested)")
    p.add_argument("--name", help="run name; re-running with the same name resumes from its latest checkpoint")
    p.add_argument("--data", required=data_required, help="a structures table (scannet data import) or 'qm9'")
    p.add_argument("--targets", "--target", nargs="+", help="target column(s); one head each")
    p.add_argument("--n-structures", type=int, help="train on a seeded random slice of this size")
    p.add_argument("--model", dest="model_preset", help="qm9-scann+ (default), qm9-scann, mp2018-scann+, demo")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--num-workers", type=int, help="DDP workers (Ray Train ScalingConfig)")
    p.add_argument("--use-gpu", action="store_true", default=None)
    p.add_argument("--cpus-per-worker", type=int)
    p.add_argument("--precision", choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--storage-path", help="Ray Train storage: a local folder, shared path or URI")
    p.add_argument("--data-cache", help="where structures and graph tables are cached (default data_cache)")
    p.add_argument(
        "--mlflow-uri", dest="mlflow_tracking_uri", help="default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    p.add_argument("--experiment")
    p.add_argument("--registered-model", help="MLflow registered model name")
    p.add_argument("--init-from", help="fine-tune from a checkpoint file or a models:/ URI")
    p.add_argument("--max-failures", type=int)
    return p


def main(argv: list[str] | None = None, data: str | None = None, description: str = "") -> int:
    args = parser(description, data_required=data is None).parse_args(argv)
    train = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr)) if v}
    overrides = {
        key: getattr(args, key)
        for key in (
            "name",
            "n_structures",
            "model_preset",
            "num_workers",
            "use_gpu",
            "cpus_per_worker",
            "precision",
            "compile",
            "storage_path",
            "mlflow_tracking_uri",
            "experiment",
            "registered_model",
            "init_from",
            "max_failures",
        )
    }
    overrides["data"] = args.data or data
    overrides["targets"] = args.targets
    if train:
        overrides["train"] = train
    job = build_config(args.preset, args.config, **overrides)

    from scannet_platform.train_driver import run_training

    result = run_training(job)
    print("\n".join(["", "SCANNet training job finished", *result.lines()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
