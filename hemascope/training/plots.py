"""Figures for the training report, drawn from the results dict alone (no models, no data).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it is safe to
call from any thread or process; every figure is written as a 150 dpi PNG.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

DPI = 150
Models = Mapping[str, Mapping[str, Any]]


def pretty(name: str) -> str:
    """``logistic_regression`` -> ``Logistic regression``; known acronyms kept."""
    special = {"svm": "SVM", "xgboost": "XGBoost", "kmeans": "k-means"}
    return special.get(name, name.replace("_", " ").capitalize())


@contextmanager
def _figure(path: Path, n_panels: int, panel: tuple[float, float], title: str) -> Iterator[list[Axes]]:
    """A grid of ``n_panels`` axes (at most three a row), saved to ``path`` on exit; unused axes hidden."""
    cols = min(3, max(n_panels, 1))
    rows = max(1, math.ceil(n_panels / cols))
    with mpl.rc_context(
        {
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "legend.fontsize": 9,
            "figure.titlesize": 14,
            "axes.grid": False,
            "savefig.bbox": "tight",
        }
    ):
        fig = Figure(figsize=(panel[0] * cols, panel[1] * rows), layout="constrained")
        FigureCanvasAgg(fig)
        grid = fig.subplots(rows, cols, squeeze=False)
        axes = [ax for row in grid for ax in row]
        for ax in axes[n_panels:]:
            ax.set_visible(False)
        fig.suptitle(title)
        yield axes[:n_panels]
        fig.savefig(path, dpi=DPI)


def confusion_matrices(models: Models, classes: Sequence[str], path: Path) -> None:
    """One panel per model: counts printed, colour = row-normalised rate (recall on the diagonal)."""
    with _figure(path, len(models), (5.2, 4.8), "Confusion matrices, held-out part") as axes:
        image = None
        for ax, (name, result) in zip(axes, models.items(), strict=True):
            cm = np.asarray(result["test"]["confusion_matrix"], dtype=np.float64)
            rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
            for i, j in np.ndindex(cm.shape):
                colour = "white" if rates[i, j] > 0.6 else "black"
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color=colour, fontsize=10)
            ticks = list(range(len(classes)))
            ax.set_xticks(ticks, [c.replace("_", " ") for c in classes], rotation=35, ha="right")
            ax.set_yticks(ticks, [c.replace("_", " ") for c in classes])
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class")
            ax.set_title(f"{pretty(name)} (accuracy {result['test']['accuracy']:.3f})")
        if image is not None:
            axes[0].figure.colorbar(image, ax=axes, shrink=0.8, label="fraction of true class (row)")


def roc_curves(models: Models, classes: Sequence[str], path: Path) -> None:
    """One panel per model: one-vs-rest ROC per class and the macro average (mean TPR on the FPR grid)."""
    colours = mpl.colormaps["tab10"]
    with _figure(path, len(models), (4.8, 4.6), "ROC curves (one-vs-rest), held-out part") as axes:
        for ax, (name, result) in zip(axes, models.items(), strict=True):
            roc = result["roc"]
            fpr = np.asarray(roc["fpr"], dtype=np.float64)
            tprs = []
            for k, cls in enumerate(classes):
                if cls not in roc:
                    continue
                tpr = np.asarray(roc[cls], dtype=np.float64)
                tprs.append(tpr)
                area = float(np.trapezoid(tpr, fpr))
                ax.plot(fpr, tpr, color=colours(k), lw=1.4, label=f"{cls.replace('_', ' ')} ({area:.3f})")
            if tprs:
                macro = np.mean(tprs, axis=0)
                ax.plot(
                    fpr, macro, color="black", lw=2.2, ls="-", label=f"macro ({np.trapezoid(macro, fpr):.3f})"
                )
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="chance")
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_title(pretty(name))
            ax.legend(loc="lower right", title="class (AUC)", title_fontsize=9)


def _bins(rel: Mapping[str, Any]) -> tuple[list[float], list[float], list[int]]:
    points = [
        (c, a, n)
        for c, a, n in zip(rel["confidence"], rel["accuracy"], rel["count"], strict=True)
        if n and c is not None and a is not None
    ]
    return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]


def reliability(models: Models, path: Path) -> None:
    """One panel per model: per-bin accuracy against mean confidence, before and after temperature scaling."""
    with _figure(path, len(models), (4.6, 4.6), "Reliability diagrams, held-out part") as axes:
        for ax, (name, result) in zip(axes, models.items(), strict=True):
            calib = result["calibration"]
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="perfect calibration")
            for key, colour, marker in (("before", "tab:red", "o"), ("after", "tab:blue", "s")):
                conf, acc, count = _bins(calib[key])
                total = max(sum(count), 1)
                sizes = [20 + 400 * n / total for n in count]
                label = f"{key} (ECE {calib[key]['ece']:.3f})"
                if key == "after":
                    label = f"after, T = {calib['temperature']:.2f} (ECE {calib[key]['ece']:.3f})"
                ax.plot(conf, acc, color=colour, lw=1.2, alpha=0.8)
                ax.scatter(conf, acc, s=sizes, color=colour, marker=marker, alpha=0.7, label=label)
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("mean confidence in bin")
            ax.set_ylabel("accuracy in bin")
            ax.set_title(pretty(name))
            legend = ax.legend(loc="lower right")
            for handle in legend.legend_handles:
                if isinstance(handle, PathCollection):
                    handle.set_sizes([50])


def risk_coverage(models: Models, path: Path) -> None:
    """All models on one plot: error rate among the kept cases against the fraction kept."""
    colours = mpl.colormaps["tab10"]
    with _figure(path, 1, (7.0, 5.0), "Risk-coverage, held-out part (after calibration)") as axes:
        ax = axes[0]
        for k, (name, result) in enumerate(models.items()):
            abstain = result["abstain"]
            curve = sorted(abstain["curve"], key=lambda p: p["coverage"])
            ax.plot(
                [p["coverage"] for p in curve],
                [p["risk"] for p in curve],
                color=colours(k),
                marker="o",
                lw=1.6,
                label=pretty(name),
            )
            if abstain.get("risk") is not None:
                ax.scatter(
                    [abstain["coverage"]], [abstain["risk"]], color=colours(k), marker="*", s=180, zorder=3
                )
        ax.scatter([], [], color="grey", marker="*", s=120, label="abstain threshold (operating point)")
        ax.set_xlabel("coverage (fraction of cells classified, most confident first)")
        ax.set_ylabel("risk (error rate among classified cells)")
        top = max(ax.get_ylim()[1], 0.01)
        ax.set_ylim(-0.03 * top, top)  # curves at zero risk stay visible above the axis
        ax.grid(alpha=0.3)
        ax.legend(loc="best")


def feature_importance(importance: Sequence[Mapping[str, Any]], path: Path, top: int = 20) -> None:
    """Horizontal bars: the ``top`` embedding dimensions by XGBoost gain, largest at the top."""
    rows = sorted(importance, key=lambda r: -float(r["gain"]))[:top]
    with _figure(
        path, 1, (7.0, 0.26 * len(rows) + 1.4), f"XGBoost: top {len(rows)} features by gain"
    ) as axes:
        ax = axes[0]
        labels = [f"dim {r['feature']}" for r in rows][::-1]
        ax.barh(labels, [float(r["gain"]) for r in rows][::-1], color="tab:green")
        ax.set_xlabel("importance (normalised gain)")
        ax.set_ylabel("embedding dimension")
