"""Train SCANN / SCANN+ on your own structures table (made with `scannet data import`) with Ray Train.

python jobs/train.py --data data/pt/structures.parquet --target energy --model-preset mp2018-scann+
python jobs/train.py --data data/c60/structures.parquet --targets homo lumo --init-from models:/scannet-qm9-homo-lumo/1
"""

import sys

from scannet_platform.train.cli import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
