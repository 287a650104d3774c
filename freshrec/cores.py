"""How many cores this process may use: its CPU affinity, capped by its cgroup's CPU quota.

``os.cpu_count()`` counts the machine's cores, not this process's: in a
container limited to 2 CPUs on a 64-core node, training with 64 threads
thrashes (each thread gets a sliver of the quota and waits at every
synchronisation), and with 1 thread it leaves the quota idle (issue 25: the
search ran one thread on a 2-core machine). The retrain trains with as many
threads as this returns.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: Where a cgroup v2 process finds its own group (the container's root, in a container).
CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores this process may run on: its affinity, capped by the cgroup CPU quota (rounded
    up: a quota of 1.5 CPUs keeps two threads busy part of the time), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_quota(cgroup_root)
    cores = cores or 1
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def cgroup_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs the cgroup's quota allows (``cpu.max``, v2; ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``, v1), or None when unlimited or unknown."""
    try:
        v2 = (cgroup_root / "cpu.max").read_text().split()
        if len(v2) == 2 and v2[0] != "max":
            return int(v2[0]) / int(v2[1])
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
