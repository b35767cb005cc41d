"""The classifier service's core: one immutable bundle reference, swapped whole on reload. No gRPC here.

Every call reads the reference once and is answered entirely by that bundle. A reload (RPC or watcher)
loads and verifies a complete new bundle first and only then replaces the reference, so a call never sees a
half-loaded bundle; a failed reload leaves the old bundle serving and is remembered for ListModels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from numpy.typing import NDArray
from opentelemetry import trace

from hemascope.bundle import BundleError, LoadedBundle, Manifest, OodModel, load_bundle
from hemascope.errors import HemascopeError, InvalidArgument, Unavailable
from hemascope.logs import get_logger
from hemascope.site.profile import SiteProfile
from hemascope.tracing import set_attributes, step
from services.classifier.acquisition import Acquisition
from services.classifier.inputs import EmbeddingInput, embedding_matrix, select_models
from services.classifier.metrics import (
    ABSTENTIONS,
    ATYPICAL_ACQUISITION,
    MODEL_SECONDS,
    OUT_OF_DISTRIBUTION,
    PREDICTIONS,
    RELOADS,
    UNCHECKED_ACQUISITION,
)
from services.classifier.profiles import ProfileSet, load_profiles
from services.classifier.settings import ClassifierSettings
from services.classifier.watcher import BundleWatcher, manifest_fingerprint

log = get_logger(__name__)
MAX_PATH_CHARS = 4096


class ReloadPathRefused(HemascopeError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "RELOAD_PATH_REFUSED"


@dataclass(frozen=True)
class ServedBundle:
    """A completely loaded bundle with what serving needs precomputed."""

    bundle: LoadedBundle
    fingerprint: str | None  # of the manifest as read just before loading
    malignant: NDArray[np.intp]  # indices of the malignant classes
    profiles: ProfileSet = field(default_factory=ProfileSet)  # the site profiles for this bundle

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest


@dataclass(frozen=True)
class ModelOutput:
    """One model's predictions for every embedding of a call (row i = embedding i)."""

    name: str
    version: str
    probabilities: NDArray[np.float64]  # N x classes, bundle class order, rows sum to 1
    labels: NDArray[np.intp]  # argmax per row
    confidence: NDArray[np.float64]  # max per row
    malignant: NDArray[np.float64]  # sum over the malignant classes
    abstain: NDArray[np.bool_]  # refer to a human: low confidence, out of distribution or not a single cell
    #: OOD score (Mahalanobis distance to the label's training cells); zeros without an OOD model
    ood_score: NDArray[np.float64]
    out_of_distribution: NDArray[np.bool_]  # ood_score > the model's OOD threshold
    #: ReferReason per row: 0 none, 1 confidence, 2 OOD, 3 both, 4 not a single-cell image (wins),
    #: 5 atypical acquisition (only when no other reason applies)
    refer_reason: NDArray[np.int64]
    #: distance of the acquisition fingerprint to the reference of the label; zeros where unchecked
    acquisition_score: NDArray[np.float64]
    #: the label was never validated on images taken like this one (see hemascope.bundle.site)
    atypical_acquisition: NDArray[np.bool_]
    #: the row carried a fingerprint of the reference's revision and the bundle has a reference
    acquisition_checked: NDArray[np.bool_]


REFER_NONE, REFER_LOW_CONFIDENCE, REFER_OOD, REFER_BOTH, REFER_NOT_SINGLE_CELL = 0, 1, 2, 3, 4
REFER_ATYPICAL_ACQUISITION = 5
#: ModelOutput.refer_reason codes in words: classifier.proto's ReferReason names without their prefix, the
#: keys of hemascope.consensus.REFER_WORDS ("" for none).
REFER_REASON_NAMES = (
    "",
    "LOW_CONFIDENCE",
    "OUT_OF_DISTRIBUTION",
    "LOW_CONFIDENCE_AND_OUT_OF_DISTRIBUTION",
    "NOT_SINGLE_CELL",
    "ATYPICAL_ACQUISITION",
)


@dataclass(frozen=True)
class Classification:
    bundle_version: str
    classes: tuple[str, ...]
    outputs: tuple[ModelOutput, ...]  # in the order the models were requested
    count: int  # embeddings classified
    site_profile: str = ""  # the site profile applied to every output; "" for the bundle alone


@dataclass(frozen=True)
class ReloadOutcome:
    bundle_version: str
    previous_version: str
    model_count: int


def set_model_threads(bundle: LoadedBundle, threads: int) -> None:
    """Caps the threads each of the bundle's models uses per prediction (where the model has ``n_jobs``)."""
    for model in bundle.models.values():
        get_params = getattr(model.estimator, "get_params", None)
        if get_params is not None and "n_jobs" in get_params():
            model.estimator.set_params(n_jobs=threads)


def _serve(
    bundle: LoadedBundle,
    fingerprint: str | None,
    threads: int,
    profile_dir: Path | None = None,
    fast: bool = False,
) -> ServedBundle:
    set_model_threads(bundle, threads)
    if fast:
        bundle = bundle.with_fast_paths()
    manifest = bundle.manifest
    unknown = sorted(set(manifest.malignant_classes) - set(manifest.classes))
    if unknown or not manifest.models:
        problem = f"malignant classes {unknown} are not among its classes" if unknown else "it has no models"
        raise BundleError(f"bundle {manifest.bundle_version} cannot serve: {problem}")
    malignant = np.array([manifest.classes.index(c) for c in manifest.malignant_classes], dtype=np.intp)
    return ServedBundle(bundle, fingerprint, malignant, load_profiles(profile_dir, manifest))


class _OodScores:
    """OOD scores for one call: the site profile's own OOD model when it has one, else the bundle's (None:
    no scores); the call's embeddings are projected once, for the first model that needs it."""

    def __init__(self, served: ServedBundle, profile: SiteProfile | None, scaled: NDArray[np.float64]):
        own = profile.ood if profile is not None else None
        self.model: OodModel | None = own if own is not None else served.bundle.ood
        self._scaled = scaled
        self._projected: NDArray[np.float64] | None = None

    def __call__(self, labels: NDArray[np.intp]) -> NDArray[np.float64] | None:
        if self.model is None:
            return None
        if self._projected is None:
            self._projected = self.model.project(self._scaled)
        return self.model.score_projected(self._projected, labels)


def _output(
    name: str,
    served: ServedBundle,
    probs: NDArray[np.float64],
    ood_scores: _OodScores,
    not_single_cell: NDArray[np.bool_],
    acquisition: Acquisition,
    profile: SiteProfile | None = None,
) -> ModelOutput:
    entry = served.bundle.models[name].entry
    abstain_threshold, ood_threshold = entry.abstain_threshold, entry.ood_threshold
    if profile is not None:  # the site's thresholds (its own OOD reference is in ood_scores)
        correction = profile.models[name]
        abstain_threshold, ood_threshold = correction.abstain_threshold, correction.ood_threshold
    if not np.isfinite(probs).all():
        raise HemascopeError(f"model {name} produced non-finite probabilities", reason="MODEL_FAILURE")
    probs = np.clip(probs, 0.0, 1.0)
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    labels = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), labels]
    low_confidence = confidence < abstain_threshold
    scores = ood_scores(labels) if ood_threshold > 0 else None
    ood_score = np.zeros(len(probs)) if scores is None else scores
    ood = ood_score > ood_threshold if scores is not None else np.zeros(len(probs), dtype=np.bool_)
    acquisition_score, atypical = acquisition.judge(served.bundle.site, labels)
    reason = np.where(low_confidence, REFER_LOW_CONFIDENCE, REFER_NONE) + np.where(ood, REFER_OOD, 0)
    reason = np.where((reason == REFER_NONE) & atypical, REFER_ATYPICAL_ACQUISITION, reason)
    reason = np.where(not_single_cell, REFER_NOT_SINGLE_CELL, reason)
    return ModelOutput(
        name=name,
        version=entry.version,
        probabilities=probs,
        labels=labels,
        confidence=confidence,
        malignant=probs[:, served.malignant].sum(axis=1),
        abstain=low_confidence | ood | not_single_cell | atypical,
        ood_score=ood_score,
        out_of_distribution=ood,
        refer_reason=reason.astype(np.int64),
        acquisition_score=acquisition_score,
        atypical_acquisition=atypical,
        acquisition_checked=acquisition.checked.copy(),
    )


class ClassifierCore:
    """Serves the models of one bundle and swaps in new bundles atomically."""

    def __init__(self, settings: ClassifierSettings, tracer: trace.Tracer | None = None) -> None:
        self.settings = settings
        self._tracer = tracer or trace.NoOpTracer()
        self._served: ServedBundle | None = None
        self._reload_lock = threading.Lock()
        self._last_error = ""
        self._watcher: BundleWatcher | None = None

    # lifecycle -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Loads the configured bundle (BundleError if none is set or it is bad); starts the watcher."""
        if self.settings.bundle is None:
            raise BundleError(
                "no model bundle configured: set HEMASCOPE_CLASSIFIER_BUNDLE (or --bundle) to a bundle "
                "directory"
            )
        self.reload()
        if self.settings.watch_interval_s > 0 and self._watcher is None:
            self._watcher = BundleWatcher(self, self.settings.watch_interval_s)
            self._watcher.start()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    @property
    def served(self) -> ServedBundle:
        served = self._served
        if served is None:
            raise Unavailable("the model bundle is still loading; retry shortly", reason="NOT_READY")
        return served

    @property
    def last_reload_error(self) -> str:
        return self._last_error

    # reload ----------------------------------------------------------------------------------------------
    def current_root(self) -> Path | None:
        """The directory being served (or, before the first load, the configured one)."""
        served = self._served
        return served.bundle.root if served is not None else self.settings.bundle

    def reload(self, path: str | Path | None = None) -> ReloadOutcome:
        """Loads ``path`` (default: the directory being served) completely, then swaps it in.

        Raises :class:`BundleError` (old bundle still serving) or :class:`ReloadPathRefused`.
        """
        with self._reload_lock:
            root = self._reload_root(path)
            previous = self._served
            started = time.perf_counter()
            fingerprint = manifest_fingerprint(root)
            try:
                served = _serve(
                    load_bundle(root),
                    fingerprint,
                    self.settings.model_threads,
                    self.settings.site_profiles,
                    self.settings.fast_predict,
                )
            except Exception as exc:  # whatever a damaged bundle throws, the old one keeps serving
                error = exc if isinstance(exc, BundleError) else _unexpected(root, exc)
                self._last_error = error.message
                RELOADS.labels("failed").inc()
                log.warning("bundle_load_failed", error=error.message, kept=_version(previous))
                if error is exc:
                    raise
                raise error from exc
            self._served = served  # the swap: one reference assignment
            self._last_error = ""
            RELOADS.labels("loaded").inc()
            log.info(
                "bundle_loaded",
                version=served.manifest.bundle_version,
                previous=_version(previous),
                models=list(served.manifest.models),
                seconds=round(time.perf_counter() - started, 3),
            )
            return ReloadOutcome(
                served.manifest.bundle_version, _version(previous), len(served.bundle.models)
            )

    def _reload_root(self, path: str | Path | None) -> Path:
        current = self.current_root()
        if path and (len(str(path)) > MAX_PATH_CHARS or any(ord(c) < 32 for c in str(path))):
            raise InvalidArgument(
                f"path must be at most {MAX_PATH_CHARS} characters without NUL or control characters",
                reason="BAD_PATH",
                field="path",
            )
        if not path:
            if current is None:
                raise BundleError("no model bundle configured and no path given")
            return current
        requested = Path(path)
        if not self.settings.allow_reload_path and (
            current is None or requested.resolve() != current.resolve()
        ):
            raise ReloadPathRefused(
                "this service only reloads the bundle it serves (allow_reload_path is off); send no path",
                field="path",
            )
        return requested

    # classification --------------------------------------------------------------------------------------
    def classify(
        self, embeddings: Sequence[EmbeddingInput], models: Sequence[str] = (), site_profile: str = ""
    ) -> Classification:
        """Runs the chosen models (default all) on the embeddings, with the bundle served at call time and,
        when ``site_profile`` names one, that site's profile applied (:mod:`hemascope.site.profile`)."""
        served = self.served  # one snapshot for the whole call
        manifest = served.manifest
        with step(
            self._tracer,
            "classifier.classify",
            bundle_version=manifest.bundle_version,
            backbone=manifest.backbone,
            items=len(embeddings),
            site_profile=site_profile or None,
        ):
            return self._classify(served, embeddings, models, site_profile)

    def _classify(
        self,
        served: ServedBundle,
        embeddings: Sequence[EmbeddingInput],
        models: Sequence[str],
        site_profile: str,
    ) -> Classification:
        manifest = served.manifest
        profile = served.profiles.get(site_profile)
        names = select_models(manifest, models)
        matrix = embedding_matrix(
            manifest,
            embeddings,
            max_items=self.settings.max_embeddings,
            require_provenance=self.settings.require_provenance,
        )
        scaled = served.bundle.scale(matrix)
        not_single_cell = np.array([item.not_single_cell for item in embeddings], dtype=np.bool_)
        acquisition = Acquisition.of(embeddings, served.bundle.site)
        if served.bundle.site is not None:
            UNCHECKED_ACQUISITION.inc(int((~acquisition.checked).sum()))
        ood_scores = _OodScores(served, profile, scaled)
        outputs = []
        for name in names:
            with step(
                self._tracer,
                "classifier.model",
                model=name,
                model_version=served.bundle.models[name].entry.version,
                backbone=manifest.backbone,
            ) as span:
                started = time.perf_counter()
                if profile is None:
                    probs = served.bundle.models[name].proba(scaled)
                else:
                    _, probs = profile.proba(served.bundle, name, scaled)
                MODEL_SECONDS.labels(name).observe(time.perf_counter() - started)
                output = _output(name, served, probs, ood_scores, not_single_cell, acquisition, profile)
                set_attributes(span, {"abstentions": int(output.abstain.sum())})
            PREDICTIONS.labels(name).inc(len(matrix))
            ABSTENTIONS.labels(name).inc(int(output.abstain.sum()))
            OUT_OF_DISTRIBUTION.labels(name).inc(int(output.out_of_distribution.sum()))
            ATYPICAL_ACQUISITION.labels(name).inc(int(output.atypical_acquisition.sum()))
            outputs.append(output)
        return Classification(
            manifest.bundle_version,
            tuple(manifest.classes),
            tuple(outputs),
            len(matrix),
            site_profile if profile is not None else "",
        )


def _unexpected(root: Path, exc: Exception) -> BundleError:
    if not isinstance(exc, OSError):
        log.error("bundle_load_crashed", root=str(root), exc_info=exc)
    return BundleError(f"cannot load the bundle in {root}: {type(exc).__name__}: {exc}")


def _version(served: ServedBundle | None) -> str:
    return served.manifest.bundle_version if served is not None else ""
