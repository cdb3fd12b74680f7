"""Global-attention (GA) explanations: per-atom scores exported for OVITO / ASE.

The GA score α_k of atom k says how much its local structure contributes to the pooled structure
vector; the scores of one structure sum to 1, so compare atoms within a structure (or ratios).

Per structure: an extended XYZ with the scores as a per-atom array (:func:`write_ga_xyz`), the local
structures (centre atom and its Voronoi neighbours) ranked by score as CSV and Markdown tables
(:func:`top_local_structures`) and a picture of the structure coloured by score (:func:`plot_ga_structure`).
Atom indices count from 0, in file order, as in ASE.

File names derived from structure names (which come from the input and may be hostile) go through
:func:`safe_file_stem` and :func:`unique_file_stems`, and the commands write them through
:func:`scannet.io.paths.path_inside`, which refuses a symbolic link or any path outside the output folder.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii
from ase.io import write

from scannet.featurizer import Graph
from scannet.predictor import Prediction

GA_ARRAY = "ga_score"
GA_SUFFIX = "_ga.xyz"
GA_MULTIFRAME_FILE = "ga_scores.extxyz"
PNG_SUFFIX = "_ga.png"
TOP_CSV_SUFFIX = "_top.csv"
TOP_MARKDOWN_SUFFIX = "_top.md"
LOCAL_STRUCTURE_COLUMNS = ("rank", "atom_index", "element", "ga_score", "neighbours", "n_neighbours")
PNG_DPI = 150

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


# ------------------------------------------------------------------------------------------------ picture


def plot_ga_structure(
    path: str | Path, atoms: Atoms, ga_scores: np.ndarray, title: str, labelled: Sequence[int] = ()
) -> Path:
    """A PNG (Agg, :data:`PNG_DPI` dpi) of the atoms as 3D scatter points sized by covalent radius and
    coloured by GA score on a scale from 0 (so near-equal scores look equal), with a colour bar; the atoms in
    ``labelled`` are labelled (e.g. ``C2``) and the cell of a periodic structure is drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    positions = np.asarray(atoms.positions, dtype=float)  # [n, 3]
    figure = Figure(figsize=(6.4, 5.4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(projection="3d")
    if np.any(atoms.pbc):
        cell = np.asarray(atoms.cell)  # [3, 3]
        corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) @ cell  # [8, 3]
        for p in range(8):
            for q in range(p + 1, 8):
                if bin(p ^ q).count("1") == 1:  # corners that differ in one lattice vector: an edge
                    axes.plot(*corners[[p, q]].T, color="0.6", linewidth=0.8)
        positions_and_cell = np.vstack([positions, corners])
    else:
        positions_and_cell = positions
    sizes = 500.0 * covalent_radii[atoms.numbers] ** 2  # points², H ~ 50, C ~ 290
    points = axes.scatter(
        *positions.T,
        c=ga_scores,
        s=sizes,
        cmap="viridis",
        vmin=0.0,
        edgecolors="black",
        linewidths=0.4,
        depthshade=False,
    )
    for i in labelled:
        axes.text(*positions[i], f" {atom_label(atoms.numbers, i)}", fontsize=8)
    extent = np.ptp(positions_and_cell, axis=0)
    axes.set_box_aspect(np.maximum(extent, 0.2 * max(extent.max(), 1.0)))
    axes.set_xlabel("x (Å)")
    axes.set_ylabel("y (Å)")
    axes.set_zlabel("z (Å)")
    axes.set_title(title, fontsize=10)
    figure.colorbar(points, ax=axes, shrink=0.7, pad=0.12, label="GA score")
    path = Path(path)
    figure.savefig(path, dpi=PNG_DPI)
    return path
