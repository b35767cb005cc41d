"""``faithfulness.md`` from the evaluation's results (see :mod:`.run`)."""

from __future__ import annotations

from typing import Any

from hemascope.datasets import CLASSES

CREDITS = (
    "Images: PBC dataset, Acevedo et al., Data in Brief 30 (2020), CC BY 4.0 (basophil, erythroblast, "
    "monocyte, probe neutrophils); AML-Cytomorphology_LMU, Matek et al., Nature Machine Intelligence 1 "
    "(2019), via The Cancer Imaging Archive (TCIA), CC BY 3.0 (myeloblast, seg_neutrophil); for bundles "
    "trained on it, DeepAPL, Sidhom et al., npj Precision Oncology 5 (2021) (Johns Hopkins; research use)."
)


def _cell(p: dict[str, Any]) -> str:
    return (
        f"{p['cam_mean']:.3f} | {p['random_mean']:.3f} | {p['diff_mean']:+.3f} "
        f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] | {p['wilcoxon_p']:.1e} | {p['better_share']:.0%} | "
        f"{p['verdict']}"
    )


def _faithfulness(name: str, s: dict[str, Any]) -> list[str]:
    lines = [
        f"### {name}: {s['images']} images (ROAD on {s['road_images']})",
        "",
        "Difference = CAM minus random, signed so that positive is better (deletion: lower AUC is better); "
        "95 % bootstrap CI over images; Wilcoxon signed-rank p; share of images where the CAM won.",
        "",
        "| model | method | acc. | metric | CAM | random | difference [95 % CI] | p | CAM wins | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, e in s["models"].items():
        for key in ("insertion_minus_deletion", "deletion", "insertion", "road"):
            if key in e:
                label = (
                    "ins - del"
                    if key == "insertion_minus_deletion"
                    else key.upper()
                    if key == "road"
                    else key
                )
                lines.append(f"| {model} | {e['method']} | {e['accuracy']:.2f} | {label} | {_cell(e[key])} |")
    return [*lines, ""]


def _heat(name: str, s: dict[str, Any]) -> list[str]:
    groups = [g for g in ("all", *CLASSES) if g in s["cell_area"]]
    groups += sorted(g for g in s["cell_area"] if g not in groups)
    lines = [
        f"### {name}: share of heat on the white cell ({s['segmentation_fallbacks']} segmentation fallbacks "
        "excluded)",
        "",
        "| | " + " | ".join(groups) + " | random maps (all) |",
        "|---|" + "---|" * (len(groups) + 1),
        "| cell area share | " + " | ".join(f"{s['cell_area'][g]:.2f}" for g in groups) + " | |",
    ]
    for model, e in s["models"].items():
        h = e["heat_on_cell"]
        lines.append(
            f"| {model} | "
            + " | ".join(f"{h.get(g, float('nan')):.2f}" for g in groups)
            + f" | {h['random_all']:.2f} |"
        )
    return [*lines, ""]


def _speed(name: str, s: dict[str, Any]) -> list[str]:
    speed = s.get("speed")
    if speed is None:
        return []
    lines = [
        f"### {name}: {speed['images']} images, forward pass p50 {speed['forward_ms_p50']:.1f} ms",
        "",
        "| model | method | CAM p50 ms (on the maps) | forward + CAM, x forward |",
        "|---|---|---|---|",
    ]
    for model, e in s["models"].items():
        lines.append(f"| {model} | {e['method']} | {e['cam_ms_p50']:.1f} | {e['x_forward']:.2f} |")
    return [*lines, ""]


def _sanity(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | method | stage (cumulative) | Spearman mean | sd | constant maps | images |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['stage']} | {r['spearman_mean']:.3f} | "
            f"{r['spearman_sd']:.3f} | {r['constant_maps']} | {r['images']} |"
        )
    return [*lines, ""]


def render(results: dict[str, Any], findings: str = "") -> str:
    c = results["config"]
    out = [
        "# Explanations: faithfulness, sanity, heat on the cell",
        "",
        f"Bundle `{c['bundle_version']}` ({c['backbone']}, preprocessing `{c['preprocessing']}`). Held-out "
        f"images: {c['images']} drawn stratified from the {c['held_out_test_images']} images the bundle's "
        "training split put in its test part (the split reproduced: dataset scan, grouped duplicates, "
        "seed from the manifest), never training images. Each model explains its predicted class with its "
        "default method; every score is that model's calibrated probability of that class.",
        "",
        f"Deletion/insertion: pixels in map order replaced by / restored from a Gaussian blur (sigma "
        f"{c['blur_sigma']} px at 224 px), steps {c['steps'][1]:.1f}; AUC of the probability curve. Random "
        f"baseline: {c['random_seeds']} uniform random 7x7 maps per image, upsampled like the CAM. "
        f"ROAD: the library's ROADCombined formula at percentiles {c['road_percentiles']} with its noisy "
        f"linear imputation (assembled faster, same system), {c['road_seeds']} random maps per image. "
        f"Run time: {c['seconds']:.0f} s on this machine. Ablation-CAM engine: "
        f"`{c.get('ablation_engine', 'library')}`.",
        "",
    ]
    if findings:
        out += ["## Findings", "", findings.strip(), ""]
    out += ["## Faithfulness", ""]
    for name, s in results["sets"].items():
        out += _faithfulness(name, s)
    out += ["## Heat on the cell", ""]
    for name, s in results["sets"].items():
        out += _heat(name, s)
    speed = [line for name, s in results["sets"].items() for line in _speed(name, s)]
    if speed:
        out += ["## Speed (maps computed in this run; timings on a shared machine vary)", "", *speed]
    out += ["## Sanity check: cascading randomisation (Adebayo et al. 2018)", "", *_sanity(results["sanity"])]
    out += ["## Figures", "", "`gallery.png`, `curves_test.png`, `curves_probe.png`.", "", CREDITS, ""]
    return "\n".join(out)
