"""The ``scannet`` command: every subcommand is a module of one protocol, shared flags are defined once."""

from __future__ import annotations

import argparse
import json

import pytest

from scannet.cli import BUILTIN, PROTOCOL, build_parser, commands, main
from scannet.cli.args import config_overrides
from scannet.train.run_config import RunConfig

#: Flags that several commands have: each must mean one config field with one default everywhere.
SHARED_FLAGS = (
    "--mlflow-uri",
    "--experiment",
    "--verbose",
    "--device",
    "--no-progress",
    "--print-config",
    "--storage-path",
    "--data-cache",
    "--batch-size",
)
COMMANDS = dict(commands())


def subparsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """``(command path, parser)`` of every (nested) subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from subparsers(sub, (*prefix, name))


def test_the_library_commands_are_registered_first():
    assert list(COMMANDS)[: len(BUILTIN)] == list(BUILTIN)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_follows_the_protocol(name):
    module = COMMANDS[name]
    missing = [attribute for attribute in PROTOCOL if not hasattr(module, attribute)]
    assert not missing, f"scannet {name} ({module.__name__}) lacks {missing}"
    assert isinstance(module.HELP, str) and module.HELP
    assert module.DESCRIPTION is None or isinstance(module.DESCRIPTION, str)
    assert callable(module.add_arguments) and callable(module.run)
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # on a parser of its own, as command_main does for jobs/*.py


@pytest.mark.parametrize("path", [path for path, _ in subparsers(build_parser())], ids=" ".join)
def test_help_of_every_command(path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*path, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: scannet {' '.join(path)}")


def test_a_shared_flag_has_one_dest_and_default_in_every_command():
    seen: dict[str, dict[tuple, list[str]]] = {}
    for path, parser in subparsers(build_parser()):
        for action in parser._actions:
            for flag in set(action.option_strings) & set(SHARED_FLAGS):
                key = (action.dest, action.default, type(action).__name__)
                seen.setdefault(flag, {}).setdefault(key, []).append(" ".join(path))
    differing = {flag: variants for flag, variants in seen.items() if len(variants) > 1}
    assert not differing, differing
    assert {"--device", "--batch-size", "--no-progress", "--print-config", "--storage-path"} <= set(seen)


def test_train_model_preset(tmp_path, capsys):
    argv = ["train", "--preset", "demo", "--model-preset", "qm9-scann", "--epochs", "2", "--print-config"]
    assert main([*argv, "--storage-path", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model_preset"] == "qm9-scann" and shown["train"]["epochs"] == 2
    assert shown["storage_path"] == str(tmp_path) and not any(tmp_path.iterdir())
    train = dict(subparsers(build_parser()))[("train",)]
    assert "--model" not in {flag for action in train._actions for flag in action.option_strings}
    with pytest.raises(SystemExit) as stop:
        main(["train", "--model-preset", "no-such-preset", "--print-config"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:  # no prefix matching: the old flag is refused, not taken as the new
        main(["train", "--model", "qm9-scann", "--print-config"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --model qm9-scann" in capsys.readouterr().err


def test_flags_map_to_config_fields_by_name():
    parser = argparse.ArgumentParser()
    COMMANDS["train"].add_arguments(parser)
    args = parser.parse_args(
        ["--name", "x", "--targets", "homo", "gap", "--epochs", "3", "--batch-size", "64", "--molecule-mode", "box10"]
    )
    assert config_overrides(args, RunConfig) == {
        "name": "x",
        "targets": ("homo", "gap"),
        "train": {"epochs": 3, "batch_size": 64},
        "featurizer": {"molecule_mode": "box10"},
    }
    assert config_overrides(parser.parse_args([]), RunConfig) == {}  # nothing given: presets and YAML stand
