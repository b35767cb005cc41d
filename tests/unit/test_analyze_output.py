"""What ``hemascope analyze`` prints: complete JSON (every proto field, zero and false values included),
short readable lines in input order, ``--wide`` lines, and the checks of its options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
from click.testing import CliRunner
from google.protobuf.message import Message

from hemascope.cli import main
from hemascope.client import StreamResult
from hemascope.commands.analyze import InOrder, as_json, describe
from hemascope.v1 import analysis_pb2, classifier_pb2, detector_pb2

LEFT_OUT = {"overlay_png"}  # written to a file instead (see "files")


def zero_report() -> analysis_pb2.AnalyzeResponse:
    """A report whose every scalar is its zero value where a consumer might still read it."""
    prediction = classifier_pb2.ModelPrediction(
        model="logistic_regression",
        label="basophil",
        probabilities=[classifier_pb2.ClassProbability(class_name="basophil", probability=0.0)],
    )
    return analysis_pb2.AnalyzeResponse(
        embedding=analysis_pb2.EmbeddingInfo(backbone="efficientnet_lite0"),
        classification=analysis_pb2.CellClassification(predictions=[prediction], consensus_label="basophil"),
        detection=analysis_pb2.CellDetection(boxes=[detector_pb2.Box(x2=5, y2=5, class_name="WBC")]),
        explanation=analysis_pb2.CellExplanation(model="logistic_regression", overlay_png=b"png"),
        parts=[analysis_pb2.PartStatus(part="embedding")],
        timings=[analysis_pb2.StageTiming(stage="total")],
    )


def missing_fields(message: Message, record: dict[str, Any], where: str = "") -> list[str]:
    """Every field of ``message`` (recursively) absent from ``record``: unset sub-messages excepted."""
    missing = []
    for field in message.DESCRIPTOR.fields:
        name = field.name
        if name in LEFT_OUT or (field.has_presence and not message.HasField(name)):
            continue
        if name not in record:
            missing.append(f"{where}{name}")
            continue
        value = getattr(message, name)
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            items = list(value) if field.is_repeated else [value]
            records = record[name] if field.is_repeated else [record[name]]
            for item, sub in zip(items, records, strict=True):
                missing += missing_fields(item, sub, f"{where}{name}.")
    return missing


def test_json_has_every_proto_field_zero_and_false_values_included(tmp_path: Path) -> None:
    report = zero_report()
    record = as_json(StreamResult(0, "0", report, None), tmp_path / "cell.jpg", [])
    assert missing_fields(report, record["report"]) == []
    box = record["report"]["detection"]["boxes"][0]
    assert box["x1"] == 0 and box["y1"] == 0 and box["class_id"] == 0
    assert record["report"]["classification"]["predictions"][0]["abstain"] is False
    assert record["report"]["classification"]["malignant"] is False
    assert record["report"]["parts"][0]["code"] == 0
    assert record["report"]["embedding"]["cache_hit"] is False
    assert "overlay_png" not in record["report"]["explanation"]
    json.dumps(record)  # serialisable as it stands


def test_results_are_handed_on_in_input_order() -> None:
    order = InOrder()
    assert order.push(2, "c") == []
    assert order.push(0, "a") == ["a"]
    assert order.push(1, "b") == ["b", "c"]
    assert order.push(4, "e") == []
    assert order.rest() == ["e"]


def report(abstain: bool = False, failed: bool = False) -> analysis_pb2.AnalyzeResponse:
    votes = [
        classifier_pb2.ModelPrediction(model=name, label="myeloblast", abstain=abstain and name == "svm")
        for name in ("logistic_regression", "svm", "random_forest", "xgboost", "kmeans")
    ]
    response = analysis_pb2.AnalyzeResponse(
        classification=analysis_pb2.CellClassification(
            predictions=votes,
            consensus_label="myeloblast",
            consensus_probability=0.97,
            agreement=1.0,
            malignant_probability=0.96,
            malignant=True,
            refer=abstain,
            refer_reasons=["svm: low confidence"] if abstain else [],
        ),
        timings=[analysis_pb2.StageTiming(stage="total", ms=123)],
    )
    if failed:
        response.parts.append(
            analysis_pb2.PartStatus(
                part="explanation",
                code=grpc.StatusCode.UNAVAILABLE.value[0],
                reason="NOT_RUNNING",
                message="the explain service is not running (the gateway was started without it)",
            )
        )
    return response


def test_short_lines_stay_short_and_say_what_matters() -> None:
    text = describe(report(), Path("samples/MYO_0004.jpg"))
    assert text.splitlines()[0] == (
        "MYO_0004.jpg: myeloblast p=0.97, 5/5 models agree, P(malignant)=0.96  MALIGNANT"
    )
    assert "votes" not in text  # unanimous: no need to list them
    referred = describe(report(abstain=True, failed=True), Path("MYO_0004.jpg"))
    assert "REFER" in referred.splitlines()[0]
    assert "  votes: LR=myeloblast SVM=myeloblast* RF=myeloblast XGB=myeloblast KM=myeloblast" in referred
    assert "  refer: low confidence (SVM)" in referred
    assert "  ! no explanation: the explain service is not running" in referred
    assert "CIRCUIT" not in referred
    for line in referred.splitlines():
        assert len(line) <= 100, line


def test_wide_keeps_everything_on_one_line() -> None:
    text = describe(report(), Path("MYO_0004.jpg"), wide=True)
    assert len(text.splitlines()) == 1
    assert "[LR=myeloblast SVM=myeloblast" in text and "123 ms" in text


def test_out_without_explain_or_detect_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "cell.jpg"
    image.write_bytes(b"x")
    result = CliRunner().invoke(main, ["analyze", str(image), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "--out holds the heat-map pictures (--explain) and the box drawings (--detect)" in result.output
    assert not (tmp_path / "out").exists()


def test_refer_reasons_are_grouped_and_a_smear_gets_one_line() -> None:
    response = report(abstain=True)
    del response.classification.refer_reasons[:]
    response.classification.refer_reasons.extend(
        [f"{m}: out of distribution" for m in ("kmeans", "logistic_regression", "svm")]
        + ["models disagree: monocyte, myeloblast"]
    )
    text = describe(response, Path("MO_100695.jpg"))
    assert "  refer: out of distribution (KM, LR, SVM); models disagree: monocyte, myeloblast" in text
    smear = analysis_pb2.AnalyzeResponse(
        detection=analysis_pb2.CellDetection(
            boxes=[detector_pb2.Box(class_name="RBC"), detector_pb2.Box(class_name="WBC")]
        )
    )
    assert describe(smear, Path("BloodImage_00002.jpg")) == "BloodImage_00002.jpg: 2 cells (RBC 1, WBC 1)"
