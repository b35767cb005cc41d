"""Batch analysis on a real local Ray instance (one per module: Ray is slow to start), the committed models
and real images: the results equal the services' answers through the gateway, bad files land in the errors
table, reruns skip what is done, Parquet inputs and the CLI work."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batch.runner import BatchJob, run, start_ray
from batch.summary import Summary
from gateway.server import create_server as gateway_server
from gateway.settings import GatewaySettings
from hemascope.cli import main as cli_main
from hemascope.data import REPO_ROOT
from hemascope.errors import FailedPrecondition
from hemascope.server import ManagedServer
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2, feature_pb2, feature_pb2_grpc
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from services.detector.server import create_server as detector_server
from services.detector.settings import DetectorSettings
from services.feature.server import create_server as feature_server
from services.feature.settings import FeatureSettings

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")
PER_CLASS = 3
WAIT = 180.0
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def ray_local(model_cache_dir: Path) -> Iterator[None]:
    """One local Ray for the module; its workers inherit the session's ONNX export cache."""
    import ray

    patch = pytest.MonkeyPatch()
    patch.setenv("HEMASCOPE_FEATURE_MODEL_CACHE_DIR", str(model_cache_dir))
    start_ray("")
    yield
    ray.shutdown()
    patch.undo()


@pytest.fixture(scope="module")
def archive(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cells of every class, a smear, and three bad files (garbage, a truncated JPEG, an empty PNG)."""
    root = tmp_path_factory.mktemp("archive")
    for name in CLASSES:
        (root / name).mkdir()
        for path in sorted((data_dir / "bloodcells-5class" / "val" / name).glob("*.jpg"))[:PER_CLASS]:
            (root / name / path.name).symlink_to(path)
    smear = sorted((data_dir / "bccd" / "JPEGImages").glob("*.jpg"))[0]
    (root / "smear.jpg").symlink_to(smear)
    (root / "garbage.jpg").write_bytes(b"this is not an image")
    (root / "truncated.jpg").write_bytes(smear.read_bytes()[:300])
    (root / "empty.png").write_bytes(b"")
    (root / "README.txt").write_text("not an image: never listed")
    return root


BAD = {"garbage.jpg", "truncated.jpg", "empty.png"}


@dataclass
class Outcome:
    summary: Summary
    results: pa.Table
    errors: pa.Table
    out: Path


def read_out(out: Path) -> tuple[pa.Table, pa.Table]:
    results = pads.dataset(out, format="parquet").to_table()
    errors = pads.dataset(out / "_errors", format="parquet").to_table()
    return results, errors


@pytest.fixture(scope="module")
def analyzed(ray_local: None, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """First the basophils only (a glob), then the whole archive into the same OUT: a resumed job."""
    out = tmp_path_factory.mktemp("batch") / "out"
    job = BatchJob(input=str(archive / "basophil" / "*.jpg"), out=str(out), bundle=str(BUNDLE), detect=True)
    first = run(job)
    assert (first.analysed, first.errors, first.skipped) == (PER_CLASS, 0, 0)
    summary = run(
        BatchJob(input=str(archive), out=str(out), bundle=str(BUNDLE), detect=True, embedding=False)
    )
    return Outcome(summary, *read_out(out), out)


def test_every_image_is_a_result_or_an_error_and_the_resumed_run_skipped_the_done(
    analyzed: Outcome, archive: Path
) -> None:
    s = analyzed.summary
    total = len(CLASSES) * PER_CLASS + 1 + len(BAD)
    assert (s.images, s.skipped, s.analysed, s.errors) == (
        total,
        PER_CLASS,
        total - PER_CLASS - len(BAD),
        len(BAD),
    )
    paths = analyzed.results.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == total - len(BAD)  # the basophils once, from the first run
    assert {Path(p).name for p in analyzed.errors.column("path").to_pylist()} == BAD
    reasons = dict(
        zip(
            [Path(p).name for p in analyzed.errors.column("path").to_pylist()],
            analyzed.errors.column("reason").to_pylist(),
            strict=True,
        )
    )
    assert reasons["garbage.jpg"] == "UNSUPPORTED_FORMAT"
    assert all(analyzed.errors.column("message").to_pylist())
    assert sum(s.per_class.values()) == s.analysed
    assert len(set(analyzed.results.column("run_id").to_pylist())) == 2


def test_provenance_on_every_row(analyzed: Outcome) -> None:
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    results = analyzed.results
    assert set(results.column("bundle_version").to_pylist()) == {manifest["bundle_version"]}
    assert set(results.column("backbone").to_pylist()) == {manifest["backbone"]}
    assert set(results.column("weights_hash").to_pylist()) == {manifest["weights_hash"]}
    assert set(results.column("preprocessing").to_pylist()) == {manifest["preprocessing"]}
    meta = results.schema.metadata
    assert json.loads(meta[b"hemascope.classes"]) == manifest["classes"]


@pytest.fixture(scope="module")
def gateway(model_cache_dir: Path) -> Iterator[analysis_pb2_grpc.AnalysisServiceStub]:
    """The real feature, classifier and detector services behind the real gateway, all on port 0."""
    common = {"port": 0, "metrics_port": None, "log_json": False}
    servers: dict[str, tuple[ManagedServer, int]] = {
        "feature": feature_server(FeatureSettings(**common, model_cache_dir=model_cache_dir)),
        "classifier": classifier_server(ClassifierSettings(**common, bundle=BUNDLE)),
        "detector": detector_server(DetectorSettings(**common)),
    }
    for server, _ in servers.values():
        server.wait_ready(WAIT)
    address = {name: f"127.0.0.1:{port}" for name, (_, port) in servers.items()}
    settings = GatewaySettings(
        **common,
        feature_address=address["feature"],
        classifier_address=address["classifier"],
        detector_address=address["detector"],
        explain_address="127.0.0.1:1",
    )
    server, port = gateway_server(settings)
    server.wait_ready(WAIT)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    feature_channel = grpc.insecure_channel(address["feature"])
    stub = analysis_pb2_grpc.AnalysisServiceStub(channel)
    stub.feature = feature_pb2_grpc.FeatureServiceStub(feature_channel)  # type: ignore[attr-defined]
    yield stub
    channel.close()
    feature_channel.close()
    server.stop(1)
    for managed, _ in servers.values():
        managed.stop(1)


def test_results_equal_the_services_answers(
    analyzed: Outcome, gateway: analysis_pb2_grpc.AnalysisServiceStub
) -> None:
    for row in analyzed.results.to_pylist():
        data = Path(row["path"]).read_bytes()
        request = analysis_pb2.AnalyzeRequest(
            image=common_pb2.Image(data=data), options=analysis_pb2.AnalyzeOptions(detect=True)
        )
        answer = gateway.Analyze(request, timeout=120)
        c = answer.classification
        assert row["pixel_hash"] == answer.content_hash
        assert (row["width"], row["height"]) == (answer.width, answer.height)
        assert row["label"] == c.consensus_label, row["path"]
        assert row["probability"] == pytest.approx(c.consensus_probability, abs=TOLERANCE)
        assert row["agreement"] == pytest.approx(c.agreement, abs=TOLERANCE)
        assert row["malignant_probability"] == pytest.approx(c.malignant_probability, abs=TOLERANCE)
        assert (row["malignant"], row["refer"]) == (c.malignant, c.refer)
        assert row["refer_reason"] == "; ".join(c.refer_reasons)
        for p in c.predictions:
            assert row[f"{p.model}_label"] == p.label, (row["path"], p.model)
            service = [x.probability for x in p.probabilities]
            np.testing.assert_allclose(row[f"{p.model}_probabilities"], service, rtol=0, atol=TOLERANCE)
            assert row[f"{p.model}_malignant_probability"] == pytest.approx(p.malignant_probability, abs=1e-5)
        assert row["bundle_version"] == c.bundle_version
        assert row["detector_version"] == answer.detection.model_version
        boxes = [(b.class_name, b.score, b.x1, b.y1, b.x2, b.y2) for b in answer.detection.boxes]
        ours = [(d["class_name"], d["score"], d["x1"], d["y1"], d["x2"], d["y2"]) for d in row["detections"]]
        assert [b[0] for b in ours] == [b[0] for b in boxes]
        np.testing.assert_allclose([b[1:] for b in ours], [b[1:] for b in boxes], rtol=0, atol=1e-3)


def test_parquet_of_bytes_through_the_cli_embeds_like_the_feature_service(
    ray_local: None,
    gateway: analysis_pb2_grpc.AnalysisServiceStub,
    archive: Path,
    tmp_path: Path,
) -> None:
    cells = sorted((archive / "myeloblast").glob("*.jpg"))
    table = pa.table(
        {
            "image": pa.array([p.read_bytes() for p in cells] + [None, b"garbage"], pa.binary()),
            "path": [str(p) for p in cells] + ["missing-bytes", "garbage"],
        }
    )
    pq.write_table(table, tmp_path / "images.parquet")
    out = tmp_path / "embedded"
    result = CliRunner().invoke(
        cli_main,
        ["batch", "embed", str(tmp_path / "images.parquet"), "--out", str(out), "--json", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert (summary["analysed"], summary["errors"]) == (len(cells), 2)
    results, errors = read_out(out)
    # no bytes: its path is read instead (and does not exist here)
    assert sorted(errors.column("reason").to_pylist()) == ["UNREADABLE", "UNSUPPORTED_FORMAT"]
    for row in results.to_pylist():
        request = feature_pb2.EmbedRequest(image=common_pb2.Image(data=Path(row["path"]).read_bytes()))
        service = gateway.feature.Embed(request, timeout=60)  # type: ignore[attr-defined]
        assert row["pixel_hash"] == service.content_hash
        assert row["preprocessing"] == service.embedding.preprocessing
        np.testing.assert_allclose(row["embedding"], service.embedding.values, rtol=0, atol=TOLERANCE)
    rerun = CliRunner().invoke(
        cli_main,
        ["batch", "embed", str(tmp_path / "images.parquet"), "--out", str(out), "--json", "--no-progress"],
    )
    again = json.loads(rerun.output.strip().splitlines()[-1])
    assert (again["analysed"], again["skipped"], again["errors"]) == (0, len(cells), 2)  # errors retried


def test_an_out_of_another_kind_is_refused_before_any_work(
    analyzed: Outcome, archive: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(Path(analyzed.summary.out), out)
    with pytest.raises(FailedPrecondition) as refused:
        run(BatchJob(input=str(archive), out=str(out), classify=False))
    assert refused.value.reason == "OUT_MISMATCH"
    result = CliRunner().invoke(
        cli_main, ["batch", "embed", str(archive), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 2 and "holds results of another kind" in result.output


def test_evaluate_scores_a_batch_result_by_its_class_folders(analyzed: Outcome) -> None:
    from click.testing import CliRunner

    from hemascope.cli import main

    done = CliRunner().invoke(main, ["evaluate", "--batch", str(analyzed.out), "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["labelled"], result["unlabelled"]) == (len(CLASSES) * PER_CLASS, 1)  # the smear
    rows = analyzed.results.to_pylist()
    truth = {r["path"]: Path(r["path"]).parent.name for r in rows if Path(r["path"]).parent.name in CLASSES}
    agree = sum(r["label"] == truth[r["path"]] for r in rows if r["path"] in truth) / len(truth)
    assert result["consensus"]["accuracy"] == pytest.approx(agree)
    assert set(result["models"]) == {"logistic_regression", "svm", "random_forest", "xgboost", "kmeans"}
    both = CliRunner().invoke(main, ["evaluate", "--batch", str(analyzed.out), "--bundle", str(BUNDLE)])
    assert both.exit_code == 2 and "--batch scores a batch result" in both.output
