"""Train SCANN+ on QM9 with Ray Train (DDP), evaluate on the test split, register the model in MLflow.

    ray job submit --working-dir . -- python jobs/train_qm9.py --preset demo    # on a running cluster
    python jobs/train_qm9.py --preset demo                                      # starts a local Ray
    python jobs/train_qm9.py --preset paper --targets homo lumo --num-workers 8 --use-gpu

Re-running with the same --name resumes from the latest checkpoint. See --help for every option.
"""

import sys

from scannet_platform.train.cli import main

if __name__ == "__main__":
    sys.exit(main(data="qm9", description=__doc__))
