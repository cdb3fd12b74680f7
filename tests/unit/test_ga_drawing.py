"""GA drawings (scannet.explain.drawing): layouts, bonds, labels, colours, escaping, sizes."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from scannet.explain import drawing
from scannet.explain.drawing import Caption, draw_ga

CAPTION = Caption("test", (("HOMO", -6.52, "eV"), ("gap", 7.43, "eV")), "HOMO and gap")
SVG_NS = "{http://www.w3.org/2000/svg}"
DARKEST = "#E31A1C"  # the top of the (shortened) YlOrRd scale: the structure's largest score


def embedded(smiles: str) -> Atoms:
    """The 3D structure of ``smiles`` with hydrogens, atoms in RDKit's order (as ``embed_smiles`` makes it)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    molecule = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(molecule, randomSeed=7) == 0
    AllChem.MMFFOptimizeMolecule(molecule)
    numbers = [atom.GetAtomicNum() for atom in molecule.GetAtoms()]
    return Atoms(numbers=numbers, positions=molecule.GetConformer().GetPositions())


def peaked_scores(n: int, peak: int) -> np.ndarray:
    """Scores summing to 1 with a unique maximum at ``peak``."""
    scores = np.linspace(1.0, 2.0, n)
    scores[peak] = 10.0
    return scores / scores.sum()


def bond_count(svg: str) -> int:
    return len(set(re.findall(r"class='bond-(\d+)", svg)))


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode("iso-8859-1"))  # RDKit declares ISO-8859-1


def description(svg: str) -> str:
    return parsed(svg).find(f"{SVG_NS}desc").text


def atom_fills(svg: str) -> dict[int, str]:
    """Atom index -> fill colour of its highlight circle (the 2D layouts)."""
    found = re.findall(r"<ellipse [^>]*class='atom-(\d+)'\s*style='fill:(#[0-9A-F]{6})", svg)
    return {int(index): colour for index, colour in found}


@pytest.mark.parametrize(("smiles", "n_bonds"), [("c1ccccc1", 12), ("CCO", 8)])
def test_smiles_and_perceived_layouts_draw_every_bond(smiles, n_bonds):
    atoms = embedded(smiles)
    scores = np.full(len(atoms), 1 / len(atoms))
    from_smiles = draw_ga(atoms, scores, CAPTION, smiles=smiles)
    perceived = draw_ga(atoms, scores, CAPTION)
    assert (from_smiles.layout, from_smiles.note) == ("2d", None)
    assert (perceived.layout, perceived.note) == ("2d-perceived", None)
    assert bond_count(from_smiles.svg) == bond_count(perceived.svg) == n_bonds
    assert len(atom_fills(from_smiles.svg)) == len(atoms)  # hydrogens drawn too


def test_a_smiles_that_does_not_match_the_atoms_falls_back_to_perception():
    atoms = embedded("CCO")
    result = draw_ga(atoms, np.full(9, 1 / 9), CAPTION, smiles="OCC")  # O first: another element order
    assert result.layout == "2d-perceived"
    assert "SMILES does not match" in result.note
    assert bond_count(result.svg) == 8


def test_bond_orders_not_perceived_give_single_bonds_and_a_note():
    methyl = Atoms("CH3", positions=[[0, 0, 0], [1.08, 0, 0], [-0.54, 0.94, 0], [-0.54, -0.94, 0]])
    result = draw_ga(methyl, np.full(4, 0.25), CAPTION)
    assert result.layout == "2d-perceived"
    assert "bond orders not perceived" in result.note
    assert bond_count(result.svg) == 3
    assert "bond orders not perceived" in description(result.svg)


def test_periodic_structure_is_projected_with_the_note_in_the_picture():
    silicon = bulk("Si")
    result = draw_ga(silicon, np.array([0.7, 0.3]), CAPTION)
    assert result.layout == "projection"
    assert result.note == "periodic structure: projected view, no bonds drawn"
    assert result.note in description(result.svg)
    assert bond_count(result.svg) == 0
    ellipses = parsed(result.svg).findall(f"{SVG_NS}ellipse")
    assert len(ellipses) == 2 * len(silicon)  # a filled circle and its outline per atom
    assert DARKEST in ellipses[0].get("style") + ellipses[2].get("style")
    assert len(parsed(result.svg).findall(f"{SVG_NS}path")) > 12  # the 12 cell edges, and the glyphs


def test_hostile_name_is_escaped_and_the_svg_is_self_contained():
    name = "<script>&'\"\nnext line é"
    result = draw_ga(embedded("CCO"), np.full(9, 1 / 9), Caption(name, (), "gap"))
    root = parsed(result.svg)
    assert root.find(f"{SVG_NS}title").text == " ".join(name.split())
    assert "<script" not in result.svg and "&lt;script&gt;&amp;" in result.svg
    assert not root.findall(f".//{SVG_NS}script") and not root.findall(f".//{SVG_NS}image")
    assert "href" not in result.svg


def test_top_atoms_are_labelled_highest_first_ties_by_index():
    atoms = embedded("CCO")
    scores = np.array([0.1, 0.3, 0.3, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05])
    assert drawing.top_atoms(scores, 3) == [1, 2, 0]
    result = draw_ga(atoms, scores, CAPTION, smiles="CCO", n_labelled=3)
    assert "highest GA scores: C1 0.30, O2 0.30, C0 0.10" in description(result.svg)
    assert result.svg.count("class='note'") > 0  # the labels are drawn as atom notes


def test_each_atom_keeps_its_colour_and_label_when_the_atoms_are_permuted():
    atoms = embedded("CCO")
    scores = peaked_scores(len(atoms), peak=2)  # the oxygen
    order = np.random.default_rng(3).permutation(len(atoms))
    permuted, permuted_scores = atoms[order], scores[order]
    new_index = int(np.flatnonzero(order == 2)[0])
    result = draw_ga(permuted, permuted_scores, CAPTION)
    fills = atom_fills(result.svg)
    assert fills[new_index] == DARKEST
    assert [i for i, colour in fills.items() if colour == DARKEST] == [new_index]
    assert f"highest GA scores: O{new_index} " in description(result.svg)


@pytest.mark.parametrize(
    ("scores", "message"),
    [(np.full(3, 1 / 3), "3 GA scores for 9 atoms"), (np.r_[np.full(8, 0.1), np.nan], "finite: atom 8")],
)
def test_bad_scores_raise_with_a_clear_message(scores, message):
    with pytest.raises(ValueError, match=message):
        draw_ga(embedded("CCO"), scores, CAPTION)


def test_bad_request_raises():
    atoms = embedded("CCO")
    with pytest.raises(ValueError, match="formats"):
        draw_ga(atoms, np.full(9, 1 / 9), CAPTION, formats=("pdf",))
    with pytest.raises(ValueError, match="at least 320 x 240"):
        draw_ga(atoms, np.full(9, 1 / 9), CAPTION, size=(100, 100))


def test_png_has_the_signature_and_the_requested_size():
    result = draw_ga(embedded("CCO"), np.full(9, 1 / 9), CAPTION, formats=("png",), size=(640, 480))
    assert result.svg is None
    assert result.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", result.png[16:24]) == (640, 480)


def test_svg_has_the_requested_size():
    result = draw_ga(embedded("CCO"), np.full(9, 1 / 9), CAPTION, formats=("svg",), size=(640, 480))
    assert result.png is None
    root = parsed(result.svg)
    assert (root.get("width"), root.get("height")) == ("640px", "480px")


def test_planar_molecule_projection_is_face_on(monkeypatch):
    def fail(atoms):
        raise ValueError("perception switched off by the test")

    monkeypatch.setattr(drawing, "_perceive_bonds", fail)
    benzene = embedded("c1ccccc1")
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    benzene.positions = benzene.positions @ rotation.T  # any orientation in space
    result = draw_ga(benzene, np.full(12, 1 / 12), CAPTION)
    assert result.layout == "projection"
    assert "perception switched off by the test" in result.note
    centres = np.array([[float(e.get("cx")), float(e.get("cy"))] for e in parsed(result.svg).iter(f"{SVG_NS}ellipse")])
    extent = np.ptp(centres, axis=0)
    assert extent.min() > 0.3 * extent.max()


def test_principal_projection_puts_the_flat_axis_last():
    points = np.random.default_rng(1).normal(size=(50, 3)) * [5.0, 0.01, 2.0]
    projected = drawing.principal_projection(points)
    spread = projected.std(axis=0)
    assert spread[0] > spread[1] > spread[2] and spread[2] < 0.05


def test_colours_run_from_pale_to_dark_red():
    colours = drawing.score_colours(np.array([0.0, 0.05, 0.2]))
    np.testing.assert_allclose(colours[0], drawing.YLORRD[0])
    np.testing.assert_allclose(colours[-1], drawing.YLORRD[-1])
    assert colours[0].sum() > colours[1].sum() > colours[2].sum()


def test_principal_projection_is_a_rotation_not_a_mirror():
    points = np.random.default_rng(2).normal(size=(20, 3)) * [3.0, 2.0, 1.0]
    projected = drawing.principal_projection(points)
    rotation, *_ = np.linalg.lstsq(points - points.mean(axis=0), projected, rcond=None)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


@pytest.mark.parametrize("structure", ["lone carbon", "two waters"])
def test_odd_molecules_are_still_drawn(structure):
    if structure == "lone carbon":
        atoms = Atoms("C", positions=[[0.0, 0.0, 0.0]])
    else:
        water = embedded("O")
        atoms = water + water
        atoms.positions[3:] += [6.0, 0.0, 0.0]
    result = draw_ga(atoms, np.full(len(atoms), 1 / len(atoms)), CAPTION)
    assert result.layout == "2d-perceived"
    assert len(atom_fills(result.svg)) == len(atoms)
