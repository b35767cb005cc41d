"""ClassifierCore without gRPC: probabilities, checks and errors, bundle tampering, reload and the watcher.

Bundles are tiny (8-d, 150 random vectors, all five model kinds) and built in tmp_path with save_bundle.
"""

from __future__ import annotations

import collections
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from hemascope.bundle import BundleError, TrainedModel, load_bundle, save_bundle
from hemascope.datasets import CLASSES
from hemascope.errors import HemascopeError
from services.classifier.core import ClassifierCore
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings
from services.classifier.synthetic import MODEL_NAMES, SyntheticSpec, build_synthetic_bundle, synthetic_data
from tests.classifier_fixtures import SPEC

X, Y = synthetic_data(SPEC, 40)
FC, NF, IA = (
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
)


class _Sneaky(collections.OrderedDict[str, int]):
    """Not a model: a type skops does not trust."""


def make_core(bundle: Path | None, **settings: Any) -> ClassifierCore:
    settings = {"allow_reload_path": True, **settings}
    core = ClassifierCore(ClassifierSettings(bundle=bundle, metrics_port=None, max_embeddings=64, **settings))
    core.load()
    return core


@pytest.fixture
def core(bundles: dict[str, Path]) -> Iterator[ClassifierCore]:
    made = make_core(bundles["v1"])
    yield made
    made.close()


def emb(values: Any = None, **fields: Any) -> EmbeddingInput:
    return EmbeddingInput(np.asarray(X[0] if values is None else values, dtype=np.float32), **fields)


def raises(call: Callable[[], object], code: grpc.StatusCode, reason: str) -> HemascopeError:
    with pytest.raises(HemascopeError) as info:
        call()
    assert (info.value.code, info.value.reason) == (code, reason), info.value.message
    return info.value


# classification -------------------------------------------------------------------------------------------


def test_every_model_gives_calibrated_distributions(core: ClassifierCore, bundles: dict[str, Path]) -> None:
    result = core.classify([emb(v) for v in X])
    expected = load_bundle(bundles["v1"]).predict(X)
    assert result.bundle_version == "v1" and result.classes == CLASSES and result.count == len(X)
    assert [o.name for o in result.outputs] == sorted(MODEL_NAMES)
    myeloblast = CLASSES.index("myeloblast")
    for out in result.outputs:
        assert out.version == f"v1-{out.name}"
        np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, atol=1e-9)
        np.testing.assert_allclose(out.probabilities, expected[out.name], atol=1e-6)
        assert (out.labels == out.probabilities.argmax(axis=1)).all()
        np.testing.assert_allclose(out.confidence, out.probabilities.max(axis=1))
        np.testing.assert_allclose(out.malignant, out.probabilities[:, myeloblast])
    accuracy = {o.name: float((o.labels == Y).mean()) for o in result.outputs}
    assert min(accuracy[n] for n in ("logistic_regression", "random_forest", "xgboost")) > 0.8, accuracy


def test_abstain_flag_follows_the_model_threshold(core: ClassifierCore) -> None:
    outputs = {o.name: o for o in core.classify([emb(v) for v in X]).outputs}
    svm = outputs["svm"]
    assert (svm.abstain == (svm.confidence < 0.8)).all() and svm.abstain.any() and not svm.abstain.all()
    assert not outputs["xgboost"].abstain.any()  # threshold 0: never abstains


def test_batch_rows_do_not_depend_on_each_other(core: ClassifierCore) -> None:
    batch = core.classify([emb(v) for v in X])
    for i in (0, 7):
        single = core.classify([emb(X[i])])
        for one, many in zip(single.outputs, batch.outputs, strict=True):
            np.testing.assert_allclose(one.probabilities[0], many.probabilities[i], atol=1e-9)


def test_model_selection_keeps_order_and_drops_duplicates(core: ClassifierCore) -> None:
    result = core.classify([emb()], ["xgboost", "kmeans", "xgboost"])
    assert [o.name for o in result.outputs] == ["xgboost", "kmeans"]


def test_models_use_the_configured_threads(core: ClassifierCore) -> None:
    models = core.served.bundle.models
    assert models["xgboost"].estimator.get_params()["n_jobs"] == 1 == models["random_forest"].estimator.n_jobs


def test_empty_provenance_is_accepted_unless_required(bundles: dict[str, Path]) -> None:
    strict = make_core(bundles["v1"], require_provenance=True)
    raises(lambda: strict.classify([emb()]), FC, "MISSING_PROVENANCE")
    full = emb(backbone=SPEC.backbone, weights_hash=SPEC.weights_hash, preprocessing=SPEC.preprocessing)
    assert strict.classify([full]).count == 1


BAD_CALLS: list[tuple[str, list[EmbeddingInput], list[str], grpc.StatusCode, str]] = [
    ("wrong dimension", [emb(np.ones(12))], [], FC, "WRONG_DIMENSION"),
    ("wrong backbone", [emb(np.ones(2048), backbone="resnet50")], [], FC, "WRONG_BACKBONE"),
    ("wrong weights", [emb(weights_hash="f" * 64)], [], FC, "WRONG_WEIGHTS"),
    ("wrong preprocessing", [emb(preprocessing="rgb-299")], [], FC, "WRONG_PREPROCESSING"),
    ("dimension field lies", [emb(dimension=9)], [], IA, "DIMENSION_MISMATCH"),
    ("nan", [emb(), emb(np.full(8, np.nan))], [], IA, "NON_FINITE_VALUES"),
    ("infinite", [emb(np.full(8, np.inf))], [], IA, "NON_FINITE_VALUES"),
    ("no embeddings", [], [], IA, "NO_EMBEDDINGS"),
    ("too many", [emb()] * 65, [], IA, "TOO_MANY_EMBEDDINGS"),
    ("unknown model", [emb()], ["xgboost", "vgg_svm"], NF, "UNKNOWN_MODEL"),
]


@pytest.mark.parametrize(
    ("name", "items", "models", "code", "reason"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS]
)
def test_bad_calls_are_refused(
    core: ClassifierCore,
    name: str,
    items: list[EmbeddingInput],
    models: list[str],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    error = raises(lambda: core.classify(items, models), code, reason)
    if reason == "UNKNOWN_MODEL":
        assert "vgg_svm" in error.message and "logistic_regression" in error.message
    if name == "nan":
        assert error.field == "embeddings[1].values"
    assert core.classify([emb()]).count == 1


def test_no_bundle_is_unavailable_then_a_clear_load_error() -> None:
    core = ClassifierCore(ClassifierSettings(bundle=None, metrics_port=None))
    raises(lambda: core.classify([emb()]), grpc.StatusCode.UNAVAILABLE, "NOT_READY")
    with pytest.raises(BundleError, match="HEMASCOPE_CLASSIFIER_BUNDLE"):
        core.load()


# bundle tampering ------------------------------------------------------------------------------------------


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest(path: Path, new: str = '"../kmeans.skops"') -> None:
    path.write_text(path.read_text().replace('"kmeans.skops"', new))


TAMPERING: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "flipped byte": ("xgboost.json", _flip, "xgboost.json does not match its manifest hash"),
    "truncated": ("random_forest.skops", lambda p: p.write_bytes(p.read_bytes()[:99]), "random_forest.skops"),
    "deleted model": ("svm.skops", Path.unlink, "bundle file missing: svm.skops"),
    "no manifest": ("manifest.json", Path.unlink, "no manifest.json"),
    "garbled manifest": ("manifest.json", lambda p: p.write_text("{not json"), "unreadable manifest.json"),
    "path escape": ("manifest.json", _edit_manifest, "bundle file missing: ../kmeans.skops"),
    "file not a name": ("manifest.json", lambda p: _edit_manifest(p, "5"), "cannot load the bundle in"),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_damaged_bundle_fails_with_a_clear_error(bundles: dict[str, Path], tmp_path: Path, name: str) -> None:
    file, damage, message = TAMPERING[name]
    root = Path(shutil.copytree(bundles["v1"], tmp_path / "b"))
    damage(root / file)
    with pytest.raises(BundleError, match=re.escape(message)) as info:
        make_core(root)
    assert info.value.code == FC


SCALER, LR = StandardScaler().fit(X), LogisticRegression().fit(X, Y)
REFUSED: dict[str, tuple[Any, Any, dict[str, Any], str]] = {
    "dict subclass as model": (SCALER, _Sneaky(a=1), {}, "types that are not allowed"),
    "function in the scaler": (FunctionTransformer(func=print), LR, {}, r"builtins\.print"),
    "numpy-only transformer": (FunctionTransformer(np.log1p).fit(X), LR, {}, "not an allowed bundle type"),
    "model for 3 features": (SCALER, LogisticRegression().fit(X[:, :3], Y), {}, "3 features"),
    "classes missing": (SCALER, LogisticRegression().fit(X, Y % 3), {}, "trained on classes"),
    "bad cluster map": (SCALER, KMeans(3, n_init=1).fit(X), {"cluster_to_class": [0, 1, 9]}, "cluster_to"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_untrusted_or_unfit_objects_are_refused(tmp_path: Path, name: str) -> None:
    scaler, model, extra, message = REFUSED[name]
    fields = {k: getattr(SPEC, k) for k in ("backbone", "weights_hash", "dimension", "preprocessing")}
    fields |= {"bundle_version": "odd", "classes": list(CLASSES), "malignant_classes": ["myeloblast"]}
    trained = TrainedModel(model, "kmeans" if extra else "sklearn", "1", extra=extra)
    save_bundle(tmp_path / "b", fields, scaler, {"m": trained})
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path / "b")


# reload ----------------------------------------------------------------------------------------------------


def test_reload_swaps_and_a_failed_reload_keeps_the_old_bundle(
    core: ClassifierCore, bundles: dict[str, Path], tmp_path: Path
) -> None:
    outcome = core.reload(bundles["v2"])
    assert (outcome.bundle_version, outcome.previous_version, outcome.model_count) == ("v2", "v1", 5)
    assert core.classify([emb()]).bundle_version == "v2" and core.current_root() == bundles["v2"]
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        core.reload(tmp_path)
    assert core.classify([emb()]).bundle_version == "v2" and "no manifest.json" in core.last_reload_error
    assert core.reload().bundle_version == "v2" and core.last_reload_error == ""


def test_reload_path_can_be_locked(bundles: dict[str, Path]) -> None:
    core = make_core(bundles["v1"], allow_reload_path=False)
    raises(lambda: core.reload(bundles["v2"]), grpc.StatusCode.PERMISSION_DENIED, "RELOAD_PATH_REFUSED")
    assert core.reload(bundles["v1"]).bundle_version == "v1"


def test_calls_during_reloads_all_succeed_on_a_whole_bundle(
    core: ClassifierCore, bundles: dict[str, Path]
) -> None:
    stop, seen, errors = threading.Event(), set(), []

    def hammer() -> None:
        while not stop.is_set():
            try:
                result = core.classify([emb(v) for v in X[:8]])
                assert len(result.outputs) == 5 and all(len(o.labels) == 8 for o in result.outputs)
                seen.add(result.bundle_version)
            except Exception as exc:  # collected, asserted below
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(12):
        core.reload(bundles["v2" if i % 2 == 0 else "v1"])
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == [] and seen == {"v1", "v2"}


def test_watcher_reloads_on_change_and_survives_a_bad_manifest(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    root = Path(shutil.copytree(bundles["v1"], tmp_path / "served"))
    core = make_core(root, watch_interval_s=0.02)
    try:
        build_synthetic_bundle(root, SyntheticSpec(version="v3", seed=3))
        _poll(lambda: core.served.manifest.bundle_version == "v3")
        (root / "manifest.json").write_text("{half a manifest")
        _poll(lambda: "unreadable" in core.last_reload_error)
        assert core.classify([emb()]).bundle_version == "v3"
        build_synthetic_bundle(root, SyntheticSpec(version="v4", seed=4))
        _poll(lambda: core.served.manifest.bundle_version == "v4")
    finally:
        core.close()


def _poll(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_embeddings_of_images_that_are_not_single_cells_are_referred_by_every_model(
    core: ClassifierCore,
) -> None:
    inputs = [
        emb(),
        emb(input_kind="multiple_cells"),
        emb(input_kind="single_cell"),
        emb(input_kind="no_cell"),
    ]
    result = core.classify(inputs)
    for output in result.outputs:
        assert output.abstain[1] and output.abstain[3]
        assert output.refer_reason[1] == output.refer_reason[3] == 4  # REFER_REASON_NOT_SINGLE_CELL
        assert output.refer_reason[0] == output.refer_reason[2] != 4  # unchecked and single cell: as before
        assert output.abstain[0] == output.abstain[2]
        np.testing.assert_array_equal(output.probabilities[1], output.probabilities[0])  # still computed


def test_refer_reason_names_are_the_protos_and_the_consensus_words() -> None:
    from hemascope.consensus import REFER_WORDS
    from hemascope.v1 import classifier_pb2
    from services.classifier.converters import REFER_REASONS
    from services.classifier.core import REFER_REASON_NAMES

    for code, name in enumerate(REFER_REASON_NAMES):
        proto = classifier_pb2.ReferReason.Name(REFER_REASONS[code]).removeprefix("REFER_REASON_")
        assert name == ("" if proto == "UNSPECIFIED" else proto)
    assert set(REFER_REASON_NAMES) - {""} == set(REFER_WORDS)
