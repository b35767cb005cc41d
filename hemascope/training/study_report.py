"""``study.md`` and ``study.png`` of the robustness study, from its results dict alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl

from hemascope.training.plots import _figure
from hemascope.training.probe_report import (
    TARGET_COVERAGE,
    TARGET_ERRORS_REFERRED,
    TARGET_PROBE_ACCURACY,
)

PLOT_FILE = "study.png"


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _label(row: Mapping[str, Any]) -> str:
    return f"{row['option']}{' + aug' if row['augment'] else ''}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _targets(row: Mapping[str, Any], min_f1: float) -> str:
    if (row["probe_accuracy"] or 0) >= TARGET_PROBE_ACCURACY and row["macro_f1"] >= min_f1:
        return "accuracy target met"
    referred, coverage = row["probe_errors_referred"] or 0, row["coverage_with_referral"] or 0
    if referred >= TARGET_ERRORS_REFERRED and coverage >= TARGET_COVERAGE:
        return "referral target met"
    return "not met"


def markdown(study: Mapping[str, Any]) -> str:
    rule, rows, chosen = study["rule"], study["rows"], study["chosen"]
    header = [
        "preprocessing",
        "augment",
        "same-source macro F1",
        "myeloblast FPR",
        "probe accuracy",
        "probe referred",
        "probe errors referred",
        "same-source coverage (referral on)",
        "answered accuracy",
        "embed ms/img",
        "status",
        "target",
    ]
    body = []
    for r in rows:
        status = (
            "**chosen**"
            if chosen and (r["option"], r["augment"]) == (chosen["option"], chosen["augment"])
            else ""
        )
        if r["fpr_above_plain"]:
            status = "**flagged: myeloblast FPR above plain**"
        elif r["macro_f1"] < rule["min_macro_f1"]:
            status = status or "macro-F1 below the floor"
        body.append(
            [
                r["option"],
                f"{r['augment']}x" if r["augment"] else "off",
                _f(r["macro_f1"], 4),
                _f(r["myeloblast_fpr"], 4),
                _f(r["probe_accuracy"]),
                _f(r["probe_referred"]),
                f"{_f(r['probe_errors_referred'])} of {r['probe_errors']}",
                _f(r["coverage_with_referral"]),
                _f(r["answered_accuracy"]),
                _f(r["ms_per_image"], 2),
                status,
                _targets(r, rule["min_macro_f1"]),
            ]
        )
    choice = (
        f"**Chosen default: `{chosen['option']}` with augmentation "
        f"{'off' if not chosen['augment'] else str(chosen['augment']) + 'x'}.**"
        if chosen
        else "**No option met the rule; keep the plain pipeline.**"
    )
    lines = [
        "# Robustness study: preprocessing x augmentation against the source shortcut",
        "",
        f"- Command: `{study.get('command') or 'n/a'}`",
        f"- Data: `{study['data']['root']}` ({study['data']['images']} images); grouped split seed "
        f"{study['split']['seed']}: fit {study['split']['fit']}, calibration {study['split']['calib']}, "
        f"held-out test {study['split']['test']} (the split `hemascope train classifiers` uses).",
        f"- Probe (evaluation only): `{study['probe']['root']}` ({study['probe']['images']} Barcelona "
        "neutrophils; every training neutrophil is from Munich).",
        f"- Model: {study['model'].replace('_', ' ')} on frozen embeddings; augmentation "
        f"`{study['augmentation']['version']}` adds copies of FIT-part images only.",
        "- Referral: abstain (confidence below the threshold giving 95% coverage on the calibration part) or "
        "out of distribution (Mahalanobis distance to the predicted class above the calibration part's "
        "97.5th percentile).",
        f"- Rule: same-source macro-F1 ≥ {rule['min_macro_f1']} and myeloblast false-positive rate ≤ the "
        f"plain pipeline's ({_f(rule['max_myeloblast_fpr'], 4)}); then the highest probe accuracy.",
        f"- Embedding cache: `{study['cache']['folder']}` ({study['cache']['cache_hits']} sets reused, "
        f"{study['cache']['embedded']} embedded in this run). ms/img: measured when the set was embedded "
        "(decode, preprocessing and the CNN on this machine's CPU).",
        "",
        choice,
        "",
        *_table(header, body),
        f"Targets: probe accuracy ≥ {TARGET_PROBE_ACCURACY} with macro-F1 ≥ {rule['min_macro_f1']}; failing "
        f"that, ≥ {TARGET_ERRORS_REFERRED:.0%} of probe errors referred with ≥ {TARGET_COVERAGE:.0%} "
        "same-source coverage.",
        "",
        f"![probe accuracy and referral per option]({PLOT_FILE})",
        "",
    ]
    return "\n".join(lines)


def plot(study: Mapping[str, Any], path: Path) -> None:
    rows = study["rows"]
    colours = mpl.colormaps["tab10"]
    with _figure(path, 2, (6.5, 0.45 * len(rows) + 2.2), "Robustness study (logistic regression)") as axes:
        labels = [_label(r) for r in rows]
        positions = range(len(rows))
        left, right = axes
        left.barh(
            [p - 0.2 for p in positions],
            [r["probe_accuracy"] for r in rows],
            0.4,
            color=colours(0),
            label="probe accuracy",
        )
        left.barh(
            [p + 0.2 for p in positions],
            [r["probe_errors_referred"] or 0 for r in rows],
            0.4,
            color=colours(1),
            label="probe errors referred",
        )
        left.axvline(TARGET_PROBE_ACCURACY, color="grey", ls=":", lw=1)
        left.set_yticks(list(positions), labels)
        left.set_xlim(0, 1)
        left.invert_yaxis()
        left.set_xlabel("fraction of probe cells / of probe errors")
        left.legend(loc="lower right")
        right.barh(
            [p - 0.2 for p in positions],
            [r["macro_f1"] for r in rows],
            0.4,
            color=colours(2),
            label="same-source macro F1",
        )
        right.barh(
            [p + 0.2 for p in positions],
            [r["coverage_with_referral"] or 0 for r in rows],
            0.4,
            color=colours(3),
            label="same-source coverage, referral on",
        )
        right.axvline(study["rule"]["min_macro_f1"], color="grey", ls=":", lw=1)
        right.set_yticks(list(positions), labels)
        right.set_xlim(0.5, 1)
        right.invert_yaxis()
        right.set_xlabel("fraction")
        right.legend(loc="lower right")


def write(study: Mapping[str, Any], out: Path) -> Path:
    plot(study, out / PLOT_FILE)
    path = out / "study.md"
    path.write_text(markdown(study))
    return path
