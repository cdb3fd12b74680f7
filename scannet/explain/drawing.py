"""GA drawings: one structure drawn flat, its atoms shaded by global-attention (GA) score, for a chemist to read
at a glance.

The picture (SVG and PNG, both from the same layout and drawing code, RDKit's MolDraw2D) shows, from top to
bottom: the structure's name, the predicted values with their units, which quantity the scores explain
("GA scores explain: ..."), the note of a fallback if one was taken, the structure, and a colour bar labelled
"GA score" running from 0 to the structure's largest score.

Every atom is drawn, hydrogens included (the scores are per atom). Each atom sits on a circle coloured by its
score on ColorBrewer's sequential YlOrRd scale (pale yellow at 0, red at the structure's largest score), so
the eye goes to the high scores. The ``n_labelled`` atoms of highest score (ties: lower index first) carry a label
such as ``C2 0.21``: element, 0-based index in the input ``Atoms`` (file order), score.

How the structure is laid out (:attr:`GADrawing.layout`):

- ``"2d"``: a 2D depiction (``rdDepictor.Compute2DCoords``) of the SMILES with its hydrogens added, the atom
  order ``embed_smiles`` gives. It is used only when that order's elements equal ``atoms.numbers``.
- ``"2d-perceived"``: bonds perceived from the 3D coordinates (``rdDetermineBonds.DetermineBonds``, charge 0),
  then the same 2D depiction. When no bond orders fit, only the connectivity is perceived and single bonds are
  drawn, which the note says.
- ``"projection"``: no bond graph, for a periodic structure or when perception fails. The atoms are projected
  onto the plane of their two largest principal axes (a planar molecule is seen face-on), drawn as circles sized
  by covalent radius, far ones first, with the cell outline of a periodic structure.

Text drawn by RDKit is limited to printable ASCII (RDKit draws a string byte by byte), so other characters of a
name show as ``?`` in the picture; the SVG's ``<title>`` and ``<desc>`` carry the full caption, XML-escaped.
Text is measured on RDKit's own font (character advances read once per process with FreeType, matplotlib's
``FT2Font``), so it is wrapped or shortened, never clipped.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii

LAYOUT_2D = "2d"
LAYOUT_PERCEIVED = "2d-perceived"
LAYOUT_PROJECTION = "projection"
FORMATS = ("svg", "png")
MIN_SIZE = (320, 240)

#: ColorBrewer's YlOrRd (9 classes) without its two darkest, from score 0 to the structure's largest score, so that
#: black atom labels stay readable on every circle (contrast >= 4.5 : 1); shape (7, 3), RGB in [0, 1].
YLORRD = (
    np.array(
        [
            [255, 255, 204],
            [255, 237, 160],
            [254, 217, 118],
            [254, 178, 76],
            [253, 141, 60],
            [252, 78, 42],
            [227, 26, 28],
        ]
    )
    / 255.0
)

_BLACK = (0.0, 0.0, 0.0)
_WHITE = (1.0, 1.0, 1.0)
_GREY = (0.45, 0.45, 0.45)
_NOTE_COLOUR = (0.55, 0.2, 0.0)
_LABEL_COLOUR = (0.05, 0.15, 0.55)
_MARGIN = 10
_REFERENCE_SIZE = 100.0
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_XML_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class Caption:
    """The text of a drawing. ``name`` is untrusted (it may hold markup, quotes or line breaks); ``predictions``
    are ``(target, value, unit)`` in display units, e.g. ``("gap", 6.83, "eV")``, ``unit`` possibly empty;
    ``explains`` says which quantity the scores explain."""

    name: str
    predictions: tuple[tuple[str, float, str], ...]
    explains: str


@dataclass(frozen=True)
class GADrawing:
    """A drawing in the formats asked for (``None`` for the others). ``layout`` is ``"2d"``, ``"2d-perceived"`` or
    ``"projection"``; ``note`` says why a fallback was taken (it is printed in the picture too)."""

    svg: str | None
    png: bytes | None
    layout: str
    note: str | None


@dataclass(frozen=True)
class _Depiction:
    """How the structure is laid out: a molecule with 2D coordinates whose atom i is input atom i, or ``None``
    for the projection."""

    layout: str
    note: str | None
    molecule: object | None  # rdkit.Chem.Mol


@dataclass(frozen=True)
class _Text:
    """One line of text, centred at ``y`` (pixels from the top)."""

    text: str
    size: float
    y: float
    colour: tuple[float, float, float] = _BLACK


@dataclass(frozen=True)
class _Frame:
    """Where things go on the canvas, in pixels: the header lines, the structure's panel (x, y, width, height)
    and the colour bar's centre line."""

    lines: tuple[_Text, ...]
    panel: tuple[int, int, int, int]
    bar_y: float
    font_scale: float


def draw_ga(
    atoms: Atoms,
    ga_scores: np.ndarray,
    caption: Caption,
    smiles: str | None = None,
    n_labelled: int = 5,
    formats: Sequence[str] = FORMATS,
    size: tuple[int, int] = (560, 440),
) -> GADrawing:
    """Draw ``atoms`` (n atoms) with their GA scores ``ga_scores`` (shape (n,)) and ``caption``; see the module
    docstring for the picture. ``smiles``, when given, is the SMILES the structure was embedded from
    (``embed_smiles``: its atoms with hydrogens added, in that order). ``size`` is (width, height) in pixels of
    both the SVG and the PNG. Raises ValueError for scores that do not match the atoms or are not finite, an
    unknown format or a size under :data:`MIN_SIZE`."""
    scores = _checked_scores(atoms, ga_scores)
    width, height = _checked_request(formats, size)
    depiction = _depict(atoms, smiles)
    labelled = top_atoms(scores, n_labelled)
    frame = _frame(caption, depiction.note, width, height)

    def render(drawer) -> None:
        _render(drawer, atoms, scores, labelled, depiction, frame, width)

    svg = png = None
    if "svg" in formats:
        labels = [_atom_label(atoms.numbers, i, scores[i]) for i in labelled]
        svg = _with_title(_draw("svg", width, height, frame, render), caption, depiction.note, labels)
    if "png" in formats:
        png = _draw("png", width, height, frame, render)
    return GADrawing(svg=svg, png=png, layout=depiction.layout, note=depiction.note)


def top_atoms(scores: np.ndarray, n: int) -> list[int]:
    """Indices of the ``n`` highest scores (shape (n_atoms,)), highest first; ties: lower index first."""
    return [int(i) for i in np.argsort(-scores, kind="stable")[: max(n, 0)]]


def score_colours(scores: np.ndarray) -> np.ndarray:
    """RGB colours in [0, 1], shape (n, 3), of ``scores`` (shape (n,)) on :data:`YLORRD` from 0 to their maximum
    (scores at or below 0 get the palest colour)."""
    top = float(scores.max()) if len(scores) and scores.max() > 0 else 1.0
    position = np.clip(scores / top, 0.0, 1.0) * (len(YLORRD) - 1)
    anchors = np.arange(len(YLORRD))
    return np.stack([np.interp(position, anchors, YLORRD[:, c]) for c in range(3)], axis=1)


def principal_projection(points: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """``points`` (shape (n, 3)) in the frame of the principal axes of ``reference`` (shape (m, 3); default
    ``points``), shape (n, 3): columns 0 and 1 span the plane of the two largest axes, column 2 is the depth. The
    axes form a rotation, never a reflection: a chiral structure is never drawn as its mirror image."""
    reference = points if reference is None else reference
    centre = reference.mean(axis=0)
    _, _, axes = np.linalg.svd(reference - centre, full_matrices=True)
    if np.linalg.det(axes) < 0:
        axes[2] = -axes[2]
    return (points - centre) @ axes.T


def _checked_scores(atoms: Atoms, ga_scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(ga_scores, dtype=float).reshape(-1)
    if len(scores) != len(atoms):
        raise ValueError(f"{len(scores)} GA scores for {len(atoms)} atoms: one score per atom is needed")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(f"GA scores must be finite: atom {int(bad[0])} has {scores[bad[0]]}")
    if not len(scores):
        raise ValueError("no atoms to draw")
    return scores


def _checked_request(formats: Sequence[str], size: tuple[int, int]) -> tuple[int, int]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be among {FORMATS}, got {tuple(formats)}")
    width, height = (int(v) for v in size)
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise ValueError(f"a drawing needs at least {MIN_SIZE[0]} x {MIN_SIZE[1]} pixels, got {width} x {height}")
    return width, height


# --- layout: bonds from the SMILES, perceived, or none -------------------------------------------------------


def _depict(atoms: Atoms, smiles: str | None) -> _Depiction:
    """The layout of ``atoms``: from ``smiles`` if its atoms match, else perceived, else projected."""
    from rdkit import rdBase

    if atoms.pbc.any():
        return _Depiction(LAYOUT_PROJECTION, "periodic structure: projected view, no bonds drawn", None)
    with rdBase.BlockLogs():
        note = None
        if smiles is not None:
            molecule = _molecule_from_smiles(smiles, atoms.numbers)
            if molecule is not None:
                return _Depiction(LAYOUT_2D, None, _with_2d_coordinates(molecule))
            note = "the SMILES does not match the atoms: bonds perceived from the 3D coordinates"
        try:
            molecule, perceived_note = _perceive_bonds(atoms)
        except (ValueError, RuntimeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return _Depiction(LAYOUT_PROJECTION, f"bonds not perceived ({reason}): projected view", None)
        note = "; ".join(n for n in (note, perceived_note) if n) or None
        return _Depiction(LAYOUT_PERCEIVED, note, _with_2d_coordinates(molecule))


def _molecule_from_smiles(smiles: str, numbers: np.ndarray):
    """The molecule of ``smiles`` with hydrogens added, or ``None`` if it does not parse or its elements (in
    order) are not ``numbers``."""
    from rdkit import Chem

    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        return None
    molecule = Chem.AddHs(molecule)
    elements = [atom.GetAtomicNum() for atom in molecule.GetAtoms()]
    return molecule if elements == [int(z) for z in numbers] else None


def _perceive_bonds(atoms: Atoms):
    """A molecule of ``atoms`` with bonds perceived from the coordinates, and a note (``None`` when bond orders
    were found). Raises ValueError or RuntimeError when not even the connectivity can be perceived."""
    from rdkit.Chem import rdDetermineBonds

    molecule = _molecule_from_positions(atoms)
    try:
        rdDetermineBonds.DetermineBonds(molecule, charge=0)
        return molecule, None
    except (ValueError, RuntimeError):
        molecule = _molecule_from_positions(atoms)
        rdDetermineBonds.DetermineConnectivity(molecule)
        molecule.UpdatePropertyCache(strict=False)
        return molecule, "bond orders not perceived: single bonds drawn"


def _molecule_from_positions(atoms: Atoms):
    """An RDKit molecule of ``atoms``' elements and 3D positions, no bonds; every hydrogen an explicit atom."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    molecule = Chem.RWMol()
    conformer = Chem.Conformer(len(atoms))
    for i, (number, position) in enumerate(zip(atoms.numbers, atoms.positions)):
        atom = Chem.Atom(int(number))
        atom.SetNoImplicit(True)
        molecule.AddAtom(atom)
        conformer.SetAtomPosition(i, Point3D(*(float(v) for v in position)))
    molecule.AddConformer(conformer, assignId=True)
    return molecule


def _with_2d_coordinates(molecule):
    """A copy of ``molecule`` with CoordGen's 2D coordinates (it lays out explicit hydrogens far better than
    RDKit's default depiction), turned so that the longer principal axis is horizontal, like the canvas."""
    from rdkit import Chem
    from rdkit.Chem import rdCoordGen
    from rdkit.Geometry import Point3D

    molecule = Chem.Mol(molecule)
    for atom in molecule.GetAtoms():
        atom.SetNoImplicit(True)  # every hydrogen is an atom of its own: no "OH" labels from implicit ones
    rdCoordGen.AddCoords(molecule)
    conformer = molecule.GetConformer()
    flat = conformer.GetPositions()[:, :2]
    turned = principal_projection(np.column_stack([flat, np.zeros(len(flat))]))
    for i, (x, y) in enumerate(turned[:, :2]):
        conformer.SetAtomPosition(i, Point3D(float(x), float(y), 0.0))
    return molecule


# --- frame: where the text, the structure and the colour bar go ------------------------------------------------


@functools.cache
def _advances() -> dict[str, float]:
    """Advance width of each printable ASCII character in RDKit's font, in pixels per pixel of font size (FreeType
    through matplotlib's ``FT2Font``, measured once: measuring each string with FreeType costs about 1 ms)."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(_font_file())
    font.set_size(_REFERENCE_SIZE, 72)
    advances = {}
    for code in range(0x20, 0x7F):
        font.set_text(chr(code) * 10)
        advances[chr(code)] = font.get_width_height()[0] / 64.0 / 10 / _REFERENCE_SIZE
    return advances


def _text_width(text: str, size: float) -> float:
    """Width in pixels of printable-ASCII ``text`` drawn by RDKit at font ``size`` (kerning left out)."""
    advances = _advances()
    return sum(advances[c] for c in text) * size


def _fit(text: str, size: float, width: float) -> str:
    """``text`` shortened with "..." to ``width``."""
    if _text_width(text, size) <= width:
        return text
    while text and _text_width(text + "...", size) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def _wrap(words: Sequence[str], size: float, width: float, max_lines: int, joiner: str = " ") -> list[str]:
    """``words`` joined by ``joiner`` in lines of at most ``width``; the last of ``max_lines`` shortened."""
    lines: list[str] = []
    for word in words:
        if lines and _text_width(lines[-1] + joiner + word, size) <= width:
            lines[-1] += joiner + word
        elif len(lines) < max_lines:
            lines.append(word)
        else:
            lines[-1] += joiner + word
    return [_fit(line, size, width) for line in lines]


def _font_file() -> str:
    from rdkit import RDConfig

    return os.path.join(RDConfig.RDDataDir, "Fonts", "Telex-Regular.ttf")


def _printable(text: str) -> str:
    """``text`` on one line in printable ASCII (what RDKit draws): line breaks become spaces, others ``?``."""
    return _NOT_PRINTABLE.sub("?", " ".join(str(text).split()))


def format_predictions(predictions: Sequence[tuple[str, float, str]]) -> list[str]:
    """One ``"gap 7.43 eV"`` per prediction (two decimals; four significant digits past 10,000)."""
    return [
        " ".join(part for part in (target, f"{value:.2f}" if abs(value) < 1e4 else f"{value:.4g}", unit) if part)
        for target, value, unit in predictions
    ]


def _frame(caption: Caption, note: str | None, width: int, height: int) -> _Frame:
    """Header lines from the top, the colour bar at the bottom, the structure's panel in between."""
    scale = min(max(min(width / 560, height / 440), 0.85), 2.0)
    text_width = width - 2 * _MARGIN
    title_size, body_size = 17 * scale, 13 * scale
    header: list[tuple[str, float, tuple[float, float, float]]] = [
        (_fit(_printable(caption.name) or "(unnamed)", title_size, text_width), title_size, _BLACK)
    ]
    predictions = [_printable(p) for p in format_predictions(caption.predictions)]
    if predictions:
        predictions[0] = "predicted: " + predictions[0]
        for line in _wrap(predictions, body_size, text_width, 2, joiner="  |  "):
            header.append((line, body_size, _BLACK))
    explains = f"GA scores explain: {_printable(caption.explains)}".split(" ")
    header += [(line, body_size, _GREY) for line in _wrap(explains, body_size, text_width, 2)]
    if note:
        header += [
            (line, body_size, _NOTE_COLOUR) for line in _wrap(_printable(note).split(" "), body_size, text_width, 2)
        ]
    lines, y = [], _MARGIN * 0.6
    for text, size, colour in header:
        line_height = size * 1.35
        lines.append(_Text(text, size, y + line_height / 2, colour))
        y += line_height
    bar_height = 30 * scale
    panel_top = int(y + 4)
    panel = (_MARGIN, panel_top, width - 2 * _MARGIN, int(height - bar_height - panel_top))
    return _Frame(tuple(lines), panel, height - bar_height / 2 - 2, scale)


# --- rendering: the same calls for the SVG and the PNG ------------------------------------------------------------


def _draw(kind: str, width: int, height: int, frame: _Frame, render) -> str | bytes:
    from rdkit.Chem.Draw import rdMolDraw2D

    _, _, panel_width, panel_height = frame.panel
    drawer_class = rdMolDraw2D.MolDraw2DSVG if kind == "svg" else rdMolDraw2D.MolDraw2DCairo
    drawer = drawer_class(width, height, panel_width, panel_height)
    options = drawer.drawOptions()
    options.fontFile = _font_file()
    drawer.SetDrawOptions(options)
    render(drawer)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def _render(drawer, atoms, scores, labelled, depiction: _Depiction, frame: _Frame, width: int) -> None:
    from rdkit.Geometry import Point2D

    drawer.SetFillPolys(True)
    drawer.SetColour(_WHITE)
    drawer.DrawRect(Point2D(0, 0), Point2D(width, drawer.Height()), rawCoords=True)
    for line in frame.lines:  # text first: the molecule's font limits would apply to it otherwise
        _centred_text(drawer, line.text, width / 2, line.y, line.size, line.colour)
    _draw_colour_bar(drawer, float(scores.max()), frame, width)
    colours = score_colours(scores)
    if depiction.molecule is not None:
        _draw_molecule(drawer, depiction.molecule, scores, colours, labelled, frame)
    else:
        _draw_projection(drawer, atoms, scores, colours, labelled, frame)


def _centred_text(drawer, text: str, x: float, y: float, size: float, colour=_BLACK) -> None:
    from rdkit.Geometry import Point2D

    drawer.SetFontSize(size)
    drawer.SetColour(colour)
    drawer.DrawString(text, Point2D(x, y), 0, rawCoords=True)  # 0: centred on (x, y)


def _atom_label(atoms_numbers: np.ndarray, index: int, score: float) -> str:
    return f"{chemical_symbols[int(atoms_numbers[index])]}{index} {score:#.2g}"


def _draw_molecule(drawer, molecule, scores, colours, labelled, frame: _Frame) -> None:
    """The 2D depiction in the panel: a circle per atom in its score's colour, plain bonds, notes on the top
    atoms."""
    from rdkit import Chem

    molecule = Chem.Mol(molecule)
    numbers = np.array([atom.GetAtomicNum() for atom in molecule.GetAtoms()])
    for index in labelled:
        molecule.GetAtomWithIdx(index).SetProp("atomNote", _atom_label(numbers, index, scores[index]))
    options = drawer.drawOptions()
    options.useBWAtomPalette()
    options.includeRadicals = False
    options.annotationFontScale = 0.9
    options.minFontSize = int(11 * frame.font_scale)
    options.maxFontSize = int(15 * frame.font_scale)
    options.setAtomNoteColour(_LABEL_COLOUR)
    options.padding = 0.08
    options.clearBackground = False
    drawer.SetDrawOptions(options)
    x, y, _, _ = frame.panel
    drawer.SetOffset(x, y)
    n = molecule.GetNumAtoms()
    drawer.DrawMolecule(
        molecule,
        highlightAtoms=list(range(n)),
        highlightAtomColors={i: tuple(colours[i]) for i in range(n)},
        highlightAtomRadii={i: 0.27 for i in range(n)},
        highlightBonds=[],
    )


def _draw_projection(drawer, atoms: Atoms, scores, colours, labelled, frame: _Frame) -> None:
    """Atoms as circles (covalent radii) on the plane of their two largest principal axes, far ones first;
    the cell outline of a periodic structure; element symbols inside, labels beside the top atoms."""
    from rdkit.Geometry import Point2D

    corners = _cell_corners(atoms)
    reference = np.vstack([atoms.positions, corners]) if len(corners) else atoms.positions
    projected = principal_projection(np.vstack([atoms.positions, corners]), reference)
    radii = covalent_radii[atoms.numbers] * 0.75
    to_pixels = _fit_to_panel(projected[:, :2], float(radii.max()), frame.panel)
    pixels = to_pixels(projected[:, :2])
    atom_pixels, corner_pixels = pixels[: len(atoms)], pixels[len(atoms) :]
    scale = to_pixels.scale
    drawer.SetLineWidth(1)
    drawer.SetColour((0.6, 0.6, 0.6))
    for a, b in _CELL_EDGES if len(corners) else ():
        drawer.DrawLine(Point2D(*corner_pixels[a]), Point2D(*corner_pixels[b]), rawCoords=True)
    for i in np.argsort(projected[: len(atoms), 2], kind="stable"):
        (cx, cy), r = atom_pixels[i], radii[i] * scale
        for fill, colour in ((True, tuple(colours[i])), (False, (0.2, 0.2, 0.2))):
            drawer.SetFillPolys(fill)
            drawer.SetColour(colour)
            drawer.DrawEllipse(Point2D(cx - r, cy - r), Point2D(cx + r, cy + r), rawCoords=True)
        symbol_size = min(max(r * 0.9, 9 * frame.font_scale), 16 * frame.font_scale)
        _centred_text(drawer, chemical_symbols[int(atoms.numbers[i])], cx, cy, symbol_size)
    drawer.SetFillPolys(True)
    label_size = 12 * frame.font_scale
    for i in labelled:
        (cx, cy), r = atom_pixels[i], radii[i] * scale
        text = _atom_label(atoms.numbers, i, scores[i])
        half = _text_width(text, label_size) / 2 + 2
        x = cx + r + 2 + half  # right of the circle, or left of it at the panel's right edge
        if x + half > frame.panel[0] + frame.panel[2]:
            x = cx - r - 2 - half
        drawer.SetColour(_WHITE)
        drawer.DrawRect(
            Point2D(x - half, cy - label_size * 0.65), Point2D(x + half, cy + label_size * 0.65), rawCoords=True
        )
        _centred_text(drawer, text, x, cy, label_size, _LABEL_COLOUR)


#: The 12 edges of a cell between the corners listed by :func:`_cell_corners` (corner k = bits (a, b, c) of k).
_CELL_EDGES = tuple((k, k | bit) for k in range(8) for bit in (1, 2, 4) if not k & bit)


def _cell_corners(atoms: Atoms) -> np.ndarray:
    """The 8 corners of a periodic structure's cell, shape (8, 3); shape (0, 3) for a molecule or a flat cell."""
    cell = np.asarray(atoms.cell)
    if not atoms.pbc.any() or abs(np.linalg.det(cell)) < 1e-9:
        return np.zeros((0, 3))
    bits = np.array([[(k >> j) & 1 for j in range(3)] for k in range(8)], dtype=float)
    return bits @ cell


class _PanelFit:
    """Maps plane coordinates (Å, y up) to pixels of the panel (y down), centred, at ``scale`` pixels per Å."""

    def __init__(self, low: np.ndarray, high: np.ndarray, scale: float, panel: tuple[int, int, int, int]) -> None:
        self.scale = scale
        self._centre = (low + high) / 2
        x, y, width, height = panel
        self._panel_centre = np.array([x + width / 2, y + height / 2])

    def __call__(self, points: np.ndarray) -> np.ndarray:
        offset = (points - self._centre) * self.scale
        return self._panel_centre + offset * np.array([1.0, -1.0])


def _fit_to_panel(points: np.ndarray, margin: float, panel: tuple[int, int, int, int]) -> _PanelFit:
    """The largest scale at which ``points`` (shape (n, 2)), with ``margin`` Å around them, fit ``panel``."""
    low, high = points.min(axis=0) - margin, points.max(axis=0) + margin
    extent = np.maximum(high - low, 1e-6)
    scale = min((panel[2] - 8) / extent[0], (panel[3] - 8) / extent[1], 120.0)
    return _PanelFit(low, high, scale, panel)


def _draw_colour_bar(drawer, top: float, frame: _Frame, width: int) -> None:
    """The colour bar, centred on the bottom line: the words GA score, 0, the gradient, the largest score."""
    from rdkit.Geometry import Point2D

    size = 12 * frame.font_scale
    bar_width, bar_height = min(260 * frame.font_scale, width * 0.45), 11 * frame.font_scale
    top_text = f"{top:#.3g}"
    title_width, zero_width, top_width = (_text_width(t, size) for t in ("GA score", "0", top_text))
    gap = 8 * frame.font_scale
    total = title_width + zero_width + bar_width + top_width + 4 * gap
    x, y = (width - total) / 2, frame.bar_y
    _centred_text(drawer, "GA score", x + title_width / 2, y, size)
    x += title_width + 2 * gap
    _centred_text(drawer, "0", x + zero_width / 2, y, size)
    x += zero_width + gap
    steps = 48
    colours = score_colours(np.linspace(0.0, 1.0, steps))
    drawer.SetFillPolys(True)
    for k in range(steps):
        drawer.SetColour(tuple(colours[k]))
        left = x + bar_width * k / steps
        right = x + bar_width * (k + 1) / steps + 0.5  # overlap a little: no hairline gaps
        drawer.DrawRect(Point2D(left, y - bar_height / 2), Point2D(right, y + bar_height / 2), rawCoords=True)
    drawer.SetFillPolys(False)
    drawer.SetColour(_GREY)
    drawer.DrawRect(Point2D(x, y - bar_height / 2), Point2D(x + bar_width, y + bar_height / 2), rawCoords=True)
    _centred_text(drawer, top_text, x + bar_width + gap + top_width / 2, y, size)


def _with_title(svg: str, caption: Caption, note: str | None, labels: Sequence[str]) -> str:
    """``svg`` with ``<title>`` (the name) and ``<desc>`` (predictions, what the scores explain, the labelled
    atoms, the note), escaped for XML; characters beyond ASCII as character references (RDKit declares
    ISO-8859-1). RDKit draws its text as paths: these two elements are the SVG's only text."""

    def xml_text(text: str) -> str:
        text = _XML_FORBIDDEN.sub("?", " ".join(str(text).split()))
        return escape(text).encode("ascii", "xmlcharrefreplace").decode("ascii")

    parts = format_predictions(caption.predictions) + [f"GA scores explain: {caption.explains}"]
    parts += [f"highest GA scores: {', '.join(labels)}"] if labels else []
    description = " | ".join(parts + ([note] if note else []))
    header_end = svg.index(">", svg.index("<svg")) + 1
    elements = f"\n<title>{xml_text(caption.name)}</title>\n<desc>{xml_text(description)}</desc>"
    return svg[:header_end] + elements + svg[header_end:]
