"""The TypeScript client (clients/typescript) against a real gateway: Node runs the compiled client.

The interop script (``clients/typescript/test/interop.ts``) calls Analyze, AnalyzeStream and a KServe v2
ModelInfer with an API key against a gateway in front of the real feature, classifier, detector and
explain services (in-process on port 0, the committed models, real images from ../shared/data), checks
what must hold whatever the models say (class names, probabilities summing to 1, one stream answer per
request, each about its own image, KServe output shapes) and prints its answers, which are compared here
with the Python client's. The TLS options are checked against a gateway without services (GetCapabilities
is answered by the gateway itself). Needs Node.js 20+ and ``scripts/setup_ts_client.sh`` (run by
``scripts/setup.sh``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.auth import add_key
from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.client import HemascopeClient
from hemascope.data import REPO_ROOT
from hemascope.server import ManagedServer
from hemascope.v1 import classifier_pb2
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from services.detector.server import create_server as detector_server
from services.detector.settings import DetectorSettings
from services.explain.server import create_server as explain_server
from services.explain.settings import ExplainSettings
from services.feature.server import create_server as feature_server
from services.feature.settings import FeatureSettings
from tests.gateway_helpers import start_offline_gateway
from tests.tls_helpers import make_ca
from tests.ts_helpers import compiled_scripts, run_script

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
WAIT = 180.0
CLASSES = ["basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil"]


@dataclass
class Stack:
    servers: list[ManagedServer]
    address: str
    key: str


@pytest.fixture(scope="module")
def compiled() -> Path:
    return compiled_scripts()


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
    servers = [server for server, _ in started.values()]
    try:
        for server in servers:
            server.wait_ready(WAIT)
        addresses = {f"{name}_address": f"127.0.0.1:{port}" for name, (_, port) in started.items()}
        keys = tmp_path_factory.mktemp("ts-keys") / "keys.jsonl"
        key = add_key(keys, "ts-client")
        gateway, port = create_server(
            GatewaySettings(**common, **addresses, max_stream_in_flight=2, api_keys_file=keys)
        )
        servers.insert(0, gateway)
        gateway.wait_ready(WAIT)
        yield Stack(servers, f"127.0.0.1:{port}", key)
    finally:
        for server in servers:
            server.stop(1)


def probabilities_of(prediction: classifier_pb2.ModelPrediction) -> dict[str, float]:
    return {c.class_name: c.probability for c in prediction.probabilities}


@pytest.fixture(scope="module")
def cells(data_dir: Path) -> list[Path]:
    root = data_dir / "bloodcells-5class" / "val"
    return [sorted((root / name).glob("*.jpg"))[0] for name in ("myeloblast", "monocyte", "erythroblast")]


def test_typescript_client_interop(compiled: Path, stack: Stack, cells: list[Path], tmp_path: Path) -> None:
    config = {"address": stack.address, "apiKey": stack.key, "images": [str(path) for path in cells]}
    answer = run_script(compiled / "interop.js", config, tmp_path)

    assert answer["classes"] == CLASSES
    with HemascopeClient(stack.address, api_key=stack.key, timeout=120) as python:
        reports = [python.analyze(path, image_id=f"cell-{index}") for index, path in enumerate(cells)]
    assert len(answer["analyze"]) == len(cells)
    for seen, report in zip(answer["analyze"], reports, strict=True):
        classification = report.classification
        assert seen["image_id"] == report.image_id
        assert seen["content_hash"] == report.content_hash
        assert seen["consensus_label"] == classification.consensus_label
        assert seen["consensus_probability"] == pytest.approx(classification.consensus_probability, abs=1e-9)
        expected = {p.model: probabilities_of(p) for p in classification.predictions}
        assert seen["models"].keys() == expected.keys()
        for model, probabilities in expected.items():
            assert seen["models"][model] == pytest.approx(probabilities, abs=1e-9)
            assert sum(seen["models"][model].values()) == pytest.approx(1.0, abs=1e-6)

    # Every image twice and one unreadable image: seven answers, each request once.
    stream = answer["stream"]
    expected_ids = {f"r{r}-{i}" for r in range(2) for i in range(len(cells))} | {"bad"}
    assert len(stream["arrivals"]) == len(expected_ids) == 7
    assert set(stream["arrivals"]) == expected_ids
    assert stream["error"]["code"] == "3"  # INVALID_ARGUMENT, in the stream, which went on

    kserve = answer["kserve"]
    n = len(cells)
    assert kserve["shapes"] == {
        "LABEL": [n],
        "PROBABILITIES": [n, len(CLASSES)],
        "MALIGNANT_PROBABILITY": [n],
        "REFER": [n],
        "CONTENT_HASH": [n],
    }
    assert kserve["datatypes"]["PROBABILITIES"] == "FP32"
    assert kserve["model_version"] == reports[0].classification.bundle_version
    assert kserve["metadata_versions"] == [kserve["model_version"]]
    for row, report in zip(kserve["rows"], reports, strict=True):
        classification = report.classification
        assert row["label"] == classification.consensus_label
        assert row["contentHash"] == report.content_hash
        assert row["refer"] == classification.refer
        per_model = [probabilities_of(p) for p in classification.predictions]
        means = {name: sum(model[name] for model in per_model) / len(per_model) for name in CLASSES}
        assert row["probabilities"] == pytest.approx(means, abs=1e-6)  # FP32 on the wire
        assert row["malignantProbability"] == pytest.approx(classification.malignant_probability, abs=1e-6)


def test_typescript_client_tls_and_mtls(
    compiled: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    folder = tmp_path_factory.mktemp("ts-pki")
    ca, rogue = make_ca(folder, "hospital-ca"), make_ca(folder, "rogue-ca")
    server_cert = ca.issue(folder, "gateway", server=True)
    client_cert = ca.issue(folder, "lis-north", server=False)
    keys = folder / "keys.jsonl"
    key = add_key(keys, "lis-north")
    server, port = start_offline_gateway(
        tls_cert_file=server_cert.cert,
        tls_key_file=server_cert.key,
        tls_client_ca_file=ca.cert,
        api_keys_file=keys,
    )
    address = f"127.0.0.1:{port}"
    good = {"ca": str(ca.cert), "cert": str(client_cert.cert), "key": str(client_cert.key)}
    cases = [
        {"name": "mtls", "address": address, "apiKey": key, "tls": good},
        {"name": "https_url", "address": f"https://localhost:{port}", "apiKey": key, "tls": good},
        {"name": "no_key", "address": address, "tls": good},
        {"name": "no_client_cert", "address": address, "apiKey": key, "tls": {"ca": str(ca.cert)}},
        {"name": "wrong_ca", "address": address, "apiKey": key, "tls": {**good, "ca": str(rogue.cert)}},
        {"name": "plaintext", "address": address, "apiKey": key},
    ]
    try:
        outcomes = run_script(compiled / "capabilities.js", {"cases": cases}, tmp_path)
    finally:
        server.stop(0)
    assert outcomes["mtls"]["code"] == "OK"
    assert outcomes["mtls"]["max_streams_per_caller"] >= 1
    assert outcomes["https_url"]["code"] == "OK"
    assert outcomes["no_key"] == {"code": "Unauthenticated"}
    for refused in ("no_client_cert", "wrong_ca", "plaintext"):
        assert outcomes[refused]["code"] != "OK", refused
