#!/usr/bin/env bash
# The wheels the device check needs on a GPU machine that lacks them (no network there): ase (scannet featurizes with it)
# and rdkit (the screen's SMILES and structure keys), for CPython 3.12 on x86-64 Linux, into .whl/ (git-ignored; name
# it in the run tool's carry list, benchmarks/device_check.sh installs it). Their own needs (numpy, scipy, matplotlib,
# Pillow) are on the GPU image already. Prints the size of what travels: the working tree and the wheels (64 MiB limit).
#   bash benchmarks/device_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ASE_VERSION=$(python3 -c "import ase; print(ase.__version__)")
RDKIT_VERSION=$(python3 -c "import rdkit; print(rdkit.__version__)")
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "ase==$ASE_VERSION" "rdkit==$RDKIT_VERSION"
ls -l .whl
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb | tail -1 | cut -f1)
wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
total=$((tree + ${untracked:-0} + wheels))
echo "travels: tracked files $((tree / 1024)) KiB + untracked $((${untracked:-0} / 1024)) KiB + .whl $((wheels / 1024)) KiB = $((total / 1048576)) MiB of 64 MiB"
if ((total > 64 * 1048576)); then
    echo "too large for the run tool (64 MiB)" >&2
    exit 1
fi
