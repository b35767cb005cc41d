"""The callable classes Ray Data runs on its actor pool: the services' cores, loaded once per actor.

:class:`Analyzer` = the feature service's core (decode, input check, preprocessing, ONNX session), the
classifier service's core (every model of the bundle), the gateway's consensus and, when asked, the
detector service's core. :class:`Embedder` is the feature part alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from batch.schema import ERROR, OK, Layout
from hemascope.consensus import consensus, input_reason
from hemascope.errors import FailedPrecondition, HemascopeError
from hemascope.imaging.fingerprint import REVISION as FINGERPRINT_REVISION
from hemascope.imaging.inputs import ImageInput
from hemascope.logs import configure_logging
from services.classifier.core import REFER_REASON_NAMES, Classification, ClassifierCore
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings
from services.feature.core import BackboneInfo, EmbedResult, FeatureCore
from services.feature.settings import FeatureSettings


@dataclass(frozen=True)
class WorkerConfig:
    """What every actor needs to load its models (plain values: it travels to the actors)."""

    layout: Layout
    run_id: str
    backbone: str
    preprocessing: str
    bundle: str = ""
    detector_model: str = ""
    #: ONNX Runtime intra-op threads per actor (0: all cores)
    threads: int = 1
    use_gpu: bool = False
    batch_size: int = 32
    log_level: str = "WARNING"


def feature_settings(config: WorkerConfig) -> FeatureSettings:
    """The feature service's settings for a worker: its defaults (limits, input check), no cache, no port."""
    fields: dict[str, Any] = {
        "backbone": config.backbone,
        "preprocessing": config.preprocessing,
        "intra_op_threads": config.threads,
        "use_gpu": config.use_gpu,
        "memory_cache_entries": 0,
        "redis_url": None,
        "metrics_port": None,
    }
    return FeatureSettings(**fields)


def classifier_settings(config: WorkerConfig) -> ClassifierSettings:
    fields: dict[str, Any] = {
        "bundle": Path(config.bundle),
        "watch_interval_s": 0,
        "model_threads": config.threads or 1,
        "max_embeddings": max(config.batch_size, 1),
        "metrics_port": None,
    }
    return ClassifierSettings(**fields)


def embedding_input(result: EmbedResult, info: BackboneInfo) -> EmbeddingInput:
    """What the gateway sends the classifier for this embedding (provenance and input check included)."""
    return EmbeddingInput(
        values=result.vector,
        dimension=int(result.vector.shape[0]),
        backbone=info.spec.name,
        weights_hash=info.weights_hash,
        preprocessing=info.preprocessing.version,
        input_kind=result.input_check.kind.value if result.input_check is not None else "",
        acquisition=result.acquisition,
        acquisition_revision=FINGERPRINT_REVISION if result.acquisition is not None else 0,
    )


class Embedder:
    """Bytes -> embeddings with the feature service's core; one instance per Ray actor."""

    def __init__(self, config: WorkerConfig) -> None:
        configure_logging(config.log_level)
        self.config = config
        self.layout = config.layout
        self.feature = FeatureCore(feature_settings(config))
        self.feature.load()
        self.schema = self.layout.worker_output()
        info = self.feature.info
        self._check_provenance("backbone", info.spec.name)
        self._check_provenance("weights_hash", info.weights_hash)
        self._check_provenance("preprocessing", info.preprocessing.version)

    def _check_provenance(self, name: str, loaded: str) -> None:
        """Every row states the job's provenance: a worker that loaded something else must not run."""
        expected = dict(self.layout.provenance).get(name)
        if expected is not None and expected != loaded:
            raise FailedPrecondition(
                f"this worker loaded {name} {loaded!r}, the job expects {expected!r}; every node must hold "
                "the same models",
                reason="PROVENANCE_MISMATCH",
            )

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        todo = [i for i, row in enumerate(rows) if row["status"] == OK]
        images = [ImageInput(data=rows[i]["data"]) for i in todo]
        outcomes = self.feature.embed_direct(images) if images else []
        out: list[dict[str, Any]] = [self._passthrough(row) for row in rows]
        done = [(i, r) for i, r in zip(todo, outcomes, strict=True) if isinstance(r, EmbedResult)]
        for i, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, HemascopeError):
                out[i] |= _error("decode", outcome)
        for i, result in done:
            out[i] |= self._embedded(result)
        self._complete([i for i, _ in done], [r for _, r in done], out, images_of(rows))
        return pa.Table.from_pylist(out, schema=self.schema)

    def _passthrough(self, row: dict[str, Any]) -> dict[str, Any]:
        out = dict.fromkeys(self.schema.names)
        for name in ("path", "content_hash", "status", "error_stage", "error_reason", "error_message"):
            out[name] = row[name]
        out["run_id"] = self.config.run_id
        out |= dict(self.layout.provenance)
        return out

    def _embedded(self, result: EmbedResult) -> dict[str, Any]:
        check = result.input_check
        kind = check.kind.value if check is not None else ""
        row: dict[str, Any] = {
            "pixel_hash": result.content_hash,
            "width": result.width,
            "height": result.height,
            "input_kind": kind,
            "input_reason": input_reason(kind, check.reason if check is not None else ""),
        }
        if self.layout.embedding:
            row["embedding"] = result.vector.tolist()
        return row

    def _complete(
        self,
        indices: Sequence[int],
        results: Sequence[EmbedResult],
        out: list[dict[str, Any]],
        images: Sequence[ImageInput | None],
    ) -> None:
        """Adds what follows the embedding (nothing here; the classification in :class:`Analyzer`)."""


def images_of(rows: Sequence[dict[str, Any]]) -> list[ImageInput | None]:
    return [ImageInput(data=row["data"]) if row["status"] == OK else None for row in rows]


def _error(stage: str, error: HemascopeError) -> dict[str, Any]:
    return {
        "status": ERROR,
        "error_stage": stage,
        "error_reason": error.reason,
        "error_message": error.message,
    }


class Analyzer(Embedder):
    """Bytes -> embeddings -> every model's verdict -> consensus (-> detections): the gateway's answer."""

    def __init__(self, config: WorkerConfig) -> None:
        super().__init__(config)
        self.classifier = ClassifierCore(classifier_settings(config))
        self.classifier.load()
        self.detector: Any = None
        if config.layout.detect:
            from batch.detect import load_detector

            self.detector = load_detector(config)
            self._check_provenance("detector_version", self.detector.info.version)
        self._check_provenance("bundle_version", self.classifier.served.manifest.bundle_version)

    def _complete(
        self,
        indices: Sequence[int],
        results: Sequence[EmbedResult],
        out: list[dict[str, Any]],
        images: Sequence[ImageInput | None],
    ) -> None:
        if not indices:
            return
        info = self.feature.info
        inputs = [embedding_input(r, info) for r in results]
        try:
            classification = self.classifier.classify(inputs)
        except HemascopeError:  # one bad embedding refuses the call: classify one by one to find it
            for row, one in zip(indices, inputs, strict=True):
                try:
                    out[row] |= verdicts(self.classifier.classify([one]), out, [row])[0]
                except HemascopeError as exc:
                    out[row] |= _error("classify", exc)
        else:
            for row, fields in zip(indices, verdicts(classification, out, indices), strict=True):
                out[row] |= fields
        if self.detector is not None:
            from batch.detect import detections

            for row, found in zip(
                indices, detections(self.detector, [images[i] for i in indices]), strict=True
            ):
                if isinstance(found, HemascopeError):
                    out[row] |= _error("detect", found)
                else:
                    out[row]["detections"] = found


def verdicts(
    classification: Classification, out: Sequence[dict[str, Any]], indices: Sequence[int]
) -> list[dict[str, Any]]:
    """Per embedding: each model's columns and the consensus, exactly as the gateway builds it."""
    from hemascope.consensus import ModelVote

    classes = list(classification.classes)
    rows: list[dict[str, Any]] = []
    for n, index in enumerate(indices):
        fields: dict[str, Any] = {}
        votes = []
        for output in classification.outputs:
            probs = output.probabilities[n].tolist()
            label = classes[int(output.labels[n])]
            reason = REFER_REASON_NAMES[int(output.refer_reason[n])]
            malignant = float(output.malignant[n])
            fields |= {
                f"{output.name}_label": label,
                f"{output.name}_probabilities": probs,
                f"{output.name}_malignant_probability": malignant,
                f"{output.name}_refer_reason": reason,
            }
            votes.append(
                ModelVote(
                    model=output.name,
                    label=label,
                    probabilities=dict(zip(classes, probs, strict=True)),
                    malignant_probability=malignant,
                    abstain=bool(output.abstain[n]),
                    refer_reason=reason,
                    atypical_acquisition=bool(output.atypical_acquisition[n]),
                )
            )
        verdict = consensus(votes, classes, input_reason=out[index]["input_reason"])
        fields |= {
            "label": verdict.label,
            "probability": verdict.probability,
            "agreement": verdict.agreement,
            "malignant_probability": verdict.malignant_probability,
            "malignant": verdict.malignant,
            "refer": verdict.refer,
            "refer_reason": "; ".join(verdict.refer_reasons),
            "atypical_acquisition": verdict.atypical_acquisition,
            "malignant_unconfirmed": verdict.malignant_unconfirmed,
        }
        rows.append(fields)
    return rows
