"""How big the actor pool and its batches are, from what the machine or cluster has.

CPU only: one actor per core, each with one ONNX Runtime thread (decoding and preprocessing are single
threaded, so several actors keep every core busy where one multi-threaded session would wait on them).
Each actor reserves 0.9 of a core so the byte readers (0.1 each) always find room beside a full pool.
With GPUs: one actor per GPU, all of its node's share of cores for ONNX Runtime, larger batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ACTOR_CPUS = 0.9
READER_CPUS = 0.1
CPU_BATCH = 32
GPU_BATCH = 128


@dataclass(frozen=True)
class Plan:
    actors: int
    batch_size: int
    actor_cpus: float
    actor_gpus: float
    #: ONNX Runtime intra-op threads per actor (0: ONNX Runtime's choice, all cores)
    threads: int

    @property
    def use_gpu(self) -> bool:
        return self.actor_gpus > 0

    def describe(self) -> str:
        device = f"{self.actor_gpus:g} GPU" if self.use_gpu else f"{self.actor_cpus:g} CPU"
        return (
            f"{self.actors} worker(s), {device} and {self.threads or 'all'} thread(s) each, "
            f"batches of {self.batch_size}"
        )


def plan(cpus: float, gpus: float, *, actors: int = 0, batch_size: int = 0, use_gpu: bool = True) -> Plan:
    """The pool for a cluster of ``cpus`` cores and ``gpus`` GPUs; ``actors``/``batch_size`` override."""
    if gpus >= 1 and use_gpu:
        count = actors or int(gpus)
        share = max(1, math.floor((cpus - READER_CPUS * 2) / count))
        return Plan(count, batch_size or GPU_BATCH, float(share), 1.0, share)
    count = actors or max(1, math.floor(cpus))
    per_actor = min(ACTOR_CPUS, max(0.1, (cpus - READER_CPUS) / count))
    return Plan(count, batch_size or CPU_BATCH, round(per_actor, 3), 0.0, 1)
