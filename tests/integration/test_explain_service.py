"""The explain service over real gRPC (port 0) with the committed bundle and real images: health while
loading, reflection, Explain and Describe, errors mapped to status codes, limits, and the CLI."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from PIL import Image

import services.explain.core as core_module
from hemascope.cli import main
from hemascope.data import REPO_ROOT
from hemascope.imaging.inputs import ImageInput
from hemascope.imaging.preprocess import DEFAULT_PREPROCESSING, get_preprocessing
from hemascope.server import ManagedServer
from hemascope.v1 import common_pb2, explain_pb2, explain_pb2_grpc
from services.explain.core import ExplainCore
from services.explain.server import SERVICE_NAME, create_server
from services.explain.settings import ExplainSettings
from tests.grpc_helpers import error_reason, rpc_error

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
WAIT = 120.0
MIB = 1024 * 1024
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
Stub = explain_pb2_grpc.ExplainServiceStub


def start(bundle: Path | None = BUNDLE, wait: bool = True, **overrides: Any) -> tuple[ManagedServer, int]:
    settings = ExplainSettings(
        port=0,
        metrics_port=None,
        bundle=bundle,
        log_json=False,
        max_message_bytes=2 * MIB,
        max_image_bytes=MIB,
        torch_threads=1,
        **overrides,
    )
    server, port = create_server(settings)
    if wait:
        server.wait_ready(WAIT)
    return server, port


@pytest.fixture(scope="module")
def served() -> Iterator[int]:
    server, port = start()
    yield port
    server.stop(1)


@pytest.fixture
def stub(served: int, channel_to: Callable[[int], grpc.Channel]) -> Stub:
    return Stub(channel_to(served))


@pytest.fixture(scope="module")
def cell(data_dir: Path) -> Path:
    return sorted((data_dir / "bloodcells-5class" / "val" / "monocyte").glob("*.jpg"))[0]


def explain(
    stub: Stub, data: bytes, model: str = "logistic_regression", image_id: str = "", **fields: Any
) -> Any:
    image = common_pb2.Image(data=data, image_id=image_id)
    request = explain_pb2.ExplainRequest(image=image, model=model, **fields)
    return stub.Explain(request, timeout=WAIT)


def health(port: int, channel_to: Callable[[int], grpc.Channel]) -> set[int]:
    stub = health_pb2_grpc.HealthStub(channel_to(port))
    return {
        stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=WAIT).status for s in ("", SERVICE_NAME)
    }


def test_explain_a_real_image(stub: Stub, cell: Path, served: int, channel_to: Any) -> None:
    assert health(served, channel_to) == {SERVING}
    response = explain(stub, cell.read_bytes(), image_id="caller-7")
    assert response.method == "gradcam" and response.class_name == response.predicted_class == "monocyte"
    assert 0.5 < response.class_probability <= 1 and response.model_version == "logistic_regression-1"
    heat = np.asarray(response.heat_map.values, dtype=np.float32)
    assert (response.heat_map.height, response.heat_map.width) == (7, 7) and heat.size == 49
    assert heat.min() >= 0 and heat.max() <= 1 and heat.std() > 0.05
    overlay = Image.open(io.BytesIO(response.overlay_png))
    assert overlay.format == "PNG" and overlay.size == Image.open(cell).size == (
        response.width,
        response.height,
    )
    region = response.region
    if get_preprocessing(DEFAULT_PREPROCESSING).cell_crop:  # the committed bundle's: the map covers the crop
        assert abs((region.x1 - region.x0) - (region.y1 - region.y0)) <= 1  # a square around the cell
        assert region.x1 - region.x0 > 50
        assert region.x0 < response.width / 2 < region.x1 and region.y0 < response.height / 2 < region.y1
    else:
        assert (region.x0, region.y0, region.x1, region.y1) == (0, 0, response.width, response.height)
    assert len(response.content_hash) == 64 and response.image_id == "caller-7"
    assert response.timings.total_ms >= response.timings.cam_ms > 0 and not response.cache_hit
    again = explain(stub, cell.read_bytes())
    assert again.cache_hit and list(again.heat_map.values) == list(response.heat_map.values)


def test_a_target_class_and_a_gradient_free_model(stub: Stub, cell: Path) -> None:
    response = explain(stub, cell.read_bytes(), "svm", target_class="myeloblast")
    assert response.method == "ablationcam" and response.class_name == "myeloblast"
    assert response.predicted_class == "monocyte" and response.class_probability < 0.5


def test_the_served_ablation_cam_is_the_librarys(stub: Stub, cell: Path) -> None:
    """The service computes Ablation-CAM from the pooled features by default; its map is the one the
    grad-cam library's AblationCAM (the ``library`` engine) gives for the same image."""
    response = explain(stub, cell.read_bytes(), "svm")
    settings = ExplainSettings(
        bundle=BUNDLE, metrics_port=None, log_json=False, ablation_engine="library", memory_cache_entries=0
    )
    reference_core = ExplainCore(settings)
    reference_core.load()
    try:
        reference = reference_core.explain(ImageInput(data=cell.read_bytes()), "svm")
    finally:
        reference_core.close()
    served = np.asarray(response.heat_map.values, dtype=np.float32).reshape(7, 7)
    np.testing.assert_allclose(served, reference.heatmap, atol=2e-4)
    assert response.method == reference.method == "ablationcam"
    assert response.class_name == reference.class_name == "monocyte" and float(served.std()) > 0.01


def test_describe(stub: Stub) -> None:
    info = stub.Describe(explain_pb2.DescribeRequest(), timeout=WAIT)
    assert info.backbone == "efficientnet_lite0_blood" and len(info.weights_hash) == 64
    assert list(info.classes) == ["basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil"]
    models = {m.name: m for m in info.models}
    assert set(models) == {"kmeans", "logistic_regression", "random_forest", "svm", "xgboost"}
    assert list(models["logistic_regression"].methods) == ["gradcam", "gradcam++", "ablationcam"]
    assert models["logistic_regression"].differentiable and not models["svm"].differentiable
    assert list(models["svm"].methods) == ["ablationcam"] and models["svm"].default_method == "ablationcam"
    assert info.max_image_bytes == MIB and info.max_concurrent == 2 and info.cache_backend == "memory"


def test_reflection_lists_the_service(served: int, channel_to: Callable[[int], grpc.Channel]) -> None:
    database = ProtoReflectionDescriptorDatabase(channel_to(served))
    assert SERVICE_NAME in set(database.get_services())


@pytest.mark.parametrize(
    ("fields", "code", "reason"),
    [
        ({"model": "no_such_model"}, grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL"),
        ({"target_class": "lymphocyte"}, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_CLASS"),
        ({"method": "scorecam"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"model": "svm", "method": "gradcam"}, grpc.StatusCode.FAILED_PRECONDITION, "NOT_DIFFERENTIABLE"),
        (
            {"embedding": common_pb2.Embedding(values=[0.0] * 1280, backbone="resnet50")},
            grpc.StatusCode.FAILED_PRECONDITION,
            "WRONG_BACKBONE",
        ),
    ],
)
def test_errors_are_mapped(stub: Stub, cell: Path, fields: dict[str, Any], code: Any, reason: str) -> None:
    fields = {"model": "logistic_regression"} | fields
    error = rpc_error(lambda: explain(stub, cell.read_bytes(), **fields))
    assert error.code() == code and error_reason(error) == reason


def test_an_embedding_decides_the_probabilities(stub: Stub, cell: Path) -> None:
    info = stub.Describe(explain_pb2.DescribeRequest(), timeout=WAIT)
    zeros = common_pb2.Embedding(
        values=[0.0] * 1280,
        backbone=info.backbone,
        weights_hash=info.weights_hash,
        preprocessing=info.preprocessing,
    )
    response = explain(stub, cell.read_bytes(), embedding=zeros)
    assert response.probabilities_from_embedding
    plain = explain(stub, cell.read_bytes())
    assert not plain.probabilities_from_embedding
    assert response.predicted_probability != plain.predicted_probability


def test_bad_images_are_invalid_and_the_server_keeps_serving(
    stub: Stub, cell: Path, served: int, channel_to: Any
) -> None:
    data = cell.read_bytes()
    for bad in (data[: len(data) // 2], b"\x89PNG\r\n\x1a\n garbage", b""):
        error = rpc_error(lambda bad=bad: explain(stub, bad))  # type: ignore[misc]
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert health(served, channel_to) == {SERVING}
    assert explain(stub, data, skip_cache=True).class_name == "monocyte"


def test_oversized_requests(stub: Stub) -> None:
    over_image_limit = b"\xff\xd8\xff" + bytes(MIB)  # within gRPC's 2 MiB, over the 1 MiB image limit
    error = rpc_error(lambda: explain(stub, over_image_limit))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "IMAGE_TOO_LARGE"
    over_message_limit = bytes(3 * MIB)  # gRPC refuses the message itself
    error = rpc_error(lambda: explain(stub, over_message_limit))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_concurrency_limit_gives_resource_exhausted(
    data_dir: Path, channel_to: Callable[[int], grpc.Channel]
) -> None:
    """One slot, no queue: of four simultaneous Ablation-CAM calls (about a second each) some are refused."""
    server, port = start(max_concurrent=1, max_queue=0)
    paths = sorted((data_dir / "bloodcells-5class" / "val" / "basophil").glob("*.jpg"))[:4]
    stub = Stub(channel_to(port))
    codes: list[grpc.StatusCode] = []
    barrier = threading.Barrier(len(paths))

    def call(path: Path) -> None:
        barrier.wait()
        try:
            explain(stub, path.read_bytes(), "svm", skip_cache=True)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())

    try:
        threads = [threading.Thread(target=call, args=(path,)) for path in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert sorted(c.name for c in codes).count("OK") >= 1
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    finally:
        server.stop(0)


def test_health_is_not_serving_while_loading_and_without_a_bundle(
    monkeypatch: pytest.MonkeyPatch, channel_to: Callable[[int], grpc.Channel], cell: Path
) -> None:
    release = threading.Event()
    real_load = core_module.load_bundle

    def slow_load(root: Path) -> Any:
        release.wait(WAIT)
        return real_load(root)

    monkeypatch.setattr(core_module, "load_bundle", slow_load)
    server, port = start(wait=False)
    try:
        assert health(port, channel_to) == {NOT_SERVING}
        error = rpc_error(lambda: explain(Stub(channel_to(port)), cell.read_bytes()))
        assert error.code() == grpc.StatusCode.UNAVAILABLE and error_reason(error) == "NOT_READY"
        release.set()
        server.wait_ready(WAIT)
        assert health(port, channel_to) == {SERVING}
    finally:
        release.set()
        server.stop(0)
    server, port = start(bundle=None, wait=False)
    try:
        with pytest.raises(Exception, match="HEMASCOPE_EXPLAIN_BUNDLE"):
            server.wait_ready(WAIT)
        assert health(port, channel_to) == {NOT_SERVING}
    finally:
        server.stop(0)


def test_cli_through_the_service_and_in_process(served: int, cell: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "service.png"
    args = ["explain", str(cell), "--model", "svm", "--out", str(out), "--address", f"127.0.0.1:{served}"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "svm ablationcam explains monocyte" in result.output
    assert Image.open(out).size == Image.open(cell).size
    local = tmp_path / "local.png"
    args = [
        "explain",
        str(cell),
        "--model",
        "logistic_regression",
        "--class",
        "basophil",
        "--out",
        str(local),
    ]
    result = runner.invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert '"class_name": "basophil"' in result.output and '"method": "gradcam"' in result.output
    assert Image.open(local).size == Image.open(cell).size
    result = runner.invoke(main, ["explain", str(cell), "--model", "nope", "--out", str(local)])
    assert result.exit_code == 1 and "NOT_FOUND" in result.output
