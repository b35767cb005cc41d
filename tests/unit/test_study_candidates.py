"""Which options the robustness study gives augmentation rows to."""

from __future__ import annotations

from typing import Any

from hemascope.training.study import augmentation_candidates


def _row(option: str, probe: float, f1: float) -> dict[str, Any]:
    return {"option": option, "probe_accuracy": probe, "macro_f1": f1}


def test_plain_and_the_best_eligible_options_by_probe_accuracy() -> None:
    rows = [
        _row("plain", 0.06, 0.98),
        _row("gray", 0.30, 0.97),
        _row("cellcrop", 0.70, 0.96),
        _row("cellcrop-gray", 0.90, 0.90),  # best probe accuracy but below the F1 floor: never a candidate
        _row("macenko", 0.20, 0.97),
    ]
    assert augmentation_candidates(rows, "plain", 2, 0.95) == ["plain", "cellcrop", "gray"]
    assert augmentation_candidates(rows, "plain", 0, 0.95) == ["plain"]
    assert augmentation_candidates(rows, "plain", None, 0.95) == [r["option"] for r in rows]
