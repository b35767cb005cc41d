"""``hemascope demo``: the main job. Starts the feature and classifier services as their own processes and
uses them over gRPC: sample images -> embeddings (cached) -> cell type and malignancy from every model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hemascope.commands.pictures import picture_path
from hemascope.data import REPO_ROOT
from hemascope.v1 import (
    classifier_pb2,
    classifier_pb2_grpc,
    common_pb2,
    detector_pb2,
    detector_pb2_grpc,
    explain_pb2,
    explain_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
)

SAMPLES = REPO_ROOT / "samples"
DEFAULT_BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
DEFAULT_DETECTOR = REPO_ROOT / "models" / "detector-bccd" / "detector.onnx"
SMEARS = SAMPLES / "smear"
DEMO_OUT = REPO_ROOT / "out"  # git-ignored
PREFIXES = {
    "BA": "basophil",
    "ERB": "erythroblast",
    "MO": "monocyte",
    "MYO": "myeloblast",
    "NGS": "seg_neutrophil",
    "SNE": "seg_neutrophil",  # imaged on the other scanner: see samples/CREDITS.md
}
SHORT = {"logistic_regression": "LR", "svm": "SVM", "random_forest": "RF", "xgboost": "XGB", "kmeans": "KM"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_serving(channel: grpc.Channel, process: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if process.poll() is not None:
            raise click.ClickException(f"the {name} service exited with code {process.returncode}")
        try:
            if (
                health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                == health_pb2.HealthCheckResponse.SERVING
            ):
                return
        except grpc.RpcError:
            pass
        time.sleep(0.25)
    raise click.ClickException(f"the {name} service was not SERVING after {timeout:.0f} s")


@contextmanager
def _service(name: str, options: list[str]) -> Iterator[grpc.Channel]:
    """Runs ``hemascope serve NAME`` as a subprocess; yields a channel once it is SERVING; SIGTERM at exit."""
    port = _free_port()
    command = [sys.executable, "-m", "hemascope", "serve", name, "--port", str(port), "--metrics-port", "0"]
    click.echo(f"starting: hemascope serve {name} {' '.join(options)}".rstrip())
    env = {**os.environ, f"HEMASCOPE_{name.upper()}_LOG_JSON": "false"}
    process = subprocess.Popen([*command, *options], env=env)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        _wait_serving(channel, process, name, timeout=600)
        yield channel
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        click.echo(f"{name} service stopped (exit code {code})")
        if code != 0:
            raise click.ClickException(f"the {name} service did not stop cleanly")


def _embed(stub: feature_pb2_grpc.FeatureServiceStub, path: Path) -> tuple[feature_pb2.EmbedResponse, float]:
    start = time.perf_counter()
    image = common_pb2.Image(data=path.read_bytes(), image_id=path.name)
    response = stub.Embed(feature_pb2.EmbedRequest(image=image), timeout=60)
    return response, (time.perf_counter() - start) * 1000


def _pass(
    features: feature_pb2_grpc.FeatureServiceStub,
    classifier: classifier_pb2_grpc.ClassifierServiceStub | None,
    paths: list[Path],
    title: str,
) -> None:
    click.echo(f"\n{title}")
    click.echo(
        f"{'image':<16} {'expected':<15} {'cache':<5} {'embed ms':>8}  predictions (* = abstain/refer)"
    )
    for path in paths:
        response, ms = _embed(features, path)
        expected = PREFIXES.get(path.name.split("_")[0], "?")
        line = f"{path.name:<16} {expected:<15} {'hit' if response.cache_hit else 'miss':<5} {ms:8.1f}"
        if classifier is not None:
            result = classifier.Classify(
                classifier_pb2.ClassifyRequest(embeddings=[response.embedding]), timeout=30
            )
            parts = [
                f"{SHORT.get(p.model, p.model)}={p.label}{'*' if p.abstain else ''}"
                for p in result.results[0].predictions
            ]
            malignant = {p.model: p.malignant_probability for p in result.results[0].predictions}
            line += "  " + " ".join(parts)
            if "logistic_regression" in malignant:
                line += f"  P(malignant|LR)={malignant['logistic_regression']:.3f}"
        click.echo(line)


def _show_refusal(stub: feature_pb2_grpc.FeatureServiceStub, path: Path) -> None:
    data = path.read_bytes()
    try:
        stub.Embed(feature_pb2.EmbedRequest(image=common_pb2.Image(data=data[: len(data) // 2])), timeout=30)
    except grpc.RpcError as exc:
        click.echo(f"\ntruncated {path.name}: {exc.code().name}: {exc.details()}")
    else:
        raise click.ClickException("a truncated image was accepted")


def _detect(stub: detector_pb2_grpc.DetectorServiceStub, path: Path, draw: Path | None) -> None:
    from collections import Counter

    start = time.perf_counter()
    image = common_pb2.Image(data=path.read_bytes(), image_id=path.name)
    response = stub.Detect(detector_pb2.DetectRequest(image=image), timeout=60)
    ms = (time.perf_counter() - start) * 1000
    counts = Counter(box.class_name for box in response.boxes)
    found = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
    size = f"{response.width}x{response.height}"
    click.echo(f"{path.name}: {size}, {len(response.boxes)} cells ({found}) in {ms:.0f} ms")
    for box in sorted(response.boxes, key=lambda b: -b.score)[:3]:
        click.echo(
            f"  {box.class_name:<9} {box.score:.2f}  [{box.x1:.0f}, {box.y1:.0f}, {box.x2:.0f}, {box.y2:.0f}]"
        )
    if draw is not None:
        from hemascope.commands.pictures import write_boxes
        from hemascope.imaging.decode import decode_image

        drawn = write_boxes(draw.parent, path.stem, decode_image(path.read_bytes()).pixels, response.boxes)
        click.echo(f"  boxes drawn to {drawn}")


def _explain(stub: explain_pb2_grpc.ExplainServiceStub, path: Path, model: str, tag: str) -> None:
    from hemascope.commands.pictures import Explained, write_explanation
    from hemascope.imaging.decode import decode_image

    data = path.read_bytes()
    request = explain_pb2.ExplainRequest(image=common_pb2.Image(data=data), model=model)
    r = stub.Explain(request, timeout=120)
    explained = Explained(r.overlay_png, r.model, r.method, r.class_name, r.class_probability, r.overlay)
    files = write_explanation(DEMO_OUT, path.stem, path.name, decode_image(data).pixels, explained, tag)
    click.echo(
        f"{path.name}: {model} {r.method} explains {r.class_name} "
        f"(p={r.class_probability:.3f}) in {r.timings.total_ms:.0f} ms; pictures: "
        + ", ".join(map(str, files))
    )


def run_demo(images: list[Path], backbone: str | None, bundle: Path | None) -> None:
    paths = images or sorted(SAMPLES.glob("*.jpg"))
    bundle = bundle or (DEFAULT_BUNDLE if (DEFAULT_BUNDLE / "manifest.json").is_file() else None)
    with ExitStack() as stack:
        feature_channel = stack.enter_context(
            _service("feature", ["--backbone", backbone] if backbone else [])
        )
        features = feature_pb2_grpc.FeatureServiceStub(feature_channel)
        info = features.GetBackboneInfo(feature_pb2.GetBackboneInfoRequest(), timeout=10)
        click.echo(
            f"backbone {info.backbone} ({info.dimension}-d), weights {info.weights_hash[:16]}, "
            f"{info.preprocessing}"
        )
        classifier = None
        if bundle is not None:
            channel = stack.enter_context(_service("classifier", ["--bundle", str(bundle)]))
            classifier = classifier_pb2_grpc.ClassifierServiceStub(channel)
            listing = classifier.ListModels(classifier_pb2.ListModelsRequest(), timeout=10)
            names = ", ".join(m.name for m in listing.models)
            click.echo(f"bundle {listing.bundle_version} ({listing.backbone}): {names}")
        else:
            click.echo("no model bundle (see models/README or `hemascope train classifiers`): embedding only")
        if classifier is not None:
            click.echo(
                "note: the BA/ERB/MO/MYO/NGS samples come from the pool the bundle was trained on;\n"
                "SNE_* is a neutrophil imaged on the other scanner, a probe of the source shortcut."
            )
        _pass(features, classifier, paths, "first pass (embeddings computed):")
        _pass(features, classifier, paths, "second pass (embeddings from the cache):")
        _show_refusal(features, paths[0])
        if bundle is not None:
            explainer = explain_pb2_grpc.ExplainServiceStub(
                stack.enter_context(_service("explain", ["--bundle", str(bundle)]))
            )
            click.echo("\nwhere the models look (Grad-CAM for LR, Ablation-CAM for the others):")
            for model, tag in (("logistic_regression", ""), ("xgboost", "xgboost")):
                _explain(explainer, paths[0], model, tag)
        smears = sorted(SMEARS.glob("*.jpg"))
        if smears and DEFAULT_DETECTOR.is_file():
            click.echo("")
            detector_channel = stack.enter_context(_service("detector", []))
            detector = detector_pb2_grpc.DetectorServiceStub(detector_channel)
            click.echo("\ncells found in a blood smear (YOLOv8n trained on BCCD):")
            for smear in smears:
                _detect(detector, smear, picture_path(DEMO_OUT, smear.stem, "boxes"))
