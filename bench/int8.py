"""The int8 backbone against its fp32 source: throughput of the raw ONNX Runtime sessions and the classifiers'
macro-F1 on embeddings of each, on held-out images and leave-one-source-out, in one run.

Run (after ``hemascope train quantize --sources configs/data/three-labs.yaml``)::

    .venv/bin/python bench/int8.py [--sources configs/data/three-labs.yaml] [--seconds 4] [--models ...]

1. **Throughput**: both graphs' sessions with the feature service's settings (all cores, no spinning), on the
   same served inputs (real images, prepared with the default option), batch 1 and 8; phases alternate
   fp32, int8, fp32, int8 so that drift in the machine's load falls on both, and the best of each is kept.
   Other processes' CPU share per phase is printed (disturbed above 10%).
2. **Accuracy**: every image of the sources embedded by both backbones (in-process, as training does). On
   the grouped split that bundles are trained with: each model fitted on the FIT part (with a scaler), scored
   on the test part (macro-F1, myeloblast sensitivity) and on the evaluation-only sets. Leave-one-source-out:
   the same frozen embeddings in every fold for both (the int8 backbone is not re-quantised per fold), so
   the table compares the two backbones under one protocol, not with the fine-tune-per-fold table of the
   bundle's report. Also: cosine between the two embeddings of each image.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from benchlib.cpu import DISTURBED_FOREIGN_PCT, cpu_snapshot, cpu_usage
from numpy.typing import NDArray
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from hemascope.datasets import CLASSES, MALIGNANT_CLASSES
from hemascope.training.loso import loso_folds, run_loso
from hemascope.training.models import MODELS, fit_model
from hemascope.training.multisource import load_sourced
from hemascope.training.sets import embed_set
from hemascope.training.sources import load_spec

FP32 = "efficientnet_lite0_blood"
INT8 = "efficientnet_lite0_blood_int8"
DEFAULT_MODELS = ("logistic_regression", "svm", "random_forest", "xgboost", "kmeans")


def _session(name: str) -> Any:
    from hemascope.files import file_sha256
    from services.feature.backbones import get_spec, weights_file
    from services.feature.onnx_export import ensure_onnx
    from services.feature.runtime import OnnxEmbedder
    from services.feature.settings import FeatureSettings

    settings = FeatureSettings()  # type: ignore[call-arg]
    spec = get_spec(name)
    weights = weights_file(name, None)
    path = ensure_onnx(spec, weights, file_sha256(weights), settings.model_cache_dir)
    return OnnxEmbedder(path, intra_op_threads=settings.intra_op_threads, use_gpu=False, allow_spinning=False)


def throughput(pixels: NDArray[np.uint8], seconds: float, rounds: int = 2) -> dict[str, Any]:
    sessions = {"fp32": _session(FP32), "int8": _session(INT8)}
    best: dict[str, dict[int, float]] = {"fp32": {}, "int8": {}}
    phases: list[dict[str, Any]] = []
    for _ in range(rounds):
        for kind, session in sessions.items():
            for batch in (1, 8):
                inputs = pixels[:batch]
                for _ in range(3):
                    session.run(inputs)
                before = cpu_snapshot()
                done, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds:
                    session.run(inputs)
                    done += batch
                rate = done / (time.perf_counter() - started)
                usage = cpu_usage(before, cpu_snapshot())
                phase = {
                    "kind": kind,
                    "batch": batch,
                    "img_s": round(rate, 1),
                    "foreign_pct": usage.foreign_pct,
                }
                phases.append(phase)
                print(json.dumps(phases[-1]), flush=True)
                best[kind][batch] = max(best[kind].get(batch, 0.0), rate)
    ratio = {batch: best["int8"][batch] / best["fp32"][batch] for batch in (1, 8)}
    disturbed = [p for p in phases if p["foreign_pct"] > DISTURBED_FOREIGN_PCT]
    return {"best_img_s": best, "ratio": ratio, "phases": phases, "disturbed_phases": len(disturbed)}


def _scores(y: NDArray[np.int64], pred: NDArray[np.int64]) -> dict[str, float]:
    blast = CLASSES.index(MALIGNANT_CLASSES[0])
    blasts = y == blast
    return {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(
            f1_score(y, pred, labels=list(range(len(CLASSES))), average="macro", zero_division=0)
        ),
        "myeloblast_sensitivity": float((pred[blasts] == blast).mean()) if blasts.any() else float("nan"),
        "n": len(y),
    }


def held_out(
    vectors: NDArray[np.float64],
    y: NDArray[np.int64],
    fit: NDArray[np.int64],
    tests: dict[str, NDArray[np.int64]],
    models: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Each model fitted on ``fit`` (scaled), its calls scored on each set of ``tests``."""
    from hemascope.training.fit import model_proba

    scaler = StandardScaler().fit(vectors[fit])
    out: dict[str, dict[str, Any]] = {}
    for name in models:
        spec = MODELS[name]
        fitted = fit_model(spec, scaler.transform(vectors[fit]), y[fit], len(CLASSES))
        out[name] = {}
        for part, rows in tests.items():
            if len(rows):
                proba = model_proba(spec, fitted, scaler.transform(vectors[rows]))
                out[name][part] = _scores(y[rows], proba.argmax(axis=1).astype(np.int64))
    return out


def _frozen(vectors: NDArray[np.float64]) -> Any:
    """A fold embedder that returns the same embeddings for every fold."""
    return lambda _fold: vectors


def accuracy(sources: Path, models: Sequence[str], seed: int) -> dict[str, Any]:
    sourced = load_sourced(load_spec(sources), log=print)
    paths = sourced.paths
    vectors: dict[str, NDArray[np.float64]] = {}
    seconds: dict[str, float] = {}
    for kind, name in (("fp32", FP32), ("int8", INT8)):
        started = time.perf_counter()
        vectors[kind] = embed_set(paths, backbone=name).vectors.astype(np.float64)
        seconds[kind] = time.perf_counter() - started
        print(f"embedded {len(paths)} images with {name} in {seconds[kind]:.0f} s", flush=True)
    a, b = vectors["fp32"], vectors["int8"]
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    split = sourced.split(seed)
    rows = sourced.train_rows
    tests = {"test": rows[split.test], "evaluation_sets": sourced.evaluation_rows}
    result: dict[str, Any] = {
        "images": len(paths),
        "embed_seconds": seconds,
        "cosine": {
            "min": float(cosine.min()),
            "p01": float(np.quantile(cosine, 0.01)),
            "mean": float(cosine.mean()),
        },
        "held_out": {k: held_out(v, sourced.y, rows[split.fit], tests, models) for k, v in vectors.items()},
    }
    folds = loso_folds(sourced.y, sourced.sites, sourced.groups, sourced.training, seed=seed)
    malignant = [CLASSES.index(c) for c in MALIGNANT_CLASSES]
    result["loso"] = {
        kind: {
            site: {
                m: {"macro_f1": r["macro_f1"], "myeloblast_sensitivity": r["myeloblast_sensitivity"]}
                for m, r in fold["models"].items()
            }
            for site, fold in run_loso(
                _frozen(v), sourced.y, folds, CLASSES, malignant, models, seed=seed
            ).items()
        }
        for kind, v in vectors.items()
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=Path("configs/data/three-labs.yaml"))
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput phase")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--seed", type=int, default=50)
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args(argv)
    from hemascope.training.quantize import served_inputs

    sourced = load_sourced(load_spec(args.sources))
    sample = [sourced.paths[int(i)] for i in sourced.train_rows[:: max(1, len(sourced.train_rows) // 8)][:8]]
    result: dict[str, Any] = {
        "throughput": throughput(served_inputs(sample, "cellcrop-hematoxylin"), args.seconds)
    }
    print(json.dumps({"ratio": result["throughput"]["ratio"]}), flush=True)
    if not args.skip_accuracy:
        result["accuracy"] = accuracy(args.sources, args.models.split(","), args.seed)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
