"""Reports of site adaptation: ``adapt.md`` + ``adapt.png`` for one profile, ``curve.md`` + ``curve.png`` for
the learning curve, and their JSON, drawn from the profile's summary or the curve's result dict alone."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hemascope.site.profile import SiteProfile
from hemascope.training.plots import _figure, pretty

ADAPT_PNG = "adapt.png"
CURVE_PNG = "curve.png"


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _adapt_plot(models: Mapping[str, Any], path: Path) -> None:
    title = "Cross-validated on the site's cells: bundle alone and with the site profile"
    with _figure(path, 2, (5.5, 4.0), title) as axes:
        for ax, metric in zip(axes, ("macro_f1", "myeloblast_sensitivity"), strict=True):
            names = list(models)
            xs = range(len(names))
            before = [models[n]["baseline"][metric] or 0.0 for n in names]
            after = [models[n]["after"][metric] or 0.0 for n in names]
            ax.bar([x - 0.2 for x in xs], before, width=0.4, label="bundle", color="tab:grey")
            ax.bar([x + 0.2 for x in xs], after, width=0.4, label="site profile", color="tab:blue")
            ax.set_xticks(list(xs), [pretty(n) for n in names], rotation=20, ha="right")
            ax.set_ylim(0, 1.05)
            ax.set_title(metric.replace("_", " "))
            ax.grid(axis="y", alpha=0.3)
            ax.legend(loc="lower right")


def render_adapt_report(profile: SiteProfile, profile_path: Path, out_dir: Path) -> Path:
    """Writes ``adapt.md``, ``adapt.json`` (the profile's metadata) and ``adapt.png``; returns the first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = profile.meta()
    (out_dir / "adapt.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    summary = profile.summary
    models = summary["models"]
    _adapt_plot(models, out_dir / ADAPT_PNG)
    lines = [
        f"# Site profile `{profile_path.name}` for site {profile.site!r}",
        "",
        f"Bundle {profile.bundle.version} ({profile.bundle.backbone}, weights "
        f"{profile.bundle.weights_hash[:12]}, {profile.bundle.preprocessing}); created {profile.created}.",
        f"{summary['cells']} cells ({', '.join(f'{c}: {n}' for c, n in summary['counts'].items())}); "
        + (
            f"{summary['patients']} patients, folds grouped by patient"
            if summary["grouped_by_patient"]
            else "no patients named: every cell is its own group (figures are optimistic when a patient "
            "gives several cells)"
        )
        + f"; {summary['folds']}-fold cross-validation, seed {summary['seed']}. OOD: {summary['ood']}.",
        "",
        "Figures are cross-validated on the site's cells (out of fold). A label-changing correction "
        "(adapter, bias) is kept only when it raises macro-F1; a myeloblast boost restores the "
        "unadapted myeloblast sensitivity where a correction lowered it.",
        "",
        f"![before and after]({ADAPT_PNG})",
        "",
    ]
    rows = []
    for name, m in models.items():
        c = profile.models[name]
        rows.append(
            [
                pretty(name),
                m["chosen"] if m["kept_temperature"] else "none",
                _f(m["baseline"]["macro_f1"]),
                _f(m["after"]["macro_f1"]),
                _f(m["baseline"]["myeloblast_sensitivity"]),
                _f(m["after"]["myeloblast_sensitivity"]),
                f"{c.temperature:.3f}",
                f"{m['myeloblast_boost']:.3f}",
                f"{_f(m['abstain_threshold']['bundle'])} -> {_f(c.abstain_threshold)}",
                f"{_f(m['ood_threshold']['bundle'])} -> {_f(c.ood_threshold)}",
            ]
        )
    header = ["model", "kept", "macro-F1 before", "after", "myeloblast sens. before", "after"]
    lines += _table([*header, "temperature", "myeloblast boost", "abstain threshold", "OOD threshold"], rows)
    lines += ["## Candidates (cross-validated macro-F1 / myeloblast sensitivity)", ""]
    names = list(next(iter(models.values()))["candidates"])
    cand_rows = [
        [
            pretty(name),
            *(
                f"{_f(m['candidates'][c]['macro_f1'])} / {_f(m['candidates'][c]['myeloblast_sensitivity'])}"
                for c in names
            ),
        ]
        for name, m in models.items()
    ]
    lines += _table(["model", *names], cand_rows)
    report = out_dir / "adapt.md"
    report.write_text("\n".join(lines))
    return report


def _curve_plot(summary: Mapping[str, Any], path: Path) -> None:
    title = "Held-out patients of the site: bundle alone (dashed) and adapted (solid)"
    with _figure(path, 2, (5.5, 4.0), title) as axes:
        for ax, metric in zip(axes, ("macro_f1", "myeloblast_sensitivity"), strict=True):
            for i, (name, per_size) in enumerate(summary.items()):
                sizes = [int(s) for s in per_size]
                colour = f"C{i}"
                after = [per_size[str(s)][f"{metric}_after"] for s in sizes]
                before = [per_size[str(s)][f"{metric}_before"] for s in sizes]
                ax.plot(sizes, after, marker="o", color=colour, label=pretty(name))
                ax.plot(sizes, before, ls="--", color=colour, alpha=0.7)
            ax.set_xscale("log")
            ax.set_xlabel("labelled cells per class used to adapt")
            ax.set_title(metric.replace("_", " "))
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")


def render_curve_report(result: Mapping[str, Any], title: str, out_dir: Path) -> Path:
    """Writes ``curve.md``, ``curve.json`` and ``curve.png``; returns ``curve.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "curve.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    summary = result["summary"]
    _curve_plot(summary, out_dir / CURVE_PNG)
    lines = [
        f"# Learning curve of site adaptation: {title}",
        "",
        f"{result['seeds']} seeds; per seed the patients are split once into an adaptation pool and an "
        "evaluation half; the figures are means over seeds on the evaluation patients' cells.",
        "",
        f"![learning curve]({CURVE_PNG})",
        "",
    ]
    header = ["model", "cells/class", "cells used", "macro-F1 before", "after", "runs lower"]
    header += ["myeloblast sens. before", "after", "after (worst run)", "runs lower"]
    rows = []
    for name, per_size in summary.items():
        for size, r in per_size.items():
            rows.append(
                [
                    pretty(name),
                    size,
                    f"{r['mean_cells']:.0f}",
                    _f(r["macro_f1_before"]),
                    _f(r["macro_f1_after"]),
                    f"{r['macro_f1_lower_runs']}/{r['runs']}",
                    _f(r["myeloblast_sensitivity_before"]),
                    _f(r["myeloblast_sensitivity_after"]),
                    _f(r["myeloblast_sensitivity_after_min"]),
                    f"{r['myeloblast_sensitivity_lower_runs']}/{r['runs']}",
                ]
            )
    lines += _table(header, rows)
    report = out_dir / "curve.md"
    report.write_text("\n".join(lines))
    return report
