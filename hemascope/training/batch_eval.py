"""Scoring a batch result (``hemascope batch analyze ... --out OUT``) without embedding anything again.

An image's true class is the name of the folder it was read from (folder-per-class datasets, as everywhere
else); rows whose folder is not one of the result's classes are counted as unlabelled and left out. Each
model is scored on its stored probabilities, and the consensus on the mean of them (what the consensus
label is) with the stored refer flags.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from hemascope.datasets import MALIGNANT_CLASSES
from hemascope.errors import InvalidArgument
from hemascope.training.sitemetrics import site_metrics

_CLASSES_KEY = b"hemascope.classes"
_SUFFIX = "_probabilities"


def evaluate_batch(out: Path) -> dict[str, Any]:
    """Metrics per model and for the consensus over the labelled rows of the batch result in ``out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(out.glob("part-*.parquet"))
    if not parts:
        raise InvalidArgument(f"{out} holds no part-*.parquet: not a batch analyze result", field="batch")
    tables = [pq.read_table(part) for part in parts]
    metadata = tables[0].schema.metadata or {}
    if _CLASSES_KEY not in metadata:
        raise InvalidArgument(f"{parts[0].name} does not name its classes: not a batch analyze result")
    classes: list[str] = json.loads(metadata[_CLASSES_KEY])
    table = pa.concat_tables(tables, promote_options="default")
    columns = set(table.column_names)
    models = sorted(name.removesuffix(_SUFFIX) for name in columns if name.endswith(_SUFFIX))
    if not models or "refer" not in columns:
        raise InvalidArgument(f"{out} was made without classification (batch embed): nothing to score")
    folders = [PurePosixPath(str(p).replace("\\", "/")).parent.name for p in table.column("path").to_pylist()]
    labelled = np.array([folder in classes for folder in folders], dtype=np.bool_)
    if not labelled.any():
        raise InvalidArgument(
            f"no image of {out} was read from a folder named after a class: nothing to score"
        )
    y = np.array([classes.index(f) for f, ok in zip(folders, labelled, strict=True) if ok], dtype=np.int64)
    malignant = [classes.index(c) for c in MALIGNANT_CLASSES if c in classes]
    per_model: dict[str, Any] = {}
    probas = []
    for model in models:
        proba = np.array(table.column(f"{model}{_SUFFIX}").to_pylist(), dtype=np.float64)[labelled]
        referred = np.array(table.column(f"{model}_refer_reason").to_pylist(), dtype=object)[labelled] != ""
        per_model[model] = site_metrics(y, proba, classes, malignant, referred.astype(np.bool_))
        probas.append(proba)
    refer = np.array(table.column("refer").to_pylist(), dtype=np.bool_)[labelled]
    consensus = site_metrics(y, np.mean(probas, axis=0), classes, malignant, refer)
    return {
        "batch": str(out),
        "images": table.num_rows,
        "labelled": int(labelled.sum()),
        "unlabelled": int((~labelled).sum()),
        "classes": classes,
        "models": per_model,
        "consensus": consensus,
    }
