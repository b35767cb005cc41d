"""``study.md`` of ``hemascope study site-shift``: the tables a reader checks against the targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

AUROC_TARGET = 0.90
ERRORS_TARGET = 0.90
ANSWERED_TARGET = 0.70
FLAG_WITHIN = 50


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _auroc_table(folds: list[dict[str, Any]]) -> list[str]:
    names = list(folds[0]["auroc"])
    lines = [
        "| held-out laboratory | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for fold in folds:
        lines.append(f"| {fold['held_out']} | " + " | ".join(_f(fold["auroc"][n]) for n in names) + " |")
    worst = {n: min((f["auroc"][n] for f in folds if f["auroc"][n] is not None), default=None) for n in names}
    lines.append("| **worst fold** | " + " | ".join(_f(worst[n]) for n in names) + " |")
    return lines


def _referral_table(folds: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| held-out laboratory | accuracy there | rule | errors referred | images answered "
        "| error rate of answers |",
        "|---|---|---|---|---|---|",
    ]
    for fold in folds:
        accuracy = fold["classifier"]["accuracy_new_site"]
        for rule, r in fold["referral"].items():
            lines.append(
                f"| {fold['held_out']} | {_f(accuracy)} | {rule} | {_f(r['errors_referred'])} | "
                f"{_f(r['answered'])} | {_f(r['error_rate_answered'])} |"
            )
    return lines


def _drift_table(folds: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| held-out laboratory | streams flagged | images to flag (median / worst) | training laboratories' "
        "streams flagged in 1000 images |",
        "|---|---|---|---|",
    ]
    for fold in folds:
        d = fold["drift"]
        false = ", ".join(
            f"{site} {n}/{d['streams']}" for site, n in d["training_site_streams_flagged"].items()
        )
        lines.append(
            f"| {fold['held_out']} | {d['flagged_streams']}/{d['streams']} | "
            f"{_f(d['images_to_flag_median'], 0)} / {d['images_to_flag_max'] or '-'} | {false} |"
        )
    return lines


def _targets(folds: list[dict[str, Any]]) -> list[str]:
    worst_auroc = min(f["auroc"]["acquisition"] or 0.0 for f in folds)
    best = "low confidence, OOD or atypical acquisition"
    referral = [
        (f["referral"][best]["errors_referred"] or 0.0, f["referral"][best]["answered"]) for f in folds
    ]
    flag_ok = all(
        f["drift"]["flagged_streams"] == f["drift"]["streams"]
        and (f["drift"]["images_to_flag_max"] or FLAG_WITHIN + 1) <= FLAG_WITHIN
        for f in folds
    )
    no_false = all(n == 0 for f in folds for n in f["drift"]["training_site_streams_flagged"].values())

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    return [
        f"- AUROC of the acquisition score >= {AUROC_TARGET} in every fold: "
        f"{verdict(worst_auroc >= AUROC_TARGET)} (worst {worst_auroc:.3f}).",
        f"- >= {ERRORS_TARGET:.0%} of a held-out laboratory's errors referred while "
        f">= {ANSWERED_TARGET:.0%} of its images are answered (rule: {best}): "
        + verdict(all(e >= ERRORS_TARGET and a >= ANSWERED_TARGET for e, a in referral))
        + " ("
        + "; ".join(f"{f['held_out']} {e:.2f} / {a:.2f}" for f, (e, a) in zip(folds, referral, strict=True))
        + ").",
        f"- Every held-out laboratory's stream flagged within {FLAG_WITHIN} images: {verdict(flag_ok)}.",
        f"- No training laboratory's stream flagged in 1000 images: {verdict(no_false)}.",
    ]


def write_markdown(result: dict[str, Any], out: Path, command: str) -> Path:
    folds = result["folds"]
    rule = result["drift_rule"]
    lines = [
        "# Site-shift study: does Hemascope notice a laboratory it was not trained on?",
        "",
        f"Command: `{command}`",
        "",
        "Leave-one-source-out: each laboratory in turn plays the new site; the others' images are split "
        "(grouped by patient or duplicate group) into FIT, CALIBRATION and an in-distribution TEST part. "
        f"Classifier: {result['classifier']}; nothing in the pipeline saw the held-out laboratory.",
        "Data: bloodcells-5class (Acevedo et al. 2020, PBC, Barcelona; Matek et al. 2019, TCIA, Munich) and "
        "jhu-cellavision (Sidhom et al. 2021, Johns Hopkins).",
        "",
        "## Targets",
        "",
        *_targets(folds),
        "",
        "## Per-image AUROC: held-out laboratory against unseen images of the training laboratories",
        "",
        *_auroc_table(folds),
        "",
        "`acquisition` is what the services compute (the acquisition fingerprint against the reference of "
        "the answered class); `acquisition (true class)` the same with the true class, for reference only; "
        "`embedding` the bundle's out-of-distribution score; `combined` both, standardised on the "
        "calibration part.",
        "",
        "AUROC of `acquisition` by answered class (a class the held-out laboratory's images were never "
        "validated for is where the score fires):",
        "",
        "| held-out laboratory | " + " | ".join(folds[0]["auroc_by_answered_class"]) + " |",
        "|---|" + "---|" * len(folds[0]["auroc_by_answered_class"]),
        *(
            f"| {f['held_out']} | " + " | ".join(_f(v) for v in f["auroc_by_answered_class"].values()) + " |"
            for f in folds
        ),
        "",
        "## Referral on the held-out laboratory",
        "",
        *_referral_table(folds),
        "",
        "## The drift monitor replayed",
        "",
        f"Rule: a window of the last {rule['window']} answers per caller, judged from {rule['min_images']}; "
        f"flagged at an atypical share of {rule['flag_share']}, cleared at {rule['clear_share']}. Streams "
        "send a laboratory's images patient by patient (duplicate group by group where no patient is "
        "named), in random order; training laboratories' streams cycle through their unseen test images.",
        "",
        *_drift_table(folds),
        "",
    ]
    path = out / "study.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
