"""``hemascope explain-eval``: faithfulness, sanity check, heat on the cell and a gallery of the CAMs."""

from __future__ import annotations

import json
from pathlib import Path

import click


def run_explain_eval(
    bundle: Path,
    data: Path,
    probe: Path | None,
    out: Path,
    work: Path,
    images: int,
    probe_images: int,
    road_images: int,
    sanity_images: int,
    ablation_engine: str = "pooled",
) -> None:
    from services.explain.evaluation.report import render
    from services.explain.evaluation.run import EvalConfig, run_evaluation

    cfg = EvalConfig(
        bundle=bundle,
        data=data,
        out=out,
        probe=probe,
        work=work,
        images=images,
        probe_images=probe_images,
        road_images=road_images,
        sanity_images=sanity_images,
        ablation_engine=ablation_engine,
        log=lambda line: click.echo(line, err=True),
    )
    click.echo(
        f"explain-eval: {images} test images, {probe_images if probe else 0} probe images; loading the "
        f"bundle and its backbone, then progress every ten images (reruns reuse the maps cached in {work})",
        err=True,
    )
    results = run_evaluation(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faithfulness.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    findings = out / "findings.md"
    text = render(results, findings.read_text(encoding="utf-8") if findings.is_file() else "")
    (out / "faithfulness.md").write_text(text, encoding="utf-8")
    click.echo(f"report written to {out / 'faithfulness.md'}", err=True)


@click.command("explain-eval")
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("models/bloodcells-5class"),
    show_default=True,
)
@click.option(
    "--data", type=click.Path(file_okay=False, path_type=Path), default=None, help="default: shared data"
)
@click.option(
    "--probe", type=click.Path(file_okay=False, path_type=Path), default=None, help="default: shared data"
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports/explain"))
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/tmp/hemascope-explain-eval"),
    show_default=True,
    help="Cache of the reproduced split and the CAM maps.",
)
@click.option("--images", default=100, show_default=True, help="Held-out test images (stratified).")
@click.option("--probe-images", default=50, show_default=True, help="Probe neutrophils (0: skip).")
@click.option("--road-images", default=30, show_default=True, help="ROAD on this subset of each set.")
@click.option("--sanity-images", default=30, show_default=True, help="Images in the randomisation check.")
@click.option(
    "--ablation-engine",
    type=click.Choice(["pooled", "library"]),
    default="pooled",
    show_default=True,
    help="How Ablation-CAM is computed: from the pooled features (the service's default) or by the grad-cam "
    "library (the reference); maps are cached per engine.",
)
def explain_eval_command(
    bundle: Path,
    data: Path | None,
    probe: Path | None,
    out: Path,
    work: Path,
    images: int,
    probe_images: int,
    road_images: int,
    sanity_images: int,
    ablation_engine: str,
) -> None:
    """Measure the explanations: faithfulness vs random maps, randomisation check, heat on the cell."""
    from hemascope.data import shared_data_dir

    data = data or shared_data_dir() / "bloodcells-5class"
    probe = probe or shared_data_dir() / "probe-pbc-neutrophil"
    run_explain_eval(
        bundle,
        data,
        probe if probe.is_dir() else None,
        out,
        work,
        images,
        probe_images,
        road_images,
        sanity_images,
        ablation_engine,
    )
