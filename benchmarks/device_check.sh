#!/usr/bin/env bash
# One device check (benchmarks/device_check.py): card, CPU/GPU equality, training and inference molecules/s, a screen,
# GPU utilisation, into <out>/device_check.json and .md. Takes the same flags:
#   bash benchmarks/device_check.sh --device cuda|cpu [--small] [--out DIR]
# Wheels carried in .whl/ (benchmarks/device_bundle.sh: ase, rdkit) are installed into /tmp/site first where ase or
# rdkit is missing. The check starts no part after its global deadline (420 s); `timeout` ends it at 480 s whatever
# happens, and the results file keeps every part finished by then.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null && ! python3 -c "import ase, rdkit" 2>/dev/null; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "device_check.sh: the wheels in .whl/ did not install; the parts that need them say so" >&2
    fi
fi
export PYTHONPATH="$PWD:$PWD/platform${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout --kill-after=10 480 python3 benchmarks/device_check.py "$@"
