"""The cross-source section of the training report and of the model card: probe accuracy, what the probe's
cells are called, and how much of the error the referral (low confidence, out of distribution) catches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np

from hemascope.training.plots import _figure, pretty

TARGET_PROBE_ACCURACY = 0.85
TARGET_SAME_SOURCE_F1 = 0.95
TARGET_ERRORS_REFERRED = 0.90
TARGET_COVERAGE = 0.90
PLOT_FILE = "probe_calls.png"


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def probe_rows(models: Mapping[str, Any], classes: Sequence[str]) -> list[list[str]]:
    rows = []
    for name, r in models.items():
        referral = r.get("referral", {})
        probe, test = referral.get("probe"), referral.get("test", {})
        if probe is None:
            continue
        called: dict[str, int] = {}
        for row in probe["called"].values():
            for cls, n in row.items():
                called[cls] = called.get(cls, 0) + n
        rows.append(
            [
                pretty(name),
                _f(probe["accuracy"]),
                *(str(called.get(c, 0)) for c in classes),
                _f(probe["referred"]),
                f"{_f(probe['errors_referred'])} of {probe['errors']}",
                _f(probe["out_of_distribution"]),
                _f(r["test"]["macro_f1"]),
                _f(test.get("coverage")),
                _f(test.get("answered_accuracy")),
            ]
        )
    return rows


def target_status(model: Mapping[str, Any]) -> tuple[str, bool]:
    """The target for one model: probe accuracy, or failing that the referral of probe errors."""
    probe = model.get("referral", {}).get("probe")
    if probe is None:
        return "no probe", False
    f1, acc = model["test"]["macro_f1"], probe["accuracy"] or 0.0
    if acc >= TARGET_PROBE_ACCURACY and f1 >= TARGET_SAME_SOURCE_F1:
        return f"probe accuracy {acc:.3f} ≥ {TARGET_PROBE_ACCURACY} at macro-F1 {f1:.3f}", True
    referred = probe["errors_referred"] or 0.0
    coverage = model["referral"]["test"]["coverage"] or 0.0
    ok = referred >= TARGET_ERRORS_REFERRED and coverage >= TARGET_COVERAGE
    return f"probe errors referred {referred:.3f}, same-source coverage {coverage:.3f}", ok


def section(results: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the cross-source section."""
    models: Mapping[str, Any] = results.get("models", {})
    classes: list[str] = results.get("classes", [])
    info = results.get("probe")
    out = ["## Cross-source probe: the same cell type from the other scanner", ""]
    if not info:
        sets = sorted({k for m in models.values() for k in m.get("referral", {}).get("probe_per_site", {})})
        if sets:
            return [
                *out,
                f"The evaluation-only sets ({', '.join(sets)}) play this part: see 'Per site: "
                "evaluation-only sets' above.",
                "",
            ]
        return [*out, "Not evaluated in this run (no probe was given).", ""]
    header = ["model", "probe accuracy", *(f"called {c.replace('_', ' ')}" for c in classes)]
    header += ["referred", "errors referred", "OOD flagged", "same-source macro F1"]
    header += ["same-source coverage (referral on)", "same-source accuracy of answered"]
    counts = ", ".join(f"{c} {n}" for c, n in info["counts"].items())
    out += [
        f"`{info['root']}`: {info['images']} images ({counts}), imaged by a scanner that contributed no "
        "cell of their class to training. They are used for evaluation only: nothing (models, temperature, "
        "abstain or OOD thresholds) is fitted on them. Probe accuracy = fraction called by their true "
        "class; 'called' counts what the models answer; 'referred' = flagged abstain (low confidence) or "
        "out of distribution (OOD score above the threshold set at the calibration part's "
        f"{_f(_first(models, 'ood_quantile'), 3)} quantile); 'errors referred' = fraction of the "
        "misclassified probe cells the referral catches. Same-source coverage: held-out cells answered "
        "with referral on.",
        "",
        *_table(header, probe_rows(models, classes)),
    ]
    rows = []
    for name, r in models.items():
        text, ok = target_status(r)
        rows.append([pretty(name), text, "met" if ok else "**not met**"])
    out += [
        f"Target: probe accuracy ≥ {TARGET_PROBE_ACCURACY} with same-source macro-F1 ≥ "
        f"{TARGET_SAME_SOURCE_F1}; failing that, ≥ {TARGET_ERRORS_REFERRED:.0%} of probe errors referred "
        f"while ≥ {TARGET_COVERAGE:.0%} of same-source cells are still answered.",
        "",
        *_table(["model", "value", "status"], rows),
    ]
    return out


def _first(models: Mapping[str, Any], key: str) -> Any:
    for r in models.values():
        if key in r.get("referral", {}):
            return r["referral"][key]
    return None


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def plot_calls(models: Mapping[str, Any], classes: Sequence[str], path: Path) -> bool:
    """Stacked bars: what each model calls the probe's cells; hatched share = referred. False if no probe."""
    probes = {n: r["referral"]["probe"] for n, r in models.items() if "probe" in r.get("referral", {})}
    if not probes:
        return False
    colours = mpl.colormaps["tab10"]
    with _figure(
        path, 1, (8.0, 0.55 * len(probes) + 2.0), "Cross-source probe: what its cells are called"
    ) as axes:
        ax = axes[0]
        names = list(probes)
        for y, name in enumerate(names):
            totals = np.zeros(len(classes))
            for row in probes[name]["called"].values():
                totals += np.array([row.get(c, 0) for c in classes], dtype=np.float64)
            fractions = totals / max(totals.sum(), 1)
            left = 0.0
            for k, cls in enumerate(classes):
                label = cls.replace("_", " ") if y == 0 else None
                ax.barh(y, fractions[k], left=left, color=colours(k), label=label)
                left += fractions[k]
            referred = probes[name]["referred"] or 0.0
            ax.plot([referred], [y], marker="v", color="black", ms=9, ls="none")
        ax.plot([], [], marker="v", color="black", ls="none", label="fraction referred")
        ax.set_yticks(range(len(names)), [pretty(n) for n in names])
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction of probe cells")
        ax.invert_yaxis()
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    return True
