"""Flags that several ``scannet`` commands share, each defined once (same spelling, ``dest`` and default
everywhere), and the one mapping from parsed flags to config fields.

Every flag backed by a config field has ``default=None``, meaning "not given": the config's own default, preset
or YAML value stands. A flag's ``dest`` is the name of the config field it sets; :func:`config_overrides` reads
the fields of the config dataclass (:func:`dataclasses.fields`) to collect them, so no command keeps a list of
keys of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# ------------------------------------------------------------------------------------------- shared flags


def add_print_config_argument(group) -> None:
    group.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")


def add_device_argument(group, help: str = "torch device, e.g. cpu, cuda, cuda:1 (default cpu)") -> None:
    group.add_argument("--device", default=None, help=help)


def add_progress_argument(group) -> None:
    """``--no-progress``: ``args.progress`` is False when given, else True."""
    group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_batch_size_argument(group, help: str) -> None:
    """``--batch-size``: how many structures go together; ``help`` says what together means for the command."""
    group.add_argument("--batch-size", type=positive_int, default=None, help=help)


def add_smiles_arguments(group, strings: bool = True) -> None:
    """``--smiles-column`` and ``--id-column`` for ``.csv`` SMILES files; with ``strings``, also ``--smiles``
    (``args.smiles``: a list of ``SMILES [name]`` texts, the flag repeated)."""
    if strings:
        group.add_argument(
            "--smiles",
            action="append",
            metavar="'SMILES [NAME]'",
            help="a molecule as SMILES, optionally followed by its name (repeat the flag for more); embedded in 3D "
            "with RDKit as by scannet screen",
        )
    group.add_argument("--smiles-column", help="CSV column with the SMILES (default smiles/SMILES)")
    group.add_argument("--id-column", help="CSV column with the ids (default id/name, else <file>:<line>)")


def add_max_atoms_argument(group, config_default: int | None = None) -> None:
    """``--max-atoms`` (``args.max_atoms``): most atoms per structure; a larger one gets the reason instead of a
    result. Default :data:`scannet.data.DEFAULT_MAX_ATOMS` (``predict``, ``explain``, ``data import``);
    a command whose config holds the default (``screen``) gives it as ``config_default`` and gets None ("not
    given": the config's value stands)."""
    from scannet.data import DEFAULT_MAX_ATOMS

    group.add_argument(
        "--max-atoms",
        type=positive_int,
        default=DEFAULT_MAX_ATOMS if config_default is None else None,
        help=f"most atoms per structure (default {config_default or DEFAULT_MAX_ATOMS}); a larger one is refused "
        "with the reason, an xyz frame before its atom lines are read",
    )


def add_storage_arguments(group) -> None:
    """Where runs and data live (:attr:`RunConfig.storage_path <scannet.train.run_config.RunConfig>`, ``data_cache``)."""
    group.add_argument("--storage-path", default=None, help="runs folder (default $SCANNET_HOME/runs)")
    group.add_argument("--data-cache", default=None, help="data cache (default $SCANNET_HOME/data)")


def device_or_cpu(args: argparse.Namespace) -> str:
    return args.device or "cpu"


# ------------------------------------------------------------------------------- flags -> config fields


def _section_type(annotation: Any) -> type | None:
    """The dataclass a field holds (``TrainConfig``, ``FeaturizerConfig | None``), else None."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def config_overrides(args: argparse.Namespace, cls: type, exclude: typing.Iterable[str] = ()) -> dict[str, Any]:
    """The flags given (not None) that name a field of the dataclass ``cls``, as overrides for it.

    A field that is itself a dataclass (``train: TrainConfig``, ``featurizer: FeaturizerConfig | None``) collects
    the flags named like its fields into a nested mapping (``--epochs`` -> ``{"train": {"epochs": ...}}``);
    names of ``cls``'s own fields win. Tuple fields get tuples. ``exclude``: fields not to read.
    """
    given = {k: v for k, v in vars(args).items() if v is not None}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init} - set(exclude)
    overrides: dict[str, Any] = {}
    for name in sorted(names):
        section = _section_type(hints[name])
        if name in given:
            value = given[name]
            overrides[name] = tuple(value) if isinstance(value, list) else value
        elif section is not None:
            nested = {f.name: given[f.name] for f in dataclasses.fields(section) if f.init and f.name in given}
            nested = {k: v for k, v in nested.items() if k not in names}
            if nested:
                overrides[name] = nested
    return overrides
