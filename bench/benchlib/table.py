"""Text-table rows shared by the benchmarks: CPU shares, closed-loop throughput, latency, warnings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .cpu import CpuUsage
from .load import LoadResult
from .stats import Latency

CPU_COLUMNS_NOTE = (
    "CPU columns: % of all cores; bench = this process (raw session or client threads), "
    "service = server process, foreign = everything else"
)


def cpu_cells(cpu: CpuUsage) -> str:
    return f"{cpu.own_pct:>9.1f} {cpu.server_pct:>9.1f} {cpu.foreign_pct:>9.1f} {cpu.steal_pct:>7.1f}"


def cpu_line(cpu: CpuUsage) -> str:
    """The CPU shares of a phase, aligned under the throughput table's CPU columns."""
    return f"  {'(CPU: bench/service/foreign/steal %)':<52}{cpu_cells(cpu)}"


def load_lines(
    mode: str, probe: Mapping[str, float], results: Sequence[LoadResult], unit: str = "calls/s"
) -> list[str]:
    """The closed-loop throughput table: one row per client count (``unit`` labels ``calls_s``)."""
    probed = ", ".join(f"{name} {value:.1f}" for name, value in probe.items())
    lines = [
        f"service (subprocess), clients on channel mode '{mode}' (probe {unit}: {probed})",
        f"{'':<26}{unit:>8} {'mean batch':>10} {'errors':>6} {'bench%':>9} {'service%':>9} "
        f"{'foreign%':>9} {'steal%':>7}",
    ]
    for result in results:
        batch = f"{result.mean_batch:.2f}" if result.mean_batch is not None else "-"
        lines.append(
            f"  {result.clients:>2} client(s){'':<12}{result.calls_s:>8.1f} {batch:>10} {result.errors:>6} "
            f"{cpu_cells(result.cpu)}"
        )
        if result.first_error:
            lines.append(f"      first error: {result.first_error}")
    return lines


def latency_header(title: str = "latency, 1 client") -> str:
    return f"{title:<34}{'p50 ms':>9} {'p90 ms':>9} {'calls':>7} {'foreign%':>9}"


def latency_row(label: str, value: Latency, foreign_pct: float, suffix: str = "") -> str:
    return (
        f"  {label:<32}{value.p50_ms:>9.2f} {value.p90_ms:>9.2f} {value.calls:>7} {foreign_pct:>9.1f}{suffix}"
    )


def disturbed_warning(foreign_pct_max: float) -> str:
    return (
        f"WARNING: other processes used up to {foreign_pct_max:.0f}% of the CPU during a "
        "phase: these numbers are disturbed; rerun on a quiet machine"
    )
