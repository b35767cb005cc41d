"""The classifier service over real gRPC (port 0): Classify, ListModels, ReloadBundle, errors, health.

Bundles are tiny synthetic ones (8-d, all five model kinds) built in tmp_path with save_bundle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

import services.classifier.core as core_module
from hemascope.bundle import BundleError, load_bundle
from hemascope.datasets import CLASSES
from hemascope.server import ManagedServer
from hemascope.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2
from services.classifier.server import SERVICE_NAME, create_server
from services.classifier.settings import ClassifierSettings
from services.classifier.synthetic import MODEL_NAMES, synthetic_data
from tests.classifier_fixtures import SPEC
from tests.grpc_helpers import error_reason, rpc_error
from tests.tls_helpers import Issued, make_ca

X, _ = synthetic_data(SPEC, 256)
WAIT = 30.0
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
Stub = classifier_pb2_grpc.ClassifierServiceStub


def start(bundle: Path | None, wait: bool = True, **overrides: Any) -> tuple[ManagedServer, int]:
    settings = ClassifierSettings(
        port=0,
        metrics_port=None,
        bundle=bundle,
        max_embeddings=300,
        log_json=False,
        allow_reload_path=True,
        **overrides,
    )
    server, port = create_server(settings)
    if wait:
        server.wait_ready(WAIT)
    return server, port


@pytest.fixture(scope="module")
def served(bundles: dict[str, Path]) -> Iterator[int]:
    server, port = start(bundles["v1"])
    yield port
    server.stop(1)


@pytest.fixture
def stub(served: int, channel_to: Callable[[int], grpc.Channel]) -> Stub:
    return Stub(channel_to(served))


def embedding(values: Any = None, **fields: Any) -> common_pb2.Embedding:
    vector = np.asarray(X[0] if values is None else values, dtype=np.float32)
    provenance = {"backbone": SPEC.backbone, "weights_hash": SPEC.weights_hash, "preprocessing": "synthetic"}
    return common_pb2.Embedding(values=vector.tolist(), dimension=len(vector), **(provenance | fields))


def classify(stub: Stub, embeddings: list[common_pb2.Embedding], models: tuple[str, ...] = ()) -> Any:
    return stub.Classify(classifier_pb2.ClassifyRequest(embeddings=embeddings, models=models), timeout=WAIT)


def health(port: int, channel_to: Callable[[int], grpc.Channel]) -> set[int]:
    stub = health_pb2_grpc.HealthStub(channel_to(port))
    return {
        stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=WAIT).status for s in ("", SERVICE_NAME)
    }


def test_classify_one_embedding_with_every_model(stub: Stub) -> None:
    response = classify(stub, [embedding()])
    assert response.bundle_version == "v1" and len(response.results) == 1
    predictions = response.results[0].predictions
    assert [p.model for p in predictions] == sorted(MODEL_NAMES)
    for p in predictions:
        probs = np.array([c.probability for c in p.probabilities])
        assert [c.class_name for c in p.probabilities] == list(CLASSES)
        assert probs.sum() == pytest.approx(1.0) and p.model_version == f"v1-{p.model}"
        assert p.label == CLASSES[int(probs.argmax())] and p.confidence == pytest.approx(probs.max())
        assert p.malignant_probability == pytest.approx(probs[CLASSES.index("myeloblast")])
        threshold = 0.8 if p.model == "svm" else 0.0
        assert p.abstain == (p.confidence < threshold)


def test_batch_of_256_matches_the_bundle_in_process(stub: Stub, bundles: dict[str, Path]) -> None:
    response = classify(stub, [embedding(v) for v in X], ("xgboost", "logistic_regression"))
    expected = load_bundle(bundles["v1"]).predict(X, ["xgboost", "logistic_regression"])
    assert len(response.results) == 256
    for name, column in (("xgboost", 0), ("logistic_regression", 1)):
        got = [[c.probability for c in r.predictions[column].probabilities] for r in response.results]
        assert {r.predictions[column].model for r in response.results} == {name}
        np.testing.assert_allclose(got, expected[name], atol=1e-6)
    seconds = REGISTRY.get_sample_value("hemascope_classifier_model_seconds_count", {"model": "xgboost"})
    assert seconds is not None and seconds >= 1


def test_list_models(stub: Stub) -> None:
    info = stub.ListModels(classifier_pb2.ListModelsRequest(), timeout=WAIT)
    assert (info.bundle_version, info.backbone, info.dimension) == ("v1", SPEC.backbone, 8)
    assert (info.weights_hash, info.preprocessing) == (SPEC.weights_hash, "synthetic")
    assert list(info.classes) == list(CLASSES) and list(info.malignant_classes) == ["myeloblast"]
    assert [m.name for m in info.models] == sorted(MODEL_NAMES) and info.max_embeddings == 300
    kinds = {m.name: (m.kind, m.abstain_threshold, m.temperature) for m in info.models}
    assert kinds["xgboost"] == ("xgboost", 0.0, 1.0) and kinds["svm"] == ("sklearn", 0.8, 1.0)
    assert (
        kinds["kmeans"][0] == "kmeans" and info.last_reload_error == "" and len(info.data_fingerprint) == 64
    )


FC, NF, IA = (
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
)
BAD: dict[str, tuple[Callable[[], list[common_pb2.Embedding]], tuple[str, ...], grpc.StatusCode, str]] = {
    "wrong dimension": (lambda: [embedding(np.ones(1280), backbone="")], (), FC, "WRONG_DIMENSION"),
    "wrong backbone": (lambda: [embedding(np.ones(2048), backbone="resnet50")], (), FC, "WRONG_BACKBONE"),
    "wrong weights": (lambda: [embedding(weights_hash="ab" * 32)], (), FC, "WRONG_WEIGHTS"),
    "non-finite": (lambda: [embedding(), embedding([np.nan] * 8)], (), IA, "NON_FINITE_VALUES"),
    "too many": (lambda: [embedding()] * 301, (), IA, "TOO_MANY_EMBEDDINGS"),
    "none": (lambda: [], (), IA, "NO_EMBEDDINGS"),
    "unknown model": (lambda: [embedding()], ("xgboost", "resnet_svm"), NF, "UNKNOWN_MODEL"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_calls_get_status_and_reason_and_the_server_keeps_serving(stub: Stub, name: str) -> None:
    make, models, code, why = BAD[name]
    error = rpc_error(lambda: classify(stub, make(), models))
    assert error.code() == code and error_reason(error) == why, error.details()
    assert "Traceback" not in str(error.details())
    if why == "UNKNOWN_MODEL":
        assert "resnet_svm" in str(error.details()) and "logistic_regression" in str(error.details())
    assert classify(stub, [embedding()], ("kmeans",)).results[0].predictions[0].model == "kmeans"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "services-ca")
    return {
        "ca": ca.cert,
        "server": ca.issue(folder, "classifier", server=True),
        "admin": ca.issue(folder, "hemascope-admin", server=False),
        "gateway": ca.issue(folder, "gateway", server=False),
    }


def start_mtls(bundle: Path, pki: dict[str, Any]) -> tuple[ManagedServer, int]:
    server_cert: Issued = pki["server"]
    return start(
        bundle,
        tls_cert_file=server_cert.cert,
        tls_key_file=server_cert.key,
        tls_client_ca_file=pki["ca"],
        admin_subjects=["hemascope-admin"],
    )


def mtls_channel(port: int, pki: dict[str, Any], who: str) -> grpc.Channel:
    issued: Issued = pki[who]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"].read_bytes(),
        private_key=issued.key.read_bytes(),
        certificate_chain=issued.cert.read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def test_reload_bundle_answers_only_the_admin_identity(
    bundles: dict[str, Path], pki: dict[str, Any], channel_to: Callable[[int], grpc.Channel]
) -> None:
    request = classifier_pb2.ReloadBundleRequest(path=str(bundles["v2"]))
    plain, port = start(bundles["v1"], admin_subjects=["hemascope-admin"])
    try:  # without mutual TLS nobody presents an identity: refused, whoever reaches the port
        error = rpc_error(lambda: Stub(channel_to(port)).ReloadBundle(request, timeout=WAIT))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_reason(error) == "ADMIN_ONLY"
        assert classify(Stub(channel_to(port)), [embedding()]).bundle_version == "v1"  # the rest works
    finally:
        plain.stop(0)
    secured, port = start_mtls(bundles["v1"], pki)
    try:
        with mtls_channel(port, pki, "gateway") as channel:  # a valid certificate, not the admin's
            error = rpc_error(lambda: Stub(channel).ReloadBundle(request, timeout=WAIT))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "HEMASCOPE_CLASSIFIER_ADMIN_SUBJECTS" in str(error.details())
            assert classify(Stub(channel), [embedding()]).bundle_version == "v1"
        with mtls_channel(port, pki, "admin") as channel:
            assert Stub(channel).ReloadBundle(request, timeout=WAIT).bundle_version == "v2"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # plaintext cannot even connect
            error = rpc_error(lambda: classify(Stub(channel), [embedding()]))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        secured.stop(0)


def test_reload_bundle_rpc(bundles: dict[str, Path], tmp_path: Path, pki: dict[str, Any]) -> None:
    server, port = start_mtls(bundles["v1"], pki)
    channel = mtls_channel(port, pki, "admin")
    try:
        stub = Stub(channel)
        reply = stub.ReloadBundle(classifier_pb2.ReloadBundleRequest(path=str(bundles["v2"])), timeout=WAIT)
        assert (reply.bundle_version, reply.previous_version, reply.model_count) == ("v2", "v1", 5)
        assert classify(stub, [embedding()]).bundle_version == "v2"
        bad = classifier_pb2.ReloadBundleRequest(path=str(tmp_path))
        error = rpc_error(lambda: stub.ReloadBundle(bad, timeout=WAIT))
        assert (
            error.code() == FC
            and error_reason(error) == "BAD_BUNDLE"
            and "manifest.json" in str(error.details())
        )
        assert classify(stub, [embedding()]).bundle_version == "v2"
        for odd in (str(bundles["v1"]) + "\x00/etc", "x" * 5000):  # a caller's mistake, never INTERNAL
            error = rpc_error(
                lambda odd=odd: stub.ReloadBundle(classifier_pb2.ReloadBundleRequest(path=odd), timeout=WAIT)
            )
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "BAD_PATH"
            assert len(str(error.details())) < 200
        info = stub.ListModels(classifier_pb2.ListModelsRequest(), timeout=WAIT)
        assert info.bundle_version == "v2" and "manifest.json" in info.last_reload_error
        again = stub.ReloadBundle(classifier_pb2.ReloadBundleRequest(), timeout=WAIT)
        assert (again.bundle_version, again.previous_version) == ("v2", "v2")
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=WAIT)
        assert check.status == SERVING
    finally:
        channel.close()
        server.stop(0)


def test_health_is_not_serving_while_the_bundle_loads(
    bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch, channel_to: Callable[[int], grpc.Channel]
) -> None:
    release = threading.Event()
    real_load = core_module.load_bundle

    def slow_load(root: Path) -> Any:
        release.wait(WAIT)
        return real_load(root)

    monkeypatch.setattr(core_module, "load_bundle", slow_load)
    server, port = start(bundles["v1"], wait=False)
    try:
        assert health(port, channel_to) == {NOT_SERVING}
        error = rpc_error(lambda: classify(Stub(channel_to(port)), [embedding()]))
        assert error.code() == grpc.StatusCode.UNAVAILABLE and error_reason(error) == "NOT_READY"
        release.set()
        server.wait_ready(WAIT)
        assert health(port, channel_to) == {SERVING}
        assert classify(Stub(channel_to(port)), [embedding()]).bundle_version == "v1"
    finally:
        release.set()
        server.stop(0)


@pytest.mark.parametrize("which", ["not configured", "missing directory"])
def test_no_loadable_bundle_never_turns_serving(
    tmp_path: Path, channel_to: Callable[[int], grpc.Channel], which: str
) -> None:
    server, port = start(None if which == "not configured" else tmp_path / "nowhere", wait=False)
    try:
        with pytest.raises(BundleError, match=r"HEMASCOPE_CLASSIFIER_BUNDLE|no manifest"):
            server.wait_ready(WAIT)
        assert health(port, channel_to) == {NOT_SERVING}
        error = rpc_error(lambda: classify(Stub(channel_to(port)), [embedding()]))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_the_gateway_reaches_a_mutual_tls_classifier_only_with_its_certificate(
    bundles: dict[str, Path], pki: dict[str, Any]
) -> None:
    from gateway.server import create_server as gateway_server
    from gateway.settings import GatewaySettings
    from hemascope.v1 import analysis_pb2, analysis_pb2_grpc

    classifier, port = start_mtls(bundles["v1"], pki)
    client: Issued = pki["gateway"]
    trusted = {"downstream_ca_file": pki["ca"]}
    presents = {**trusted, "downstream_cert_file": client.cert, "downstream_key_file": client.key}
    servers: list[ManagedServer] = []
    try:
        serving = {}
        for name, extra in (
            ("with-cert", presents),
            ("without-cert", trusted),
        ):
            gateway, gateway_port = gateway_server(
                GatewaySettings(
                    port=0,
                    metrics_port=None,
                    classifier_address=f"localhost:{port}",
                    feature_address="",
                    detector_address="",
                    explain_address="",
                    health_timeout_s=2.0,
                    retries=0,
                    **extra,
                )
            )
            servers.append(gateway)
            gateway.wait_ready(WAIT)
            with grpc.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
                caps = analysis_pb2_grpc.AnalysisServiceStub(channel).GetCapabilities(
                    analysis_pb2.GetCapabilitiesRequest(), timeout=WAIT
                )
            state = next(s for s in caps.services if s.name == "classifier")
            serving[name] = (state.serving, caps.bundle_version)
        assert serving == {"with-cert": (True, "v1"), "without-cert": (False, "")}
    finally:
        for server in servers:
            server.stop(0)
        classifier.stop(0)
