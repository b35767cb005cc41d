"""``hemascope audit-data``: counts, sizes, duplicates across splits and a source-shortcut probe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def run_audit(root: Path, as_json: bool, out: Path | None) -> int:
    """Audit ``root`` and print the report: markdown, or with ``as_json`` one JSON object on one line.

    ``out`` receives the same text. Findings (duplicates, shortcut) are reported, not failed on: exit code 0.
    """
    from hemascope.training.audit import audit_dataset

    report = audit_dataset(root, progress=sys.stderr.isatty())
    text = json.dumps(report.to_json()) if as_json else report.to_markdown()
    if out is not None:  # before the report, so that the report stays last even with 2>&1
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
        click.echo(f"report written to {out}", err=True)
    click.echo(text.rstrip("\n"))
    return 0
