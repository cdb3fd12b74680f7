"""The unit a person reads an error in, from the unit a target is stored in: one rule for every dataset.

Energies stored in eV (QM9 orbital and total energies, your DFT energies) are reported in meV, as the
literature quotes them; every other unit is reported as stored.
"""

from __future__ import annotations

#: stored unit -> (scale, report unit)
REPORT_UNITS: dict[str, tuple[float, str]] = {
    "eV": (1000.0, "meV"),
    "eV/atom": (1000.0, "meV/atom"),
}


def report_unit(unit: str) -> tuple[float, str]:
    """(scale, unit) that turns a value or an error in ``unit`` into its report unit."""
    return REPORT_UNITS.get(unit, (1.0, unit))
