"""One device check: what a lent GPU does with SCANNet, in one run of at most 8 minutes, into one results file.

    bash benchmarks/device_check.sh --device cuda --out OUT      # on a GPU machine (installs carried wheels first)
    python benchmarks/device_check.py --device cpu --small --out OUT

Parts, each with its own time budget (a part that fails records its error and the next one runs; past the global
deadline the parts left are recorded as skipped, with the reason):

- machine: card name, memory, driver, torch and CUDA versions, CPU count (on CPU: the CPU model, AMX and
  AVX-512-BF16 flags).
- equality: the shipped model (``scannet.load()``) on the fixed set (``benchmarks/data/qm9_test_256.parquet``: 256
  molecules of its recorded QM9 test split, written with ``scannet.explain.recorded_test_sample(<the shipped model's
  folder>, 256)`` and ``scannet.data.structures_table.write_structures``), predictions and GA scores on the device against the CPU in fp32 and
  TF32, and bf16 against fp32 on the device: the largest absolute difference per target (meV) and of GA, with a
  pass line against :data:`TOLERANCES`.
- training: molecules/s of SCANN+ (the shipped model's architecture, fresh weights) through the one training step
  (``TrainLoop.train_epoch``) at each batch size, fp32 / TF32 / bf16 autocast, eager, ``torch.compile``d as the
  training worker compiles, and on CUDA with static shapes (batches padded by ``scannet.static_shapes.pad_batch``,
  ``mode="reduce-overhead"``: CUDA graphs). Batches are the fixed set reused cyclically and collated before the
  clock (the step alone, host-to-device copy included; collating is not timed).
- inference: molecules/s of ``Predictor.predict_graphs`` (collation, forward, GA split) at each batch size, same
  precisions, eager and compiled.
- screen: ``scannet screen --local --device <device> --featurize-workers <CPUs - 1>`` (``jobs/screen.py``; the GPU
  machine has no Ray, hence the local executor) of a library generated on the machine from the fixed set (rotated,
  jittered copies: ``bench_screen.write_library``; 100,000, ``--small`` 200) in a scratch folder with a fresh
  SCANNET_HOME (no stored graphs), structures/s and wall time. Needs ase and rdkit (skipped, with the reason, without).

Every part also records the GPU's utilisation and memory (``nvidia-smi`` every 0.2 s: mean and max), or on CPU the
process tree's CPU% (its CPU time over the wall time). Timings: warm-up outside the clock, the device synchronised
around each timed repeat, at least 3 repeats (min, median and max seconds; median and best rate).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _timing import MIN_REPEATS, Timing, load_line

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXED_SET = HERE / "data" / "qm9_test_256.parquet"
RESULTS, REPORT = "device_check.json", "device_check.md"
PARTS = ("machine", "equality", "training", "inference", "screen")
PRECISIONS = ("fp32", "bf16", "tf32")  # tf32: fp32 weights, TF32 matrix products (CUDA only)
SAMPLE_SECONDS = 0.2

#: Pass lines of the equality part: (largest |prediction difference| in meV, largest |GA difference|).
TOLERANCES = {
    "fp32 device vs CPU": (1.0, 1e-4),
    "tf32 device vs CPU fp32": (50.0, 5e-3),
    "bf16 vs fp32 on the device": (50.0, 1e-2),
}


@dataclass(frozen=True)
class Sizes:
    """How much work each part does: the full GPU run, or ``--small`` for a quick CPU run (the test suite's)."""

    equality_molecules: int  # the first molecules of the fixed set compared
    batch_sizes: tuple[int, ...]  # structures per training step and per inference batch
    train_steps: int  # training steps per timed repeat
    infer_molecules: int  # molecules per timed inference pass
    compiled: bool  # also time torch.compile'd variants
    screen_molecules: int  # library size of the screen part
    deadline_s: float  # global: parts not started by then are skipped
    budgets_s: dict[str, float]  # per part: variants not started by then are skipped


FULL = Sizes(
    equality_molecules=256,
    batch_sizes=(128, 1024),
    train_steps=20,
    infer_molecules=8192,
    compiled=True,
    screen_molecules=100_000,
    deadline_s=420.0,
    budgets_s={"machine": 10, "equality": 40, "training": 170, "inference": 80, "screen": 120},
)
SMALL = Sizes(
    equality_molecules=16,
    batch_sizes=(4, 8),
    train_steps=1,
    infer_molecules=16,
    compiled=False,
    screen_molecules=200,
    deadline_s=100.0,
    budgets_s={"machine": 10, "equality": 15, "training": 20, "inference": 15, "screen": 45},
)


@dataclass
class Part:
    """The record of one part: ``status`` is "ok", "failed" (``reason`` holds the error) or "skipped" (the reason)."""

    name: str
    status: str = "skipped"
    reason: str | None = None
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    utilisation: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """The time a part may still start work in: until its own budget or the global deadline, whichever is first."""

    ends: float  # time.monotonic()

    def left(self) -> float:
        return self.ends - time.monotonic()


# ------------------------------------------------------------------------------------------- utilisation


class UtilisationSampler:
    """GPU utilisation % and memory used (MiB) from ``nvidia-smi`` every 0.2 s in a thread, or on CPU the process
    tree's CPU% over the block (children that ended included)."""

    QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]

    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
                line = subprocess.run(self.QUERY, capture_output=True, text=True, timeout=2).stdout.splitlines()[0]
                utilisation, memory = (float(v) for v in line.split(","))
                self.samples.append((utilisation, memory))

    @contextlib.contextmanager
    def during(self) -> Iterator[dict]:
        """Sample while the block runs; the dict it yields is filled with the summary when the block ends."""
        summary: dict = {}
        started, times = time.monotonic(), os.times()
        if self.gpu:
            self._thread.start()
        try:
            yield summary
        finally:
            wall = time.monotonic() - started
            if self.gpu:
                self._stop.set()
                self._thread.join()
                summary.update(self.summary())
            else:
                end = os.times()
                cpu = sum(
                    getattr(end, k) - getattr(times, k) for k in ("user", "system", "children_user", "children_system")
                )
                summary.update({"gpu": "no GPU", "cpu_percent": round(100 * cpu / max(wall, 1e-9), 1)})

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu": "no samples (nvidia-smi did not answer)"}
        utilisation = [u for u, _ in self.samples]
        memory = [m for _, m in self.samples]
        return {
            "samples": len(self.samples),
            "gpu_util_mean_percent": round(sum(utilisation) / len(utilisation), 1),
            "gpu_util_max_percent": max(utilisation),
            "gpu_memory_max_mib": max(memory),
        }


# ------------------------------------------------------------------------------------------------ timing


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device, repeats: int, label: str, molecules: int) -> Timing:
    """``repeats`` wall-clock timings of ``run()`` with the device synchronised before and after each."""
    timing = Timing(label)
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        timing.add(time.perf_counter() - start, molecules=molecules)
    return timing


def rate_figures(timing: Timing) -> dict:
    low, high = min(timing.seconds), max(timing.seconds)
    return {
        "molecules_per_s_median": round(timing.median_rate(), 1),
        "molecules_per_s_best": round(timing.best_rate(), 1),
        "seconds_min_median_max": [round(low, 4), round(timing.median_seconds, 4), round(high, 4)],
        "repeats": len(timing.seconds),
    }


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """TF32 matrix products (and cuDNN convolutions) inside the block for ``"tf32"``; full fp32 otherwise."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast_precision(precision: str) -> str:
    """The library's precision name of a variant: TF32 runs the fp32 model with TF32 matrix products."""
    return "bf16" if precision == "bf16" else "fp32"


@dataclass(frozen=True)
class Variant:
    """One timed configuration: ``mode`` "eager", "compiled" (``torch.compile(dynamic=True)``) or "static" (batches
    padded to bucket shapes, ``torch.compile(mode="reduce-overhead")``: CUDA graphs)."""

    precision: str
    mode: str
    batch_size: int

    @property
    def label(self) -> str:
        return f"{self.precision} {self.mode} batch {self.batch_size}"

    def skip_reason(self, device, sizes: Sizes) -> str | None:
        if self.precision == "tf32" and device.type != "cuda":
            return "TF32 is a CUDA setting"
        if self.mode == "static" and device.type != "cuda":
            return "CUDA graphs (reduce-overhead) are CUDA only"
        if self.mode != "eager" and not sizes.compiled:
            return "--small: compiled variants are left out (tens of seconds of compiling each on CPU)"
        return None


def time_variants(
    ctx: Context, budget: Budget, modes: tuple[str, ...], measure_one: Callable[[Variant], Timing]
) -> dict:
    """The figures of every variant of ``modes`` (eager first), or why it was skipped or failed (the rest go on)."""
    figures = {}
    for variant in ordered_variants(modes, ctx.sizes.batch_sizes):
        reason = variant.skip_reason(ctx.device, ctx.sizes)
        if reason is None and budget.left() <= 0:
            reason = "the part's time budget was spent"
        if reason:
            figures[variant.label] = {"skipped": reason}
            continue
        try:
            with matmul_precision(variant.precision):
                figures[variant.label] = rate_figures(measure_one(variant))
        except Exception as exc:  # noqa: BLE001 (one variant's failure is recorded, the others run)
            figures[variant.label] = {"failed": one_line_error(exc)}
    return figures


def ordered_variants(modes: tuple[str, ...], batch_sizes: tuple[int, ...]) -> list[Variant]:
    """Every eager variant, then the compiled modes precision by precision (fp32, bf16, tf32): when the budget runs
    out, what is left is the least asked-for."""
    eager = [Variant(p, "eager", b) for p in PRECISIONS for b in batch_sizes]
    others = [Variant(p, m, b) for p in PRECISIONS for m in modes if m != "eager" for b in batch_sizes]
    return eager + others


# ------------------------------------------------------------------------------------------------- parts


@dataclass
class Context:
    device: object  # torch.device
    sizes: Sizes
    work: Path  # scratch: the screen's library and output (kept out of --out, which holds only the results)
    structures: list = field(default_factory=list)  # the fixed set, ase.Atoms with their labels
    graphs: list = field(default_factory=list)  # their graphs (the shipped model's featurizer)

    def fixed_set(self) -> tuple[list, list]:
        """The fixed set and its graphs, read and featurized on first use (needs ase)."""
        if not self.graphs:
            import scannet
            from scannet.data.structures_table import read_structures
            from scannet.explain import featurize_sample

            self.structures = [atoms for batch in read_structures(FIXED_SET) for atoms in batch]
            self.graphs, failed = featurize_sample(scannet.load(), self.structures)
            if failed:
                raise RuntimeError(f"{len(failed)} molecules of {FIXED_SET.name} could not be featurized: {failed[:3]}")
        return self.structures, self.graphs


def machine_part(ctx: Context, budget: Budget) -> dict:
    import torch

    figures = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_bf16_flags": [f for f in ("amx_bf16", "amx_tile", "avx512_bf16") if f in cpu_flags()],
        "load": load_line(),
    }
    if ctx.device.type == "cuda":
        properties = torch.cuda.get_device_properties(ctx.device)
        figures.update(
            {
                "card": properties.name,
                "memory_gib": round(properties.total_memory / 2**30, 1),
                "multiprocessors": properties.multi_processor_count,
                "driver": nvidia_smi_value("driver_version"),
            }
        )
    return figures


def cpu_info_line(key: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return ""


def cpu_model() -> str:
    return cpu_info_line("model name") or platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    return set(cpu_info_line("flags").split())


def nvidia_smi_value(name: str) -> str:
    result = subprocess.run(
        ["nvidia-smi", f"--query-gpu={name}", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
    )
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else "unknown"


def predictions(predictor, graphs: list):
    """(values [N, T], GA scores of all atoms concatenated [sum n_atoms]) of the fixed set; raises on a failure."""
    import numpy as np

    names = [str(i) for i in range(len(graphs))]
    results = predictor.predict_graphs(graphs, names, batch_size=128)
    failed = [f"{r.name}: {r.error}" for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} structures failed: {failed[:3]}")
    values = np.array([[r.values[t] for t in predictor.targets] for r in results], dtype=np.float64)
    return values, np.concatenate([r.ga_scores for r in results]).astype(np.float64)


def compare(name: str, a: tuple, b: tuple, targets: tuple[str, ...]) -> dict:
    """The largest |difference| per target (meV; the shipped model predicts eV) and of GA, with the pass line."""
    import numpy as np

    values, ga = np.abs(a[0] - b[0]).max(axis=0) * 1000.0, float(np.abs(a[1] - b[1]).max())
    tolerance_mev, tolerance_ga = TOLERANCES[name]
    return {
        "max_abs_diff_mev": {t: round(float(v), 4) for t, v in zip(targets, values)},
        "max_abs_diff_ga": ga,
        "tolerance_mev": tolerance_mev,
        "tolerance_ga": tolerance_ga,
        "pass": bool(values.max() <= tolerance_mev and ga <= tolerance_ga),
    }


def equality_part(ctx: Context, budget: Budget) -> dict:
    import scannet

    graphs = ctx.fixed_set()[1][: ctx.sizes.equality_molecules]
    cpu = predictions(scannet.load(device="cpu"), graphs)
    on_device = scannet.load(device=ctx.device)
    targets = on_device.targets
    figures = {
        "molecules": len(graphs),
        "fp32 device vs CPU": compare("fp32 device vs CPU", predictions(on_device, graphs), cpu, targets),
    }
    if ctx.device.type == "cuda":
        with matmul_precision("tf32"):
            figures["tf32 device vs CPU fp32"] = compare(
                "tf32 device vs CPU fp32", predictions(on_device, graphs), cpu, targets
            )
    else:
        figures["tf32 device vs CPU fp32"] = "skipped: TF32 is a CUDA setting"
    bf16 = predictions(scannet.load(device=ctx.device, precision="bf16"), graphs)
    figures["bf16 vs fp32 on the device"] = compare(
        "bf16 vs fp32 on the device", bf16, predictions(on_device, graphs), targets
    )
    figures["pass"] = all(v["pass"] for v in figures.values() if isinstance(v, dict) and "pass" in v)
    return figures


def cyclic(items: list, n: int) -> list:
    """The first ``n`` items of ``items`` repeated."""
    return [items[i % len(items)] for i in range(n)]


def training_part(ctx: Context, budget: Budget) -> dict:
    import numpy as np
    import torch

    import scannet
    from scannet.batch import collate_graphs
    from scannet.model import SCANN
    from scannet.static_shapes import compile_forward, pad_batch
    from scannet.train import TrainConfig
    from scannet.train.trainer import TrainLoop

    structures, graphs = ctx.fixed_set()
    config = scannet.load().model.config
    labels = np.array([[atoms.info[t] for t in config.targets] for atoms in structures], dtype=np.float32)  # [N, T]
    models: dict[tuple[str, str], tuple[SCANN, torch.nn.Module]] = {}  # one per precision and mode

    def model_of(variant: Variant) -> tuple[SCANN, torch.nn.Module]:
        """(the model, what the step calls): compiled as the training worker compiles it."""
        if (variant.precision, variant.mode) not in models:
            torch.manual_seed(0)
            model = SCANN(config).to(ctx.device)
            forward = model if variant.mode == "eager" else compile_forward(model, variant.mode == "static", ctx.device)
            models[variant.precision, variant.mode] = model, forward
        return models[variant.precision, variant.mode]

    def batches_of(variant: Variant) -> list:
        n, size = variant.batch_size * ctx.sizes.train_steps, variant.batch_size
        order = cyclic(list(range(len(graphs))), n)
        batches = [
            collate_graphs([graphs[i] for i in order[k : k + size]], labels[order[k : k + size]])
            for k in range(0, n, size)
        ]
        if variant.mode == "static":
            batches = [pad_batch(batch) for batch in batches]
        return batches

    def measure_one(variant: Variant) -> Timing:
        batches = batches_of(variant)
        model, forward = model_of(variant)
        train_config = TrainConfig(batch_size=variant.batch_size)
        loop = TrainLoop(model, train_config, len(batches), ctx.device, forward, autocast_precision(variant.precision))
        loop.train_epoch(batches)  # warm-up outside the clock: compiles (or records) every shape the timed passes see
        molecules = variant.batch_size * len(batches)
        return timed(lambda: loop.train_epoch(batches), ctx.device, MIN_REPEATS, variant.label, molecules)

    return {
        "data": f"the {len(graphs)} fixed-set molecules reused cyclically, collated before the clock",
        **time_variants(ctx, budget, ("eager", "compiled", "static"), measure_one),
    }


def inference_part(ctx: Context, budget: Budget) -> dict:
    import scannet

    _, graphs = ctx.fixed_set()
    timed_graphs = cyclic(graphs, ctx.sizes.infer_molecules)
    names = [str(i) for i in range(len(timed_graphs))]

    def measure_one(variant: Variant) -> Timing:
        predictor = scannet.load(device=ctx.device, precision=autocast_precision(variant.precision))
        if variant.mode != "eager":
            predictor.compile(static_shapes=variant.mode == "static")
        size = variant.batch_size
        predictor.predict_graphs(timed_graphs[: 2 * size], names[: 2 * size], batch_size=size)  # warm-up

        def one_pass() -> None:
            predictor.predict_graphs(timed_graphs, names, batch_size=size)

        return timed(one_pass, ctx.device, MIN_REPEATS, variant.label, len(timed_graphs))

    return {
        "data": f"{len(timed_graphs)} molecules: the fixed set reused cyclically, featurized before the clock",
        **time_variants(ctx, budget, ("eager", "compiled", "static"), measure_one),
    }


def screen_command(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "jobs" / "screen.py"), *args]


def screen_env(home: Path) -> dict[str, str]:
    """The environment of the screen's process: the repository and the platform on the path (they need not be
    installed), ``home`` as its SCANNET_HOME."""
    paths = [str(REPO), str(REPO / "platform"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "SCANNET_HOME": str(home)}


def screen_part(ctx: Context, budget: Budget) -> dict | str:
    missing = [name for name in ("ase", "rdkit") if not module_available(name)]
    if missing:
        return f"skipped: {', '.join(missing)} not importable (carry the wheels: benchmarks/device_bundle.sh)"
    from bench_screen import write_library

    n = ctx.sizes.screen_molecules
    library = write_library(FIXED_SET, n, ctx.work / f"library-{n}.parquet")
    run = ctx.work / "screen"
    env = screen_env(run / "home")  # a fresh SCANNET_HOME: no graphs cached by an earlier screen of this library
    workers = max(1, (os.cpu_count() or 2) - 1)
    out = run / "screen"
    command = screen_command(
        *(str(library), "--local", "--device", ctx.device.type, "--no-mlflow", "--no-progress"),
        *("--out", str(out), "--featurize-workers", str(workers)),
    )
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=max(budget.left(), 1))
    wall = time.perf_counter() - started
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "(no error output)"
        raise RuntimeError(f"scannet screen exited {result.returncode}: {last}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "command": " ".join(["scannet screen", *command[2:]]),
        "featurize_workers": workers,
        "library": f"{ctx.sizes.screen_molecules:,} rotated, jittered copies of the fixed set",
        "screened": summary["n_screened"],
        "quarantined": summary["n_quarantined"],
        "structures_per_s": round(summary["structures_per_s"], 1),
        "screen_seconds": round(summary["screen_seconds"], 2),
        "wall_seconds": round(wall, 2),
    }


def module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


PART_FUNCTIONS: dict[str, Callable[[Context, Budget], dict | str]] = {
    "machine": machine_part,
    "equality": equality_part,
    "training": training_part,
    "inference": inference_part,
    "screen": screen_part,
}


# ------------------------------------------------------------------------------------------------ driver


def one_line_error(exc: BaseException) -> str:
    """``Type: first line of the message (file:line where it was raised)``."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    message = str(exc).splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" + (f" ({Path(where.filename).name}:{where.lineno})" if where else "")


def run_part(name: str, function: Callable[[Context, Budget], dict | str], ctx: Context, deadline: float) -> Part:
    """Run one part within its budget; its error (one line, the traceback's last frame) is recorded, not raised."""
    part = Part(name)
    if time.monotonic() >= deadline:
        part.reason = "the global deadline had passed"
        return part
    budget = Budget(min(deadline, time.monotonic() + ctx.sizes.budgets_s[name]))
    started = time.monotonic()
    with UtilisationSampler(ctx.device.type == "cuda").during() as utilisation:
        try:
            result = function(ctx, budget)
            if isinstance(result, str):
                part.reason = result.removeprefix("skipped: ")
            else:
                part.status, part.figures = "ok", result
        except Exception as exc:  # noqa: BLE001 (a failed part is recorded and the check goes on)
            part.status, part.reason = "failed", one_line_error(exc)
    part.seconds = round(time.monotonic() - started, 2)
    part.utilisation = utilisation
    return part


def write_results(out: Path, header: dict, parts: list[Part]) -> dict:
    """Write the results file and its Markdown rendering (again after every part: a killed run keeps what it did)."""
    results = {**header, "parts": {p.name: asdict(p) for p in parts}}
    for name, text in ((RESULTS, json.dumps(results, indent=1, default=str)), (REPORT, render_markdown(results))):
        staged = out / f".{name}.tmp"
        staged.write_text(text)
        staged.replace(out / name)
    return results


def render_markdown(results: dict) -> str:
    """The results as Markdown: a section per part, its timed variants and comparisons as tables."""
    lines = [
        f"# Device check: {results['device']}{' (--small)' if results['small'] else ''}",
        "",
        f"{results['started']}, {results['seconds']:.0f} s in all.",
    ]
    for name, part in results["parts"].items():
        lines += ["", f"## {name}: {part['status']} ({part['seconds']:.1f} s)", ""]
        if part["reason"]:
            lines += [f"reason: {part['reason']}", ""]
        rates = {k: v for k, v in part["figures"].items() if isinstance(v, dict) and is_variant(v)}
        comparisons = {k: v for k, v in part["figures"].items() if isinstance(v, dict) and "max_abs_diff_mev" in v}
        plain = {k: v for k, v in part["figures"].items() if k not in rates and k not in comparisons}
        lines += [f"- {key}: {format_value(value)}" for key, value in plain.items()]
        if part["utilisation"]:
            lines.append(f"- utilisation: {format_value(part['utilisation'])}")
        if rates:
            lines += ["", *rate_table(rates)]
        if comparisons:
            lines += ["", *comparison_table(comparisons)]
    return "\n".join(lines) + "\n"


def is_variant(value: dict) -> bool:
    return "molecules_per_s_median" in value or "skipped" in value or "failed" in value


def rate_table(rates: dict) -> list[str]:
    rows = ["| variant | molecules/s, median | best | seconds min / median / max |", "|---|---:|---:|---|"]
    for label, value in rates.items():
        if "molecules_per_s_median" in value:
            seconds = " / ".join(f"{s:.3g}" for s in value["seconds_min_median_max"])
            rows.append(
                f"| {label} | {value['molecules_per_s_median']:,.1f} | {value['molecules_per_s_best']:,.1f} | {seconds} |"
            )
        else:
            rows.append(
                f"| {label} | {'skipped' if 'skipped' in value else 'failed'}: {value.get('skipped') or value.get('failed')} | | |"
            )
    return rows


def comparison_table(comparisons: dict) -> list[str]:
    targets = list(next(iter(comparisons.values()))["max_abs_diff_mev"])
    rows = [
        "| comparison | "
        + " | ".join(f"max abs diff {t} (meV)" for t in targets)
        + " | max abs diff GA | tolerance (meV, GA) | pass |",
        "|---|" + "---:|" * len(targets) + "---:|---|---|",
    ]
    for label, value in comparisons.items():
        diffs = " | ".join(f"{value['max_abs_diff_mev'][t]:.3g}" for t in targets)
        tolerance = f"{value['tolerance_mev']:g}, {value['tolerance_ga']:g}"
        rows.append(f"| {label} | {diffs} | {value['max_abs_diff_ga']:.2g} | {tolerance} | {value['pass']} |")
    return rows


def format_value(value) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k} {format_value(v)}" for k, v in value.items())
    return str(value)


def summary_lines(results: dict) -> list[str]:
    """The printed summary: one line per part, and the headline figures."""
    lines = [f"device check ({results['device']}): {results['seconds']:.0f} s, results in {results['out']}"]
    for name, part in results["parts"].items():
        lines.append(f"  {name:10s} {part['status']:8s} {part['seconds']:6.1f} s  {part['reason'] or ''}".rstrip())
        for key, value in part["figures"].items():
            if isinstance(value, dict) and ("molecules_per_s_median" in value or "pass" in value):
                figure = value.get("molecules_per_s_median", value.get("pass"))
                lines.append(f"      {key}: {figure}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--small", action="store_true", help="small sizes and no compiled variants (a quick CPU run)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "device_check")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (use --device cpu)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sizes = SMALL if args.small else FULL
    started = time.monotonic()
    deadline = started + sizes.deadline_s
    header = {
        "device": args.device,
        "small": args.small,
        "out": str(out),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    parts: list[Part] = []
    with tempfile.TemporaryDirectory(prefix="device-check-") as work:
        ctx = Context(torch.device(args.device), sizes, Path(work))
        for name in PARTS:
            parts.append(run_part(name, PART_FUNCTIONS[name], ctx, deadline))
            results = write_results(out, {**header, "seconds": time.monotonic() - started}, parts)
            print(f"{name}: {parts[-1].status} in {parts[-1].seconds:.1f} s {parts[-1].reason or ''}", flush=True)
    print("\n".join(summary_lines(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
