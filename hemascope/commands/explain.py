"""``hemascope explain``: one heat map and overlay, in-process or through a running explain service."""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import grpc
import numpy as np

from hemascope.commands.errors import check_reachable, print_image_error
from hemascope.data import REPO_ROOT
from hemascope.errors import HemascopeError

DEFAULT_BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"


@dataclass(frozen=True)
class ExplainLine:
    """What is printed for one explanation."""

    image: str
    model: str
    method: str
    class_name: str
    class_probability: float
    predicted_class: str
    predicted_probability: float
    bundle_version: str
    cache_hit: bool
    width: int
    height: int
    ms: float


_FIELDS = (
    "method",
    "class_name",
    "class_probability",
    "predicted_class",
    "predicted_probability",
    "bundle_version",
    "cache_hit",
    "width",
    "height",
)


def _fields(result: Any) -> dict[str, Any]:
    """The printed fields of an ``ExplainResponse`` or a core ``Explanation`` (they share the names)."""
    return {name: getattr(result, name) for name in _FIELDS}


def _through_service(
    address: str, data: bytes, model: str, target: str, method: str, overlay: str, timeout: float
) -> tuple[dict[str, Any], bytes, str]:
    from hemascope.v1 import common_pb2, explain_pb2, explain_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        request = explain_pb2.ExplainRequest(
            image=common_pb2.Image(data=data),
            model=model,
            target_class=target,
            method=method,
            overlay=overlay,
        )
        r = explain_pb2_grpc.ExplainServiceStub(channel).Explain(request, timeout=timeout)
    return _fields(r), r.overlay_png, r.overlay


def _in_process(
    data: bytes, model: str, target: str, method: str, overlay: str, bundle: Path | None
) -> tuple[dict[str, Any], bytes, str]:
    from hemascope.imaging.inputs import ImageInput
    from services.explain.core import ExplainCore
    from services.explain.settings import ExplainSettings

    overrides: dict[str, Any] = {"metrics_port": None, "memory_cache_entries": 0}
    if bundle is not None:
        overrides["bundle"] = bundle
    settings = ExplainSettings(**overrides)  # the rest from HEMASCOPE_EXPLAIN_* or the defaults
    if settings.bundle is None:
        settings = settings.model_copy(update={"bundle": DEFAULT_BUNDLE})
    core = ExplainCore(settings)
    try:
        click.echo(f"loading the bundle {settings.bundle} and its backbone ...", err=True)
        core.load()
        click.echo(f"explaining {model} ...", err=True)
        r = core.explain(ImageInput(data=data), model, target, method, overlay=overlay)
    finally:
        core.close()
    return _fields(r), r.overlay_png, r.overlay


def panel_path(out: Path) -> Path:
    """Where the panel goes: ``OVERLAY-panel.png`` beside the overlay ``OVERLAY.png``."""
    return out.with_name(f"{out.stem}-panel.png")


def _write(
    out: Path, image: Path, data: bytes, model: str, fields: dict[str, Any], png: bytes, style: str
) -> None:
    from PIL import Image

    from hemascope.imaging.decode import decode_image
    from services.explain.panel import PanelText, save_panel

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    blended = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    text = PanelText(
        image.name, model, fields["method"], fields["class_name"], fields["class_probability"], style
    )
    save_panel(decode_image(data).pixels, blended, text, panel_path(out))


def run_explain(
    image: Path,
    *,
    model: str,
    target_class: str,
    method: str,
    out: Path,
    address: str | None,
    bundle: Path | None,
    timeout: float,
    as_json: bool,
    overlay: str = "",
) -> int:
    """Explains ``model`` on ``image``, writes the overlay PNG to ``out`` and the panel beside it; returns
    0, or 1 on failure."""
    start = time.perf_counter()
    try:
        data = image.read_bytes()
        if address:
            fields, png, style = _through_service(
                address, data, model, target_class, method, overlay, timeout
            )
        else:
            fields, png, style = _in_process(data, model, target_class, method, overlay, bundle)
        _write(out, image, data, model, fields, png, style)
    except (OSError, grpc.RpcError, HemascopeError) as exc:
        check_reachable(exc, "explain", address)
        print_image_error(str(image), exc, as_json)
        return 1
    line = ExplainLine(str(image), model, ms=(time.perf_counter() - start) * 1000, **fields)
    if as_json:
        click.echo(json.dumps(asdict(line) | {"overlay": str(out), "panel": str(panel_path(out))}))
    else:
        click.echo(
            f"{line.image}: {line.model} {line.method} explains {line.class_name} "
            f"(p={line.class_probability:.3f}; predicted {line.predicted_class} "
            f"p={line.predicted_probability:.3f}), bundle {line.bundle_version}; "
            f"overlay {line.width}x{line.height} written to {out}, panel to {panel_path(out)}"
        )
    return 0
