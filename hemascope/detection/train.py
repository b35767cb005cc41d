"""``train_detector``: YOLOv8n from scratch (``yolov8n.yaml``), offline; evaluation, ONNX export, model card.

Layout of ``out_dir`` afterwards::

    best.pt          the best epoch's weights (copied from run/weights/best.pt)
    detector.onnx    ONNX export of best.pt (opset 17, batch 1, fixed image size, raw head output, no NMS)
    metrics.json     val-split metrics, overall and per class, plus the run's settings and timings
    MODEL_CARD.md    data, command, seed, hyperparameters, metrics, time, hardware, versions, limits
    run/             Ultralytics' training folder (args.yaml, results.csv, plots); run/val/ the evaluation
"""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hemascope.detection.card import render_model_card
from hemascope.detection.yolo_dataset import REPORT_FILE
from hemascope.detection.yolo_env import import_ultralytics
from hemascope.files import file_sha256

MODEL_CONFIG = "yolov8n.yaml"
ONNX_OPSET = 17
OUTPUTS = ("best.pt", "detector.onnx", "metrics.json", "MODEL_CARD.md", "run")
PLOT_SUFFIXES = (".png", ".jpg")


@dataclass
class TrainingResult:
    out_dir: Path
    weights: Path
    onnx: Path | None  # None when the export failed: see onnx_error
    onnx_error: str | None
    metrics: dict[str, Any]  # overall and per_class, as in metrics.json
    metrics_path: Path
    card_path: Path
    run_dir: Path
    plots: list[Path] = field(default_factory=list)
    train_seconds: float = 0.0
    dataset_kind: str | None = None  # "bccd", "synthetic-box" or None (not written by hemascope)


def load_data_yaml(data_yaml: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The dataset description and, when the dataset was written by hemascope, its conversion report."""
    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "names" not in data or "val" not in data:
        raise ValueError(f"{data_yaml} is not an Ultralytics dataset description (needs names and val)")
    for folder in (Path(str(data.get("path", ""))), data_yaml.parent):
        report = folder / REPORT_FILE if folder.is_absolute() else data_yaml.parent / folder / REPORT_FILE
        if report.is_file():
            conversion: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
            return data, conversion
    return data, None


def class_names(data: dict[str, Any]) -> list[str]:
    names = data["names"]
    return [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]


def _metric(value: Any) -> float | None:
    return None if value is None else round(float(value), 5)


def extract_metrics(det_metrics: Any, names: list[str], images: int | None = None) -> dict[str, Any]:
    """mAP@0.5, mAP@0.5:0.95, precision and recall, overall and per class, from Ultralytics' DetMetrics."""
    box = det_metrics.box
    p, r, map50, map5095 = (float(x) for x in det_metrics.mean_results())
    zeros = [0] * len(names)
    instances = zeros if det_metrics.nt_per_class is None else [int(n) for n in det_metrics.nt_per_class]
    with_class = zeros if det_metrics.nt_per_image is None else [int(n) for n in det_metrics.nt_per_image]
    per_class: dict[str, dict[str, Any]] = {}
    for cls, name in enumerate(names):
        row: dict[str, Any] = {"precision": None, "recall": None, "mAP50": None, "mAP50-95": None}
        row |= {"images": with_class[cls], "instances": instances[cls]}
        per_class[name] = row
    for i, cls in enumerate(box.ap_class_index):
        cp, cr, ap50, ap = box.class_result(i)
        per_class[names[int(cls)]] |= {
            "precision": _metric(cp),
            "recall": _metric(cr),
            "mAP50": _metric(ap50),
            "mAP50-95": _metric(ap),
        }
    overall = {
        "precision": _metric(p),
        "recall": _metric(r),
        "mAP50": _metric(map50),
        "mAP50-95": _metric(map5095),
    }
    overall |= {"images": images, "instances": int(sum(instances))}
    return {"overall": overall, "per_class": per_class, "speed_ms_per_image": dict(det_metrics.speed)}


def hardware(device: str, threads: int) -> str:
    import torch

    if device != "cpu":
        props = torch.cuda.get_device_properties(int(device))
        return f"GPU {props.name} ({props.total_memory / (1 << 30):.0f} GiB)"
    cpu = platform.processor() or platform.machine()
    try:
        from ultralytics.utils.torch_utils import get_cpu_info

        cpu = str(get_cpu_info())
    except Exception:  # pragma: no cover - informational only
        pass
    return f"CPU {cpu}, {threads} threads"


def export_onnx(weights: Path, target: Path, imgsz: int, ultralytics: Any) -> tuple[Path | None, str | None]:
    """Exports ``weights`` to ``target`` (TorchScript exporter, opset 17): (path, None) or (None, why)."""
    simplify = importlib.util.find_spec("onnxslim") is not None  # never auto-installed: only if present
    missing = [m for m in ("onnx",) if importlib.util.find_spec(m) is None]
    if missing:
        return None, f"ONNX export needs {missing} (not installed; nothing is auto-installed here)"
    try:
        exported = ultralytics.YOLO(str(weights)).export(
            format="onnx", imgsz=imgsz, opset=ONNX_OPSET, simplify=simplify, dynamic=True,
            nms=False, device="cpu",
        )  # fmt: skip
    except Exception as exc:  # the weights stay usable; the card says why there is no ONNX file
        return None, f"ONNX export failed: {type(exc).__name__}: {exc}"
    if not exported or not Path(exported).is_file():
        return None, f"ONNX export produced no file (returned {exported!r})"
    Path(exported).replace(target)
    return target, None


def _default_command(data_yaml: Path, out_dir: Path, args: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items() if k not in {"data", "project", "name"})
    return f"train_detector({str(data_yaml)!r}, {str(out_dir)!r}, {shown})"


def train_detector(
    data_yaml: Path,
    out_dir: Path,
    *,
    epochs: int = 50,
    batch: int = 16,
    imgsz: int = 640,
    optimizer: str = "Adam",
    cos_lr: bool = True,
    patience: int = 10,
    seed: int = 0,
    workers: int = 2,
    lr0: float | None = None,
    device: str | None = None,
    config_dir: Path | None = None,
    command: str | None = None,
    log: Callable[[str], None] = print,
    **overrides: Any,
) -> TrainingResult:
    """Trains YOLOv8n on ``data_yaml`` in ``out_dir``; evaluates best.pt on val, exports ONNX, writes a card.

    Defaults are the study's settings. ``overrides`` go to Ultralytics' ``train`` unchanged (e.g.
    ``fraction=0.5``, ``mosaic=0``). ``device`` defaults to the first GPU when there is one, else the CPU.
    """
    data_yaml = data_yaml.expanduser().absolute()
    out_dir = out_dir.expanduser().absolute()  # a relative project would land in Ultralytics' runs_dir
    data, conversion = load_data_yaml(data_yaml)
    names = class_names(data)
    env = import_ultralytics(config_dir)
    device = device or env.device
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # a re-run replaces the previous one; nothing else in out_dir is touched
        stale = out_dir / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    run_dir = out_dir / "run"
    args: dict[str, Any] = {
        "data": str(data_yaml), "epochs": epochs, "batch": batch, "imgsz": imgsz, "optimizer": optimizer,
        "cos_lr": cos_lr, "patience": patience, "seed": seed, "deterministic": True, "workers": workers,
        "device": device, "amp": False, "plots": True, "project": str(out_dir), "name": run_dir.name,
        "exist_ok": True,
    }  # fmt: skip
    if lr0 is not None:
        args["lr0"] = lr0
    args |= overrides
    log(f"training {MODEL_CONFIG} on {data_yaml} ({device}, {env.threads} threads) into {run_dir}")
    model = env.ultralytics.YOLO(MODEL_CONFIG)
    started = time.perf_counter()
    model.train(**args)
    train_seconds = time.perf_counter() - started
    trainer = model.trainer
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    weights = out_dir / "best.pt"
    shutil.copyfile(best, weights)
    used_args = {
        k: v for k, v in vars(trainer.args).items() if k not in {"data", "project", "name", "save_dir"}
    }

    log(f"evaluating {weights.name} on the val split")
    started = time.perf_counter()
    evaluator = env.ultralytics.YOLO(str(weights))
    seen: list[int] = []  # images evaluated, from the validator itself
    evaluator.add_callback("on_val_end", lambda validator: seen.append(int(validator.seen)))
    det_metrics = evaluator.val(
        data=str(data_yaml), split="val", imgsz=imgsz, batch=batch, device=device, workers=workers,
        plots=True, project=str(run_dir), name="val", exist_ok=True,
    )  # fmt: skip
    val_seconds = time.perf_counter() - started
    metrics = extract_metrics(det_metrics, names, images=seen[-1] if seen else None)

    log("exporting to ONNX")
    onnx_path, onnx_error = export_onnx(weights, out_dir / "detector.onnx", imgsz, env.ultralytics)
    if onnx_error:
        log(onnx_error)

    import torch

    plots = sorted(p for p in run_dir.rglob("*") if p.suffix in PLOT_SUFFIXES)
    summary: dict[str, Any] = {
        "model": MODEL_CONFIG,
        "data": str(data_yaml),
        "classes": names,
        "split": "val",
        "epochs_run": int(trainer.epoch) + 1,
        "best_epoch": _best_epoch(run_dir / "results.csv"),
        "train_seconds": round(train_seconds, 2),
        "val_seconds": round(val_seconds, 2),
        "device": device,
        "hardware": hardware(device, env.threads),
        "versions": {
            "ultralytics": env.ultralytics.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "command": command or _default_command(data_yaml, out_dir, args),
        "seed": seed,
        "hyperparameters": {k: v for k, v in used_args.items() if _is_plain(v)},  # as Ultralytics ran them
        "requested": {k: v for k, v in args.items() if k not in {"data", "project", "name"}},
        "onnx": {"file": onnx_path.name, "sha256": file_sha256(onnx_path), "opset": ONNX_OPSET}
        if onnx_path
        else {"error": onnx_error},
        "weights_sha256": file_sha256(weights),
        "conversion": conversion,
        **metrics,
    }
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    card_path = out_dir / "MODEL_CARD.md"
    card_path.write_text(
        render_model_card(summary, [p.relative_to(out_dir) for p in plots]), encoding="utf-8"
    )
    return TrainingResult(
        out_dir=out_dir,
        weights=weights,
        onnx=onnx_path,
        onnx_error=onnx_error,
        metrics=metrics,
        metrics_path=metrics_path,
        card_path=card_path,
        run_dir=run_dir,
        plots=plots,
        train_seconds=train_seconds,
        dataset_kind=(conversion or {}).get("kind"),
    )


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _best_epoch(results_csv: Path) -> int | None:
    """The epoch (1-based) with the best val mAP@0.5:0.95, Ultralytics' fitness for picking best.pt."""
    if not results_csv.is_file():
        return None
    lines = results_csv.read_text(encoding="utf-8").splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    if "epoch" not in header or "metrics/mAP50-95(B)" not in header:
        return None
    i_epoch, i_map = header.index("epoch"), header.index("metrics/mAP50-95(B)")
    rows = [line.split(",") for line in lines[1:] if line.strip()]
    if not rows:
        return None
    best = max(rows, key=lambda cells: float(cells[i_map]))  # the first of equal scores, as Ultralytics keeps
    return int(float(best[i_epoch]))
