"""A hyperparameter study of SCANN / SCANN+ on QM9 with Ray Tune (ASHA, Optuna), grouped in MLflow.

    ray job submit --working-dir . -- python jobs/tune_qm9.py --space tune_spaces/small_cpu.yaml
    python jobs/tune_qm9.py --space tune_spaces/small_cpu.yaml          # starts a local Ray
    python jobs/tune_qm9.py --space tune_spaces/qm9_gpu.yaml            # full QM9, a GPU cluster

Re-running with the same study name resumes it. See --help for every option.
"""

import sys

from scannet_platform.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
