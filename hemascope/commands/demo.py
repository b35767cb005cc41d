"""``hemascope demo``: the main job. Starts the feature service as its own process and uses it over gRPC."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hemascope.data import REPO_ROOT
from hemascope.v1 import common_pb2, feature_pb2, feature_pb2_grpc

SAMPLES = REPO_ROOT / "samples"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_serving(channel: grpc.Channel, process: subprocess.Popen[bytes], timeout: float) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if process.poll() is not None:
            raise click.ClickException(f"the feature service exited with code {process.returncode}")
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.25)
    raise click.ClickException(f"the feature service was not SERVING after {timeout:.0f} s")


def _embed_all(stub: feature_pb2_grpc.FeatureServiceStub, paths: list[Path], label: str) -> None:
    click.echo(f"\n{label}")
    click.echo(f"{'image':<18} {'dim':>5} {'backbone':<20} {'cache':<5} {'ms':>8}  pixels sha256")
    for path in paths:
        start = time.perf_counter()
        response = stub.Embed(
            feature_pb2.EmbedRequest(image=common_pb2.Image(data=path.read_bytes(), image_id=path.name)),
            timeout=60,
        )
        ms = (time.perf_counter() - start) * 1000
        emb = response.embedding
        hit = "hit" if response.cache_hit else "miss"
        line = f"{path.name:<18} {emb.dimension:>5} {emb.backbone:<20} {hit:<5} {ms:8.1f}"
        click.echo(f"{line}  {response.content_hash[:16]}")


def _show_refusal(stub: feature_pb2_grpc.FeatureServiceStub, path: Path) -> None:
    data = path.read_bytes()
    try:
        stub.Embed(feature_pb2.EmbedRequest(image=common_pb2.Image(data=data[: len(data) // 2])), timeout=30)
    except grpc.RpcError as exc:
        click.echo(f"\ntruncated {path.name}: {exc.code().name}: {exc.details()}")
    else:
        raise click.ClickException("a truncated image was accepted")


def run_demo(images: list[Path], backbone: str | None) -> None:
    paths = images or sorted(SAMPLES.glob("*.jpg"))
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "hemascope",
        "serve",
        "feature",
        "--port",
        str(port),
        "--metrics-port",
        "0",
    ]
    if backbone:
        command += ["--backbone", backbone]
    env = {**os.environ, "HEMASCOPE_FEATURE_LOG_JSON": "false"}
    click.echo(f"starting: {' '.join(command[1:])}")
    process = subprocess.Popen(command, env=env)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        _wait_serving(channel, process, timeout=600)
        stub = feature_pb2_grpc.FeatureServiceStub(channel)
        info = stub.GetBackboneInfo(feature_pb2.GetBackboneInfoRequest(), timeout=10)
        click.echo(
            f"backbone {info.backbone} ({info.dimension}-d), weights sha256 {info.weights_hash[:16]}, "
            f"preprocessing {info.preprocessing}, providers {', '.join(info.execution_providers)}"
        )
        _embed_all(stub, paths, "first pass (computed):")
        _embed_all(stub, paths, "second pass (same images, from the embedding cache):")
        _show_refusal(stub, paths[0])
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        click.echo(f"\nfeature service stopped (exit code {code})")
    if code != 0:
        raise click.ClickException("the feature service did not stop cleanly")
