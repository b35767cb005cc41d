"""Markdown tables of leave-one-source-out and per-site results (reports, model cards, the site study)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hemascope.training.plots import pretty

TARGET_HELD_OUT_F1 = 0.90
TARGET_SENSITIVITY = 0.95
TARGET_SPECIFICITY = 0.95
TARGET_MAX_FALSE_BLASTS = 0.02
TARGET_ECE = 0.03

HEADER = [
    "held-out site",
    "images",
    "model",
    "accuracy",
    "macro F1",
    "myeloblast sens.",
    "myeloblast spec.",
    "others called myeloblast",
    "sens. at 95% spec.",
    "myeloblast AUC",
    "ECE",
    "referred",
    "errors referred",
]


def f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def metric_cells(m: Mapping[str, Any]) -> list[str]:
    return [
        f(m["accuracy"]),
        f(m["macro_f1"]),
        f(m["myeloblast_sensitivity"]),
        f(m["myeloblast_specificity"]),
        f(m["myeloblast_fpr"]),
        f(m["sensitivity_at_95_specificity"]),
        f(m["malignant_auc"]),
        f(m["ece"]),
        f(m.get("referred")),
        f(m.get("errors_referred")),
    ]


def loso_rows(folds: Mapping[str, Any], label: str | None = None) -> list[list[str]]:
    rows = []
    for site, fold in folds.items():
        for name, m in fold["models"].items():
            model = pretty(name) if label is None else f"{pretty(name)} ({label})"
            rows.append([site, str(fold["n_test"]), model, *metric_cells(m)])
    return rows


def loso_table(folds: Mapping[str, Any], label: str | None = None) -> list[str]:
    return table(HEADER, loso_rows(folds, label))


def site_rows(per_site: Mapping[str, Any], name: str) -> list[list[str]]:
    return [[site, str(m["n"]), pretty(name), *metric_cells(m)] for site, m in per_site.items()]


def recall_table(folds: Mapping[str, Any]) -> list[str]:
    """Per held-out site and model: each class's recall and what its cells were called most often."""
    rows = []
    for site, fold in folds.items():
        for name, m in fold["models"].items():
            cells = []
            for cls, called in m["called"].items():
                wrong = sorted(((n, c) for c, n in called.items() if c != cls and n), reverse=True)
                worst = f", mostly {wrong[0][1].replace('_', ' ')} ({wrong[0][0]})" if wrong else ""
                cells.append(f"{cls.replace('_', ' ')} {f(m['recall'][cls], 2)}{worst}")
            rows.append([site, pretty(name), "; ".join(cells)])
    return table(["held-out site", "model", "recall per class (and the commonest wrong call)"], rows)


def targets(folds: Mapping[str, Any], model: str = "logistic_regression") -> list[list[str]]:
    """The held-out-site targets, checked for ``model`` in every fold."""
    out: list[list[str]] = []
    for site, fold in folds.items():
        m = fold["models"].get(model)
        if m is None:
            continue
        f1_ok = m["macro_f1"] >= TARGET_HELD_OUT_F1
        out.append([f"{site} held out: macro-F1 ≥ {TARGET_HELD_OUT_F1}", f(m["macro_f1"]), _ok(f1_ok)])
        sens, spec = m["myeloblast_sensitivity"], m["myeloblast_specificity"]
        if sens is not None and spec is not None:
            ok = sens >= TARGET_SENSITIVITY and spec >= TARGET_SPECIFICITY
            out.append(
                [
                    f"{site}: myeloblast sensitivity ≥ {TARGET_SENSITIVITY} at specificity "
                    f"≥ {TARGET_SPECIFICITY}",
                    f"{f(sens)} at {f(spec)}",
                    _ok(ok),
                ]
            )
        fpr = m["myeloblast_fpr"]
        if fpr is not None:
            out.append(
                [
                    f"{site}: other cells called myeloblast ≤ {TARGET_MAX_FALSE_BLASTS:.0%}",
                    f(fpr),
                    _ok(fpr <= TARGET_MAX_FALSE_BLASTS),
                ]
            )
        out.append([f"{site}: ECE ≤ {TARGET_ECE}", f(m["ece"]), _ok(m["ece"] <= TARGET_ECE)])
    return out


def _ok(flag: bool) -> str:
    return "met" if flag else "**not met**"
