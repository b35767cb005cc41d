"""The Open Inference Protocol (KServe v2) and the typed Python client against a real gateway in front of
the real feature, classifier, detector and explain services (all in-process on port 0, the committed
models, real images from ../shared/data).

KServe calls go through the official client, ``tritonclient.grpc.InferenceServerClient``; its answers are
checked against the same images' ``Analyze`` reports. The client tests use ``hemascope.client`` (sync and
asyncio). One stack serves the whole module (starting the services is the expensive part).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.audit import verify
from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.client import AsyncHemascopeClient, HemascopeClient, InvalidArgument, InvalidImage, NotFound
from hemascope.data import REPO_ROOT
from hemascope.server import ManagedServer
from hemascope.v1 import analysis_pb2
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from services.detector.server import create_server as detector_server
from services.detector.settings import DetectorSettings
from services.explain.server import create_server as explain_server
from services.explain.settings import ExplainSettings
from services.feature.server import create_server as feature_server
from services.feature.settings import FeatureSettings

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
WAIT = 180.0
CLASSES = ["basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil"]
NOT_AN_IMAGE = b"\xff\xd8\xff\xe0 a truncated jpeg"


@dataclass
class Stack:
    servers: list[ManagedServer]
    address: str
    audit: Path


@pytest.fixture(scope="module")
def stack(model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    common = {"port": 0, "metrics_port": None, "log_json": False}
    started = {
        "feature": feature_server(
            FeatureSettings(**common, model_cache_dir=model_cache_dir, intra_op_threads=1)
        ),
        "classifier": classifier_server(ClassifierSettings(**common, bundle=BUNDLE)),
        "detector": detector_server(DetectorSettings(**common, intra_op_threads=1)),
        "explain": explain_server(ExplainSettings(**common, bundle=BUNDLE, torch_threads=1)),
    }
    for server, _ in started.values():
        server.wait_ready(WAIT)
    addresses = {f"{name}_address": f"127.0.0.1:{port}" for name, (_, port) in started.items()}
    audit = tmp_path_factory.mktemp("kserve-audit") / "audit.jsonl"
    servers = [server for server, _ in started.values()]
    try:
        gateway, port = create_server(
            GatewaySettings(**common, **addresses, max_stream_in_flight=4, audit_log=audit)
        )
        servers.insert(0, gateway)
        gateway.wait_ready(WAIT)
        yield Stack(servers, f"127.0.0.1:{port}", audit)
    finally:
        for server in servers:
            server.stop(1)


@pytest.fixture
def client(stack: Stack) -> Iterator[HemascopeClient]:
    with HemascopeClient(stack.address, timeout=120) as made:
        yield made


@pytest.fixture
def kserve(stack: Stack) -> Iterator[triton.InferenceServerClient]:
    made = triton.InferenceServerClient(stack.address)
    yield made
    made.close()


@pytest.fixture(scope="module")
def cells(data_dir: Path) -> list[Path]:
    root = data_dir / "bloodcells-5class" / "val"
    return [sorted((root / name).glob("*.jpg"))[0] for name in ("myeloblast", "monocyte", "erythroblast")]


@pytest.fixture(scope="module")
def smear(data_dir: Path) -> Path:
    image_id = (data_dir / "bccd" / "ImageSets" / "Main" / "val.txt").read_text().split()[0]
    return data_dir / "bccd" / "JPEGImages" / f"{image_id}.jpg"


def image_input(images: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def status_of(error: InferenceServerException) -> str:
    return str(error.status())


# ----------------------------------------------------------------------------------------- KServe v2


def test_kserve_health_and_metadata(kserve: triton.InferenceServerClient, client: HemascopeClient) -> None:
    assert kserve.is_server_live()
    assert kserve.is_server_ready()
    assert kserve.is_model_ready("hemascope")
    assert kserve.get_server_metadata().name == "hemascope"
    bundle = client.capabilities().bundle_version
    metadata = kserve.get_model_metadata("hemascope")
    assert list(metadata.versions) == [bundle]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("IMAGE", "BYTES", [-1])]
    outputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.outputs}
    assert outputs["PROBABILITIES"] == ("FP32", [-1, 5])
    assert outputs["LABEL"] == ("BYTES", [-1])
    assert outputs["REFER"] == ("BOOL", [-1])
    assert kserve.get_model_metadata("hemascope", model_version=bundle).name == "hemascope"
    with pytest.raises(InferenceServerException) as info:
        kserve.get_model_metadata("resnet")
    assert status_of(info.value) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        kserve.is_model_ready("hemascope", model_version="not-a-version")
    assert status_of(info.value) == "StatusCode.NOT_FOUND"


def test_kserve_infer_matches_analyze(
    kserve: triton.InferenceServerClient, client: HemascopeClient, cells: list[Path]
) -> None:
    images = [path.read_bytes() for path in cells]
    result = kserve.infer("hemascope", [image_input(images)], request_id="req-1")
    assert result.get_response().id == "req-1"
    labels = [label.decode() for label in result.as_numpy("LABEL")]
    probabilities = result.as_numpy("PROBABILITIES")
    malignant = result.as_numpy("MALIGNANT_PROBABILITY")
    refer = result.as_numpy("REFER")
    hashes = [value.decode() for value in result.as_numpy("CONTENT_HASH")]
    assert probabilities.shape == (3, 5)
    assert probabilities.dtype == np.float32
    assert refer.dtype == np.bool_
    assert result.get_response().parameters["classes"].string_param == ",".join(CLASSES)
    for row, data in enumerate(images):
        report = client.analyze(data)
        c = report.classification
        assert labels[row] == c.consensus_label
        assert CLASSES[int(np.argmax(probabilities[row]))] == c.consensus_label
        assert probabilities[row].sum() == pytest.approx(1.0, abs=1e-4)
        assert probabilities[row].max() == pytest.approx(c.consensus_probability, abs=1e-5)
        assert malignant[row] == pytest.approx(c.malignant_probability, abs=1e-5)
        assert bool(refer[row]) == c.refer
        assert hashes[row] == report.content_hash
    assert labels[0] == "myeloblast"  # a clear validation myeloblast: the models agree


def test_kserve_inference_is_audited_per_image(
    stack: Stack, kserve: triton.InferenceServerClient, cells: list[Path]
) -> None:
    before = verify(stack.audit).records
    images = [path.read_bytes() for path in cells]
    result = kserve.infer("hemascope", [image_input(images)], parameters={"models": "svm"})
    hashes = sorted(value.decode() for value in result.as_numpy("CONTENT_HASH"))
    check = verify(stack.audit)
    assert check.ok, check.message
    assert check.records == before + len(images)
    records = [json.loads(line) for line in stack.audit.read_text().splitlines()][before:]
    assert {r["rpc"] for r in records} == {"ModelInfer"}
    assert sorted(r["content_hash"] for r in records) == hashes
    assert all(r["outcome"] == "OK" and r["parts"]["classification"] == "OK" for r in records)
    assert all(r["options"] == {"model_name": "hemascope", "models": ["svm"]} for r in records)
    assert all(r["peer"].startswith("ipv4:127.0.0.1:") for r in records)


def test_kserve_requested_outputs_and_parameters(
    kserve: triton.InferenceServerClient, client: HemascopeClient, cells: list[Path]
) -> None:
    data = cells[1].read_bytes()
    result = kserve.infer(
        "hemascope",
        [image_input([data])],
        outputs=[triton.InferRequestedOutput("PROBABILITIES")],
        parameters={"models": "svm"},
    )
    assert [output.name for output in result.get_response().outputs] == ["PROBABILITIES"]
    assert result.as_numpy("LABEL") is None
    svm = client.analyze(data, models=["svm"]).classification.predictions[0]
    expected = {p.class_name: p.probability for p in svm.probabilities}
    assert result.as_numpy("PROBABILITIES")[0].tolist() == pytest.approx(
        [expected[name] for name in CLASSES], abs=1e-6
    )


def test_kserve_typed_contents_are_accepted(stack: Stack, cells: list[Path]) -> None:
    """A client that sends ``contents.bytes_contents`` instead of raw bytes (the generated stub itself)."""
    with grpc.insecure_channel(stack.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="hemascope")
        tensor = request.inputs.add(name="IMAGE", datatype="BYTES", shape=[2])
        tensor.contents.bytes_contents.extend([cells[0].read_bytes(), cells[2].read_bytes()])
        response = stub.ModelInfer(request, timeout=120)
    assert response.outputs[0].name == "LABEL"
    assert len(response.raw_output_contents) == 5


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad-image", "image 1"),
        ("wrong-input", "expected one input named 'IMAGE'"),
        ("wrong-type", "IMAGE must be BYTES"),
        ("unknown-output", "unknown output"),
        ("unknown-model", "unknown model"),
    ],
)
def test_kserve_bad_requests_are_refused_and_nothing_breaks(
    kserve: triton.InferenceServerClient, cells: list[Path], case: str, expected: str
) -> None:
    good = cells[0].read_bytes()
    model, inputs, outputs = "hemascope", [image_input([good, NOT_AN_IMAGE])], None
    if case == "wrong-input":
        inputs = [triton.InferInput("INPUT0", [1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([good], dtype=np.object_))
    elif case == "wrong-type":
        inputs = [triton.InferInput("IMAGE", [4], "FP32")]
        inputs[0].set_data_from_numpy(np.zeros(4, dtype=np.float32))
    elif case == "unknown-output":
        inputs, outputs = [image_input([good])], [triton.InferRequestedOutput("LOGITS")]
    elif case == "unknown-model":
        model, inputs = "densenet", [image_input([good])]
    with pytest.raises(InferenceServerException) as info:
        kserve.infer(model, inputs, outputs=outputs)
    wanted = "StatusCode.NOT_FOUND" if case == "unknown-model" else "StatusCode.INVALID_ARGUMENT"
    assert status_of(info.value) == wanted
    assert expected in str(info.value.message())
    assert kserve.infer("hemascope", [image_input([good])]).as_numpy("LABEL")[0] == b"myeloblast"


def test_kserve_other_rpcs_stay_unimplemented(kserve: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        kserve.get_inference_statistics()
    assert status_of(info.value) == "StatusCode.UNIMPLEMENTED"
    with pytest.raises(InferenceServerException) as info:
        kserve.get_model_repository_index()
    assert status_of(info.value) == "StatusCode.UNIMPLEMENTED"


# ----------------------------------------------------------------------------------------- client


def test_client_full_analysis_of_a_path(client: HemascopeClient, cells: list[Path], smear: Path) -> None:
    report = client.analyze(cells[0], detect=True, explain=True)
    assert report.image_id == cells[0].name
    assert {part.part: part.code for part in report.parts} == {
        "embedding": 0,
        "classification": 0,
        "detection": 0,
        "explanation": 0,
    }
    assert report.explanation.overlay_png.startswith(b"\x89PNG")
    assert report.classification.consensus_label == "myeloblast"
    smear_report = client.analyze(smear, detect=True, skip_classification=True)
    assert len(smear_report.detection.boxes) > 3
    assert not smear_report.HasField("classification")


def test_client_errors_are_typed(client: HemascopeClient, cells: list[Path]) -> None:
    with pytest.raises(InvalidImage) as info:
        client.analyze(NOT_AN_IMAGE)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.reason == "CORRUPT_IMAGE"
    assert info.value.detail is not None
    with pytest.raises((InvalidArgument, NotFound)) as unknown:
        client.analyze(cells[0], models=["no-such-model"])
    assert "no-such-model" in unknown.value.message
    with pytest.raises(TypeError, match="unknown analysis option"):
        client.analyze(cells[0], detection=True)


def test_client_analyze_many_streams_results_with_their_index(
    client: HemascopeClient, cells: list[Path]
) -> None:
    inputs: list[Path | bytes] = [*cells, NOT_AN_IMAGE, *cells]
    results = sorted(client.analyze_many(inputs), key=lambda r: r.index)
    assert [r.index for r in results] == list(range(len(inputs)))
    failed = results[len(cells)]
    assert not failed.ok
    assert isinstance(failed.error, InvalidImage)
    labels = [r.response.classification.consensus_label for r in results if r.response is not None]
    assert labels[: len(cells)] == labels[len(cells) :]
    assert labels[0] == "myeloblast"


def test_async_client(stack: Stack, cells: list[Path]) -> None:
    async def run() -> tuple[analysis_pb2.GetCapabilitiesResponse, str, list[int], str]:
        async with AsyncHemascopeClient(stack.address, timeout=120) as aclient:
            await aclient.wait_ready(30)
            caps = await aclient.capabilities()
            report = await aclient.analyze(cells[1].read_bytes(), image_id="case-1")
            indexes = [r.index async for r in aclient.analyze_many(cells) if r.ok]
            try:
                await aclient.analyze(NOT_AN_IMAGE)
            except InvalidImage as exc:
                reason = exc.reason
            return caps, report.image_id, sorted(indexes), reason

    caps, image_id, indexes, reason = asyncio.run(run())
    assert list(caps.classes) == CLASSES
    assert image_id == "case-1"
    assert indexes == [0, 1, 2]
    assert reason == "CORRUPT_IMAGE"
