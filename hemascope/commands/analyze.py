"""``hemascope analyze IMAGE...``: images through the gateway's AnalysisService, one report per image.

All images go over one ``AnalyzeStream`` (the gateway bounds how many run at once; gRPC flow control slows
the reading of files to match), with a progress bar on a terminal. Reports are printed in the order of the
images given, in short lines (``--wide``: one line per image with every figure) or as JSON lines with every
field, zero and false values included. ``--out DIR`` receives, per image, the
explanation overlay (``<name>-overlay.png``), the image beside it with model, class, probability and a colour
bar (``<name>-panel.png``) and the detections drawn on the image (``<name>-boxes.png``).

Exit status: 0 when every part of every image succeeded; 3 when some part failed (partial reports);
1 when some image could not be analysed at all (e.g. not an image) or the gateway failed.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from google.protobuf.json_format import MessageToDict

from hemascope.client import HemascopeClient, HemascopeClientError, StreamResult, TlsConfig
from hemascope.commands.errors import gateway_failure, not_ready_message
from hemascope.commands.pictures import Explained, write_boxes, write_explanation
from hemascope.v1 import analysis_pb2

SHORT = {"logistic_regression": "LR", "svm": "SVM", "random_forest": "RF", "xgboost": "XGB", "kmeans": "KM"}
EXIT_PARTIAL = 3


@dataclass
class Tally:
    ok: int = 0
    partial: int = 0
    failed: int = 0
    files: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else (EXIT_PARTIAL if self.partial else 0)


def output_names(paths: Sequence[Path]) -> list[str]:
    """A distinct file-name stem per image (``name``, or ``name-2`` ... when two images share a stem)."""
    seen: Counter[str] = Counter()
    names: list[str] = []
    for path in paths:
        seen[path.stem] += 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return names


def write_outputs(response: analysis_pb2.AnalyzeResponse, image: Path, out: Path, name: str) -> list[Path]:
    """The pictures of one report under ``out`` (see :mod:`hemascope.commands.pictures`): the overlay and
    the panel of the explanation, the drawing of the detections; returns the files written."""
    from hemascope.imaging.decode import decode_image

    written: list[Path] = []
    explained = response.HasField("explanation") and response.explanation.overlay_png
    if not explained and not response.HasField("detection"):
        return written
    pixels = decode_image(image.read_bytes()).pixels
    if explained:
        e = response.explanation
        details = Explained(e.overlay_png, e.model, e.method, e.class_name, e.class_probability, e.overlay)
        written += write_explanation(out, name, image.name, pixels, details)
    if response.HasField("detection"):
        written.append(write_boxes(out, name, pixels, response.detection.boxes))
    return written


def _failed_parts(response: analysis_pb2.AnalyzeResponse) -> list[analysis_pb2.PartStatus]:
    return [part for part in response.parts if part.code != 0]


def _votes(c: analysis_pb2.CellClassification) -> str:
    return " ".join(
        f"{SHORT.get(p.model, p.model)}={p.label}{'*' if p.abstain else ''}" for p in c.predictions
    )


def _cells(detection: analysis_pb2.CellDetection) -> str:
    counts = Counter(box.class_name for box in detection.boxes)
    found = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
    return f"{plural(len(detection.boxes), 'cell')}" + (f" ({found})" if found else "")


def _wide(response: analysis_pb2.AnalyzeResponse, image: Path) -> list[str]:
    """Everything on one line (``--wide``), then one line per failed part and the refer reasons."""
    pieces = [f"{image.name:<18}"]
    if response.HasField("classification"):
        c = response.classification
        flags = (" MALIGNANT" if c.malignant else "") + (" REFER" if c.refer else "")
        pieces.append(
            f"{c.consensus_label:<15} p={c.consensus_probability:.2f} agree={c.agreement:.2f} "
            f"P(malignant)={c.malignant_probability:.3f}{flags}  [{_votes(c)}]"
        )
    if response.HasField("detection"):
        pieces.append(_cells(response.detection))
    if response.HasField("explanation"):
        e = response.explanation
        pieces.append(f"explained {SHORT.get(e.model, e.model)} {e.method} -> {e.class_name}")
    total = next((t.ms for t in response.timings if t.stage == "total"), None)
    if total is not None:
        pieces.append(f"{total:.0f} ms")
    lines = ["  ".join(pieces)]
    lines += [f"  ! {p.part}: {p.reason or p.code} {p.message}" for p in _failed_parts(response)]
    if response.HasField("classification") and response.classification.refer_reasons:
        lines.append(f"  refer: {'; '.join(response.classification.refer_reasons)}")
    return lines


def _short(response: analysis_pb2.AnalyzeResponse, image: Path) -> list[str]:
    """A headline per image (name, cell type, probability, agreement, flags), then short detail lines."""
    lines: list[str] = []
    if response.HasField("classification"):
        c = response.classification
        agreeing = round(c.agreement * len(c.predictions))
        flags = ("  MALIGNANT" if c.malignant else "") + ("  REFER" if c.refer else "")
        lines.append(
            f"{image.name}: {c.consensus_label} p={c.consensus_probability:.2f}, "
            f"{agreeing}/{len(c.predictions)} models agree, P(malignant)={c.malignant_probability:.2f}{flags}"
        )
        unanimous = agreeing == len(c.predictions) and not any(p.abstain for p in c.predictions)
        if not unanimous:
            lines.append(f"  votes: {_votes(c)}")
        if c.refer_reasons:
            lines.append(f"  refer: {_grouped_reasons(c.refer_reasons)}")
        if response.HasField("detection"):
            lines.append(f"  found {_cells(response.detection)}")
    elif response.HasField("detection"):
        lines.append(f"{image.name}: {_cells(response.detection)}")
    else:
        lines.append(f"{image.name}:")
    if response.HasField("explanation"):
        e = response.explanation
        lines.append(
            f"  heat map: {SHORT.get(e.model, e.model)} ({e.method}) explains {e.class_name} "
            f"p={e.class_probability:.2f}"
        )
    lines += [f"  ! no {p.part}: {p.message}" for p in _failed_parts(response)]
    return lines


def _grouped_reasons(reasons: Sequence[str]) -> str:
    """``model: reason`` entries grouped by reason: ``out of distribution (LR, SVM); low confidence (KM)``."""
    models: dict[str, list[str]] = {}
    for entry in reasons:
        model, sep, reason = entry.partition(": ")
        if sep and " " not in model and model != "input":  # "svm: low confidence"; not "input: ..."
            models.setdefault(reason, []).append(SHORT.get(model, model))
        else:
            models.setdefault(entry, [])
    return "; ".join(
        f"{reason} ({', '.join(names)})" if names else reason for reason, names in models.items()
    )


def describe(response: analysis_pb2.AnalyzeResponse, image: Path, wide: bool = False) -> str:
    """What a terminal shows for one report: short lines, or ``wide`` lines with every figure."""
    return "\n".join(_wide(response, image) if wide else _short(response, image))


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def as_json(result: StreamResult, image: Path, files: list[Path]) -> dict[str, Any]:
    """The JSON record of one image: the report (overlay bytes and heat map left out; see ``files``)."""
    record: dict[str, Any] = {"image": str(image)}
    if result.error is not None:
        record["error"] = {
            "code": result.error.code.name,
            "reason": result.error.reason,
            "message": result.error.message,
        }
        return record
    assert result.response is not None
    report = analysis_pb2.AnalyzeResponse()
    report.CopyFrom(result.response)
    if report.HasField("explanation"):
        report.explanation.ClearField("overlay_png")
        report.explanation.ClearField("heat_map")
    # Every field, zero and false values included (proto3 would leave them out): consumers can index.
    record["report"] = MessageToDict(
        report, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    if "explanation" in record["report"]:
        record["report"]["explanation"].pop("overlay_png", None)  # written to a file, see "files"
    record["outcome"] = "partial" if _failed_parts(result.response) else "ok"
    record["files"] = [str(path) for path in files]
    return record


class InOrder:
    """Hands results on in input order: each is held until every earlier one has been handed on."""

    def __init__(self) -> None:
        self._next = 0
        self._held: dict[int, Any] = {}

    def push(self, index: int, item: Any) -> list[Any]:
        """Adds the result at ``index``; returns those now ready, in order."""
        self._held[index] = item
        ready = []
        while self._next in self._held:
            ready.append(self._held.pop(self._next))
            self._next += 1
        return ready

    def rest(self) -> list[Any]:
        """What is still held (results after a gap that never filled), in order."""
        ready = [self._held[index] for index in sorted(self._held)]
        self._held.clear()
        return ready


@dataclass(frozen=True)
class Display:
    """How reports are printed: JSON lines, or text (``wide``: one long line per image)."""

    json_lines: bool = False
    wide: bool = False


def _line(result: StreamResult, image: Path, files: list[Path], display: Display) -> str:
    if display.json_lines:
        return json.dumps(as_json(result, image, files), sort_keys=True)
    if result.error is not None:
        return f"{image.name}: failed: {result.error}"
    assert result.response is not None
    return describe(result.response, image, display.wide)


def _abstained(result: StreamResult) -> bool:
    response = result.response
    return response is not None and any(p.abstain for p in response.classification.predictions)


def run_analyze(
    images: Sequence[Path],
    *,
    gateway: str,
    api_key: str | None,
    tls: TlsConfig | None,
    options: analysis_pb2.AnalyzeOptions,
    out: Path | None,
    json_lines: bool,
    timeout: float | None,
    wait_s: float,
    wide: bool = False,
) -> int:
    """Analyses ``images`` through the gateway at ``gateway``; prints one report per image in input order;
    returns the exit status."""
    from tqdm import tqdm

    names = output_names(images)
    display = Display(json_lines, wide)
    tally = Tally()
    order = InOrder()
    abstained = False
    with HemascopeClient(gateway, api_key=api_key, tls=tls) as client:
        if wait_s > 0:
            try:
                client.wait_ready(wait_s)
            except HemascopeClientError:
                click.echo(f"hemascope analyze: {not_ready_message(gateway, wait_s)}", err=True)
                return 1
        quiet = True if len(images) < 2 else None  # None: a bar on a terminal only
        bar = tqdm(total=len(images), unit="image", disable=quiet, file=sys.stderr)
        try:
            for result in client.analyze_many(images, options=options, timeout=timeout):
                image = images[result.index]
                files: list[Path] = []
                if result.error is not None:
                    tally.failed += 1
                else:
                    assert result.response is not None
                    partial = bool(_failed_parts(result.response))
                    tally.partial += partial
                    tally.ok += not partial
                    if out is not None:
                        files = write_outputs(result.response, image, out, names[result.index])
                        tally.files += files
                abstained = abstained or _abstained(result)
                bar.update(1)
                for line in order.push(result.index, _line(result, image, files, display)):
                    bar.write(line, file=sys.stdout)
        except HemascopeClientError as exc:
            bar.close()
            message, code = gateway_failure(exc, gateway, api_key=bool(api_key), tls=tls is not None)
            click.echo(f"hemascope analyze: {message}", err=True)
            return code
        for line in order.rest():
            bar.write(line, file=sys.stdout)
        bar.close()
    if not json_lines:
        if abstained:
            click.echo(
                "* the model abstained (low confidence, out of distribution or not a single-cell image): "
                "the cell is referred"
            )
        summary = (
            f"{plural(len(images), 'image')}: {tally.ok} complete, {tally.partial} partial, "
            f"{tally.failed} failed"
        )
        if out is not None:
            summary += f"; {plural(len(tally.files), 'file')} written to {out}"
        click.echo(summary)
    return tally.exit_code
