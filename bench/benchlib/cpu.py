"""CPU accounting from ``/proc``: who used the machine during a phase (bench, service, foreign, steal)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DISTURBED_FOREIGN_PCT = 10.0  # other processes using more of the machine than this flag the numbers

_TICK = float(os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float
    machine_busy_s: float  # every core, all processes (excludes idle, iowait and steal)
    steal_s: float
    own_s: float  # this process (the benchmark and its client threads)
    server_s: float  # the service process, if any


@dataclass(frozen=True)
class CpuUsage:
    """Shares of the machine's capacity (cores x wall time) during a phase, in percent."""

    own_pct: float
    server_pct: float
    foreign_pct: float
    steal_pct: float


def _proc_stat_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot; zeros where /proc is missing."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return 0.0, 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


def _pid_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (float(rest[11]) + float(rest[12])) / _TICK  # utime, stime


def cpu_snapshot(server_pid: int | None = None) -> CpuSnapshot:
    busy, steal = _proc_stat_s()
    times = os.times()
    return CpuSnapshot(time.perf_counter(), busy, steal, times.user + times.system, _pid_cpu_s(server_pid))


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
    capacity = max(after.wall - before.wall, 1e-9) * len(os.sched_getaffinity(0))
    own = after.own_s - before.own_s
    server = after.server_s - before.server_s
    foreign = max(0.0, after.machine_busy_s - before.machine_busy_s - own - server)
    steal = after.steal_s - before.steal_s

    def pct(value: float) -> float:
        return round(100 * value / capacity, 1)

    return CpuUsage(pct(own), pct(server), pct(foreign), pct(steal))


def foreign_pct_max(usages: Iterable[CpuUsage]) -> float:
    """The largest share other processes took in any phase; above ``DISTURBED_FOREIGN_PCT``: disturbed."""
    return max(usage.foreign_pct for usage in usages)
