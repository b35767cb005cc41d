"""End to end: ``hemascope up --tracing-endpoint`` runs every service and the gateway as their own processes,
each exporting its spans over OTLP/gRPC to a real collector served by this test. One Analyze through the
gateway is one trace with spans of all five processes, the W3C trace context having crossed each process
boundary in gRPC metadata; the processes export what is left when ``up`` stops them (SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from hemascope.data import REPO_ROOT
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2
from tests.otlp_collector import otlp_collector

# run from the repository, so the processes run this checkout's code whatever the environment installed
HEMASCOPE = [sys.executable, "-m", "hemascope"]
START_TIMEOUT = 600.0
PROCESSES = {"gateway", "feature", "classifier", "detector", "explain"}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    until = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_one_analyze_through_up_is_one_trace_across_every_process(
    tmp_path: Path, model_cache_dir: Path, data_dir: Path
) -> None:
    cell = sorted((data_dir / "bloodcells-5class" / "val" / "monocyte").glob("*.jpg"))[0].read_bytes()
    env = dict(os.environ) | {
        "HEMASCOPE_FEATURE_MODEL_CACHE_DIR": str(model_cache_dir),
        "HEMASCOPE_FEATURE_INTRA_OP_THREADS": "1",
        "HEMASCOPE_DETECTOR_INTRA_OP_THREADS": "1",
        "HEMASCOPE_EXPLAIN_TORCH_THREADS": "1",
    }
    state_file, audit = tmp_path / "state.json", tmp_path / "audit.jsonl"
    with otlp_collector() as (collector, endpoint):
        command = [*HEMASCOPE, "up", "--free-ports", "--state-file", str(state_file)]
        command += ["--audit-log", str(audit), "--tracing-endpoint", endpoint, "--grace", "10"]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        output: list[str] = []

        def pump() -> None:
            assert process.stdout is not None
            output.extend(process.stdout)

        threading.Thread(target=pump, daemon=True).start()
        try:
            wait_for(
                lambda: "hemascope is up" in "".join(output) or process.poll() is not None,
                START_TIMEOUT,
                "up",
            )
            assert process.poll() is None, "".join(output)
            children = {c["name"]: c for c in json.loads(state_file.read_text())["children"]}
            collector.taken()  # start-up (the gateway describing the services) is not this test's trace
            with grpc.insecure_channel(children["gateway"]["address"]) as channel:
                request = analysis_pb2.AnalyzeRequest(
                    image=common_pb2.Image(data=cell),
                    options=analysis_pb2.AnalyzeOptions(detect=True, explain=True),
                )
                response = analysis_pb2_grpc.AnalysisServiceStub(channel).Analyze(request, timeout=300)
            assert all(part.code == 0 for part in response.parts), response.parts
        finally:
            process.send_signal(signal.SIGTERM)  # every process stops gracefully and exports what is left
            process.wait(120)
        spans = collector.taken()
    (analyze,) = [s for s in spans if s.service == "gateway" and s.name.endswith("AnalysisService/Analyze")]
    ours = [s for s in spans if s.trace_id == analyze.trace_id]
    assert {s.service for s in ours} == PROCESSES
    by_id = {s.span_id: s for s in ours}
    assert all(s.parent_span_id in by_id for s in ours if s is not analyze)
    for step in ("feature.embed", "classifier.classify", "detector.detect", "explain.explain"):
        assert any(s.name == step for s in ours), step
    # the Analyze's downstream calls are all in that trace: none started a trace of its own
    calls = [s for s in spans if s.name.rsplit("/", 1)[-1] in ("Embed", "Classify", "Detect", "Explain")]
    assert {s.trace_id for s in calls} == {analyze.trace_id}
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["trace_id"] for r in records if r["rpc"] == "Analyze"] == [analyze.trace_id]
