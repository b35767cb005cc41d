"""The exact NumPy prediction paths (hemascope.bundle.fast) against the libraries' own predict calls.

Equality is bit for bit (``np.array_equal``), on the committed default bundle and on small models fitted
here, for one row, a few rows and a batch; rows the paths were not built for go to the library.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from hemascope.bundle import LoadedBundle, load_bundle
from hemascope.bundle.fast import (
    ForestProba,
    KMeansDistances,
    LogisticProba,
    ScalerTransform,
    SvcProba,
    model_fast_path,
)
from hemascope.data import REPO_ROOT
from services.classifier.core import ClassifierCore, set_model_threads
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings

DEFAULT_BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
ROWS = (1, 2, 17)


@pytest.fixture(scope="module")
def bundle() -> LoadedBundle:
    loaded = load_bundle(DEFAULT_BUNDLE)
    set_model_threads(loaded, 1)  # as the classifier serves it: the library sums the trees in order
    return loaded


def embeddings(bundle: LoadedBundle, n: int, seed: int) -> NDArray[np.float64]:
    """Vectors spread like the training embeddings (the scaler's mean and scale), some far outside."""
    rng = np.random.default_rng(seed)
    spread = rng.choice([0.5, 1.0, 3.0], size=(n, 1))
    out: NDArray[np.float64] = bundle.scaler.mean_ + rng.normal(size=(n, bundle.manifest.dimension)) * (
        bundle.scaler.scale_ * spread
    )
    return out


def test_the_default_bundle_gets_fast_paths_for_the_scaler_the_forest_and_kmeans(
    bundle: LoadedBundle,
) -> None:
    fast = bundle.with_fast_paths()
    assert isinstance(fast.fast_scale, ScalerTransform)
    assert isinstance(fast.models["random_forest"].fast, ForestProba)
    assert isinstance(fast.models["kmeans"].fast, KMeansDistances)
    assert isinstance(fast.models["logistic_regression"].fast, LogisticProba)
    assert isinstance(fast.models["svm"].fast, SvcProba)
    assert fast.models["xgboost"].fast is None  # the library's path
    assert bundle.fast_scale is None and all(m.fast is None for m in bundle.models.values())


@pytest.mark.parametrize("n", ROWS)
def test_default_bundle_fast_paths_equal_the_library_bit_for_bit(bundle: LoadedBundle, n: int) -> None:
    fast = bundle.with_fast_paths()
    for seed in range(5):
        matrix = embeddings(bundle, n, seed)
        scaled = bundle.scale(matrix)
        assert np.array_equal(fast.scale(matrix), scaled)
        assert np.array_equal(fast.scale(matrix.astype(np.float32)), bundle.scale(matrix.astype(np.float32)))
        for name, model in bundle.models.items():
            assert np.array_equal(fast.models[name].proba(scaled), model.proba(scaled)), name
        forest = bundle.models["random_forest"].estimator
        assert np.array_equal(fast.models["random_forest"].raw_proba(scaled), forest.predict_proba(scaled))
        kmeans = bundle.models["kmeans"].estimator
        assert np.array_equal(KMeansDistances(kmeans)(scaled), kmeans.transform(scaled))


def test_forest_rows_on_a_split_threshold_go_left_as_in_the_trees(bundle: LoadedBundle) -> None:
    """Features set exactly to split thresholds (as float32, which the trees compare) take the library's
    branch; the leaves reached are the trees' own ``apply``."""
    forest = bundle.models["random_forest"].estimator
    path = ForestProba(forest)
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(6, bundle.manifest.dimension))
    for i, estimator in enumerate(forest.estimators_[:6]):
        tree = estimator.tree_
        inner = np.flatnonzero(tree.children_left >= 0)
        rows[i, tree.feature[inner]] = tree.threshold[inner].astype(np.float32)
    leaves = path.leaves(rows)
    for t, estimator in enumerate(forest.estimators_):
        own = estimator.apply(rows.astype(np.float32))
        assert np.array_equal(leaves[:, t] - path.roots[t], own)
    assert np.array_equal(path(rows), forest.predict_proba(rows))


def test_forest_fast_path_on_forests_fitted_here() -> None:
    """Deep trees, string labels, three classes, a class missing from some bootstrap samples."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 6))
    y = np.array(["b", "a", "c"])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1.2).astype(int)]
    for params in ({"n_estimators": 7, "max_depth": None}, {"n_estimators": 30, "max_depth": 3}):
        forest = RandomForestClassifier(random_state=0, n_jobs=1, **params).fit(x, y)  # type: ignore[arg-type]
        path = model_fast_path(forest)
        assert isinstance(path, ForestProba)
        rows = rng.normal(size=(40, 6)) * 2
        assert np.array_equal(path(rows), forest.predict_proba(rows))
        assert np.array_equal(path(rows[:1]), forest.predict_proba(rows[:1]))


def test_kmeans_and_scaler_fast_paths_on_models_fitted_here() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 9)) * rng.uniform(0.1, 10, size=9) + rng.normal(size=9) * 5
    scaler = StandardScaler().fit(x)
    kmeans = KMeans(4, n_init=2, random_state=0).fit(scaler.transform(x))
    rows = rng.normal(size=(33, 9)) * 4
    assert np.array_equal(ScalerTransform(scaler)(rows), scaler.transform(rows))
    no_mean = StandardScaler(with_mean=False).fit(x)
    assert np.array_equal(ScalerTransform(no_mean)(rows), no_mean.transform(rows))
    path = model_fast_path(kmeans)
    assert isinstance(path, KMeansDistances)
    scaled = scaler.transform(rows)
    assert np.array_equal(path(scaled), kmeans.transform(scaled))
    assert np.array_equal(path(scaled[:1]), kmeans.transform(scaled[:1]))


def test_logistic_fast_path_on_models_fitted_here() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(150, 7))
    y = np.argmax(x[:, :4] + rng.normal(size=(150, 4)) * 0.3, axis=1)
    rows = rng.normal(size=(21, 7)) * 3
    for params in ({}, {"C": 0.01, "fit_intercept": False}):
        model = LogisticRegression(max_iter=500, **params).fit(x, y)  # type: ignore[arg-type]
        path = model_fast_path(model)
        assert isinstance(path, LogisticProba)
        assert np.array_equal(path(rows), model.predict_proba(rows))
        assert np.array_equal(path(rows[:1]), model.predict_proba(rows[:1]))
    binary = LogisticRegression().fit(x, (y > 1).astype(int))
    assert model_fast_path(binary) is None  # two classes: the library's own path


@pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
def test_svm_fast_path_on_models_fitted_here() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(90, 5))
    y = np.argmax(x[:, :3] + rng.normal(size=(90, 3)) * 0.5, axis=1)
    rows = rng.normal(size=(13, 5)) * 2
    for kernel in ("rbf", "linear"):
        model = SVC(kernel=kernel, probability=True, random_state=0).fit(x, y)
        path = model_fast_path(model)
        assert isinstance(path, SvcProba)
        assert np.array_equal(path(rows), model.predict_proba(rows))
        assert np.array_equal(path(rows[:1]), model.predict_proba(rows[:1]))
        assert np.array_equal(path(np.asfortranarray(rows)), model.predict_proba(rows))
    assert model_fast_path(SVC(kernel="rbf").fit(x, y)) is None  # no probability estimates


def test_rows_the_paths_were_not_built_for_go_to_the_library(bundle: LoadedBundle) -> None:
    fast = bundle.with_fast_paths()
    scaled = bundle.scale(embeddings(bundle, 2, 0))
    scaled[1, 5] = np.nan
    forest = bundle.models["random_forest"]
    assert np.array_equal(fast.models["random_forest"].raw_proba(scaled), forest.raw_proba(scaled))
    many = bundle.scale(embeddings(bundle, ForestProba.MAX_ROWS + 1, 3))  # a big batch: the library's walk
    assert np.array_equal(fast.models["random_forest"].raw_proba(many), forest.raw_proba(many))
    with pytest.raises(ValueError, match="NaN"):  # the library's own refusal, not a made-up answer
        fast.models["kmeans"].raw_proba(scaled)
    with pytest.raises(ValueError, match="7 features"):  # a wrong width: the library's error
        fast.scale(np.zeros((1, 7)))


@pytest.fixture(scope="module")
def cores() -> Iterator[tuple[ClassifierCore, ClassifierCore]]:
    made = []
    for fast in (False, True):
        core = ClassifierCore(ClassifierSettings(bundle=DEFAULT_BUNDLE, metrics_port=None, fast_predict=fast))
        core.load()
        made.append(core)
    yield made[0], made[1]
    for core in made:
        core.close()


def test_classifier_core_answers_the_same_with_and_without_fast_paths(
    bundle: LoadedBundle, cores: tuple[ClassifierCore, ClassifierCore]
) -> None:
    library, fast = cores
    assert fast.served.bundle.models["random_forest"].fast is not None
    assert library.served.bundle.models["random_forest"].fast is None
    matrix = embeddings(bundle, 9, 11).astype(np.float32)
    items = [EmbeddingInput(row, len(row)) for row in matrix]
    for chosen in (items[:1], items):
        expected, got = library.classify(chosen), fast.classify(chosen)
        assert [o.name for o in got.outputs] == list(bundle.manifest.models)
        for want, have in zip(expected.outputs, got.outputs, strict=True):
            for field in dataclasses.fields(want):
                a, b = getattr(want, field.name), getattr(have, field.name)
                assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, (want.name, field.name)
        # one projection per call serves every model: the scores are the OOD model's own, label by label
        assert bundle.ood is not None
        scaled = bundle.scale(np.stack([item.values for item in chosen]))
        for output in got.outputs:
            assert np.array_equal(output.ood_score, bundle.ood.score(scaled, output.labels)), output.name


def test_the_fast_paths_survive_a_reload(cores: tuple[ClassifierCore, ClassifierCore]) -> None:
    _, fast = cores
    fast.reload()
    assert isinstance(fast.served.bundle.models["random_forest"].fast, ForestProba)
