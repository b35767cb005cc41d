"""``MODEL_CARD.md`` of a fine-tuned backbone, from its ``backbone.json`` contents alone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hemascope.training.loso_report import HEADER as LOSO_HEADER
from hemascope.training.loso_report import f, loso_rows, recall_table, table, targets
from hemascope.training.report import CREDITS

CARD = "MODEL_CARD.md"


def _sources(meta: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            s["name"],
            s["site"] or ", ".join(sorted(set(s["sites"].values()))),
            s["groups"],
            s["role"],
            str(s["images"]),
            str(s["patients"]) if s["patients"] else "-",
        ]
        for s in meta["sources"]
    ]
    return table(["dataset", "site(s)", "grouped by", "role", "images", "patients"], rows)


def backbone_card(meta: Mapping[str, Any]) -> str:
    recipe, split = meta["recipe"], meta["split"]
    plan, tune = recipe["plan"], recipe["finetune"]
    acq = plan["acquisition_ranges"]
    secs = meta["seconds"]
    lines = [
        f"# Model card: backbone `{meta['name']}`",
        "",
        f"EfficientNet-Lite0 (1280-d embedding), from its ImageNet weights (`{recipe['base']}`, SHA-256 "
        f"`{meta['base_weights_sha256'][:16]}...`): stem and blocks 0-{tune['split'] - 1} frozen, "
        f"blocks {tune['split']}-15 and the head convolution fine-tuned on blood cells. Weights "
        f"`weights.pth` (SHA-256 `{meta['weights_sha256'][:16]}...`, the backbone's weights hash in every "
        "cache key, embedding and bundle manifest). Served like any backbone: `HEMASCOPE_FEATURE_BACKBONE="
        f"{meta['name']}`; the ONNX export is made from these weights and cached by their hash. It serves "
        f"only the preprocessing it was trained on, `{plan['option']}` (`{plan['preprocessing']}`).",
        "",
        f"- **Made by**: `{meta.get('command') or 'n/a'}` on {meta['created']} (torch {meta['torch']}, "
        f"{meta['threads']} threads): front features {f(secs['front_features'] / 60, 1)} min (cached; "
        f"reused by reruns), final fine-tuning {f(secs['fine_tune'] / 60, 1)} min, "
        f"{f(secs['total'] / 60, 1)} min in all, leave-one-source-out folds included.",
        f"- **Data**: the FIT part ({split['fit']} images: "
        + ", ".join(f"{site} {n}" for site, n in split["fit_per_site"].items())
        + f") of the grouped split (seed {split['seed']}, {split['grouped_by']}, stratified by "
        f"{split['stratified_by']}) that `hemascope train classifiers` makes with the same sources and seed: "
        f"its calibration ({split['calib']}) and test ({split['test']}) images were never seen. "
        "`backbone.json` lists the SHA-256 of every image fine-tuned on; `train classifiers` refuses a split "
        "that would test on one.",
        "",
        *_sources(meta),
        "- **Inputs**: each image's served input plus "
        f"{plan['copies']} re-acquired copies (`{plan['acquisition']}`, seed {plan['seed']}): HED stain "
        f"jitter ±{acq['hed_scale']} (shift ±{acq['hed_shift']}), brightness ±{acq['brightness']}, contrast "
        f"±{acq['contrast']}, gamma {acq['gamma'][0]}-{acq['gamma'][1]}, saturation ±{acq['saturation']}; "
        f"resampled to {acq['width'][0]:.0f}-{acq['width'][1]:.0f} px wide (log-uniform, down only); blur "
        f"(p {acq['blur_p']}, sigma {acq['blur_sigma'][0]}-{acq['blur_sigma'][1]} px), sensor noise (p "
        f"{acq['noise_p']}), JPEG quality {acq['jpeg_quality'][0]}-{acq['jpeg_quality'][1]} (p "
        f"{acq['jpeg_p']}); then the preprocessing option, then a random turn, flip and zoom "
        f"{acq['zoom'][0]}-{acq['zoom'][1]}.",
        f"- **Training**: {tune['epochs']} epochs of as many draws as images, batch {tune['batch_size']}, "
        "images drawn with weight 1/n(class, site) (every class-site pair weighs the same), the served "
        f"input with probability {tune['original_p']}, else a copy; cross entropy (label smoothing "
        f"{tune['label_smoothing']}) through a linear head that is then discarded; AdamW (lr {tune['lr']}, "
        f"head {tune['head_lr']}, weight decay {tune['weight_decay']}), cosine schedule, "
        f"{tune['warmup_fraction']:.0%} warm-up; batch-norm statistics {tune['bn']}; seed {tune['seed']}.",
        "",
        "Training history (final fit; accuracy is on the drawn, re-acquired training inputs):",
        "",
        *table(
            ["epoch", "loss", "accuracy"],
            [[str(h["epoch"]), f(h["loss"], 4), f(h["accuracy"])] for h in meta["history"]],
        ),
    ]
    if "loso" in meta:
        lines += [
            "## Leave-one-source-out",
            "",
            "Each site held out in turn: a fresh backbone fine-tuned with this recipe on the other sites' "
            "FIT part, the classical models fitted on its embeddings of the same images, calibrated on their "
            "calibration part, and every image of the held-out site scored (its evaluation-only sets "
            "included). The frozen ImageNet backbone on the same inputs is the baseline.",
            "",
            *table(
                LOSO_HEADER,
                loso_rows(meta["loso_frozen"], "frozen") + loso_rows(meta["loso"], "fine-tuned"),
            ),
            "What the fine-tuned folds call each held-out class:",
            "",
            *recall_table(meta["loso"]),
            *table(["target (logistic regression, fine-tuned)", "value", "status"], targets(meta["loso"])),
        ]
    lines += [
        "## Limits",
        "",
        "- Validated only by leaving one of three laboratories out: two of them image with CellaVision "
        "analysers (Barcelona, Johns Hopkins), one with a different microscope and camera (Munich). "
        "A laboratory with other optics, stains or cell-selection habits is not covered by these numbers; "
        "validate on its own labelled cells before use. Not for clinical use.",
        "- Munich's myeloblasts and neutrophils are the only Munich cells; Johns Hopkins' basophils are 33.",
        f"- {CREDITS} Weights trained on the Johns Hopkins images are for research use, as those images are.",
        "",
    ]
    return "\n".join(lines)


def write_backbone_card(folder: Path, meta: Mapping[str, Any]) -> Path:
    path = folder / CARD
    path.write_text(backbone_card(meta), encoding="utf-8")
    return path
