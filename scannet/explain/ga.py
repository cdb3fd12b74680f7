"""Global-attention (GA) explanations: per-atom scores exported for OVITO / ASE.

The GA score α_k of atom k says how much its local structure contributes to the pooled structure
vector; the scores of one structure sum to 1, so compare atoms within a structure (or ratios).

Per structure: an extended XYZ with the scores as a per-atom array (:func:`write_ga_xyz`) and the local
structures (centre atom and its Voronoi neighbours) ranked by score as CSV and Markdown tables
(:func:`top_local_structures`); the drawing coloured by score is :mod:`scannet.explain.drawing`.
Atom indices count from 0, in file order, as in ASE.

File names derived from structure names (which come from the input and may be hostile) go through
:func:`safe_file_stem` and :func:`unique_file_stems`, and the commands write them through
:func:`scannet.io.paths.path_inside`, which refuses a symbolic link or any path outside the output folder.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.io import write

from scannet.featurizer import Graph
from scannet.predictor import Prediction

if TYPE_CHECKING:
    from scannet.explain.drawing import Caption
    from scannet.predictor import Predictor

GA_ARRAY = "ga_score"
GA_SUFFIX = "_ga.xyz"
GA_MULTIFRAME_FILE = "ga_scores.extxyz"
PNG_SUFFIX = "_ga.png"
SVG_SUFFIX = "_ga.svg"
TOP_CSV_SUFFIX = "_top.csv"
TOP_MARKDOWN_SUFFIX = "_top.md"
LOCAL_STRUCTURE_COLUMNS = ("rank", "atom_index", "element", "ga_score", "neighbours", "n_neighbours")

#: The longest stem :func:`safe_file_stem` returns (file systems allow 255 bytes per name).
MAX_STEM_LENGTH = 100

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_file_stem(name: str) -> str:
    """A file-name stem for ``name``: ASCII letters, digits and ``._-`` kept, every other character
    replaced by ``_``; ``_`` prepended when it would start with a dot; ``structure`` when empty;
    at most ``MAX_STEM_LENGTH`` characters. Never a path: no separators, no ``.``/``..``."""
    stem = _UNSAFE.sub("_", str(name))[:MAX_STEM_LENGTH]
    if not stem:
        return "structure"
    return "_" + stem[: MAX_STEM_LENGTH - 1] if stem.startswith(".") else stem


def unique_file_stems(names: Iterable[str]) -> list[str]:
    """Safe stems for ``names``, made unique in order by suffixes ``-2``, ``-3``, ... (compared
    case-insensitively, for case-insensitive file systems): the same input always gives the same stems."""
    used: set[str] = set()
    stems = []
    for name in names:
        base = safe_file_stem(name)
        stem, k = base, 2
        while stem.casefold() in used:
            stem, k = f"{base}-{k}", k + 1
        used.add(stem.casefold())
        stems.append(stem)
    return stems


def with_ga_scores(atoms: Atoms, prediction: Prediction, info: dict | None = None) -> Atoms:
    """A copy of ``atoms`` with the GA scores as the per-atom array ``ga_score``, the predictions as
    ``predicted_<target>`` and ``info`` in ``Atoms.info`` (line breaks in text values become spaces, which
    extended XYZ cannot hold)."""
    if prediction.ga_scores is None or len(prediction.ga_scores) != len(atoms):
        raise ValueError(f"structure {prediction.name!r}: no GA scores matching its {len(atoms)} atoms")
    annotated = atoms.copy()
    annotated.calc = None
    annotated.arrays[GA_ARRAY] = np.asarray(prediction.ga_scores, dtype=float)
    for target, value in (prediction.values or {}).items():
        annotated.info[f"predicted_{target}"] = value
    annotated.info.update(info or {})
    for key, value in annotated.info.items():
        if isinstance(value, str):
            annotated.info[key] = " ".join(value.splitlines())
    return annotated


def write_ga_xyz(path: str | Path, atoms: Atoms, prediction: Prediction, info: dict | None = None) -> Path:
    """Write an extended-XYZ file whose ``ga_score`` column OVITO maps to a particle property."""
    path = Path(path)
    write(path, with_ga_scores(atoms, prediction, info), format="extxyz")
    return path


def write_ga_multiframe(path: str | Path, frames: Sequence[Atoms]) -> Path:
    """Write annotated structures (from :func:`with_ga_scores`) as one multi-frame extended-XYZ file."""
    path = Path(path)
    write(path, list(frames), format="extxyz")
    return path


# ------------------------------------------------------------------------------------ local structures


@dataclass(frozen=True)
class LocalStructure:
    """One centre atom and its Voronoi neighbours (the edges of the featurized graph), with its GA score."""

    rank: int  # 1 = the highest GA score of the structure
    atom_index: int  # from 0, in file order
    element: str
    ga_score: float
    neighbours: tuple[str, ...]  # element + index of each neighbour, nearest first (periodic images repeat)


def atom_label(numbers: np.ndarray, index: int) -> str:
    """``C2``: the element symbol and the index of atom ``index``."""
    return f"{chemical_symbols[int(numbers[index])]}{index}"


def top_local_structures(graph: Graph, ga_scores: np.ndarray, top_n: int) -> list[LocalStructure]:
    """The ``top_n`` atoms with the highest GA scores (ties: the lower index first), each with its neighbours."""
    ga_scores = np.asarray(ga_scores, dtype=float)
    if len(ga_scores) != graph.n_atoms:
        raise ValueError(f"{len(ga_scores)} GA scores for a graph of {graph.n_atoms} atoms")
    order = np.argsort(-ga_scores, kind="stable")[:top_n]
    local = []
    for rank, i in enumerate(order.tolist(), start=1):
        edges = np.flatnonzero(graph.edge_center == i)
        edges = edges[np.argsort(graph.distance[edges], kind="stable")]
        neighbours = tuple(atom_label(graph.numbers, j) for j in graph.edge_neighbor[edges].tolist())
        local.append(LocalStructure(rank, i, chemical_symbols[int(graph.numbers[i])], float(ga_scores[i]), neighbours))
    return local


def _records(local: Sequence[LocalStructure]) -> list[list]:
    return [[s.rank, s.atom_index, s.element, s.ga_score, " ".join(s.neighbours), len(s.neighbours)] for s in local]


def write_local_structures_csv(path: str | Path, local: Sequence[LocalStructure]) -> Path:
    """The ranked local structures as CSV (columns :data:`LOCAL_STRUCTURE_COLUMNS`, full-precision scores)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LOCAL_STRUCTURE_COLUMNS)
        writer.writerows(_records(local))
    return path


def write_local_structures_markdown(path: str | Path, local: Sequence[LocalStructure], title: str) -> Path:
    """The ranked local structures as a Markdown table under the heading ``title`` (scores to 4 digits)."""
    header = ["rank", "atom index", "element", "GA score", "neighbours", "neighbour count"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---:|" * 2 + "---|---:|---|---:|"]
    for rank, index, element, score, neighbours, count in _records(local):
        lines.append(f"| {rank} | {index} | {element} | {score:.4f} | {neighbours or '(none)'} | {count} |")
    lines += [
        "",
        "Atom indices count from 0 in file order; neighbours are listed nearest first (periodic images repeat).",
    ]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ caption


def caption_of(name: str, values: Mapping[str, float], predictor: Predictor) -> Caption:
    """The caption of a drawing of ``predictor``'s prediction ``values`` for the structure ``name``: its values
    with units and what the scores explain (:func:`explained_quantity`)."""
    from scannet.explain.drawing import Caption

    predictions = tuple((target, float(value), predictor.unit(target) or "") for target, value in values.items())
    return Caption(name, predictions, explained_quantity(predictor.targets))


def explained_quantity(targets: Sequence[str]) -> str:
    """What one structure's GA scores explain: ``gap``, or ``homo, lumo and gap together (one attention pool
    serves the 3 targets)`` for a model whose heads share the pool."""
    if len(targets) == 1:
        return targets[0]
    return f"{', '.join(targets[:-1])} and {targets[-1]} together (one attention pool serves the {len(targets)} targets)"
