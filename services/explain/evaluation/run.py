"""The whole evaluation: faithfulness on held-out images (and the probe), the sanity check, heat on the
cell, the gallery; results as a JSON-ready dict (:mod:`.report` renders the markdown)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle import LoadedBundle, load_bundle
from hemascope.datasets import CLASSES
from hemascope.files import file_sha256
from services.explain.cam import POOLED, CamExplainer
from services.explain.evaluation import cellheat, data, faithfulness, figures, sanity
from services.explain.evaluation.maps import ImageMaps, cached_maps, full_resolution, random_maps
from services.explain.network import SplitBackbone, split_backbone
from services.feature.backbones import get_spec, weights_file
from services.feature.onnx_export import ensure_onnx
from services.feature.runtime import OnnxEmbedder
from services.feature.settings import FeatureSettings

DEFAULT_WORK = Path("/tmp/hemascope-explain-eval")
GALLERY_MODELS = ("logistic_regression", "svm", "xgboost")
SHORT = {"logistic_regression": "LR", "svm": "SVM", "random_forest": "RF", "xgboost": "XGB", "kmeans": "KM"}


@dataclass
class EvalConfig:
    bundle: Path
    data: Path
    out: Path
    probe: Path | None = None
    work: Path = DEFAULT_WORK
    images: int = 100  # held-out test images, stratified over the classes
    probe_images: int = 50
    road_images: int = 30  # ROAD on this stratified subset of each set (imputation is CPU-heavy)
    random_seeds: int = 3  # random maps per image for deletion/insertion
    road_seeds: int = 2  # random maps per image for ROAD
    sanity_images: int = 30
    sanity_ablation_images: int = 10
    sanity_ablation_model: str = "xgboost"
    gallery_per_class: int = 2
    ablation_engine: str = POOLED  # how Ablation-CAM is computed (services.explain.cam.ABLATION_ENGINES)
    log: Callable[[str], None] = print


@dataclass
class SetScores:
    """Per image (rows) and model (columns)."""

    deletion_cam: NDArray[np.float64]
    deletion_random: NDArray[np.float64]  # mean over random seeds
    insertion_cam: NDArray[np.float64]
    insertion_random: NDArray[np.float64]
    road_cam: NDArray[np.float64]  # road_images rows
    road_random: NDArray[np.float64]
    heat_cam: NDArray[np.float64]
    heat_random: NDArray[np.float64]  # rows only: random maps ignore the model
    area: NDArray[np.float64]
    fallback: NDArray[np.bool_]
    curves: dict[str, dict[str, NDArray[np.float64]]]


_Set = tuple[list[data.EvalImage], NDArray[np.uint8], list[ImageMaps], list[cellheat.CellMask]]


def _subset(count: int, total: int) -> NDArray[np.int64]:
    """``count`` indices spread evenly over ``total`` (the images are ordered class by class)."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))


def score_set(
    scorer: faithfulness.Scorer,
    prepared: NDArray[np.uint8],
    maps: list[ImageMaps],
    masks: list[cellheat.CellMask],
    cfg: EvalConfig,
    name: str,
) -> SetScores:
    n, m, size = len(maps), len(scorer.models), prepared.shape[1]
    shape = (maps[0].heatmaps.shape[1], maps[0].heatmaps.shape[2])
    road_rows = set(_subset(cfg.road_images, n).tolist())
    out: dict[str, list[Any]] = {k: [] for k in ("dc", "dr", "ic", "ir", "rc", "rr", "hc", "hr", "a", "f")}
    del_curves, ins_curves = [], []
    started = time.perf_counter()
    for i, (pixels, im, mask) in enumerate(zip(prepared, maps, masks, strict=True)):
        cam_full = [full_resolution(h, size) for h in im.heatmaps]
        rand_full = [full_resolution(h, size) for h in random_maps(cfg.random_seeds, shape, seed=10_000 + i)]
        curves = faithfulness.deletion_insertion(scorer, pixels, cam_full + rand_full, im.predicted, seed=i)
        deletion, insertion = curves.auc("deletion"), curves.auc("insertion")  # maps x models
        diag = np.arange(m)
        out["dc"].append(deletion[diag, diag])
        out["dr"].append(deletion[m:].mean(axis=0))
        out["ic"].append(insertion[diag, diag])
        out["ir"].append(insertion[m:].mean(axis=0))
        del_curves.append(np.stack([curves.deletion[diag, diag], curves.deletion[m:].mean(axis=0)]))
        ins_curves.append(np.stack([curves.insertion[diag, diag], curves.insertion[m:].mean(axis=0)]))
        if i in road_rows:
            road = faithfulness.road_scores(
                scorer, pixels, cam_full + rand_full[: cfg.road_seeds], im.predicted
            )
            out["rc"].append(road[diag, diag])
            out["rr"].append(road[m:].mean(axis=0))
        out["hc"].append([cellheat.heat_share(f, mask.mask) for f in cam_full])
        out["hr"].append(np.nanmean([cellheat.heat_share(f, mask.mask) for f in rand_full]))
        out["a"].append(float(mask.mask.mean()))
        out["f"].append(mask.fallback)
        if (i + 1) % 10 == 0:
            cfg.log(f"  {name}: scored {i + 1}/{n} images ({time.perf_counter() - started:.0f} s)")
    dcurve, icurve = (
        np.stack(del_curves).mean(axis=0),
        np.stack(ins_curves).mean(axis=0),
    )  # 2 x models x steps
    curves_by_model = {
        model: {
            "deletion_cam": dcurve[0, j],
            "deletion_random": dcurve[1, j],
            "insertion_cam": icurve[0, j],
            "insertion_random": icurve[1, j],
        }
        for j, model in enumerate(scorer.models)
    }
    arr = {k: np.asarray(v) for k, v in out.items()}
    return SetScores(
        arr["dc"], arr["dr"], arr["ic"], arr["ir"], arr["rc"], arr["rr"],
        arr["hc"], arr["hr"], arr["a"], arr["f"].astype(bool), curves_by_model,
    )  # fmt: skip


def summarise_set(
    scores: SetScores, maps: list[ImageMaps], images: list[data.EvalImage], models: tuple[str, ...]
) -> dict[str, Any]:
    labels = np.asarray([im.label for im in images])
    summary: dict[str, Any] = {"images": len(images), "road_images": len(scores.road_cam), "models": {}}
    for j, model in enumerate(models):
        predicted = np.asarray([mp.predicted[j] for mp in maps])
        ins_del_cam = scores.insertion_cam[:, j] - scores.deletion_cam[:, j]
        ins_del_rand = scores.insertion_random[:, j] - scores.deletion_random[:, j]
        entry: dict[str, Any] = {
            "method": maps[0].methods[j],
            "accuracy": float((predicted == labels).mean()),
            "predicted_counts": {c: int((predicted == k).sum()) for k, c in enumerate(CLASSES)},
            "deletion": _paired(scores.deletion_cam[:, j], scores.deletion_random[:, j], False),
            "insertion": _paired(scores.insertion_cam[:, j], scores.insertion_random[:, j], True),
            "insertion_minus_deletion": _paired(ins_del_cam, ins_del_rand, True),
        }
        if len(scores.road_cam):
            entry["road"] = _paired(scores.road_cam[:, j], scores.road_random[:, j], True)
        entry["heat_on_cell"] = _heat_table(scores, j, images)
        summary["models"][model] = entry
    seconds = np.stack([mp.seconds for mp in maps])  # images x (forward, models...)
    if np.isfinite(seconds).any():
        forward = float(np.nanmedian(seconds[:, 0]))
        summary["speed"] = {"forward_ms_p50": 1000 * forward, "images": int(np.isfinite(seconds[:, 0]).sum())}
        for j, model in enumerate(models):
            cam = float(np.nanmedian(seconds[:, j + 1]))
            summary["models"][model]["cam_ms_p50"] = 1000 * cam
            summary["models"][model]["x_forward"] = (forward + cam) / forward
    summary["cell_area"] = _heat_table(scores, None, images)
    summary["segmentation_fallbacks"] = int(scores.fallback.sum())
    return summary


def _paired(cam: NDArray[np.float64], random: NDArray[np.float64], higher_is_better: bool) -> dict[str, Any]:
    result = faithfulness.paired(cam, random, higher_is_better)
    return {**asdict(result), "verdict": result.verdict}


def _heat_table(scores: SetScores, column: int | None, images: list[data.EvalImage]) -> dict[str, float]:
    """Mean heat share on the cell (``column`` None: the cell's area share) per class and per scanner."""
    values = scores.area if column is None else scores.heat_cam[:, column]
    ok = ~scores.fallback
    groups: dict[str, NDArray[np.bool_]] = {"all": ok}
    for k, c in enumerate(CLASSES):
        groups[c] = ok & (np.asarray([im.label for im in images]) == k)
    for scanner in sorted({im.scanner for im in images}):
        groups[scanner] = ok & (np.asarray([im.scanner for im in images]) == scanner)
    out = {g: float(np.nanmean(values[sel])) for g, sel in groups.items() if sel.any()}
    if column is not None:
        out["random_all"] = float(np.nanmean(scores.heat_random[ok]))
    return out


def run_sanity(
    backbone: SplitBackbone, bundle: LoadedBundle, explainer: CamExplainer, prepared: NDArray[np.uint8],
    cfg: EvalConfig,
) -> list[dict[str, Any]]:  # fmt: skip
    rows: list[dict[str, Any]] = []
    jobs = [("logistic_regression", "gradcam", cfg.sanity_images)]
    if cfg.sanity_ablation_model in bundle.models and cfg.sanity_ablation_images > 0:
        jobs.append((cfg.sanity_ablation_model, "ablationcam", cfg.sanity_ablation_images))
    for model, method, count in jobs:
        if model not in bundle.models:
            continue
        chosen = prepared[_subset(count, len(prepared))]
        results = [explainer.explain(p, model, None, method) for p in chosen]
        originals = np.stack([r.heatmap for r in results])
        classes = np.asarray([r.class_index for r in results], np.int64)
        for row in sanity.cascade(backbone, bundle, model, chosen, originals, classes, method):
            rows.append(asdict(row))
            cfg.log(f"  sanity {model} {row.stage}: spearman {row.spearman_mean:.3f}")
    return rows


def _gallery(cfg: EvalConfig, sets: dict[str, _Set]) -> None:
    rows = []
    for name, (images, prepared, maps, masks) in sets.items():
        per_label: dict[int, int] = {}
        for im, pixels, mp, mask in zip(images, prepared, maps, masks, strict=True):
            if per_label.get(im.label, 0) >= cfg.gallery_per_class:
                continue
            per_label[im.label] = per_label.get(im.label, 0) + 1
            cols = [mp.models.index(m) for m in GALLERY_MODELS if m in mp.models]
            captions = [
                f"{SHORT[mp.models[c]]}: {CLASSES[mp.predicted[c]][:11]} {mp.probabilities[c].max():.2f}"
                for c in cols
            ]
            rows.append(
                figures.GalleryRow(
                    pixels, f"{CLASSES[im.label]} ({name})", [mp.heatmaps[c] for c in cols], captions,
                    mask.mask,
                )
            )  # fmt: skip
    headers = [
        f"{SHORT[m]} {'Grad-CAM' if m == 'logistic_regression' else 'Ablation-CAM'}" for m in GALLERY_MODELS
    ]
    figures.gallery(rows, headers, cfg.out / "gallery.png")


def onnx_embedder(name: str) -> OnnxEmbedder:
    """The backbone's ONNX export (exported first if missing), on the CPU."""
    spec = get_spec(name)
    weights = weights_file(name, None)
    path = ensure_onnx(spec, weights, file_sha256(weights), FeatureSettings().model_cache_dir)  # type: ignore[call-arg]
    return OnnxEmbedder(path, use_gpu=False)


def run_evaluation(cfg: EvalConfig) -> dict[str, Any]:
    started = time.perf_counter()
    bundle = load_bundle(cfg.bundle)
    preprocessing = data.bundle_preprocessing(bundle)
    backbone = split_backbone(bundle.manifest.backbone, weights_file(bundle.manifest.backbone, None))
    explainer = CamExplainer(backbone, bundle, ablation_engine=cfg.ablation_engine)
    scorer = faithfulness.Scorer(backbone, bundle, onnx_embedder(bundle.manifest.backbone).run)
    cfg.log("reproducing the bundle's held-out test part ...")
    held_out = data.held_out_paths(cfg.data, bundle, cfg.work)
    image_sets = {"test": data.stratified(held_out, cfg.images)}
    if cfg.probe is not None and cfg.probe_images > 0:
        image_sets["probe"] = data.probe_images(cfg.probe, cfg.probe_images)
    sets: dict[str, _Set] = {}
    results: dict[str, Any] = {"sets": {}}
    for name, images in image_sets.items():
        prepared = data.prepare(images, preprocessing)
        cfg.log(f"{name}: {len(images)} images; CAM maps (cached under {cfg.work}) ...")
        maps = cached_maps(explainer, images, prepared, cfg.work, cfg.log)
        masks = [cellheat.cell_mask(data.decoded(im), preprocessing) for im in images]
        sets[name] = (images, prepared, maps, masks)
        scores = score_set(scorer, prepared, maps, masks, cfg, name)
        results["sets"][name] = summarise_set(scores, maps, images, scorer.models)
        figures.curves_plot(scores.curves, cfg.out / f"curves_{name}.png", f"deletion / insertion ({name})")
        results["sets"][name]["curves"] = {
            m: {k: np.round(v, 4).tolist() for k, v in c.items()} for m, c in scores.curves.items()
        }
    cfg.log("sanity check (cascading randomisation) ...")
    results["sanity"] = run_sanity(backbone, bundle, explainer, sets["test"][1], cfg)
    _gallery(cfg, sets)
    results["config"] = {
        "bundle": str(cfg.bundle),
        "bundle_version": bundle.manifest.bundle_version,
        "backbone": bundle.manifest.backbone,
        "preprocessing": bundle.manifest.preprocessing,
        "held_out_test_images": len(held_out),
        "images": cfg.images,
        "probe_images": cfg.probe_images if cfg.probe is not None else 0,
        "road_images": cfg.road_images,
        "ablation_engine": cfg.ablation_engine,
        "random_seeds": cfg.random_seeds,
        "road_seeds": cfg.road_seeds,
        "road_percentiles": list(faithfulness.ROAD_PERCENTILES),
        "steps": faithfulness.STEPS.tolist(),
        "blur_sigma": faithfulness.BLUR_SIGMA,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return results
