"""Timing helpers shared by the benchmark scripts: repeated timings, min/median summaries, ratios of medians
with a noise check, and the machine's load.

The scripts run as ``python benchmarks/x.py``; Python puts ``benchmarks/`` on ``sys.path``, so they import
this module as ``_timing``.

Method: every figure is timed ``--repeats`` times (default and minimum 3, after one untimed warm-up where the
script has one). A figure is reported as the median rate, with the best (min-time) rate and the min/median/max
seconds beside it. Ratios are ratios of medians; when the [slowest, fastest] rate ranges of the two compared
timings overlap, or a fixed figure (goal, documented reference) lies inside a timing's range, the ratio is
marked "inside the noise".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MIN_REPEATS = 3


def add_repeats_option(parser: argparse.ArgumentParser) -> None:
    def repeats(text: str) -> int:
        value = int(text)
        if value < MIN_REPEATS:
            raise argparse.ArgumentTypeError(f"at least {MIN_REPEATS} (a min and a median need them)")
        return value

    parser.add_argument(
        "--repeats", type=repeats, default=MIN_REPEATS, help=f"timed repeats per figure (>= {MIN_REPEATS})"
    )


@dataclass
class Timing:
    """Repeated timings of one piece of work. ``counts[i]`` maps a unit ("molecules", "batches") to how many
    the i-th repeat processed; the first unit is the headline one."""

    label: str
    seconds: list[float] = field(default_factory=list)
    counts: list[dict[str, float]] = field(default_factory=list)

    def add(self, seconds: float, **counts: float) -> None:
        self.seconds.append(seconds)
        self.counts.append(counts)

    @property
    def unit(self) -> str:
        return next(iter(self.counts[0]))

    def rates(self, unit: str | None = None) -> list[float]:
        unit = unit or self.unit
        return [c[unit] / s for c, s in zip(self.counts, self.seconds)]

    def median_rate(self, unit: str | None = None) -> float:
        return statistics.median(self.rates(unit))

    def best_rate(self, unit: str | None = None) -> float:
        return max(self.rates(unit))

    def rate_range(self, unit: str | None = None) -> tuple[float, float]:
        rates = self.rates(unit)
        return min(rates), max(rates)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    def summary(self) -> str:
        """One line: median and best rate of each unit, then min/median/max seconds and every run."""
        rates = ", ".join(
            f"{self.median_rate(unit):,.1f} {unit}/s" + (f" (best {self.best_rate(unit):,.1f})" if i == 0 else "")
            for i, unit in enumerate(self.counts[0])
        )
        runs = ", ".join(f"{s:.3g}" for s in self.seconds)
        return (
            f"{self.label}: median {rates}; seconds min {min(self.seconds):.3g} / median {self.median_seconds:.3g} "
            f"/ max {max(self.seconds):.3g} over {len(self.seconds)} runs [{runs}]"
        )


def measure(run: Callable[[], object], repeats: int, label: str, **counts: float) -> Timing:
    """Time ``run()`` ``repeats`` times (wall clock, ``perf_counter``), each repeat doing ``counts`` work."""
    timing = Timing(label)
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timing.add(time.perf_counter() - start, **counts)
    return timing


def ratio(a: Timing, b: Timing | float, unit: str | None = None) -> str:
    """``a``'s median rate over ``b``'s (another timing's median, or a fixed figure) as ``"12.3x"``, with a note
    when the two cannot be told apart: overlapping rate ranges, or the fixed figure inside ``a``'s range."""
    low, high = a.rate_range(unit)
    if isinstance(b, Timing):
        b_low, b_high = b.rate_range(unit)
        value = a.median_rate(unit) / b.median_rate(unit)
        noise = "the min-max rate ranges overlap" if low <= b_high and b_low <= high else ""
    else:
        value = a.median_rate(unit) / b
        noise = f"{b:,.1f} lies inside the min-max rate range" if low <= b <= high else ""
    return f"{value:.2f}x" + (f" (inside the noise: {noise})" if noise else "")


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min), {os.cpu_count()} CPUs"


@contextlib.contextmanager
def machine_load() -> Iterator[None]:
    """Print the machine's load before and after the block (also when it fails)."""
    print(f"machine before: {load_line()}", flush=True)
    try:
        yield
    finally:
        print(f"machine after : {load_line()}", flush=True)
