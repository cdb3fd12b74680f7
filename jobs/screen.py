"""Screen a candidate library with trained models on Ray (the same as `scannet screen`).

    python jobs/screen.py library.parquet --model models:/scannet-qm9-gap@best --out screens/run1
    python jobs/screen.py molecules.smi --model tune/ensemble --filter "gap between 4 6" --rank gap:max --out screens/smi
    ray job submit --working-dir . -- python jobs/screen.py data/lib.parquet --model m.pt --out /shared/screens/run1

Launching again with the same --out resumes (finished chunks are skipped). Exit status 0 when everything that could
be screened was (bad input records are counted in the summary, their reasons in the quarantine parts, so Ray reports
the job as succeeded); --strict makes quarantined records or repeated ids exit 1. See --help for every option.
"""

import sys

from scannet_platform.screen.cli import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
