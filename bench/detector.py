"""Detector benchmark: the bare ONNX Runtime session vs the detector service, on real BCCD smears.

Run: ``.venv/bin/python bench/detector.py [--model PATH] [--seconds S] [--warmup S] [--images N]
[--channel-mode auto|shared|per-client]``.

What is measured, in one run, on the BCCD val images (``<shared data>/bccd``, 640 x 480 JPEGs):

1. **Raw session** -- :class:`services.detector.runtime.OnnxDetector` with the service's default settings
   (intra-op threads, providers), on images decoded and letterboxed to 640 x 640 once up front, so only the
   model runs: p50/p90 of one image per run (batch 1), and images per second at batch 8 (what micro-batching
   can reach at best).
2. **Service latency** -- the service as deployed, a separate process (``hemascope serve detector --port 0
   --metrics-port 0``), one client calling ``Detect`` sequentially with the JPEG bytes: p50/p90 of the
   whole path (protobuf, decode, hash, letterbox, queue, model, NMS, response). ``added`` is service p50 minus
   raw p50.
3. **Service throughput** -- 1 and 4 client threads calling ``Detect`` back to back (closed loop); each
   level warms up, then counts the calls completed inside ``--seconds``. The mean micro-batch size comes
   from the service's ``/metrics``. With ``--channel-mode auto`` both channel layouts are probed briefly at
   4 clients and the faster is used.
4. **Breakdown** -- the per-image work besides the model, timed in-process on one image (median).

The service reads the rest of its settings from ``HEMASCOPE_DETECTOR_*`` (e.g. ``MAX_BATCH_WAIT_MS`` on a
GPU). The client threads share the machine with the service; the CPU each side used, and what other
processes used ("foreign", above 10%: disturbed numbers), is printed per phase. The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from benchlib.cpu import DISTURBED_FOREIGN_PCT, CpuUsage, cpu_snapshot, cpu_usage, foreign_pct_max
from benchlib.load import (
    CALL_TIMEOUT_S,
    CHANNEL_MODES,
    Call,
    CallFactory,
    LoadResult,
    choose_channel_mode,
    run_load,
)
from benchlib.machine import machine_at_end, machine_info, machine_line
from benchlib.service import ServerProcess, hemascope_command, open_channel, start_service
from benchlib.stats import Latency, measure_latency, median_ms
from benchlib.table import (
    CPU_COLUMNS_NOTE,
    cpu_line,
    disturbed_warning,
    latency_header,
    latency_row,
    load_lines,
)

from hemascope.data import shared_data_dir
from hemascope.imaging.decode import decode_image
from hemascope.imaging.hashing import content_hash
from hemascope.v1 import common_pb2, detector_pb2, detector_pb2_grpc
from services.detector.postprocess import postprocess
from services.detector.preprocess import letterbox
from services.detector.runtime import OnnxDetector
from services.detector.settings import DetectorSettings

CLIENTS = (1, 4)
RAW_BATCH = 8
MAX_CALLS = 100_000
BREAKDOWN_ITERATIONS = 20


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=None, help="default: the service's (detector-bccd)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each load level")
    parser.add_argument("--images", type=int, default=16, help="val images to cycle over (4.9 MB each raw)")
    parser.add_argument(
        "--channel-mode", default="auto", choices=["auto", *CHANNEL_MODES], help="auto: probe both"
    )
    return parser.parse_args(argv)


def val_images(count: int) -> list[Path]:
    root = shared_data_dir() / "bccd"
    ids = (root / "ImageSets" / "Main" / "val.txt").read_text().split()[:count]
    return [root / "JPEGImages" / f"{image_id}.jpg" for image_id in ids]


# --- raw session ------------------------------------------------------------------------------------------
def bench_raw(
    model: OnnxDetector, tensors: list[np.ndarray], seconds: float
) -> tuple[Latency, float, CpuUsage]:
    """Batch-1 latency, then batch-8 images per second, of ``model.run`` on letterboxed images."""
    before = cpu_snapshot()
    singles = [tensor[None] for tensor in tensors]
    model.run(singles[0])
    latency = measure_latency(
        lambda i: model.run(singles[i % len(singles)]), lambda _: True, limit=MAX_CALLS, seconds=seconds
    )
    batch = np.stack([tensors[i % len(tensors)] for i in range(RAW_BATCH)])
    model.run(batch)
    runs, started = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - started < seconds / 2:
        model.run(batch)
        runs += 1
    img_s = RAW_BATCH * runs / (time.perf_counter() - started)
    return latency, img_s, cpu_usage(before, cpu_snapshot())


def breakdown(data: bytes, model: OnnxDetector) -> dict[str, float]:
    """Median ms of each step of a Detect call besides the model, on one image."""
    pixels = decode_image(data).pixels
    tensor, placement = letterbox(pixels, model.input_size)
    raw = model.run(tensor[None])[0]
    stages: dict[str, Callable[[], object]] = {
        "decode_image": lambda: decode_image(data),
        "content_hash": lambda: content_hash(pixels),
        "letterbox": lambda: letterbox(pixels, model.input_size),
        "postprocess_nms": lambda: postprocess(raw, placement),
    }
    return {name: median_ms(fn, BREAKDOWN_ITERATIONS) for name, fn in stages.items()}


# --- service ----------------------------------------------------------------------------------------------
def detect_caller(requests: Sequence[detector_pb2.DetectRequest]) -> CallFactory:
    def make_call(channel: grpc.Channel) -> Call:
        stub = detector_pb2_grpc.DetectorServiceStub(channel)

        def call(position: int) -> detector_pb2.DetectResponse:
            return stub.Detect(requests[position % len(requests)], timeout=CALL_TIMEOUT_S)

        return call

    return make_call


def bench_service(
    server: ServerProcess, requests: list[detector_pb2.DetectRequest], args: argparse.Namespace
) -> tuple[Latency, CpuUsage, str, dict[str, float], list[LoadResult]]:
    channel = open_channel(server.address, private=False)
    stub = detector_pb2_grpc.DetectorServiceStub(channel)

    def call(index: int) -> detector_pb2.DetectResponse:
        return stub.Detect(requests[index % len(requests)], timeout=CALL_TIMEOUT_S)

    def answered(response: detector_pb2.DetectResponse) -> bool:
        return response.width > 0

    for index in range(3):
        call(index)
    before = cpu_snapshot(server.proc.pid)
    latency = measure_latency(call, answered, limit=MAX_CALLS, seconds=args.seconds)
    latency_cpu = cpu_usage(before, cpu_snapshot(server.proc.pid))
    channel.close()
    make_call = detect_caller(requests)
    mode, probe = choose_channel_mode(
        server, make_call, args.channel_mode, args.warmup, args.seconds, clients=max(CLIENTS)
    )
    loads = [run_load(server, make_call, n, mode, args.warmup, args.seconds) for n in CLIENTS]
    return latency, latency_cpu, mode, probe, loads


# --- report -----------------------------------------------------------------------------------------------
def summary(run: dict[str, Any], args: argparse.Namespace, machine: dict[str, Any]) -> dict[str, Any]:
    raw: Latency = run["raw"]
    service: Latency = run["service"]
    loads: list[LoadResult] = run["loads"]
    out: dict[str, Any] = {"benchmark": "detector", **run["model"]}
    out |= {
        "raw_b1_p50_ms": raw.p50_ms,
        "raw_b1_p90_ms": raw.p90_ms,
        "raw_b1_img_s": round(1000 / raw.p50_ms, 2),
    }
    out[f"raw_b{RAW_BATCH}_img_s"] = round(run["raw_batch_img_s"], 2)
    out |= {"service_1_p50_ms": service.p50_ms, "service_1_p90_ms": service.p90_ms}
    out["added_p50_ms"] = round(service.p50_ms - raw.p50_ms, 2)
    out |= {f"service_{load.clients}_img_s": load.calls_s for load in loads}
    out["service_mean_batch"] = {str(load.clients): load.mean_batch for load in loads}
    out["service_errors"] = sum(load.errors for load in loads)
    out |= {
        "channel_mode": run["mode"],
        "channel_probe_img_s": run["probe"],
        "breakdown_ms": run["breakdown"],
    }
    usages: list[CpuUsage] = [run["raw_cpu"], run["service_cpu"], *(load.cpu for load in loads)]
    out["foreign_cpu_pct_max"] = foreign_pct_max(usages)
    out["disturbed"] = out["foreign_cpu_pct_max"] > DISTURBED_FOREIGN_PCT
    out |= {"images": run["images"], "seconds": args.seconds, "warmup_s": args.warmup}
    out["machine"] = machine_at_end(machine)
    return out


def print_table(run: dict[str, Any], out: dict[str, Any]) -> None:
    model = run["model"]
    lines = [
        f"=== {model['model']} ({model['version']}) providers={','.join(model['providers'])}, "
        f"{run['images']} BCCD val images",
        CPU_COLUMNS_NOTE,
        latency_header("latency, 1 client (per image)"),
        latency_row("raw session, batch 1", run["raw"], run["raw_cpu"].foreign_pct),
        latency_row("service Detect", run["service"], run["service_cpu"].foreign_pct),
        f"  {'added by the service (p50)':<32}{out['added_p50_ms']:>9.2f}",
        f"raw session, batch {RAW_BATCH}: {out[f'raw_b{RAW_BATCH}_img_s']:.1f} img/s "
        f"(batch 1: {out['raw_b1_img_s']:.1f} img/s)",
        cpu_line(run["raw_cpu"]),
        *load_lines(run["mode"], run["probe"], run["loads"], unit="img/s"),
        "work besides the model, in-process, median ms/image: "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in run["breakdown"].items()),
    ]
    if out["disturbed"]:
        lines.append(disturbed_warning(out["foreign_cpu_pct_max"]))
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info()
    overrides: dict[str, Any] = {"model": args.model} if args.model else {}
    settings = DetectorSettings(**overrides)
    paths = val_images(args.images)
    encoded = [path.read_bytes() for path in paths]
    model = OnnxDetector(
        settings.model,
        intra_op_threads=settings.intra_op_threads,
        use_gpu=settings.use_gpu,
        allow_spinning=settings.allow_spinning,
    )
    tensors = [letterbox(decode_image(data).pixels, model.input_size)[0] for data in encoded]
    run: dict[str, Any] = {"images": len(paths), "breakdown": breakdown(encoded[0], model)}
    run["model"] = {
        "model": settings.model.parent.name,
        "version": model.sha256[:12],
        "providers": list(model.providers),
    }
    run["raw"], run["raw_batch_img_s"], run["raw_cpu"] = bench_raw(model, tensors, args.seconds)
    del model, tensors  # the service gets the machine to itself
    requests = [
        detector_pb2.DetectRequest(image=common_pb2.Image(data=data, media_type="image/jpeg"))
        for data in encoded
    ]
    command = [*hemascope_command(), "serve", "detector", "--port", "0", "--metrics-port", "0"]
    command += ["--model", str(settings.model)]
    env = dict(os.environ, HEMASCOPE_DETECTOR_LOG_LEVEL="WARNING")
    with (
        tempfile.TemporaryDirectory(prefix="hemascope-bench-") as tmp,
        start_service(command, env, Path(tmp) / "detector.log") as server,
    ):
        service = bench_service(server, requests, args)
    run["service"], run["service_cpu"], run["mode"], run["probe"], run["loads"] = service
    out = summary(run, args, machine)
    print_table(run, out)
    print(machine_line(machine))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
