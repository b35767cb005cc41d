"""The ``hemascope`` command. Subcommands import their service lazily so ``--help`` stays fast."""

from __future__ import annotations

from pathlib import Path

import click

from hemascope.commands.addresses import address_callback
from hemascope.commands.audit_verify import audit_group, gateway_group
from hemascope.commands.batch_cli import batch_group
from hemascope.commands.bundle_cli import bundle_group
from hemascope.commands.console_cli import console_group, serve_console_command
from hemascope.commands.explain_cli import explain_command, serve_explain_command
from hemascope.commands.explain_eval import explain_eval_command
from hemascope.commands.failures import CliGroup
from hemascope.commands.gateway import serve_gateway_command
from hemascope.commands.health import health_command
from hemascope.commands.site_cli import site_group
from hemascope.commands.siteshift_cli import study_site_shift_command, train_acquisition_command
from hemascope.commands.stack_cli import analyze_command, up_command
from hemascope.commands.tls import tls_group
from hemascope.commands.train_cli import (
    evaluate_command,
    study_sites_command,
    train_backbone_command,
    train_classifiers_command,
    train_quantize_command,
)
from hemascope.logs import configure_logging


@click.group(cls=CliGroup)
@click.option("--log-level", default="WARNING", show_default=True, help="Log level for this command.")
@click.option("--log-json/--log-console", default=False, show_default=True, help="Log format.")
def main(log_level: str, log_json: bool) -> None:
    """Hemascope: blood-cell image analysis services and tools."""
    configure_logging(log_level, json=log_json)


@main.group()
def serve() -> None:
    """Run one of the gRPC services (settings from HEMASCOPE_<SERVICE>_* environment variables)."""


@serve.command("feature")
@click.option("--host", default=None, help="Bind address (default from settings: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="gRPC port (default 50051; 0 = any free port).")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (default 9464).")
@click.option(
    "--backbone",
    default=None,
    help="efficientnet_lite0_blood (default, fine-tuned), efficientnet_lite0 (ImageNet) or resnet50.",
)
@click.option(
    "--preprocessing",
    default=None,
    help="Preprocessing option (default cellcrop-hematoxylin, chosen by the robustness study; plain is the "
    "study's resize; see PREPROCESSING).",
)
@click.option("--redis-url", default=None, help="Embedding cache in Redis; unset: in-process LRU.")
def serve_feature(
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    backbone: str | None,
    preprocessing: str | None,
    redis_url: str | None,
) -> None:
    """The feature-embedding service."""
    from hemascope.commands.serve import serve_feature as run

    overrides = {"host": host, "port": port, "metrics_port": metrics_port, "backbone": backbone}
    overrides["redis_url"] = redis_url
    overrides["preprocessing"] = preprocessing
    run({k: v for k, v in overrides.items() if v is not None})


@serve.command("classifier")
@click.option("--host", default=None, help="Bind address (default from settings: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="gRPC port (default 50052; 0 = any free port).")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (default 9465).")
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model bundle directory (required here or as HEMASCOPE_CLASSIFIER_BUNDLE).",
)
@click.option(
    "--watch-interval",
    type=float,
    default=None,
    help="Poll the bundle's manifest every N seconds and reload when it changes (default 0: off).",
)
@click.option(
    "--site-profiles",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory of site profiles (hemascope site adapt) that calls may name (default: none).",
)
def serve_classifier(
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    bundle: Path | None,
    watch_interval: float | None,
    site_profiles: Path | None,
) -> None:
    """The classifier service: every model of a model bundle, reloadable without a restart."""
    from hemascope.commands.serve import serve_classifier as run

    overrides: dict[str, object] = {"host": host, "port": port, "metrics_port": metrics_port}
    overrides |= {"bundle": bundle, "watch_interval_s": watch_interval, "site_profiles": site_profiles}
    run({k: v for k, v in overrides.items() if v is not None})


@serve.command("detector")
@click.option("--host", default=None, help="Bind address (default from settings: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="gRPC port (default 50053; 0 = any free port).")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (default 9466).")
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Detector ONNX export (default: the committed models/detector-bccd/detector.onnx).",
)
def serve_detector(host: str | None, port: int | None, metrics_port: int | None, model: Path | None) -> None:
    """The cell-detector service: YOLOv8 boxes on whole smear images, micro-batched in ONNX Runtime."""
    from hemascope.commands.serve import serve_detector as run

    overrides: dict[str, object] = {"host": host, "port": port, "metrics_port": metrics_port, "model": model}
    run({k: v for k, v in overrides.items() if v is not None})


@main.command("detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--address",
    default=None,
    callback=address_callback(50053),
    help="host:port of a running detector service; omit: in-process.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@click.option(
    "--draw",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="OUT.png",
    help="Write the image with its boxes to this PNG (several images: OUT-<image name>.png beside it).",
)
@click.option(
    "--conf",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Minimum class score in [0, 1]; 0 = the detector's default (0.25).",
)
@click.option(
    "--iou",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="NMS IoU threshold in (0, 1]; 0 = the detector's default (0.7).",
)
@click.option(
    "--max-det",
    type=click.IntRange(min=0),
    default=0,
    help="Most boxes per image; 0 = the detector's default (300).",
)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds allowed per image (service).")
def detect(
    images: tuple[str, ...],
    address: str | None,
    as_json: bool,
    draw: Path | None,
    conf: float,
    iou: float,
    max_det: int,
    timeout: float,
) -> None:
    """Detect WBC, RBC and platelets in IMAGES; print the boxes (original-image pixels) and draw them."""
    from hemascope.commands.detect import run_detect

    failures = run_detect(
        list(images),
        address=address,
        as_json=as_json,
        draw=draw,
        confidence=conf,
        iou=iou,
        max_detections=max_det,
        timeout=timeout,
    )
    if failures:
        raise SystemExit(1)


@main.command("embed")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--address",
    default=None,
    callback=address_callback(50051),
    help="host:port of a running feature service; omit: in-process.",
)
@click.option("--backbone", default=None, help="Backbone (in-process) or the one expected (service).")
@click.option(
    "--preprocessing", default=None, help="Preprocessing option (in-process) or the one expected (service)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@click.option("--with-vector", is_flag=True, help="With --json: include the embedding values.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds allowed per image.")
def embed(
    images: tuple[str, ...],
    address: str | None,
    backbone: str | None,
    preprocessing: str | None,
    as_json: bool,
    with_vector: bool,
    timeout: float,
) -> None:
    """Embed IMAGES and print dimension, backbone, cache hit and time per image."""
    from hemascope.commands.embed import run_embed

    failures = run_embed(
        list(images),
        address=address,
        backbone=backbone,
        preprocessing=preprocessing,
        as_json=as_json,
        with_vector=with_vector,
        timeout=timeout,
    )
    if failures:
        raise SystemExit(1)


@main.command("export-backbone")
@click.option(
    "--backbone",
    default=None,
    help="efficientnet_lite0_blood (default, fine-tuned), efficientnet_lite0 (ImageNet) or resnet50.",
)
def export_backbone(backbone: str | None) -> None:
    """Make (or find) the ONNX export of a backbone in the model cache and print its path."""
    from hemascope.commands.serve import export_backbone as run

    click.echo(run(backbone))


@main.command("demo")
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--backbone",
    default=None,
    help="efficientnet_lite0_blood (default), efficientnet_lite0 or resnet50 (needs a checkpoint).",
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model bundle for the classifier service (default: the committed models/bloodcells-5class).",
)
def demo(images: tuple[Path, ...], backbone: str | None, bundle: Path | None) -> None:
    """The main job: start the feature and classifier services; embed and classify sample images."""
    from hemascope.commands.demo import run_demo

    run_demo(list(images), backbone, bundle)


@main.group()
def train() -> None:
    """Train models (classifiers on embeddings, a fine-tuned backbone, the YOLO detector)."""


@main.group()
def study() -> None:
    """Studies that compare pipeline options and pick defaults."""


@study.command("robustness")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--probe",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Cross-source probe (evaluation only), e.g. ../shared/data/probe-pbc-neutrophil.",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="study.md/json/png here."
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Embedding cache folder (default ~/.cache/hemascope/study); reruns reuse it.",
)
@click.option(
    "--options", default=None, help="Comma-separated preprocessing options (default: every registered one)."
)
@click.option(
    "--augment", type=click.IntRange(min=0), default=2, show_default=True, help="Copies when on; 0: no rows."
)
@click.option(
    "--augment-top",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Augmentation rows for plain and this many best options (by probe accuracy) only.",
)
@click.option("--augment-all", is_flag=True, help="Augmentation rows for every option (slow).")
@click.option(
    "--backbone",
    default="efficientnet_lite0",
    show_default=True,
    help="Feature backbone (the frozen ImageNet one serves every option).",
)
@click.option("--min-f1", type=click.FloatRange(0, 1), default=0.95, show_default=True)
def study_robustness(
    data: Path,
    probe: Path,
    out: Path,
    cache: Path | None,
    options: str | None,
    augment: int,
    augment_top: int,
    augment_all: bool,
    backbone: str | None,
    min_f1: float,
) -> None:
    """Every preprocessing option x augmentation off/on: same-source and cross-source scores; picks one."""
    from hemascope.commands.study import run_study

    chosen = [o.strip() for o in options.split(",") if o.strip()] if options else None
    run_study(
        data,
        probe,
        out,
        cache=cache,
        options=chosen,
        augment=augment,
        augment_top=None if augment_all else augment_top,
        backbone=backbone,
        min_f1=min_f1,
    )


@main.command("audit-data")
@click.argument("root", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on the last line instead of markdown.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report (markdown, or JSON with --json) to this file.",
)
def audit_data(root: Path, as_json: bool, out: Path | None) -> None:
    """Audit a folder-per-class dataset: counts, sizes, duplicates across splits, source-shortcut probe."""
    from hemascope.commands.audit import run_audit

    code = run_audit(root, as_json, out)
    if code:
        raise SystemExit(code)


@main.group("data")
def data_group() -> None:
    """Prepare datasets (Ultralytics layouts for the detector)."""


@data_group.command("bccd-to-yolo")
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="BCCD in Pascal VOC layout (default: <shared data>/bccd).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder to write; replaced if it holds an earlier conversion.",
)
def data_bccd_to_yolo(source: Path | None, out: Path) -> None:
    """Convert BCCD (VOC XML) to an Ultralytics dataset; bad boxes are clipped or dropped and counted."""
    from hemascope.commands.detector import run_bccd_to_yolo

    run_bccd_to_yolo(source, out)


@data_group.command("cells-to-yolo")
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder-per-class single-cell images, train/ and val/ (default: <shared data>/bloodcells-5class).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder to write; replaced if it holds an earlier conversion.",
)
def data_cells_to_yolo(source: Path | None, out: Path) -> None:
    """The study's variant: one fixed box per single-cell image. Its mAP is not a detection result."""
    from hemascope.commands.detector import run_cells_to_yolo

    run_cells_to_yolo(source, out)


@train.command("detector")
@click.option(
    "--data",
    "data_yaml",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ultralytics data.yaml (e.g. from `hemascope data bccd-to-yolo`).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for best.pt, detector.onnx, metrics.json, MODEL_CARD.md and run/.",
)
@click.option("--epochs", default=50, show_default=True)
@click.option("--batch", default=16, show_default=True)
@click.option("--imgsz", default=640, show_default=True, help="Training and export image size.")
@click.option("--optimizer", default="Adam", show_default=True)
@click.option("--cos-lr/--no-cos-lr", default=True, show_default=True, help="Cosine learning-rate schedule.")
@click.option("--patience", default=10, show_default=True, help="Early-stopping patience in epochs.")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Data-loading workers (GPU runs only).")
@click.option("--lr0", type=float, default=None, help="Initial learning rate (default: Ultralytics', 0.01).")
@click.option("--device", default=None, help="'0' for the first GPU or 'cpu' (default: a GPU when present).")
@click.option(
    "--set",
    "extra",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other Ultralytics train argument, e.g. --set mosaic=0; repeatable.",
)
def train_detector(
    data_yaml: Path,
    out: Path,
    epochs: int,
    batch: int,
    imgsz: int,
    optimizer: str,
    cos_lr: bool,
    patience: int,
    seed: int,
    workers: int,
    lr0: float | None,
    device: str | None,
    extra: tuple[str, ...],
) -> None:
    """Train YOLOv8n from scratch, offline; evaluate on val, export ONNX, write a model card."""
    from hemascope.commands.detector import run_train_detector

    run_train_detector(
        data_yaml,
        out,
        extra,
        epochs=epochs,
        batch=batch,
        imgsz=imgsz,
        optimizer=optimizer,
        cos_lr=cos_lr,
        patience=patience,
        seed=seed,
        workers=workers,
        lr0=lr0,
        device=device,
    )


# Training and evaluation commands live in their own module.
train.add_command(train_classifiers_command)
train.add_command(train_backbone_command)
train.add_command(train_quantize_command)
train.add_command(train_acquisition_command)
main.add_command(evaluate_command)
study.add_command(study_sites_command)
study.add_command(study_site_shift_command)
# The explain commands live in their own module (this one stays small); both import nothing heavy.
serve.add_command(serve_explain_command)
main.add_command(explain_command)
main.add_command(explain_eval_command)
# `hemascope up` (every service + the gateway, supervised) and `hemascope analyze` (through the gateway).
main.add_command(up_command)
main.add_command(analyze_command)
# `hemascope audit verify` (gateway audit trail) and `hemascope gateway add-key` (API keys).
main.add_command(audit_group)
main.add_command(gateway_group)
main.add_command(bundle_group)
# `hemascope health ADDRESS`: one grpc.health.v1 check, exit 0/1 (container HEALTHCHECK, exec probes).
main.add_command(health_command)
main.add_command(tls_group)
# `hemascope serve gateway`: the public AnalysisService over the four services.
serve.add_command(serve_gateway_command)
# `hemascope site validate`: a laboratory's acceptance test of a bundle on its own labelled cells.
main.add_command(site_group)
# `hemascope batch analyze|embed`: the same pipeline over a whole archive, on Ray Data.
main.add_command(batch_group)
# `hemascope serve console` (the research console) and `hemascope console add-user`.
serve.add_command(serve_console_command)
main.add_command(console_group)
