"""The machine and the library versions a benchmark ran with, for its JSON record."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "grpc": grpc.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
    }


def machine_at_end(machine: dict[str, Any]) -> dict[str, Any]:
    """``machine`` with the 1-minute load average at the end of the run added."""
    return {**machine, "loadavg_1m_end": round(os.getloadavg()[0], 2)}


def machine_line(machine: dict[str, Any]) -> str:
    cores, model, ort_version = machine["cpu_affinity"], machine["cpu_model"], machine["onnxruntime"]
    return f"machine: {cores} cores ({model}), onnxruntime {ort_version}"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()
