"""The click commands ``hemascope serve explain`` and ``hemascope explain`` (registered in hemascope.cli).

Only click is imported here; the service and PyTorch load when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from hemascope.commands.addresses import address_callback


@click.command("explain")
@click.option("--host", default=None, help="Bind address (default from settings: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="gRPC port (default 50054; 0 = any free port).")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (default 9467).")
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model bundle directory (required here or as HEMASCOPE_EXPLAIN_BUNDLE).",
)
@click.option("--redis-url", default=None, help="Explanation cache in Redis; unset: in-process LRU.")
def serve_explain_command(
    host: str | None, port: int | None, metrics_port: int | None, bundle: Path | None, redis_url: str | None
) -> None:
    """The explanation service: Grad-CAM / Ablation-CAM heat maps and overlays for a bundle's models."""
    from hemascope.commands.serve import serve_explain as run

    overrides: dict[str, object] = {"host": host, "port": port, "metrics_port": metrics_port}
    overrides |= {"bundle": bundle, "redis_url": redis_url}
    run({k: v for k, v in overrides.items() if v is not None})


@click.command("explain")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True, help="Bundle model to explain, e.g. logistic_regression.")
@click.option("--class", "target_class", default="", help="Class to explain (default: the predicted one).")
@click.option(
    "--method",
    type=click.Choice(["gradcam", "gradcam++", "ablationcam"]),
    default=None,
    help="CAM method (default: gradcam for logistic regression, ablationcam for the other models).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="OVERLAY.png",
    help="Where to write the overlay PNG (original image size); the panel (the image beside the overlay, "
    "with model, class, probability and a colour bar) goes beside it as OVERLAY-panel.png.",
)
@click.option(
    "--overlay",
    type=click.Choice(["focus", "jet40"]),
    default="focus",
    show_default=True,
    help="focus: colour only where the heat matters, the cell outlined; jet40: the study's JET at 40%.",
)
@click.option(
    "--address",
    default=None,
    callback=address_callback(50054),
    help="host:port of a running explain service; omit: in-process.",
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="In-process only: model bundle (default HEMASCOPE_EXPLAIN_BUNDLE, else models/bloodcells-5class).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a sentence.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds allowed (service).")
def explain_command(
    image: Path,
    model: str,
    target_class: str,
    method: str | None,
    out: Path,
    overlay: str,
    address: str | None,
    bundle: Path | None,
    as_json: bool,
    timeout: float,
) -> None:
    """Explain MODEL's decision on IMAGE: print class, probability and method; write the overlay PNG."""
    from hemascope.commands.explain import run_explain

    code = run_explain(
        image,
        model=model,
        target_class=target_class,
        method=method or "",
        out=out,
        overlay=overlay,
        address=address,
        bundle=bundle,
        timeout=timeout,
        as_json=as_json,
    )
    if code:
        raise SystemExit(code)
