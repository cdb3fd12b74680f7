"""The cost of the structure keys of ``scannet screen`` (:mod:`scannet.data.structure_key`: InChIKey of the bonds
perceived from the coordinates, else a geometry hash) on QM9 molecules.

    python benchmarks/bench_structure_key.py [--qm9 data/qm9/structures.parquet] [--molecules 3000] [--repeats 3]

Candidates are ``bench_screen.py``'s: QM9 molecules under a random rotation and a 0.01 Å jitter, in a structures
table. Measured, one process:

- the key alone: ``structure_key`` of every candidate, with the share of InChIKeys and geometry hashes;
- an in-process screen of all candidates (``run_screen``, ``executor="local"``, the shipped model, chunks of
  1,024, MLflow and progress off, each repeat into a new folder): structures/s of the chunk phase, with the keys,
  and with ``structure_key`` replaced by a stub that returns a distinct dummy key at once (the screen without
  them); the two alternate, repeat after repeat, so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import tempfile
from pathlib import Path
from unittest import mock

from _timing import Timing, add_repeats_option, machine_load, measure, ratio
from bench_screen import HERE, qm9_structures, write_library

from scannet.data.structure_key import KEY_GEOMETRY, KEY_INCHIKEY, StructureKey, structure_key


def key_alone(library: Path, repeats: int) -> Timing:
    from collections import Counter

    from scannet.data.structures_table import read_structures

    structures = [atoms for batch in read_structures(library) for atoms in batch]
    kinds = Counter(structure_key(atoms).kind for atoms in structures)
    print(f"keys: {kinds[KEY_INCHIKEY]:,} InChIKeys, {kinds[KEY_GEOMETRY]:,} geometry hashes", flush=True)
    return measure(
        lambda: [structure_key(atoms) for atoms in structures], repeats, "structure_key alone", molecules=len(structures)
    )


def screen_once(library: Path, timing: Timing, stubbed: bool) -> None:
    from scannet_platform.screen.job import build_screen_config, run_screen

    dummy = itertools.count()
    stub = mock.patch(
        "scannet_platform.screen.featurize_stage.structure_key",
        lambda atoms, smiles=None: StructureKey(str(next(dummy)), KEY_GEOMETRY, None),
    )
    with tempfile.TemporaryDirectory() as folder, stub if stubbed else contextlib.nullcontext():
        config = {"inputs": [str(library)], "out": folder, "executor": "local", "mlflow": False, "progress": False}
        config |= {"graphs_cache": False}  # no graph store: every screen computes the keys again
        summary, _ = run_screen(build_screen_config(config | {"models": ["qm9-homo-lumo-gap-cpu"]}))
    timing.add(summary.screen_seconds, structures=summary.screened_now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=HERE / "out")
    parser.add_argument("--qm9", type=Path, help="a QM9 structures table (default: bench_screen.py's cache)")
    parser.add_argument("--molecules", type=int, default=3000)
    add_repeats_option(parser)
    args = parser.parse_args()
    qm9 = args.qm9 or qm9_structures(args.cache)
    library = write_library(qm9, args.molecules, args.cache / "structure_key" / f"library-{args.molecules}.parquet")
    with machine_load():
        alone = key_alone(library, args.repeats)
        print(alone.summary(), flush=True)
        print(f"  {1000 / alone.median_rate():.3f} ms per molecule", flush=True)
        with_keys, without = Timing("screen with structure keys"), Timing("screen, keys stubbed out")
        for _ in range(args.repeats):
            screen_once(library, without, stubbed=True)
            screen_once(library, with_keys, stubbed=False)
        print(without.summary(), flush=True)
        print(with_keys.summary(), flush=True)
        print(f"with keys / without: {ratio(with_keys, without)}", flush=True)


if __name__ == "__main__":
    main()
