"""Feature benchmark, report: one backbone's results, its JSON summary and its text table."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.cpu import DISTURBED_FOREIGN_PCT, CpuUsage, foreign_pct_max
from benchlib.load import CLIENT_COUNTS, LoadResult
from benchlib.machine import machine_at_end
from benchlib.stats import Latency
from benchlib.table import (
    CPU_COLUMNS_NOTE,
    cpu_line,
    disturbed_warning,
    latency_header,
    latency_row,
    load_lines,
)
from feature_model import BREAKDOWN_ITERATIONS


@dataclass
class BackboneRun:
    name: str
    onnx: Path
    providers: list[str]
    raw: dict[int, float]
    raw_cpu: CpuUsage
    channel_mode: str
    channel_probe: dict[str, float]
    service: list[LoadResult]  # one Embed call is one image: calls_s is images per second
    latency: dict[str, dict[str, Latency]]
    latency_cpu: dict[str, CpuUsage]
    breakdown: dict[str, float]
    notes: list[str]
    #: the default option's prepare, CPU ms per image: package, reference and speedup
    prepare: dict[str, float]
    #: the service's preprocessing threads, and the levels of a service with another count
    prep_threads: int
    compared: dict[int, list[LoadResult]]


def summary(run: BackboneRun, args: argparse.Namespace, machine: dict[str, Any]) -> dict[str, Any]:
    raw_best = max(run.raw.values())
    service = {result.clients: result for result in run.service}
    out: dict[str, Any] = {"backbone": run.name}
    out.update({f"raw_b{batch}_img_s": round(value, 2) for batch, value in run.raw.items()})
    out["raw_best_img_s"] = round(raw_best, 2)
    out.update({f"service_{n}_img_s": result.calls_s for n, result in service.items()})
    out["ratio"] = round(service[max(CLIENT_COUNTS)].calls_s / raw_best, 3)
    for cache, latencies in run.latency.items():
        prefix = "" if cache == "memory" else f"{cache}_"
        for kind, value in latencies.items():
            out[f"{prefix}{kind}_p50_ms"] = value.p50_ms
            out[f"{prefix}{kind}_p90_ms"] = value.p90_ms
    out["service_mean_batch"] = {str(n): result.mean_batch for n, result in service.items()}
    out["service_errors"] = sum(result.errors for result in run.service)
    out["channel_mode"] = run.channel_mode
    out["channel_probe_img_s"] = run.channel_probe
    out["miss_breakdown_ms"] = run.breakdown
    out["prepare_cpu_ms"] = run.prepare
    out["preprocess_threads"] = run.prep_threads
    for threads, results in run.compared.items():
        levels = {result.clients: result.calls_s for result in results}
        out[f"prep_threads_{threads}"] = {
            **{f"service_{n}_img_s": value for n, value in levels.items()},
            "ratio": round(levels[max(CLIENT_COUNTS)] / raw_best, 3),
            "errors": sum(result.errors for result in results),
        }
    compared = [result.cpu for results in run.compared.values() for result in results]
    usages = [run.raw_cpu, *(result.cpu for result in run.service), *compared, *run.latency_cpu.values()]
    out["foreign_cpu_pct_max"] = foreign_pct_max(usages)
    out["disturbed"] = out["foreign_cpu_pct_max"] > DISTURBED_FOREIGN_PCT
    out["seconds"] = args.seconds
    out["warmup_s"] = args.warmup
    out["notes"] = run.notes
    out["machine"] = machine_at_end(machine)
    return out


def _raw_lines(run: BackboneRun) -> list[str]:
    lines = [f"{'raw ONNX Runtime session':<34}{'img/s':>9} {'ms/batch':>9}"]
    lines += [f"  batch {b:<26}{v:>9.1f} {1000 * b / v:>9.1f}" for b, v in run.raw.items()]
    lines.append(cpu_line(run.raw_cpu))
    return lines


def _service_lines(run: BackboneRun, out: dict[str, Any]) -> list[str]:
    lines = [f"preprocessing threads: {run.prep_threads}"]
    lines += load_lines(run.channel_mode, run.channel_probe, run.service, unit="img/s")
    lines.append(
        f"ratio service_16 / raw_best = {out['ratio']:.3f}  (raw best {out['raw_best_img_s']:.1f} img/s)"
    )
    for threads, results in run.compared.items():
        lines.append(f"preprocessing threads: {threads}")
        lines += load_lines(run.channel_mode, {}, results, unit="img/s")
        lines.append(f"ratio service_16 / raw_best = {out[f'prep_threads_{threads}']['ratio']:.3f}")
    return lines


def _latency_lines(run: BackboneRun) -> list[str]:
    lines = [latency_header()]
    for cache, latencies in run.latency.items():
        for kind, value in latencies.items():
            wrong = f"  ({value.unexpected} unexpected {'misses' if kind == 'hit' else 'hits'})"
            suffix = wrong if value.unexpected else ""
            lines.append(
                latency_row(f"{kind} ({cache} cache)", value, run.latency_cpu[cache].foreign_pct, suffix)
            )
    return lines


def _breakdown_lines(run: BackboneRun) -> list[str]:
    lines = [f"miss work besides the model, in-process, median of {BREAKDOWN_ITERATIONS} (ms/image)"]
    lines += [f"  {stage:<32}{ms:>9.4f}" for stage, ms in run.breakdown.items()]
    lines.append(f"  {'model, raw batch 1 (for scale)':<32}{1000 / run.raw[1]:>9.4f}")
    prep = run.prepare
    lines.append(
        f"default preprocessing, CPU ms/image (same run): package {prep['package_ms']:.3f}, "
        f"SciPy reference {prep['reference_ms']:.3f}, speedup {prep['speedup']:.2f}x"
    )
    return lines


def print_table(run: BackboneRun, out: dict[str, Any]) -> None:
    lines = [
        "",
        f"=== {run.name}: {run.onnx.name}  providers={','.join(run.providers)}",
        *(f"    note: {note}" for note in run.notes),
        CPU_COLUMNS_NOTE,
        *_raw_lines(run),
        *_service_lines(run, out),
        *_latency_lines(run),
        *_breakdown_lines(run),
    ]
    if out["disturbed"]:
        lines.append(disturbed_warning(out["foreign_cpu_pct_max"]))
    print("\n".join(lines), flush=True)
