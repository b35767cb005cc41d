"""Protobuf <-> domain types for the classifier service."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hemascope.enums import enum_name
from hemascope.v1 import classifier_pb2, common_pb2
from services.classifier.core import Classification, ReloadOutcome, ServedBundle
from services.classifier.inputs import EmbeddingInput

#: ModelOutput.refer_reason codes (core.REFER_*) -> the proto enum
REFER_REASONS = (
    classifier_pb2.REFER_REASON_UNSPECIFIED,
    classifier_pb2.REFER_REASON_LOW_CONFIDENCE,
    classifier_pb2.REFER_REASON_OUT_OF_DISTRIBUTION,
    classifier_pb2.REFER_REASON_LOW_CONFIDENCE_AND_OUT_OF_DISTRIBUTION,
    classifier_pb2.REFER_REASON_NOT_SINGLE_CELL,
    classifier_pb2.REFER_REASON_ATYPICAL_ACQUISITION,
)


def embedding_from_proto(embedding: common_pb2.Embedding) -> EmbeddingInput:
    return EmbeddingInput(
        values=np.asarray(embedding.values, dtype=np.float32),
        dimension=embedding.dimension,
        backbone=embedding.backbone,
        weights_hash=embedding.weights_hash,
        preprocessing=embedding.preprocessing,
        input_kind=_input_kind(embedding),
        acquisition=(
            np.asarray(embedding.acquisition.values, dtype=np.float32)
            if embedding.HasField("acquisition")
            else None
        ),
        acquisition_revision=embedding.acquisition.revision,
    )


def _input_kind(embedding: common_pb2.Embedding) -> str:
    """The input check's kind as an InputKind value ("single_cell", ...); "" when there is none."""
    if not embedding.HasField("input_check") or not embedding.input_check.kind:
        return ""
    name = enum_name(common_pb2.InputKind, embedding.input_check.kind)  # a newer kind: not a single cell
    return name.removeprefix("INPUT_KIND_").lower()


def embeddings_from_request(request: classifier_pb2.ClassifyRequest) -> list[EmbeddingInput]:
    return [embedding_from_proto(embedding) for embedding in request.embeddings]


def classify_response(result: Classification) -> classifier_pb2.ClassifyResponse:
    """One ClassifyResult per embedding, each with one ModelPrediction per model, in request order."""
    classes = result.classes
    per_model: list[Sequence[classifier_pb2.ModelPrediction]] = []
    for output in result.outputs:
        rows = zip(
            output.probabilities.tolist(),
            output.labels.tolist(),
            output.confidence.tolist(),
            output.malignant.tolist(),
            output.abstain.tolist(),
            output.ood_score.tolist(),
            output.out_of_distribution.tolist(),
            output.refer_reason.tolist(),
            output.acquisition_score.tolist(),
            output.atypical_acquisition.tolist(),
            output.acquisition_checked.tolist(),
            strict=True,
        )
        per_model.append(
            [
                classifier_pb2.ModelPrediction(
                    model=output.name,
                    model_version=output.version,
                    probabilities=[
                        classifier_pb2.ClassProbability(class_name=name, probability=p)
                        for name, p in zip(classes, probs, strict=True)
                    ],
                    label=classes[label],
                    confidence=confidence,
                    malignant_probability=malignant,
                    abstain=abstain,
                    ood_score=ood_score,
                    out_of_distribution=ood,
                    refer_reason=REFER_REASONS[reason],
                    acquisition_score=acquisition_score,
                    atypical_acquisition=atypical,
                    acquisition_checked=checked,
                )
                for (
                    probs,
                    label,
                    confidence,
                    malignant,
                    abstain,
                    ood_score,
                    ood,
                    reason,
                    acquisition_score,
                    atypical,
                    checked,
                ) in rows
            ]
        )
    results = [
        classifier_pb2.ClassifyResult(predictions=[predictions[i] for predictions in per_model])
        for i in range(result.count)
    ]
    return classifier_pb2.ClassifyResponse(
        results=results, bundle_version=result.bundle_version, site_profile=result.site_profile
    )


def list_models_response(
    served: ServedBundle, *, max_embeddings: int, last_reload_error: str
) -> classifier_pb2.ListModelsResponse:
    manifest = served.manifest
    site = served.bundle.site
    models = [
        classifier_pb2.ModelInfo(
            name=name,
            version=entry.version,
            kind=entry.kind,
            metrics={key: float(value) for key, value in entry.metrics.items()},
            abstain_threshold=entry.abstain_threshold,
            temperature=entry.temperature,
            ood_threshold=entry.ood_threshold if manifest.ood_file else 0.0,
        )
        for name, entry in manifest.models.items()
    ]
    return classifier_pb2.ListModelsResponse(
        bundle_version=manifest.bundle_version,
        backbone=manifest.backbone,
        weights_hash=manifest.weights_hash,
        dimension=manifest.dimension,
        preprocessing=manifest.preprocessing,
        classes=list(manifest.classes),
        malignant_classes=list(manifest.malignant_classes),
        models=models,
        data_fingerprint=manifest.data_fingerprint,
        created=manifest.created,
        max_embeddings=max_embeddings,
        last_reload_error=last_reload_error,
        acquisition_revision=int(site.revision) if site is not None else 0,
        expected_atypical_rate=site.expected_atypical_rate if site is not None else 0.0,
        site_profiles=served.profiles.names,
    )


def reload_response(outcome: ReloadOutcome) -> classifier_pb2.ReloadBundleResponse:
    return classifier_pb2.ReloadBundleResponse(
        bundle_version=outcome.bundle_version,
        previous_version=outcome.previous_version,
        model_count=outcome.model_count,
    )
