"""The site-validation report: ``report.md``, ``validation.json`` and the figures, from the result dict of
:func:`hemascope.site.validate.run_validation` alone."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hemascope.site import plots
from hemascope.site.criteria import METRICS
from hemascope.training.plots import pretty

RELIABILITY_PNG = "reliability.png"
SENSITIVITY_PNG = "sensitivity.png"
FEW_PATIENTS = 10


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def estimate(node: Mapping[str, Any] | None, counts: bool = True) -> str:
    """``0.950 [0.880, 0.980] (19/20)``; ``n/a`` when not measurable."""
    if not node or node.get("value") is None:
        return "n/a" + (f" (0/{node['n']})" if node and node.get("n") == 0 else "")
    text = f"{_f(node['value'])} [{_f(node.get('low'))}, {_f(node.get('high'))}]"
    if counts and node.get("n") is not None:
        text += f" ({node['k']}/{node['n']})"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def verdict_rows(result: Mapping[str, Any]) -> list[list[str]]:
    """The pass/fail table: criterion, model, observed, result (also printed by the command)."""
    rows = []
    for v in result["criteria"]["verdicts"]:
        observed = v["observed"]
        if observed is None:
            shown = "not measurable"
        else:
            shown = f"{int(observed)}" if METRICS[v["metric"]].count else _f(observed)
        rows.append([v["criterion"], v["model"], shown, "pass" if v["passed"] else "**FAIL**"])
    return rows


def _head(result: Mapping[str, Any]) -> list[str]:
    b, d, iv = result["bundle"], result["data"], result["intervals"]
    failed = sum(not v["passed"] for v in result["criteria"]["verdicts"])
    total = len(result["criteria"]["verdicts"])
    verdict = "PASSED" if result["passed"] else f"FAILED ({failed} of {total} checks failed)"
    counts = ", ".join(f"{c.replace('_', ' ')} {n}" for c, n in d["counts"].items())
    grouping = (
        f"{d['patients']} patients (the largest gives {d['cells_per_patient_max']} cells)"
        if d["grouped_by_patient"]
        else "no patients named (no manifest.csv with a patient column)"
    )
    return [
        "# Site validation",
        "",
        f"**Verdict: {verdict}** against `{result['criteria']['source']}` for the models "
        f"{', '.join(result['criteria']['models'])}.",
        "",
        f"- Bundle: `{b['path']}` version {b['version']}; backbone {b['backbone']} (weights "
        f"`{b['weights_hash'][:16]}`), preprocessing {b['preprocessing']}",
        f"- Data: {d['cells']} cells ({counts}); {grouping}",
        *(
            [
                f"- Site profile: `{result['site_profile']['path']}` (site "
                f"{result['site_profile']['site']}), applied to every model as the classifier applies it"
            ]
            if result.get("site_profile")
            else []
        ),
        "- Datasets: " + ", ".join(f"{s['name']} (`{s['root']}`)" for s in d["datasets"]),
        f"- Run: {result['created']}; intervals {int(iv['level'] * 100)}%, "
        f"{iv['replicates']} bootstrap replicates, seed {iv['seed']}",
        "",
    ]


def _caveats(result: Mapping[str, Any]) -> list[str]:
    d = result["data"]
    out = ["## Read this first", ""]
    if d["grouped_by_patient"]:
        out.append(
            "- **Intervals account for patients.** Cells of one patient are not independent, so every "
            "interval comes from a bootstrap that resamples whole patients; a proportion's interval also "
            "spans its Wilson score interval (the bootstrap alone is too narrow when few patients err). "
            "Read the lower bound of a sensitivity as the value one can be 95% confident of."
        )
        if d["patients"] is not None and d["patients"] < FEW_PATIENTS:
            out.append(
                f"- **Only {d['patients']} patient{'' if d['patients'] == 1 else 's'}.** With so few, even "
                "patient-level intervals are rough; validate on more patients before relying on the figures."
            )
        if d.get("ungrouped_cells"):
            out.append(f"- {d['ungrouped_cells']} cells name no patient and count as independent.")
    else:
        out.append(
            "- **Cells are treated as independent** (Wilson score intervals for counts, a bootstrap over "
            "cells otherwise). If several cells come from one patient, the true uncertainty is larger: "
            "add a manifest.csv with the columns file and patient to get patient-level intervals."
        )
    if d["trained_on"]:
        out.append(
            f"- **Not held out:** the bundle was trained on {', '.join(d['trained_on'])}; these scores "
            "overstate what a new laboratory would see."
        )
    out += [
        "- The myeloblast threshold for the target sensitivity is chosen on these same cells, so its "
        "sensitivity and specificity are optimistic; confirm it on other patients before adopting it.",
        "",
    ]
    return out


def _summary(models: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            pretty(name),
            estimate(m["all"]["accuracy"], counts=False),
            estimate(m["answered"]["accuracy"], counts=False),
            _f(m["all"]["macro_f1"]),
            _f(m["answered"]["macro_f1"]),
            estimate(m["referral"]["rate"], counts=False),
            _f(m["calibration"]["ece"]),
        ]
        for name, m in models.items()
    ]
    header = ["model", "accuracy, all", "accuracy, answered", "macro-F1, all", "macro-F1, answered"]
    return [
        "## Every model",
        "",
        "Point estimate [95% interval]. *Answered*: the cells the model does not refer to a person "
        "(referred: low confidence or out of distribution, as the classifier service flags them).",
        "",
        *_table([*header, "referral rate", "ECE"], rows),
    ]


def _myeloblast(models: Mapping[str, Any]) -> list[str]:
    rows = []
    target = None
    for name, m in models.items():
        mb = m["myeloblast"]
        t = mb["threshold_for_target"]
        target = t["target_sensitivity"] if t else target
        rows.append(
            [
                pretty(name),
                estimate(mb["sensitivity"]),
                estimate(mb["specificity"]),
                estimate(mb["auc"], counts=False),
                "n/a" if t is None else f"{t['threshold']:.3f}",
                "n/a" if t is None else f"{_f(t['sensitivity'])} / {_f(t['specificity'])}",
            ]
        )
    return [
        "## Myeloblast (malignant) call",
        "",
        "The call each model makes: its label is myeloblast. ROC-AUC: of the malignant probability. The "
        f"threshold is the highest malignant probability that still finds {_f(target, 2)} of these "
        "myeloblasts (optimistic: chosen on them).",
        "",
        *_table(["model", "sensitivity", "specificity", "ROC-AUC", "threshold", "sens. / spec. there"], rows),
    ]


def _per_class(models: Mapping[str, Any], classes: Sequence[str]) -> list[str]:
    out = ["## Per class", ""]
    for name, m in models.items():
        rows = [
            [
                cls.replace("_", " "),
                str(m["per_class"][cls]["n"]),
                estimate(m["per_class"][cls]["sensitivity"]),
                estimate(m["per_class"][cls]["specificity"]),
            ]
            for cls in classes
        ]
        out += [f"### {pretty(name)}", "", *_table(["class", "cells", "sensitivity", "specificity"], rows)]
    return out


def _referral(models: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            pretty(name),
            f"{m['abstain_threshold']:.3f}",
            "yes" if m["ood_available"] else "no",
            _f(m["referral"]["low_confidence"]),
            _f(m["referral"]["out_of_distribution"]),
            estimate(m["referral"]["errors_referred"]),
        ]
        for name, m in models.items()
    ]
    header = ["model", "confidence threshold", "OOD check", "low confidence", "out of distribution"]
    return [
        "## Referral",
        "",
        "Fractions of all cells flagged; *errors referred*: of the model's wrong labels, how many it "
        "would have sent to a person.",
        "",
        *_table([*header, "errors referred"], rows),
    ]


LIMITS = [
    "## What this cannot tell",
    "",
    "- It measures the bundle on these cells only: other stains, scanners, smear preparations or disease "
    "mixes than the ones sampled here are not covered, and a change of acquisition calls for a new run.",
    "- Intervals cover sampling error, not labelling error: the labels are taken as the truth.",
    "- Classes the bundle does not know (lymphocytes, eosinophils, promyelocytes...) are not tested; the "
    "bundle will call them one of its classes, and only the referral flags may catch them.",
    "- A pass is evidence for these cells at these limits, not a clinical approval.",
    "",
]


def render_report(result: dict[str, Any], out_dir: Path) -> Path:
    """Writes ``report.md``, ``validation.json`` and the PNG figures into ``out_dir``; returns report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = result["models"]
    classes: list[str] = result["bundle"]["classes"]
    plots.reliability(models, out_dir / RELIABILITY_PNG)
    plots.sensitivity(models, classes, out_dir / SENSITIVITY_PNG)
    lines = [
        *_head(result),
        "## Acceptance criteria",
        "",
        *_table(["criterion", "model", "observed", "result"], verdict_rows(result)),
        *_caveats(result),
        *_summary(models),
        *_myeloblast(models),
        *_per_class(models, classes),
        *_referral(models),
        "## Figures",
        "",
        f"![Sensitivity per class with 95% intervals]({SENSITIVITY_PNG})",
        "",
        f"![Reliability diagrams]({RELIABILITY_PNG})",
        "",
        *LIMITS,
    ]
    (out_dir / "validation.json").write_text(json.dumps(result, indent=2) + "\n")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
