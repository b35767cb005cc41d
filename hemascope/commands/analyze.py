"""``hemascope analyze IMAGE...``: images through the gateway's AnalysisService, one report per image.

All images go over one ``AnalyzeStream`` (the gateway bounds how many run at once; gRPC flow control slows
the reading of files to match), with a progress bar on a terminal. ``--out DIR`` receives, per image, the
explanation overlay (``<name>-overlay.png``) and the detections drawn on the image (``<name>-boxes.png``).

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
    """The overlay PNG and the box drawing of one report under ``out``; returns the files written."""
    written: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    if response.HasField("explanation") and response.explanation.overlay_png:
        overlay = out / f"{name}-overlay.png"
        overlay.write_bytes(response.explanation.overlay_png)
        written.append(overlay)
    if response.HasField("detection"):
        from hemascope.imaging.decode import decode_image
        from services.detector.core import Box
        from services.detector.draw import save_drawing

        boxes = [
            Box(b.x1, b.y1, b.x2, b.y2, b.class_id, b.class_name, b.score) for b in response.detection.boxes
        ]
        pixels = decode_image(image.read_bytes()).pixels
        written.append(save_drawing(pixels, boxes, out / f"{name}-boxes.png"))
    return written


def _failed_parts(response: analysis_pb2.AnalyzeResponse) -> list[analysis_pb2.PartStatus]:
    return [part for part in response.parts if part.code != 0]


def describe(response: analysis_pb2.AnalyzeResponse, image: Path) -> str:
    """One line (plus one per failed part) for a terminal."""
    pieces = [f"{image.name:<18}"]
    if response.HasField("classification"):
        c = response.classification
        flags = (" MALIGNANT" if c.malignant else "") + (" REFER" if c.refer else "")
        votes = " ".join(
            f"{SHORT.get(p.model, p.model)}={p.label}{'*' if p.abstain else ''}" for p in c.predictions
        )
        pieces.append(
            f"{c.consensus_label:<15} p={c.consensus_probability:.2f} agree={c.agreement:.2f} "
            f"P(malignant)={c.malignant_probability:.3f}{flags}  [{votes}]"
        )
    if response.HasField("detection"):
        counts = Counter(box.class_name for box in response.detection.boxes)
        found = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        pieces.append(f"{len(response.detection.boxes)} cells ({found})")
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
    return "\n".join(lines)


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
    record["report"] = MessageToDict(report, preserving_proto_field_name=True)
    record["outcome"] = "partial" if _failed_parts(result.response) else "ok"
    record["files"] = [str(path) for path in files]
    return record


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
) -> int:
    """Analyses ``images`` through the gateway at ``gateway``; prints reports; returns the exit status."""
    from tqdm import tqdm

    names = output_names(images)
    tally = Tally()
    with HemascopeClient(gateway, api_key=api_key, tls=tls) as client:
        if wait_s > 0:
            client.wait_ready(wait_s)
        quiet = True if len(images) < 2 else None  # None: a bar on a terminal only
        bar = tqdm(total=len(images), unit="image", disable=quiet, file=sys.stderr)
        try:
            for result in client.analyze_many(images, options=options, timeout=timeout):
                image = images[result.index]
                files: list[Path] = []
                if result.error is not None:
                    tally.failed += 1
                    line = f"{image.name:<18} failed: {result.error}"
                else:
                    assert result.response is not None
                    partial = bool(_failed_parts(result.response))
                    tally.partial += partial
                    tally.ok += not partial
                    if out is not None:
                        files = write_outputs(result.response, image, out, names[result.index])
                        tally.files += files
                    line = describe(result.response, image)
                bar.update(1)
                if json_lines:
                    bar.write(json.dumps(as_json(result, image, files), sort_keys=True), file=sys.stdout)
                else:
                    bar.write(line, file=sys.stdout)
        except HemascopeClientError as exc:
            bar.close()
            click.echo(f"hemascope analyze: {exc}", err=True)
            return 1
        bar.close()
    if not json_lines:
        summary = f"{len(images)} images: {tally.ok} complete, {tally.partial} partial, {tally.failed} failed"
        click.echo(summary + (f"; {len(tally.files)} files written to {out}" if out is not None else ""))
    return tally.exit_code
