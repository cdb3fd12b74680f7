"""The device check (benchmarks/device_check.sh) on CPU with small sizes, so that the script a lent GPU runs cannot rot:
every part is in the one results file with figures (finite, positive rates; equality within its tolerances) or an
explicit reason it was skipped, and the Markdown report renders from it. Plus the driver's promises: a failing part
records its error and the next one runs, and parts past the global deadline are skipped with that reason."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import device_check  # noqa: E402 (benchmarks/ is not a package: its scripts import each other from their folder)

TIMED_PARTS = ("training", "inference")


def check_timed(name: str, figures: dict) -> None:
    """Every variant has finite, positive rates or a skip reason; none failed; at least one was timed."""
    variants = {label: value for label, value in figures.items() if isinstance(value, dict)}
    assert not [label for label, value in variants.items() if "failed" in value], variants
    timed = [value for value in variants.values() if "skipped" not in value]
    assert timed, f"{name}: no variant was timed: {variants}"
    for value in timed:
        assert value["repeats"] >= 3
        for rate in (value["molecules_per_s_median"], value["molecules_per_s_best"]):
            assert math.isfinite(rate) and rate > 0, value
    assert all(value["skipped"] for value in variants.values() if "skipped" in value)


def check_equality(figures: dict) -> None:
    compared = [value for value in figures.values() if isinstance(value, dict) and "pass" in value]
    assert compared and figures["pass"] is True
    for value in compared:
        assert max(value["max_abs_diff_mev"].values()) <= value["tolerance_mev"]
        assert value["max_abs_diff_ga"] <= value["tolerance_ga"]


@pytest.mark.slow
def test_device_check_on_cpu_writes_every_part(tmp_path):
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "device_check.sh"), "--device", "cpu", "--small", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / device_check.RESULTS).read_text())
    assert list(results["parts"]) == list(device_check.PARTS)
    for name, part in results["parts"].items():
        assert part["status"] in ("ok", "skipped"), f"{name}: {part['reason']}"
        if part["status"] == "skipped":
            assert part["reason"], name
            continue
        assert part["utilisation"]["gpu"] == "no GPU" and part["utilisation"]["cpu_percent"] >= 0
        if name in TIMED_PARTS:
            check_timed(name, part["figures"])
    parts = results["parts"]
    assert parts["machine"]["figures"]["cpu_count"] >= 1 and parts["machine"]["figures"]["cpu_model"]
    check_equality(parts["equality"]["figures"])
    if parts["screen"]["status"] == "ok":
        screen = parts["screen"]["figures"]
        assert screen["screened"] == device_check.SMALL.screen_molecules and screen["structures_per_s"] > 0

    report = (tmp_path / device_check.REPORT).read_text()
    assert report.startswith("# Device check: cpu (--small)")
    for name in device_check.PARTS:
        assert f"## {name}: {parts[name]['status']}" in report
    assert "device check (cpu)" in result.stdout  # the printed summary


def test_a_failing_part_records_its_error_and_a_late_part_is_skipped():
    import torch

    ctx = device_check.Context(torch.device("cpu"), device_check.SMALL, Path("."))

    def broken(ctx, budget):
        raise ValueError("no such molecule\nsecond line")

    failed = device_check.run_part("equality", broken, ctx, deadline=time.monotonic() + 60)
    assert failed.status == "failed"
    assert failed.reason.startswith("ValueError: no such molecule (test_device_check.py:")

    late = device_check.run_part("screen", broken, ctx, deadline=time.monotonic() - 1)
    assert (late.status, late.reason) == ("skipped", "the global deadline had passed")


def test_a_failing_variant_is_recorded_and_the_others_are_timed():
    import torch

    ctx = device_check.Context(torch.device("cpu"), device_check.SMALL, Path("."))
    budget = device_check.Budget(time.monotonic() + 60)

    def measure_one(variant):
        if variant.precision == "bf16":
            raise RuntimeError("autocast unsupported")
        timing = device_check.Timing(variant.label)
        for seconds in (1.0, 2.0, 4.0):
            timing.add(seconds, molecules=8)
        return timing

    figures = device_check.time_variants(ctx, budget, ("eager",), measure_one)
    assert figures["bf16 eager batch 4"]["failed"].startswith("RuntimeError: autocast unsupported")
    assert figures["fp32 eager batch 4"]["molecules_per_s_median"] == 4.0
    assert figures["tf32 eager batch 8"] == {"skipped": "TF32 is a CUDA setting"}

    spent = device_check.time_variants(ctx, device_check.Budget(time.monotonic() - 1), ("eager",), measure_one)
    assert spent["fp32 eager batch 4"] == {"skipped": "the part's time budget was spent"}


def test_gpu_utilisation_is_sampled_from_nvidia_smi(tmp_path, monkeypatch):
    """The sampler's parsing of ``nvidia-smi --query-gpu=utilization.gpu,memory.used`` (a stand-in prints it here)."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '37, 1024'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with device_check.UtilisationSampler(gpu=True).during() as summary:
        time.sleep(1.0)
    assert summary["gpu_util_mean_percent"] == 37.0 and summary["gpu_util_max_percent"] == 37.0
    assert summary["gpu_memory_max_mib"] == 1024.0 and summary["samples"] >= 1
