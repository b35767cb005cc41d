"""The columns of a batch result and of its errors table, and the rows built from the cores' outputs.

A result row holds, per image: where it came from and its hashes, the input check, optionally the
embedding, each model's probabilities (bundle class order, listed in the file's metadata), label, malignant
probability and refer reason, the consensus, optionally the detections, and the provenance of everything
(bundle version, backbone, weights hash, preprocessing version).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

#: Row states inside the pipeline; only "ok" rows reach the results, "error" rows the errors table.
OK, ERROR, SKIPPED = "ok", "error", "skipped"
#: Schema metadata keys (JSON values).
META_CLASSES = b"hemascope.classes"
META_MODELS = b"hemascope.models"
META_PROVENANCE = b"hemascope.provenance"

DETECTION = pa.struct(
    [
        ("class_name", pa.string()),
        ("score", pa.float64()),
        ("x1", pa.float64()),
        ("y1", pa.float64()),
        ("x2", pa.float64()),
        ("y2", pa.float64()),
    ]
)

#: What the byte readers produce and the workers take.
SOURCE = pa.schema(
    [
        ("path", pa.string()),
        ("data", pa.binary()),
        ("content_hash", pa.string()),
        ("status", pa.string()),
        ("error_stage", pa.string()),
        ("error_reason", pa.string()),
        ("error_message", pa.string()),
    ]
)

ERRORS = pa.schema(
    [
        ("path", pa.string()),
        ("content_hash", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
        ("run_id", pa.string()),
    ]
)

_STATE = [
    ("status", pa.string()),
    ("error_stage", pa.string()),
    ("error_reason", pa.string()),
    ("error_message", pa.string()),
]


@dataclass(frozen=True)
class Layout:
    """What a result table holds: fixed by the mode, the bundle and the flags before the job starts."""

    classify: bool
    models: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    embedding: bool = False
    detect: bool = False
    #: bundle_version, backbone, weights_hash, preprocessing (and the detector's version with detections)
    provenance: tuple[tuple[str, str], ...] = ()

    def result_fields(self) -> list[pa.Field]:
        fields = [
            pa.field("path", pa.string()),
            pa.field("content_hash", pa.string()),
            pa.field("pixel_hash", pa.string()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("input_kind", pa.string()),
            pa.field("input_reason", pa.string()),
        ]
        if self.embedding:
            fields.append(pa.field("embedding", pa.list_(pa.float32())))
        if self.classify:
            fields += [
                pa.field("label", pa.string()),
                pa.field("probability", pa.float64()),
                pa.field("agreement", pa.float64()),
                pa.field("malignant_probability", pa.float64()),
                pa.field("malignant", pa.bool_()),
                pa.field("refer", pa.bool_()),
                pa.field("refer_reason", pa.string()),
                pa.field("atypical_acquisition", pa.bool_()),
                pa.field("malignant_unconfirmed", pa.bool_()),
            ]
            for model in self.models:
                fields += [
                    pa.field(f"{model}_label", pa.string()),
                    pa.field(f"{model}_probabilities", pa.list_(pa.float64())),
                    pa.field(f"{model}_malignant_probability", pa.float64()),
                    pa.field(f"{model}_refer_reason", pa.string()),
                ]
        if self.detect:
            fields.append(pa.field("detections", pa.list_(DETECTION)))
        fields += [pa.field(name, pa.string()) for name, _ in self.provenance]
        fields.append(pa.field("run_id", pa.string()))
        return fields

    def metadata(self) -> dict[bytes, bytes]:
        return {
            META_CLASSES: json.dumps(list(self.classes)).encode(),
            META_MODELS: json.dumps(list(self.models)).encode(),
            META_PROVENANCE: json.dumps(dict(self.provenance)).encode(),
        }

    def results(self) -> pa.Schema:
        return pa.schema(self.result_fields(), metadata=self.metadata())

    def worker_output(self) -> pa.Schema:
        """The workers' rows: every result column (null on error rows) plus the row state."""
        return pa.schema(
            [*self.result_fields(), *(pa.field(n, t) for n, t in _STATE)], metadata=self.metadata()
        )


def split(table: pa.Table, layout: Layout, run_id: str) -> tuple[pa.Table, pa.Table, int]:
    """A worker batch -> (result rows, error rows, skipped count)."""
    status = table.column("status").to_pylist()
    ok = [i for i, s in enumerate(status) if s == OK]
    bad = [i for i, s in enumerate(status) if s == ERROR]
    results = table.take(pa.array(ok, pa.int64())).select(layout.results().names).cast(layout.results())
    errors = table.take(pa.array(bad, pa.int64()))
    errors = pa.table(
        {
            "path": errors.column("path"),
            "content_hash": errors.column("content_hash"),
            "stage": errors.column("error_stage"),
            "reason": errors.column("error_reason"),
            "message": errors.column("error_message"),
            "run_id": pa.array([run_id] * len(bad), pa.string()),
        },
        schema=ERRORS,
    )
    return results, errors, len(status) - len(ok) - len(bad)
