"""How many trials of a study run at a time: from the cluster's nodes and each trial's resources
(refused, with the numbers, when a trial fits on no node)."""

from __future__ import annotations

import math

from scannet.typed_config import ConfigError
from scannet_platform.tune.config import StudyConfig


def plan_concurrency(study: StudyConfig, nodes: list[dict[str, float]]) -> tuple[int, str]:
    """(trials at a time, the reason) from the alive nodes' resources (``{"CPU": 2.0, "GPU": 0.0}`` each).

    A trial must fit on one node, and ``reserve_cpus`` stay free; the result never exceeds
    ``max_concurrent_trials`` or ``num_samples``. Settings that would leave trials waiting forever are refused.
    """
    need_cpu, need_gpu = study.resources_per_trial.cpu, study.resources_per_trial.gpu
    total_cpu = sum(n.get("CPU", 0.0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0.0) for n in nodes)
    largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    if not any(n.get("CPU", 0.0) >= need_cpu and n.get("GPU", 0.0) >= need_gpu for n in nodes):
        raise ConfigError(
            f"resources_per_trial: a trial needs {need_cpu:g} CPUs and {need_gpu:g} GPUs on one node, and no node has "
            f"them (largest: {largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs; cluster: {total_cpu:g} "
            f"CPUs, {total_gpu:g} GPUs); the trials would wait forever"
        )
    usable = total_cpu - study.reserve_cpus
    if usable < need_cpu:
        raise ConfigError(
            f"reserve_cpus {study.reserve_cpus:g} leaves {usable:g} of the cluster's {total_cpu:g} CPUs, fewer than "
            f"one trial's {need_cpu:g}; the trials would wait forever"
        )
    packed = 0
    for node in nodes:
        by_cpu = math.floor(node.get("CPU", 0.0) / need_cpu + 1e-9)
        by_gpu = math.floor(node.get("GPU", 0.0) / need_gpu + 1e-9) if need_gpu else by_cpu
        packed += min(by_cpu, by_gpu)
    limits = {
        "fit on the nodes": packed,
        f"leave {study.reserve_cpus:g} CPUs free": math.floor(usable / need_cpu + 1e-9),
        "num_samples": study.num_samples,
    }
    if study.max_concurrent_trials is not None:
        limits["max_concurrent_trials"] = study.max_concurrent_trials
    count = min(limits.values())
    binding = [k for k, v in limits.items() if v == count]
    reason = (
        f"{count} trials at a time ({need_cpu:g} CPU, {need_gpu:g} GPU each; cluster {total_cpu:g} CPUs, "
        f"{total_gpu:g} GPUs; limited by {' and '.join(binding)})"
    )
    return count, reason


def cluster_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
