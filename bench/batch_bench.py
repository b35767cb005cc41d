"""Batch analysis benchmark: `hemascope batch analyze` (Ray Data) against the best single-process pipeline.

Same images, same run. The baseline is the fastest in-process loop over the very functions the workers call
(decode, input check, preprocessing and ONNX session via FeatureCore.embed_direct, the bundle's models via
ClassifierCore.classify, the consensus), tried with one ONNX Runtime thread and with all cores. The batch
job runs as the CLI in a child process (its own local Ray); its throughput is read from the summary (steady:
after the first finished batch, i.e. without Ray's and the actors' start-up; end-to-end: with it). Memory:
peak RSS of the driver, and of the driver plus every process below it (Ray's GCS, raylet, workers; shared
memory pages are counted once per process that touches them), for N and for 10N images.

    .venv/bin/python bench/batch.py --images 400 --scale 10

(``bench/batch.py`` is the launcher; this module imports nothing from the ``batch`` package, which that
file's name would shadow.) Prints the figures and one JSON line. Other processes share the CPU: compare
the ratios, not the img/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib.cpu import cpu_snapshot, cpu_usage
from benchlib.machine import machine_info, machine_line
from benchlib.service import hemascope_command

from hemascope.data import REPO_ROOT, shared_data_dir
from hemascope.imaging.inputs import ImageInput

DATASET = "bloodcells-5class"
BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
BATCH = 32
SAMPLE_S = 0.2


def make_archive(root: Path, count: int) -> Path:
    """``count`` real images as symlinks (the dataset's 4000 files round-robin over the classes, repeated
    under new names when ``count`` is larger)."""
    data = shared_data_dir() / DATASET
    by_class = [
        sorted((data / s / c.name).glob("*.jpg"))
        for s in ("train", "val")
        for c in sorted((data / s).iterdir())
    ]
    files = [f for group in zip(*by_class, strict=False) for f in group]
    folder = root / f"archive-{count}"
    folder.mkdir()
    for i in range(count):
        (folder / f"{i:07d}-{files[i % len(files)].name}").symlink_to(files[i % len(files)])
    return folder


def baseline(folder: Path, threads: int) -> float:
    """Images per second of the in-process pipeline, batches of :data:`BATCH`, ``threads`` ONNX threads."""
    from hemascope.bundle import MANIFEST, Manifest
    from hemascope.consensus import ModelVote, consensus
    from hemascope.imaging.preprocess import preprocessing_for_version
    from services.classifier.core import REFER_REASON_NAMES, ClassifierCore
    from services.classifier.inputs import EmbeddingInput
    from services.classifier.settings import ClassifierSettings
    from services.feature.core import EmbedResult, FeatureCore
    from services.feature.settings import FeatureSettings

    manifest = Manifest.from_json((BUNDLE / MANIFEST).read_text())
    feature_fields: dict[str, Any] = {
        "backbone": manifest.backbone,
        "preprocessing": preprocessing_for_version(manifest.preprocessing).name,
        "intra_op_threads": threads,
        "memory_cache_entries": 0,
        "metrics_port": None,
    }
    feature = FeatureCore(FeatureSettings(**feature_fields))
    feature.load()
    classifier_fields: dict[str, Any] = {"bundle": BUNDLE, "metrics_port": None, "max_embeddings": BATCH}
    classifier = ClassifierCore(ClassifierSettings(**classifier_fields))
    classifier.load()
    classes = list(manifest.classes)
    paths = sorted(folder.iterdir())
    started = time.perf_counter()
    for start in range(0, len(paths), BATCH):
        images = [ImageInput(data=p.read_bytes()) for p in paths[start : start + BATCH]]
        results = [r for r in feature.embed_direct(images) if isinstance(r, EmbedResult)]
        info = feature.info
        inputs = [
            EmbeddingInput(
                r.vector,
                backbone=info.spec.name,
                weights_hash=info.weights_hash,
                preprocessing=info.preprocessing.version,
                input_kind=r.input_check.kind.value if r.input_check else "",
            )
            for r in results
        ]
        outputs = classifier.classify(inputs).outputs
        for n in range(len(results)):
            votes = [
                ModelVote(
                    o.name,
                    classes[int(o.labels[n])],
                    dict(zip(classes, o.probabilities[n].tolist(), strict=True)),
                    float(o.malignant[n]),
                    bool(o.abstain[n]),
                    REFER_REASON_NAMES[int(o.refer_reason[n])],
                )
                for o in outputs
            ]
            consensus(votes, classes)
    seconds = time.perf_counter() - started
    feature.close()
    return len(paths) / seconds


def _tree_rss(root: int) -> tuple[int, int]:
    """(RSS of ``root``, RSS of ``root`` and all its descendants) in bytes, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            statm = Path(f"/proc/{entry}/statm").read_text().split()
        except (OSError, IndexError):
            continue
        parents[int(entry)] = int(stat[1])
        rss[int(entry)] = int(statm[1]) * page
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in members]
        members.update(children)
        frontier += children
    return rss.get(root, 0), sum(rss.get(pid, 0) for pid in members)


def batch_job(folder: Path, out: Path) -> dict[str, Any]:
    """Runs the CLI on ``folder``; its summary plus wall time and peak RSS (driver, whole tree)."""
    command = [
        *hemascope_command(),
        "batch",
        "analyze",
        str(folder),
        "--out",
        str(out),
        "--json",
        "--no-progress",
    ]
    peaks = [0, 0]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            driver, tree = _tree_rss(proc.pid)
            peaks[0], peaks[1] = max(peaks[0], driver), max(peaks[1], tree)
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"batch analyze failed ({proc.returncode}): {stdout[-2000:]}")
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    summary["wall_s"] = round(time.perf_counter() - started, 2)
    summary["peak_rss_driver_mb"] = round(peaks[0] / 2**20, 1)
    summary["peak_rss_tree_mb"] = round(peaks[1] / 2**20, 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=400, help="N: images of the throughput comparison.")
    parser.add_argument("--scale", type=int, default=10, help="The memory comparison runs N and scale x N.")
    args = parser.parse_args()
    machine = machine_info()
    report: dict[str, Any] = {
        "bench": "batch",
        "images": args.images,
        "scale": args.scale,
        "machine": machine,
    }
    with tempfile.TemporaryDirectory(prefix="hemascope-bench-batch-") as tmp:
        root = Path(tmp)
        small = make_archive(root, args.images)
        phases: dict[str, Any] = {}
        for threads in (1, 0):
            before = cpu_snapshot()
            rate = baseline(small, threads)
            phases[f"inprocess_threads_{threads or 'all'}"] = {
                "images_per_second": round(rate, 2),
                "foreign_cpu_pct": round(cpu_usage(before, cpu_snapshot()).foreign_pct, 1),
            }
        best = max(phases.values(), key=lambda p: float(p["images_per_second"]))
        before = cpu_snapshot()
        job = batch_job(small, root / "out-small")
        job["foreign_cpu_pct"] = round(cpu_usage(before, cpu_snapshot()).foreign_pct, 1)
        phases["batch_n"] = job
        large = make_archive(root, args.images * args.scale)
        before = cpu_snapshot()
        job_large = batch_job(large, root / "out-large")
        job_large["foreign_cpu_pct"] = round(cpu_usage(before, cpu_snapshot()).foreign_pct, 1)
        phases["batch_scale_n"] = job_large
    base = float(best["images_per_second"])
    report["phases"] = phases
    report["ratio_steady_n"] = round(job["steady_images_per_second"] / base, 3)
    report["ratio_steady_scale_n"] = round(job_large["steady_images_per_second"] / base, 3)
    report["ratio_end_to_end_scale_n"] = round(job_large["images"] / job_large["wall_s"] / base, 3)
    report["rss_tree_growth_pct"] = round(
        100 * (job_large["peak_rss_tree_mb"] / job["peak_rss_tree_mb"] - 1), 1
    )
    report["rss_driver_growth_pct"] = round(
        100 * (job_large["peak_rss_driver_mb"] / job["peak_rss_driver_mb"] - 1), 1
    )
    print(machine_line(machine))
    for name, phase in phases.items():
        print(f"{name}: {json.dumps(phase)}")
    print(
        f"ratio batch/in-process (steady): N {report['ratio_steady_n']}, {args.scale}N "
        f"{report['ratio_steady_scale_n']}; end-to-end {args.scale}N {report['ratio_end_to_end_scale_n']}; "
        f"peak RSS growth {args.scale}N vs N: tree {report['rss_tree_growth_pct']}%, "
        f"driver {report['rss_driver_growth_pct']}%"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
