"""The training report: ``report.md`` and its figures, rendered from the results dict of
:func:`hemascope.training.train.train_classifiers` (and, when given, the source-shortcut audit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hemascope.training import loso_report, plots, probe_report
from hemascope.training.plots import pretty

CREDITS = (
    "Data: PBC dataset, Acevedo et al., *Data in Brief* 30 (2020), CC BY 4.0 (basophil, erythroblast, "
    "monocyte, and the neutrophil probe; CellaVision DM96, Hospital Clinic Barcelona); "
    "AML-Cytomorphology_LMU, Matek et al., *Nature Machine Intelligence* 1 (2019), via The Cancer Imaging "
    "Archive (TCIA), CC BY 3.0 (myeloblast, segmented neutrophil; Munich); DeepAPL, Sidhom et al., *npj "
    "Precision Oncology* 5 (2021) (all five classes, CellaVision, Johns Hopkins; research use only)."
)
#: The study's Table I. Only the k-means accuracy is known to us; every other cell stays ``None`` ("n/a").
STUDY_TABLE_I: dict[str, dict[str, float | None]] = {"kmeans": {"accuracy": 0.06}}
TARGET_LR_F1 = 0.98
TARGET_SUPERVISED_F1 = 0.97
TARGET_MALIGNANT = 0.97
TARGET_PROBE_ACCURACY = 0.90
KMEANS_CHANCE_FACTOR = 2.0  # "well above chance": at least twice the chance accuracy, and ARI > 0
CV_KEYS = (
    ("accuracy", "accuracy"),
    ("macro_precision", "macro precision"),
    ("macro_recall", "macro recall"),
    ("macro_f1", "macro F1"),
    ("macro_specificity", "macro specificity"),
    ("roc_auc", "ROC-AUC (OvR macro)"),
    ("malignant_sensitivity", "myeloblast sensitivity"),
    ("malignant_specificity", "myeloblast specificity"),
    ("malignant_roc_auc", "myeloblast ROC-AUC"),
    ("ari", "ARI"),
    ("nmi", "NMI"),
)


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _get(tree: Mapping[str, Any] | None, dotted: str) -> Any:
    """``tree["a"]["b"]`` for ``"a.b"`` (or a flat ``tree["a.b"]``); ``None`` when any part is missing."""
    if not tree:
        return None
    if dotted in tree:
        return tree[dotted]
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of a nested dict as ``{"a.b": value}`` (lists and ``None`` left out)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_leaves(value, f"{prefix}{key}."))
        elif isinstance(value, str | int | float | bool):
            out[f"{prefix}{key}"] = value
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _header(results: Mapping[str, Any]) -> list[str]:
    ds, emb, split = results.get("dataset", {}), results.get("embedding", {}), results.get("split", {})
    classes: list[str] = results.get("classes", [])
    counts: dict[str, dict[str, int]] = ds.get("counts", {})
    rows = [
        [key, *(str(per.get(c, 0)) for c in classes), str(sum(per.values()))] for key, per in counts.items()
    ]
    out = [
        "# hemascope: classical classifiers on CNN embeddings, several laboratories",
        "",
        f"- Report generated: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"training run: {results.get('created', 'n/a')}",
        f"- Command: `{results.get('command') or 'n/a'}`",
        f"- Data: {ds.get('images', 'n/a')} training images from the sites "
        f"{', '.join(ds.get('training_sites', [])) or 'n/a'}, {ds.get('evaluation_images', 0)} "
        f"evaluation-only images; {ds.get('patients', 0)} patients named; fingerprint "
        f"`{ds.get('fingerprint', 'n/a')}`",
        f"- Embedding: {emb.get('backbone', 'n/a')} ({emb.get('dimension', 'n/a')} dimensions, weights "
        f"`{str(emb.get('weights_hash', 'n/a'))[:16]}`, preprocessing {emb.get('preprocessing', 'n/a')})",
        f"- Split (seed {split.get('seed', 'n/a')}, grouped by patient and duplicates, stratified by "
        f"{split.get('stratified_by', 'class')}): train {split.get('train', 'n/a')} (fit "
        f"{split.get('fit', 'n/a')} + calibration {split.get('calib', 'n/a')}), held-out test "
        f"{split.get('test', 'n/a')}; {split.get('cv_folds', 'n/a')}-fold grouped CV on the train part",
        f"- Bundle: `{_get(results, 'bundle.path') or 'n/a'}` "
        f"version {_get(results, 'bundle.version') or 'n/a'}",
        f"- {CREDITS}",
        "",
        "Images per dataset:site and class:",
        "",
    ]
    return out + _table(["dataset:site", *classes, "total"], rows)


def class_sites(results: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per class, the training sites it is seen at."""
    sources = results.get("dataset", {}).get("sources", [])
    training = {s["name"] for s in sources if s.get("role") == "train"}
    out: dict[str, list[str]] = {}
    for key, per in results.get("dataset", {}).get("counts", {}).items():
        name, _, site = key.partition(":")
        if name in training:
            for cls, n in per.items():
                if n and site not in out.setdefault(cls, []):
                    out[cls].append(site)
    return out


def _honesty(results: Mapping[str, Any], audits: Mapping[str, Any] | None) -> list[str]:
    dups = results.get("duplicates", {})
    seen = class_sites(results)
    single = [c for c, sites in seen.items() if len(sites) < 2]
    out = [
        "## Read this first: what these numbers do and do not show",
        "",
        "- **Sites per class.** "
        + "; ".join(f"{c.replace('_', ' ')}: {', '.join(sites)}" for c, sites in seen.items())
        + ". "
        + (
            f"**{', '.join(single)} come from one site only**: a model can tell them apart by the site "
            "(scanner, stain, resolution) rather than the cell, and same-site scores cannot show which."
            if single
            else "Every class is seen at two sites or more, so the site alone no longer separates classes."
        ),
        "- **Same-site scores** (held-out part, cross-validation) are from the training sites: they measure "
        "new images of known laboratories, not a new laboratory. **Leave-one-source-out** (below) is the "
        "measure of a laboratory the models have never seen.",
    ]
    for name, audit in (audits or {}).items():
        probe, chance = _get(audit, "shortcut.accuracy_mean"), _get(audit, "shortcut.chance")
        if probe is not None:
            out.append(
                f"- Shortcut audit of {name}: non-cell cues (image size, file size, border colour) predict "
                f"the class with accuracy **{_f(probe)}** against chance {_f(chance)} "
                f"([{audit.get('full audit', 'audit')}]({audit.get('full audit', '')}))."
            )
    out += [
        f"- **Grouped split.** Patients (where named) and exact and near duplicates "
        f"({dups.get('exact_groups', 'n/a')} exact groups, {dups.get('near_pairs', 'n/a')} near-duplicate "
        f"pairs) are merged into groups; each group lies wholly in one part.",
        "",
    ]
    return out


def _table_i(models: Mapping[str, Any]) -> list[str]:
    rows = []
    for name, r in models.items():
        t, study = r["test"], STUDY_TABLE_I.get(name, {})
        ours = [_f(t["accuracy"]), _f(t["macro_precision"]), _f(t["macro_recall"]), _f(t["macro_f1"])]
        theirs = [
            "n/a" if study.get(k) is None else f"{_f(study[k], 2)}[^a]"
            for k in ("accuracy", "precision", "recall", "f1")
        ]
        rows.append([pretty(name), *ours, *theirs])
    header = ["model", "accuracy", "precision", "recall", "F1"]
    header += [f"study {m}[^s]" for m in ("accuracy", "precision", "recall", "F1")]
    return [
        "## Table I, reproduced",
        "",
        "Ours: held-out part, macro averages over the five classes. Study: the paper's Table I.",
        "",
        *_table(header, rows),
        "[^s]: n/a = not available to us. The paper's Table I values must be filled in from the publication: "
        "we could not access it, and we do not guess them.",
        "[^a]: The study's k-means accuracy (0.06) compared unmapped cluster ids with class labels. "
        "Ours maps each cluster to a class by the Hungarian method on the training part before scoring, "
        "so the two numbers measure different things.",
        "",
    ]


def _main_table(models: Mapping[str, Any]) -> list[str]:
    def row(label: str, fn: Any) -> list[str]:
        return [label, *(fn(r) for r in models.values())]

    def abstain(r: Mapping[str, Any]) -> str:
        a = r["abstain"]
        return f"{_f(a['threshold'])} ({a['referred']} referred)"

    rows = [
        row("accuracy", lambda r: _f(r["test"]["accuracy"])),
        row("macro precision", lambda r: _f(r["test"]["macro_precision"])),
        row("macro recall", lambda r: _f(r["test"]["macro_recall"])),
        row("macro F1", lambda r: _f(r["test"]["macro_f1"])),
        row("macro specificity", lambda r: _f(r["test"]["macro_specificity"])),
        row("ROC-AUC (OvR macro)", lambda r: _f(r["test"]["roc_auc"])),
        row("myeloblast sensitivity", lambda r: _f(r["test"]["malignant"]["sensitivity"])),
        row("myeloblast specificity", lambda r: _f(r["test"]["malignant"]["specificity"])),
        row("myeloblast ROC-AUC", lambda r: _f(r["test"]["malignant"]["roc_auc"])),
        row(
            "ECE before → after",
            lambda r: f"{_f(r['calibration']['before']['ece'])} → {_f(r['calibration']['after']['ece'])}",
        ),
        row("temperature", lambda r: _f(r["calibration"]["temperature"], 2)),
        row("abstain threshold", abstain),
        row("coverage at threshold", lambda r: _f(r["abstain"]["coverage"])),
        row("risk at threshold", lambda r: _f(r["abstain"]["risk"])),
        row("fit time (s)", lambda r: _f(r["fit_seconds"], 1)),
        row("CV time (s)", lambda r: _f(r["cv_seconds"], 1)),
        row("ARI (clustering)", lambda r: _f(r["test"].get("ari"))),
        row("NMI (clustering)", lambda r: _f(r["test"].get("nmi"))),
    ]
    target = next(iter(models.values()))["abstain"]["target_coverage"] if models else 0.0
    return [
        "## Held-out metrics",
        "",
        "Myeloblast = malignant vs the four other classes (argmax label). ECE over 15 equal-width bins, "
        f"before and after temperature scaling fitted on the calibration part; the abstain threshold targets "
        f"{target:.0%} coverage on the calibration part. ARI/NMI only for k-means.",
        "",
        *_table(["metric", *(pretty(n) for n in models)], rows),
        *(f"- {pretty(n)}: {r.get('description', '')}" for n, r in models.items()),
        "",
    ]


def _cv_table(models: Mapping[str, Any], folds: Any) -> list[str]:
    rows = []
    for key, label in CV_KEYS:
        cells = [r.get("cv", {}).get(key) for r in models.values()]
        if any(cells):
            rows.append([label, *(f"{_f(c['mean'])} ± {_f(c['std'])}" if c else "n/a" for c in cells)])
    if not rows:
        return ["## Cross-validation", "", "Cross-validation was not run.", ""]
    return [
        "## Cross-validation",
        "",
        f"{folds}-fold grouped cross-validation on the train part: mean ± standard deviation over folds.",
        "",
        *_table(["metric", *(pretty(n) for n in models)], rows),
    ]


def _per_class(models: Mapping[str, Any]) -> list[str]:
    out = ["## Per-class report (held-out part)", ""]
    for name, r in models.items():
        rows = [
            [
                cls.replace("_", " "),
                _f(m["precision"]),
                _f(m["recall"]),
                _f(m["f1"]),
                _f(m["specificity"]),
                str(m["support"]),
            ]
            for cls, m in r["test"]["per_class"].items()
        ]
        out += [
            f"### {pretty(name)}",
            "",
            *_table(["class", "precision", "recall", "F1", "specificity", "support"], rows),
        ]
    return out


def _targets(models: Mapping[str, Any], n_classes: int) -> list[str]:
    rows: list[list[str]] = []

    def add(target: str, model: str, value: str, ok: bool) -> None:
        rows.append([target, model, value, "met" if ok else "**not met**"])

    lr_f1 = _get(models, "logistic_regression.test.macro_f1")
    lr_ok = lr_f1 is not None and lr_f1 >= TARGET_LR_F1
    add(
        f"LR macro-F1 ≥ {TARGET_LR_F1}",
        "Logistic regression",
        _f(lr_f1) if lr_f1 is not None else "not trained",
        lr_ok,
    )
    supervised = {n: r for n, r in models.items() if n != "kmeans"}
    for name, r in supervised.items():
        f1 = r["test"]["macro_f1"]
        add(f"macro-F1 ≥ {TARGET_SUPERVISED_F1}", pretty(name), _f(f1), f1 >= TARGET_SUPERVISED_F1)
    chance = 1 / max(n_classes, 1)
    if (km := models.get("kmeans")) is not None:
        acc, ari = km["test"]["accuracy"], km["test"].get("ari")
        ok = acc >= KMEANS_CHANCE_FACTOR * chance and ari is not None and ari > 0
        target = f"k-means accuracy ≥ {KMEANS_CHANCE_FACTOR:g} x chance ({chance:.2f}), ARI > 0"
        add(target, "k-means", f"accuracy {_f(acc)}, ARI {_f(ari)}", ok)
    for name, r in supervised.items():
        sens, spec = r["test"]["malignant"]["sensitivity"], r["test"]["malignant"]["specificity"]
        ok = sens is not None and spec is not None and sens >= TARGET_MALIGNANT and spec >= TARGET_MALIGNANT
        target = f"myeloblast sensitivity ≥ {TARGET_MALIGNANT} at specificity ≥ {TARGET_MALIGNANT}"
        add(target, pretty(name), f"sensitivity {_f(sens)}, specificity {_f(spec)}", ok)
    for name, r in supervised.items():
        probe = r.get("referral", {}).get("probe")
        if probe is not None and probe.get("accuracy") is not None:
            target = f"evaluation-only sets (Barcelona neutrophil probe) accuracy ≥ {TARGET_PROBE_ACCURACY}"
            add(target, pretty(name), _f(probe["accuracy"]), probe["accuracy"] >= TARGET_PROBE_ACCURACY)
    for name, r in supervised.items():
        eces = {s: m["ece"] for s, m in r.get("referral", {}).get("test_per_site", {}).items()}
        if eces:
            worst = max(eces, key=lambda s: eces[s])
            ok = eces[worst] <= loso_report.TARGET_ECE
            add(
                f"ECE ≤ {loso_report.TARGET_ECE} per site",
                pretty(name),
                f"worst {worst} {_f(eces[worst])}",
                ok,
            )
    return [
        "## Targets",
        "",
        "Same-site targets, checked on the held-out part (its sites are the training sites); the "
        "held-out-site targets are in the leave-one-source-out section above.",
        "",
        *_table(["target", "model", "value", "status"], rows),
    ]


def _figures(results: Mapping[str, Any], out_dir: Path) -> list[str]:
    models: dict[str, Any] = results["models"]
    classes: list[str] = results["classes"]
    figures: list[tuple[str, str]] = []
    if models:
        plots.confusion_matrices(models, classes, out_dir / "confusion_matrices.png")
        plots.roc_curves(models, classes, out_dir / "roc_curves.png")
        plots.reliability(models, out_dir / "reliability.png")
        plots.risk_coverage(models, out_dir / "risk_coverage.png")
        figures += [
            ("Confusion matrices: counts, colour = fraction of the true class", "confusion_matrices.png"),
            ("ROC curves, one-vs-rest per class and macro average", "roc_curves.png"),
            (
                "Reliability diagrams before and after temperature scaling (marker area ~ bin count)",
                "reliability.png",
            ),
            ("Risk-coverage curves; stars mark the abstain threshold", "risk_coverage.png"),
        ]
    if probe_report.plot_calls(models, classes, out_dir / probe_report.PLOT_FILE):
        caption = "Cross-source probe: what each model calls its cells (triangle: fraction referred)"
        figures.append((caption, probe_report.PLOT_FILE))
    importance = _get(results, "models.xgboost.feature_importance")
    if importance:
        plots.feature_importance(importance, out_dir / "xgboost_feature_importance.png")
        figures.append(("XGBoost: top 20 embedding dimensions by gain", "xgboost_feature_importance.png"))
    out = ["## Figures", ""]
    for caption, file in figures:
        out += [f"**{caption}.**", "", f"![{caption}]({file})", ""]
    return out


def _site_tables(models: Mapping[str, Any]) -> list[str]:
    test_rows: list[list[str]] = []
    eval_rows: list[list[str]] = []
    for name, r in models.items():
        referral = r.get("referral", {})
        test_rows += loso_report.site_rows(referral.get("test_per_site", {}), name)
        eval_rows += loso_report.site_rows(referral.get("probe_per_site", {}), name)
    out = [
        "## Per site: held-out part",
        "",
        "Each training site's share of the held-out part (macro-F1 over the classes the site has; "
        "'others called myeloblast' is the fraction of its non-myeloblast cells called myeloblast; "
        "'sens. at 95% spec.' sets the threshold on the site itself, an upper bound).",
        "",
        *_table([*loso_report.HEADER[:1], "images", *loso_report.HEADER[2:]], test_rows),
    ]
    if eval_rows:
        out += [
            "## Per site: evaluation-only sets",
            "",
            "Never fitted on, tuned on or thresholded on.",
            "",
            *_table(["dataset:site", *loso_report.HEADER[1:]], eval_rows),
        ]
    return out


def _loso(results: Mapping[str, Any]) -> list[str]:
    loso = results.get("loso")
    if not loso:
        return ["## Leave-one-source-out", "", "Not run (one training site, or `--no-loso`).", ""]
    return [
        "## Leave-one-source-out",
        "",
        "Each training site held out in turn: the pipeline fitted on the other sites (embeddings: "
        f"{loso['embeddings']}), calibrated on their calibration part, and every image of the held-out site "
        "scored (its evaluation-only sets included). This is what a laboratory the models have never seen "
        "should expect, and the criterion the defaults were chosen by.",
        "",
        *loso_report.loso_table(loso["folds"]),
        "What each held-out site's cells are called:",
        "",
        *loso_report.recall_table(loso["folds"]),
        *_table(["target (logistic regression)", "value", "status"], loso_report.targets(loso["folds"])),
    ]


def render_report(results: dict[str, Any], out_dir: Path, audits: dict[str, Any] | None = None) -> Path:
    """Writes ``out_dir/report.md`` and its PNG figures next to it; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = results.get("models", {})
    lines = [
        *_header(results),
        *_honesty(results, audits),
        *_loso(results),
        *_table_i(models),
        *_main_table(models),
        *_site_tables(models),
        *probe_report.section(results),
        *_cv_table(models, _get(results, "split.cv_folds") or "k"),
        *_per_class(models),
        *_figures({**results, "models": models, "classes": results.get("classes", [])}, out_dir),
        *_targets(models, len(results.get("classes", [])) or 5),
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
