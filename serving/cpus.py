"""How many cores this process may use, and how many ONNX Runtime threads to give a model.

ONNX Runtime's own default (one intra-op thread per physical core of the machine) ignores
the process's CPU affinity and a container's CPU quota: in a container limited to 2 CPUs on
a 64-core host it starts 64 threads. The service's default gives the model threads of a
process the cores this process may actually use, split between them, less
``ONCOTRIAGE_RESERVED_CORES`` (default 0) kept for HTTP, intake, the database and the
worker's reading and preprocessing. Measured in docs/benchmarks.md (service load): on two
cores, every core to the model gives the highest throughput and the shortest time to
triage; one core reserved makes the service keep up with the bare model at that budget,
and keeps the API responsive at saturation.

The default assumes this process is the only inference process on the machine; with several
``oncotriage worker`` processes on one host, set ``ONCOTRIAGE_ORT_INTRA_OP_THREADS``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["count_cores", "cpu_flags", "default_intra_op_threads", "usable_cores"]

_SYS_CPU = Path("/sys/devices/system/cpu")
_CPUINFO = Path("/proc/cpuinfo")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _allowed_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cgroup_quota(path: Path = _CGROUP_CPU_MAX) -> float | None:
    """CPUs allowed by a cgroup v2 quota (``cpu.max``: ``QUOTA PERIOD`` or ``max PERIOD``)."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def _physical_cores(cpus: list[int], sys_cpu: Path = _SYS_CPU) -> int:
    """Distinct (package, core) pairs among ``cpus`` (SMT siblings count once); ``len(cpus)``
    where the topology is not readable."""
    cores = set()
    for cpu in cpus:
        topology = sys_cpu / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return len(cores) or len(cpus)


def count_cores(cpus: list[int], quota: float | None = None, sys_cpu: Path = _SYS_CPU) -> int:
    """Physical cores among ``cpus`` (SMT siblings counted once), capped by a CPU ``quota``
    (rounded up). At least 1."""
    cores = _physical_cores(cpus, sys_cpu)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def usable_cores() -> int:
    """Physical cores this process may run on: its CPU affinity, capped by its cgroup v2
    CPU quota."""
    return count_cores(_allowed_cpus(), _cgroup_quota())


def default_intra_op_threads(
    model_threads: int, reserved: int = 0, cores: int | None = None
) -> int:
    """Intra-op threads for each of ``model_threads`` concurrent inferences in this process:
    the usable cores less ``reserved``, split between them; at least 1."""
    available = usable_cores() if cores is None else cores
    return max(1, (available - reserved) // max(1, model_threads))


def cpu_flags(cpuinfo: Path = _CPUINFO) -> frozenset[str]:
    """The instruction-set flags of this CPU, as ``/proc/cpuinfo`` names them
    (``avx512_bf16``, ``avx512_vnni``, ``amx_int8``...); empty where it cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()
