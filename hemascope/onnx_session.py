"""ONNX Runtime sessions as every service opens them: CUDA when present and allowed, CPU otherwise."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def choose_providers(use_gpu: bool) -> list[str]:
    """CUDA first when ONNX Runtime has it and ``use_gpu`` allows it, CPU always as the fallback."""
    available = set(ort.get_available_providers())
    providers = []
    if use_gpu and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


def open_session(
    path: Path, *, intra_op_threads: int = 0, use_gpu: bool = True, allow_spinning: bool = False
) -> ort.InferenceSession:
    """A session with full graph optimisation; ``intra_op_threads`` 0 means all cores.

    Spinning intra-op threads keep cores busy between runs, starving the request threads that decode and
    preprocess the next images on the same cores, so spinning is off unless asked for.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=choose_providers(use_gpu))
