"""Train SCANN+ on QM9 and print the test MAE and where the checkpoint is.

    python jobs/train_qm9.py --preset demo               # 3,000-molecule slice, 5 epochs, CPU
    python jobs/train_qm9.py --preset paper --targets homo lumo

(The Ray Train version of this job, `ray job submit -- python jobs/train_qm9.py`, builds on the same
library calls.)
"""

import sys

from scannet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-qm9", *sys.argv[1:]]))
