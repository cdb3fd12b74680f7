"""``scannet info``: what a model checkpoint predicts, and what it was trained on."""

from __future__ import annotations

import argparse

HELP = "describe a model checkpoint (targets, units, elements, training data)"
DESCRIPTION = None  # --help: the usage and the argument
EXAMPLES = """examples:
  %(prog)s                                     # the default shipped model
  %(prog)s runs/scannet-qm9/best_model.pt"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", help="a checkpoint (.pt) or a shipped model's name (default: the default shipped model)"
    )


def run(args: argparse.Namespace) -> int:
    from ase.data import chemical_symbols

    import scannet
    from scannet.checkpoint import resolve_checkpoint

    predictor = scannet.load(args.model)  # CheckpointError: one line, exit 2
    config = predictor.model.config
    metadata = dict(predictor.metadata)

    def with_unit(target: str) -> str:
        unit = predictor.unit(target)
        return f"{target} ({unit})" if unit else target

    symbols = [chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z) for z in config.elements]
    print(f"model     : {args.model or 'default: ' + str(resolve_checkpoint(None))}")
    print(f"targets   : {', '.join(with_unit(t) for t in config.targets)}")
    print(f"variant   : {'SCANN+' if config.g_update else 'SCANN'}, {config.num_blocks} blocks")
    print(f"elements  : {', '.join(symbols)}")
    print(f"featurizer: {', '.join(f'{k}={v}' for k, v in predictor.featurizer_config.to_dict().items())}")
    dataset = metadata.pop("dataset", None)
    print(f"trained on: {dataset if dataset is not None else 'not recorded in the checkpoint'}")
    test_mae = metadata.pop("test_mae", None)
    mae_units = metadata.pop("test_mae_units", None) or {}
    if isinstance(test_mae, dict) and test_mae:
        parts = []
        for target, value in test_mae.items():
            unit = mae_units.get(target) if isinstance(mae_units, dict) else None
            unit = unit or predictor.unit(target) or ""
            parts.append(
                f"{target} {value:.4g} {unit}".rstrip() if isinstance(value, int | float) else f"{target} {value}"
            )
        print(f"test MAE  : {', '.join(parts)}")
    else:
        print("test MAE  : not recorded in the checkpoint")
    metadata.pop("units", None)
    if metadata:
        print(f"metadata  : {', '.join(f'{k}={v}' for k, v in metadata.items())}")
    return 0
