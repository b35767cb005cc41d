"""The site signals through the real services: the feature service fingerprints each image, the classifier
checks it against the bundle's acquisition reference, the gateway's drift monitor flags the caller whose
images come from a laboratory the reference never saw and not the caller of a known one.

The bundle is the committed one with an acquisition reference fitted on the two laboratories of
bloodcells-5class only (Barcelona, Munich), so Johns Hopkins (jhu-cellavision) plays the new site."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway.auth import add_key
from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.bundle.site import SITE_FILE
from hemascope.data import REPO_ROOT
from hemascope.datasets import CLASSES
from hemascope.files import file_sha256
from hemascope.server import ManagedServer
from hemascope.training.fingerprints import fingerprint_files
from hemascope.training.site_reference import fit_site_reference
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from services.feature.server import create_server as feature_server
from services.feature.settings import FeatureSettings

WAIT = 180.0
FIT, CALIB, SENT = 60, 30, 60
Stub = analysis_pb2_grpc.AnalysisServiceStub


def _two_lab_bundle(data_dir: Path, target: Path) -> None:
    shutil.copytree(REPO_ROOT / "models" / "bloodcells-5class", target)
    fit, fit_y, calib, calib_y = [], [], [], []
    for c, name in enumerate(CLASSES):
        paths = sorted((data_dir / "bloodcells-5class" / "train" / name).glob("*.jpg"))
        fit += paths[:FIT]
        fit_y += [c] * FIT
        calib += paths[FIT : FIT + CALIB]
        calib_y += [c] * CALIB
    prints = fingerprint_files([*fit, *calib])
    reference = fit_site_reference(
        prints[: FIT * 5], np.array(fit_y), prints[FIT * 5 :], np.array(calib_y), 5
    )
    reference.save(target / SITE_FILE)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest |= {"site_file": SITE_FILE, "site_sha256": file_sha256(target / SITE_FILE)}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _known_lab(data_dir: Path) -> list[Path]:
    """Unseen images of the two known laboratories, classes interleaved."""
    per_class = [sorted((data_dir / "bloodcells-5class" / "val" / name).glob("*.jpg")) for name in CLASSES]
    return [paths[i] for i in range(SENT // len(CLASSES)) for paths in per_class]


def _new_lab(data_dir: Path) -> list[Path]:
    """Johns Hopkins images patient by patient, as a laboratory would send them."""
    with (data_dir / "jhu-cellavision" / "manifest.csv").open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: (r["patient"], r["file"]))
    return [data_dir / "jhu-cellavision" / r["file"] for r in rows[:: max(1, len(rows) // SENT)]][:SENT]


@pytest.fixture(scope="module")
def stack(
    data_dir: Path, model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("drift")
    _two_lab_bundle(data_dir, root / "bundle")
    keys = root / "keys"
    callers = {"known": add_key(keys, "known-lab"), "new": add_key(keys, "new-lab")}
    common = {"port": 0, "metrics_port": None, "log_json": False}
    servers: list[ManagedServer] = []
    feature, feature_port = feature_server(
        FeatureSettings(**common, model_cache_dir=model_cache_dir, intra_op_threads=1)
    )
    classifier, classifier_port = classifier_server(ClassifierSettings(**common, bundle=root / "bundle"))
    servers += [feature, classifier]
    for server in servers:
        server.wait_ready(WAIT)
    gateway, port = create_server(
        GatewaySettings(
            **common,
            feature_address=f"127.0.0.1:{feature_port}",
            classifier_address=f"127.0.0.1:{classifier_port}",
            detector_address="",
            explain_address="",
            api_keys_file=keys,
        )
    )
    gateway.wait_ready(WAIT)
    servers.append(gateway)
    yield {"port": port, "keys": callers}
    for server in reversed(servers):
        server.stop(1)


def _send(stub: Stub, key: str, paths: list[Path]) -> list[analysis_pb2.AnalyzeResponse]:
    metadata = [("x-api-key", key)]
    return [
        stub.Analyze(
            analysis_pb2.AnalyzeRequest(image=common_pb2.Image(data=path.read_bytes())),
            metadata=metadata,
            timeout=120,
        )
        for path in paths
    ]


def test_a_new_laboratory_is_flagged_and_a_known_one_is_not(
    stack: dict[str, object], data_dir: Path, channel_to: Callable[[int], grpc.Channel]
) -> None:
    stub = Stub(channel_to(int(stack["port"])))  # type: ignore[call-overload]
    keys = stack["keys"]
    assert isinstance(keys, dict)
    known = _send(stub, keys["known"], _known_lab(data_dir))
    new = _send(stub, keys["new"], _new_lab(data_dir))

    assert all(r.classification.predictions[0].acquisition_checked for r in known + new)
    assert [r.site.status for r in known[:29]] == ["learning"] * 29
    assert {r.site.status for r in known[29:]} == {"consistent"}
    statuses = [r.site.status for r in new]
    assert "unvalidated site" in statuses
    first = statuses.index("unvalidated site")
    assert first + 1 <= SENT
    flagged = new[first]
    assert flagged.classification.refer
    assert any(reason.startswith("site:") for reason in flagged.classification.refer_reasons)
    assert flagged.classification.consensus_label  # still answered with its class
    malignant = [r for r in new[first:] if r.classification.malignant]
    assert all(r.classification.malignant_unconfirmed for r in malignant)
    # Johns Hopkins myeloblasts look like the Barcelona scanner's cells, never like Munich's myeloblasts
    atypical = [r for r in new if r.classification.atypical_acquisition]
    assert atypical and all(
        any(p.atypical_acquisition for p in r.classification.predictions) for r in atypical
    )

    metadata = [("x-api-key", keys["new"])]
    caps = stub.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), metadata=metadata, timeout=WAIT)
    assert caps.site.status == "unvalidated site" and caps.site.images_seen == SENT
    assert caps.site.expected_share == pytest.approx(0.05)
    metadata = [("x-api-key", keys["known"])]
    caps = stub.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), metadata=metadata, timeout=WAIT)
    assert caps.site.status == "consistent"
