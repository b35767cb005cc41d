"""ONNX Runtime session for a backbone export: CUDA when present and allowed, CPU otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray


def choose_providers(use_gpu: bool) -> list[str]:
    available = set(ort.get_available_providers())
    providers = []
    if use_gpu and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


class OnnxEmbedder:
    """Runs the exported graph: uint8 ``N x S x S x 3`` -> float32 ``N x D``."""

    def __init__(
        self, path: Path, *, intra_op_threads: int = 0, use_gpu: bool = True, allow_spinning: bool = False
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Spinning intra-op threads keep cores busy between runs, starving the request threads that decode
        # and resize the next images on the same cores; off by default for serving.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=choose_providers(use_gpu)
        )
        self.input_name = self.session.get_inputs()[0].name
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> Sequence[str]:
        return list(self.session.get_providers())

    def run(self, pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(pixels)})
        return np.asarray(out, dtype=np.float32)
