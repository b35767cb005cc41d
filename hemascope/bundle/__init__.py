"""Model bundles: a directory with ``manifest.json`` and model files that load without running code.

Layout::

    BUNDLE/manifest.json        what the bundle is (:class:`Manifest`), with a SHA-256 per file
    BUNDLE/scaler.skops         StandardScaler fitted on the training part only
    BUNDLE/<model>.skops        scikit-learn models (skops; only allow-listed types are loaded)
    BUNDLE/xgboost.json         XGBoost's own JSON model format
    BUNDLE/ood.npz              optional out-of-distribution model (plain arrays, loaded without pickle)
    BUNDLE/site.npz             optional acquisition reference per class (plain arrays, likewise)

Loading checks every file against the manifest's hash before parsing it, so a tampered or truncated file
fails with :class:`BundleError` naming the file; skops refuses any type outside ``TRUSTED_TYPES``, and the
top-level object of each file must itself be a trusted type that agrees with the manifest (dimension,
classes, k-means cluster map; see :mod:`hemascope.bundle.checks`).
"""

from hemascope.bundle.load import LoadedBundle, LoadedModel, load_bundle
from hemascope.bundle.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    TRUSTED_TYPES,
    BundleError,
    Manifest,
    ModelEntry,
    ModelKind,
    apply_temperature,
    softmax,
)
from hemascope.bundle.ood import OOD_FILE, OodModel
from hemascope.bundle.save import TrainedModel, save_bundle

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "OOD_FILE",
    "TRUSTED_TYPES",
    "BundleError",
    "LoadedBundle",
    "LoadedModel",
    "Manifest",
    "ModelEntry",
    "ModelKind",
    "OodModel",
    "TrainedModel",
    "apply_temperature",
    "load_bundle",
    "save_bundle",
    "softmax",
]
