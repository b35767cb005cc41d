"""Runs a batch job: Ray start-up (local by default), the streaming pipeline, the driver's writing loop.

    source rows (paths or bytes) --read_bytes (Ray tasks)--> bytes + content hash (skipped when in OUT)
        --map_batches(Analyzer | Embedder, actor pool)--> result rows / error rows --driver--> OUT

Ray Data streams: blocks flow through both stages while the driver writes finished ones, so memory stays
bounded by the blocks in flight, not by the size of the archive.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from batch.output import ResultStore
from batch.plan import READER_CPUS, Plan, plan
from batch.schema import Layout, split
from batch.sources import Source, read_bytes, read_row_group, resolve
from batch.summary import Summary
from batch.worker import Analyzer, Embedder, WorkerConfig
from hemascope.bundle import MANIFEST, BundleError, Manifest
from hemascope.errors import FailedPrecondition
from hemascope.logs import get_logger

log = get_logger(__name__)
#: Object store of a local Ray instance: small, the blocks in flight are a few MB each.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
MAX_PATHS_PER_BLOCK = 256


@dataclass(frozen=True)
class BatchJob:
    """One ``hemascope batch analyze|embed`` run."""

    input: str
    out: str
    classify: bool = True
    bundle: str = ""
    backbone: str = ""
    preprocessing: str = ""
    embedding: bool = False
    detect: bool = False
    detector_model: str = ""
    ray_address: str = ""
    actors: int = 0
    batch_size: int = 0
    use_gpu: bool = True
    rows_per_part: int = 100_000
    bytes_column: str | None = None
    path_column: str | None = None
    log_level: str = "WARNING"


def start_ray(address: str, log_level: str = "WARNING") -> None:
    """A cluster at ``address``, or a light local instance: the machine's cores, no dashboard."""
    import ray

    if ray.is_initialized():
        return
    level = getattr(logging, log_level.upper(), logging.WARNING)
    if level >= logging.WARNING:  # Ray's own start-up chatter (C++ core and Python) at errors only
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        level = logging.ERROR
    if address:
        ray.init(address=address, logging_level=level, log_to_driver=False)
        return
    ray.init(
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        logging_level=level,
        log_to_driver=False,
    )


def _resources() -> tuple[float, float]:
    import ray

    available = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return float(available.get("CPU", 1.0)), float(available.get("GPU", 0.0))


def layout_for(job: BatchJob) -> tuple[Layout, str, str]:
    """The result layout, backbone and preprocessing: the bundle's when classifying (its models, classes
    and provenance), else the feature service's defaults (or the options given)."""
    from services.feature.settings import FeatureSettings

    defaults = FeatureSettings()  # type: ignore[call-arg]
    backbone = job.backbone or defaults.backbone
    preprocessing = job.preprocessing or defaults.preprocessing
    if not job.classify:
        return Layout(classify=False, embedding=True), backbone, preprocessing
    from hemascope.imaging.preprocess import get_preprocessing, preprocessing_for_version

    manifest = read_manifest(job.bundle)
    option = preprocessing_for_version(manifest.preprocessing).name
    given_option = get_preprocessing(job.preprocessing).name if job.preprocessing else ""
    for name, given, expected in (
        ("backbone", job.backbone, manifest.backbone),
        ("preprocessing", given_option, option),
    ):
        if given and given != expected:
            raise FailedPrecondition(
                f"bundle {manifest.bundle_version} was trained on {name} {expected!r}, not {given!r}; "
                f"omit --{name} to use the bundle's",
                reason=f"WRONG_{name.upper()}",
                field=name,
            )
    layout = Layout(
        classify=True,
        models=tuple(manifest.models),
        classes=tuple(manifest.classes),
        embedding=job.embedding,
        detect=job.detect,
    )
    return layout, manifest.backbone, option


def read_manifest(bundle: str) -> Manifest:
    path = Path(bundle) / MANIFEST
    try:
        return Manifest.from_json(path.read_text())
    except OSError as exc:
        raise BundleError(f"cannot read the bundle's manifest {path}: {exc.strerror or exc}") from None


def provenance(job: BatchJob, layout: Layout, backbone: str, preprocessing: str) -> Layout:
    """The layout with its provenance: the weights' hash and preprocessing version the workers will load
    (the ONNX export made here, once, when missing, so the workers never race to make it)."""
    from hemascope.files import file_sha256
    from hemascope.imaging.preprocess import get_preprocessing
    from services.feature.backbones import check_graph_compatible, get_spec, weights_file
    from services.feature.onnx_export import ensure_onnx
    from services.feature.settings import FeatureSettings

    settings = FeatureSettings()  # type: ignore[call-arg]
    spec = get_spec(backbone)
    option = get_preprocessing(preprocessing)
    check_graph_compatible(spec, option)
    weights = weights_file(spec.name, settings.resnet50_checkpoint)
    weights_hash = file_sha256(weights)
    if not job.ray_address:
        ensure_onnx(spec, weights, weights_hash, settings.model_cache_dir)
    names: list[tuple[str, str]] = []
    if layout.classify:
        names.append(("bundle_version", read_manifest(job.bundle).bundle_version))
    names += [("backbone", spec.name), ("weights_hash", weights_hash), ("preprocessing", option.version)]
    if layout.detect:
        from services.detector.runtime import VERSION_DIGITS
        from services.detector.settings import DetectorSettings

        model = Path(job.detector_model) if job.detector_model else DetectorSettings().model  # type: ignore[call-arg]
        names.append(("detector_version", file_sha256(model)[:VERSION_DIGITS]))
    return replace(layout, provenance=tuple(names))


def rows_per_block(count: int, pool: Plan) -> int:
    """Blocks small enough that every actor gets several, large enough to keep per-block costs low."""
    return max(1, min(MAX_PATHS_PER_BLOCK, math.ceil(count / (pool.actors * 4))))


def source_dataset(source: Source, done: set[str], block_rows: int) -> Any:
    """The Ray dataset of source rows, with bytes read and hashed in Ray tasks."""
    import ray
    import ray.data

    done_ref = ray.put(frozenset(done)) if done else None
    if source.paths:
        table = pa.table({"path": pa.array(source.paths, pa.string())})
        blocks = [table.slice(i, block_rows) for i in range(0, table.num_rows, block_rows)]
        return ray.data.from_arrow(blocks).map_batches(
            _read_task,  # type: ignore[arg-type]  # (keyword-only fn_kwargs)
            batch_format="pyarrow",
            batch_size=block_rows,
            num_cpus=READER_CPUS,
            fn_kwargs={"done_ref": done_ref},
        )
    # Parquet: one task per row group, reading it in slices (the bytes never pass through the driver).
    table = pa.table(
        {
            "file": pa.array([f for f, _ in source.fragments], pa.string()),
            "group": pa.array([g for _, g in source.fragments], pa.int64()),
        }
    )
    columns = {"bytes_column": source.bytes_column, "path_column": source.path_column}
    return ray.data.from_arrow([table.slice(i, 1) for i in range(table.num_rows)]).map_batches(
        _read_parquet_task,  # type: ignore[arg-type]
        batch_format="pyarrow",
        batch_size=1,
        num_cpus=READER_CPUS,
        fn_kwargs={"done_ref": done_ref, "rows": block_rows, **columns},
    )


def _read_task(batch: pa.Table, *, done_ref: Any) -> pa.Table:
    import ray

    return read_bytes(batch, done=ray.get(done_ref) if done_ref is not None else None)


def _read_parquet_task(batch: pa.Table, *, done_ref: Any, rows: int, **columns: str) -> Iterator[pa.Table]:
    import ray

    done = ray.get(done_ref) if done_ref is not None else None
    for file, group in zip(batch.column("file").to_pylist(), batch.column("group").to_pylist(), strict=True):
        yield from read_row_group(file, group, done=done, rows=rows, **columns)


def run(
    job: BatchJob,
    progress: Callable[[int], object] | None = None,
    total: Callable[[int], object] | None = None,
) -> Summary:
    """Runs ``job``; returns what it did. ``total`` hears the number of inputs, ``progress`` each batch's."""
    import ray.data

    layout, backbone, preprocessing = layout_for(job)
    layout = provenance(job, layout, backbone, preprocessing)
    store = ResultStore(job.out)
    store.check_compatible(layout)
    source = resolve(job.input, bytes_column=job.bytes_column, path_column=job.path_column)
    if total is not None:
        total(source.count)
    done = store.done_hashes()
    start_ray(job.ray_address, job.log_level)
    cpus, gpus = _resources()
    pool = plan(cpus, gpus, actors=job.actors, batch_size=job.batch_size, use_gpu=job.use_gpu)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    log.info("batch_plan", plan=pool.describe(), inputs=source.count, already_done=len(done))
    config = WorkerConfig(
        layout=layout,
        run_id=run_id,
        backbone=backbone,
        preprocessing=preprocessing,
        bundle=job.bundle,
        detector_model=job.detector_model,
        threads=pool.threads,
        use_gpu=pool.use_gpu,
        batch_size=pool.batch_size,
        log_level=job.log_level,
    )
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data")  # pool-size advice
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(max(logging.WARNING, logging.getLogger("ray").level))
    pipeline = source_dataset(source, done, rows_per_block(source.count, pool)).map_batches(
        Analyzer if layout.classify else Embedder,
        fn_constructor_kwargs={"config": config},
        batch_format="pyarrow",
        batch_size=pool.batch_size,
        compute=ray.data.ActorPoolStrategy(size=pool.actors),
        num_cpus=pool.actor_cpus,
        num_gpus=pool.actor_gpus or None,
    )
    summary = Summary(run_id=run_id, out=job.out)
    results, errors = store.writers(layout, run_id, job.rows_per_part)
    started = time.perf_counter()
    try:
        for table in pipeline.iter_batches(batch_size=None, batch_format="pyarrow"):
            ok, bad, skipped = split(table, layout, run_id)
            results.write(ok)
            errors.write(bad)
            summary.add(ok, bad, skipped)
            if not summary.warmup_s:
                summary.warmup_s = time.perf_counter() - started
                summary.warmup_rows = ok.num_rows + bad.num_rows
            if progress is not None:
                progress(table.num_rows)
    finally:
        results.close()
        errors.close()
        summary.seconds = time.perf_counter() - started
    record = summary.as_dict() | {"plan": pool.describe(), "input": job.input}
    store.write_summary(run_id, record)
    return summary
