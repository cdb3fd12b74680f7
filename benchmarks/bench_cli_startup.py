"""How long ``scannet --help`` and each ``scannet <command> --help`` take to print: seconds per call.

    python benchmarks/bench_cli_startup.py [--repeats 3] [--source DIR] [--commands "" train screen]

Each figure runs ``python -m scannet.cli [<command>] --help`` in a fresh process ``--repeats`` times (after one
untimed warm-up run that fills the file cache) and prints min / median / max seconds and the machine's load
(``_timing.py``). ``python -c pass`` is timed the same way: the interpreter's own start-up, which no change to
SCANNet can remove. The goal is help on screen in under 2 s.

``--source DIR`` times another checkout (e.g. ``git archive <commit> scannet platform | tar -x -C DIR``): each
process runs in ``DIR`` with ``DIR`` and ``DIR/platform`` first on ``PYTHONPATH``, so ``scannet`` and
``scannet_platform`` come from there (the entry points that name the platform's commands are the installed ones).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from _timing import Timing, add_repeats_option, machine_load, measure

GOAL_S = 2.0
COMMANDS = ("", "train", "predict", "explain", "info", "data", "screen", "tune")


REPOSITORY = Path(__file__).resolve().parents[1]


def environment(source: Path | None) -> dict[str, str]:
    """The environment of each timed process: ``source`` and its ``platform/`` first on ``PYTHONPATH``."""
    env = dict(os.environ)
    if source is not None:
        paths = [str(source.resolve()), str(source.resolve() / "platform"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def time_command(argv: list[str], source: Path | None, repeats: int, label: str) -> Timing:
    """Seconds of ``argv`` in a fresh process run in ``source`` (default: this repository), after one untimed
    warm-up; fails if it exits non-zero."""
    env, cwd = environment(source), source or REPOSITORY

    def run() -> None:
        subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)

    run()
    return measure(run, repeats, label, calls=1)


def seconds_line(timing: Timing) -> str:
    """``label: min / median / max seconds over n runs [each run]``."""
    runs = ", ".join(f"{s:.2f}" for s in timing.seconds)
    low, high = min(timing.seconds), max(timing.seconds)
    return f"{timing.label}: min {low:.2f} / median {timing.median_seconds:.2f} / max {high:.2f} s [{runs}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_repeats_option(parser)
    parser.add_argument("--source", type=Path, help="time this checkout instead of the installed scannet")
    parser.add_argument("--commands", nargs="+", default=list(COMMANDS), help="subcommands ('' for scannet --help)")
    args = parser.parse_args()
    print(f"source: {args.source or 'the installed scannet'}; goal: help in under {GOAL_S:g} s")
    with machine_load():
        interpreter = time_command([sys.executable, "-c", "pass"], args.source, args.repeats, "python -c pass")
        print(seconds_line(interpreter), flush=True)
        for command in args.commands:
            argv = [sys.executable, "-m", "scannet.cli", *([command] if command else []), "--help"]
            timing = time_command(argv, args.source, args.repeats, f"scannet {command} --help".replace("  ", " "))
            verdict = "under" if timing.median_seconds < GOAL_S else "OVER"
            print(f"{seconds_line(timing)}; median {verdict} {GOAL_S:g} s", flush=True)


if __name__ == "__main__":
    main()
