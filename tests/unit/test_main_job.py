"""The main job shows each capability on the input it is meant for: single cells are classified and
explained (never run through the smear detector), the smear goes to the detector alone."""

from __future__ import annotations

import shlex

from hemascope.data import REPO_ROOT


def analyze_commands() -> list[list[str]]:
    lines = (REPO_ROOT / "scripts" / "main.sh").read_text().splitlines()
    return [shlex.split(line) for line in lines if line.startswith(".venv/bin/hemascope analyze")]


def test_single_cells_are_explained_and_the_smear_is_detected() -> None:
    cells, smears = analyze_commands()
    assert "samples/*.jpg" in cells and "--explain" in cells
    assert "--detect" not in cells  # the detector is trained on smears, not single-cell crops
    assert "samples/smear/*.jpg" in smears and "--detect" in smears and "--no-classify" in smears
    assert all("--out" in command for command in (cells, smears))
