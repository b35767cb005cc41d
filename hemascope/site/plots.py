"""Figures of a site validation, drawn from ``validation.json``'s dict alone (matplotlib's object API on the
Agg canvas, as :mod:`hemascope.training.plots`; 150 dpi PNGs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes

from hemascope.training.plots import _figure, pretty

Models = Mapping[str, Mapping[str, Any]]


def reliability(models: Models, path: Path) -> None:
    """One panel per model: accuracy against mean confidence per bin (marker area: cells in the bin)."""
    with _figure(path, len(models), (4.4, 4.4), "Reliability on this site's cells") as axes:
        for ax, (name, result) in zip(axes, models.items(), strict=True):
            _reliability_panel(ax, name, result)


def _reliability_panel(ax: Axes, name: str, result: Mapping[str, Any]) -> None:
    rel = result["calibration"]["reliability"]
    points = [
        (c, a, n)
        for c, a, n in zip(rel["confidence"], rel["accuracy"], rel["count"], strict=True)
        if n and c is not None and a is not None
    ]
    total = max(sum(p[2] for p in points), 1)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="perfect calibration")
    ax.plot([p[0] for p in points], [p[1] for p in points], color="tab:blue", lw=1.2)
    ax.scatter(
        [p[0] for p in points],
        [p[1] for p in points],
        s=[20 + 400 * p[2] / total for p in points],
        color="tab:blue",
        alpha=0.7,
        label=f"ECE {result['calibration']['ece']:.3f}",
    )
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(pretty(name))
    ax.legend(loc="upper left", fontsize=8)


def _bar(ax: Axes, x: float, estimate: Mapping[str, Any], colour: str) -> None:
    value = estimate.get("value")
    if value is None:
        return
    low = estimate.get("low")
    high = estimate.get("high")
    below = value - low if low is not None else 0.0
    above = high - value if high is not None else 0.0
    ax.errorbar([x], [value], yerr=[[below], [above]], fmt="o", color=colour, capsize=4, ms=6)


def sensitivity(models: Models, classes: Sequence[str], path: Path) -> None:
    """One panel per model: sensitivity per class and of the malignant call, with 95% intervals."""
    labels = [c.replace("_", " ") for c in classes] + ["myeloblast call"]
    title = "Sensitivity with 95% intervals on this site's cells"
    with _figure(path, len(models), (5.0, 4.2), title) as axes:
        for ax, (name, result) in zip(axes, models.items(), strict=True):
            _sensitivity_panel(ax, name, result, classes, labels)


def _sensitivity_panel(
    ax: Axes, name: str, result: Mapping[str, Any], classes: Sequence[str], labels: Sequence[str]
) -> None:
    for i, cls in enumerate(classes):
        _bar(ax, i, result["per_class"][cls]["sensitivity"], "tab:blue")
    _bar(ax, len(classes), result["myeloblast"]["sensitivity"], "tab:red")
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("sensitivity")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(pretty(name))
