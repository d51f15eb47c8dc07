"""How many CPUs this process may really use: affinity and the cgroup CPU quota."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from serve.config import ServingConfig

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _cgroup_quota(root: Path = Path("/")) -> float | None:
    """The CPU quota of this container in CPUs, or None when there is none."""
    try:
        v2 = root / CGROUP_V2_MAX.relative_to("/")
        if v2.exists():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or "100000")
        v1_quota = root / CGROUP_V1_QUOTA.relative_to("/")
        if v1_quota.exists():
            quota_us = int(v1_quota.read_text())
            if quota_us <= 0:
                return None
            return quota_us / int((root / CGROUP_V1_PERIOD.relative_to("/")).read_text())
    except (OSError, ValueError):
        return None
    return None


def available_cpus(root: Path = Path("/")) -> int:
    """CPUs available to this process: the smaller of its affinity set and its cgroup quota."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def resolved(config: ServingConfig, cpus: int | None = None) -> ServingConfig:
    """``config`` with ``workers=0`` (one per available CPU) and ``torch_threads=0`` (the CPUs
    shared out among the workers) made real; called once, where a server is started.

    Args:
        config: the configuration as given.
        cpus: the CPUs to share out; :func:`available_cpus` when None.
    """
    if config.workers and config.torch_threads:
        return config
    cpus = available_cpus() if cpus is None else cpus
    workers = config.workers or cpus
    return dataclasses.replace(
        config, workers=workers, torch_threads=config.torch_threads or max(1, cpus // workers)
    )
