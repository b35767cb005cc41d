"""ONNX Runtime session for a backbone export: CUDA when present and allowed, CPU otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from hemascope.onnx_session import open_session


class OnnxEmbedder:
    """Runs the exported graph: uint8 ``N x S x S x 3`` -> float32 ``N x D``."""

    def __init__(
        self, path: Path, *, intra_op_threads: int = 0, use_gpu: bool = True, allow_spinning: bool = False
    ) -> None:
        self.session = open_session(
            path, intra_op_threads=intra_op_threads, use_gpu=use_gpu, allow_spinning=allow_spinning
        )
        self.input_name = self.session.get_inputs()[0].name
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def providers(self) -> Sequence[str]:
        return list(self.session.get_providers())

    def run(self, pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(pixels)})
        return np.asarray(out, dtype=np.float32)
