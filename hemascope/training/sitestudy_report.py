"""``study.md`` of the site study (``hemascope study sites``), from its results dict alone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hemascope.training.loso_report import HEADER, f, loso_rows, recall_table, table
from hemascope.training.report import CREDITS


def markdown(study: Mapping[str, Any]) -> str:
    chosen = study["chosen"]
    summary_rows = [
        [
            f"**{c}** (chosen)" if c == chosen else c,
            f(s["mean_macro_f1"]),
            f(s["worst_macro_f1"]),
            f(s["mean_myeloblast_sensitivity"]),
            f(s["worst_false_blast_rate"]),
            f(s["mean_ece"]),
        ]
        for c, s in study["summary"].items()
    ]
    rows: list[list[str]] = []
    for candidate, folds in study["results"].items():
        rows += loso_rows(folds, candidate)
    folds = ", ".join(f"{site} ({n['test']} images)" for site, n in study["folds"].items())
    lines = [
        "# Which pipeline works at a laboratory it has never seen: leave-one-source-out",
        "",
        f"- Command: `{study.get('command') or 'n/a'}`",
        f"- Held-out sites: {folds}. Each fold trains on the other sites (FIT part), calibrates on their "
        "calibration part and scores every image of the held-out site.",
        "- Candidates: `frozen:<option>` is the study's method (ImageNet EfficientNet-Lite0, frozen) with a "
        "preprocessing option; `finetuned:<option>` fine-tunes its last stages per fold with the acquisition "
        f"recipe ({study['copies']} re-acquired copies per image; {study['finetune']['epochs']} epochs).",
        f"- Rule (fixed before the run): {study['rule']}.",
        f"- {CREDITS}",
        "",
        "## Summary",
        "",
        *table(
            [
                "candidate",
                "mean held-out macro F1",
                "worst held-out macro F1",
                "mean myeloblast sens.",
                "worst false-blast rate",
                "mean ECE",
            ],
            summary_rows,
        ),
        "## Every fold",
        "",
        *table(HEADER, rows),
        "## What the chosen candidate calls each held-out class",
        "",
        *recall_table(study["results"][chosen]),
    ]
    return "\n".join(lines)


def write(study: Mapping[str, Any], out: Path) -> Path:
    path = out / "study.md"
    path.write_text(markdown(study), encoding="utf-8")
    return path
