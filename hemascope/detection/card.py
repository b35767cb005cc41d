"""The detector's model card (MODEL_CARD.md beside the weights) and its metrics tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

METRIC_KEYS = ("mAP50", "mAP50-95", "precision", "recall")
CARD_HYPERPARAMETERS = (
    "epochs", "batch", "imgsz", "optimizer", "lr0", "lrf", "cos_lr", "momentum", "weight_decay",
    "warmup_epochs", "patience", "seed", "deterministic", "workers", "device", "amp", "mosaic",
    "close_mosaic", "fliplr", "hsv_h", "hsv_s", "hsv_v", "fraction",
)  # fmt: skip

SYNTHETIC_CAVEAT = """\
> **Not a detection result.** This model was trained on the synthetic-box variant: single-cell images, each
> with the same box (centre 0.5/0.5, width and height 0.8) labelled with the cell class. The box never
> depends on the image, so the mAP values below only measure whether the one box got the right class: a
> classification score in disguise. The source shortcut of bloodcells-5class applies too (three classes
> from one scanner, two from another; size, border and staining separate them), as do its duplicates.
> Compare these numbers with the classifiers' accuracy, never with detection results such as BCCD's."""

BCCD_LIMITS = """\
- BCCD under-annotates red cells: many RBCs in the images carry no box. A detector that finds them is
  scored as making false positives, so RBC precision (and mAP) is understated, and RBC recall is measured
  against an incomplete reference.
- Two classes are small (about one WBC and one platelet cluster per image): per-class figures on 87 val
  images have wide uncertainty.
- 640x480 smears from one microscope and one staining protocol; nothing here says how the model fares
  on other scanners."""


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _count(value: Any) -> str:
    return "n/a" if value is None else str(value)


def metrics_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, list[str]]]:
    """(name, images, instances, formatted metrics) for "all" and each class."""
    rows = []
    for name, row in [("all", metrics["overall"]), *metrics["per_class"].items()]:
        counts = _count(row.get("images")), _count(row.get("instances"))
        rows.append((name, *counts, [_fmt(row[k]) for k in METRIC_KEYS]))
    return rows


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    header = f"{'class':<16}{'images':>8}{'boxes':>8}" + "".join(f"{k:>10}" for k in METRIC_KEYS)
    lines = [header]
    for name, images, instances, values in metrics_rows(metrics):
        lines.append(f"{name:<16}{images:>8}{instances:>8}" + "".join(f"{v:>10}" for v in values))
    return "\n".join(lines)


def markdown_metrics_table(metrics: dict[str, Any]) -> str:
    lines = [
        "| class | images | boxes | " + " | ".join(METRIC_KEYS) + " |",
        "|---" * (3 + len(METRIC_KEYS)) + "|",
    ]
    for name, images, instances, values in metrics_rows(metrics):
        lines.append(f"| {name} | {images} | {instances} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def _data_section(summary: dict[str, Any]) -> list[str]:
    conversion = summary.get("conversion")
    lines = ["## Data", "", f"- Dataset description: `{summary['data']}`", f"- Classes: {summary['classes']}"]
    if not conversion:
        return [*lines, "- Not written by hemascope: no conversion report found beside data.yaml.", ""]
    lines.append(f"- Conversion: {conversion['kind']} from `{conversion['source']}`")
    for split, n in conversion.get("images", {}).items():
        kept = conversion.get("boxes_kept", {}).get(split, {})
        boxes = ", ".join(f"{c} {n_c}" for c, n_c in kept.items())
        lines.append(f"  - {split}: {n} images; boxes {boxes}")
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(conversion.get("boxes_dropped", {}).items())) or "none"
    lines.append(f"  - boxes clipped to the image: {conversion.get('boxes_clipped', 0)}; dropped: {dropped}")
    if conversion.get("unknown_classes"):
        lines.append(f"  - unknown class names (dropped): {conversion['unknown_classes']}")
    if conversion.get("normalised_names"):
        lines.append(f"  - class names normalised: {conversion['normalised_names']}")
    lines.append(f"  - images without objects: {conversion.get('images_without_objects', 0)}")
    if conversion["kind"] == "bccd":
        lines.append(f"  - XML size different from the image: {len(conversion.get('size_mismatches', []))}")
    return [*lines, ""]


def _limits(summary: dict[str, Any]) -> list[str]:
    kind = (summary.get("conversion") or {}).get("kind")
    lines = ["## Limits", ""]
    if kind == "synthetic-box":
        lines += [SYNTHETIC_CAVEAT, ""]
    elif kind == "bccd":
        lines += [BCCD_LIMITS, ""]
    else:
        lines += ["- Unknown dataset: check its annotations before trusting these numbers.", ""]
    lines.append(
        "- Trained from scratch (`yolov8n.yaml`, no pretrained weights available offline): expect lower "
        "scores than a COCO-pretrained start."
    )
    hp = summary.get("hyperparameters", {})
    if summary.get("epochs_run", 0) < 10 or int(hp.get("imgsz", 640)) < 320:
        lines.append("- A smoke-test-sized run (few epochs or a tiny image size): the metrics mean nothing.")
    return [*lines, ""]


def render_model_card(summary: dict[str, Any], plots: list[Path]) -> str:
    """MODEL_CARD.md from the summary written to metrics.json."""
    hp = summary.get("hyperparameters", {})
    onnx = summary.get("onnx", {})
    title = "# Model card: YOLOv8n cell detector"
    lines = [title, ""]
    if (summary.get("conversion") or {}).get("kind") == "synthetic-box":
        lines += [SYNTHETIC_CAVEAT, ""]
    lines += [
        f"Written {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by hemascope.",
        "",
        "## Files",
        "",
        f"- `best.pt`: weights of the best epoch (sha256 `{summary.get('weights_sha256', '')}`)",
    ]
    if "sha256" in onnx:
        lines.append(
            f"- `{onnx['file']}`: ONNX (opset {onnx['opset']}, input `images` [batch, 3, {hp.get('imgsz')}, "
            f"{hp.get('imgsz')}], RGB 0..1, letterboxed; raw head output, NMS not included; sha256 "
            f"`{onnx['sha256']}`)"
        )
    else:
        lines.append(f"- No ONNX file: {onnx.get('error')}")
    lines += ["- `metrics.json`: everything on this card, machine-readable", "- `run/`: Ultralytics' run", ""]
    lines += _data_section(summary)
    lines += [
        "## Training",
        "",
        f"- Command: `{summary['command']}`",
        f"- Model: `{summary['model']}` from scratch; seed {summary['seed']} (deterministic)",
        f"- Epochs run: {summary['epochs_run']} (best epoch {summary.get('best_epoch')})",
        f"- Training time: {summary['train_seconds']:.1f} s; evaluation {summary['val_seconds']:.1f} s",
        f"- Hardware: {summary['hardware']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()),
        "",
        "| hyperparameter | value |",
        "|---|---|",
    ]
    requested = summary.get("requested", {})
    for key in (k for k in CARD_HYPERPARAMETERS if k in hp):
        asked = f" (asked {requested[key]})" if key in requested and requested[key] != hp[key] else ""
        lines.append(f"| {key} | {hp[key]}{asked} |")
    lines += ["", "All arguments: `run/args.yaml`."]
    if summary.get("device") == "cpu":
        lines.append(
            "On the CPU, Ultralytics loads data in the main process (workers 0), whatever was asked."
        )
    lines.append("")
    lines += [
        f"## Metrics ({summary['split']} split, best.pt)",
        "",
        markdown_metrics_table(summary),
        "",
        "mAP50: mean average precision at IoU 0.5; mAP50-95: averaged over IoU 0.5 to 0.95; precision and "
        "recall at the confidence that maximises F1. Classes with no val boxes show n/a.",
        "",
    ]
    lines += _limits(summary)
    lines += ["## Plots", ""] + [f"- `{p.as_posix()}`" for p in plots] + [""]
    lines += [
        "## Credits",
        "",
        "BCCD dataset (Shenggan/BCCD_Dataset, MIT). Single-cell images: Acevedo et al. 2020 (PBC,",
        "CC BY 4.0); Matek et al. 2019 via TCIA (CC BY 3.0). Ultralytics YOLOv8 (AGPL-3.0).",
        "",
    ]
    return "\n".join(lines)
