"""The explain service's cache (keys, value encoding, in-process LRU) and its admission control."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hemascope.errors import DeadlineExceeded, ResourceExhausted
from services.explain.admission import Admission
from services.explain.cache import (
    CachedHeat,
    ExplainKey,
    MemoryStore,
    build_explain_cache,
)


def key(**changes: str) -> ExplainKey:
    fields = {
        "content_hash": "ab" * 32,
        "bundle_version": "20261126T125826Z-b6ed903c",
        "preprocessing": "rgb-224-bilinear-aa-imagenet.v1",
        "model": "logistic_regression",
        "method": "gradcam",
        "target_class": "",
    }
    return ExplainKey(**(fields | changes))


def heat(box: tuple[int, int, int, int] | None = None) -> CachedHeat:
    rng = np.random.default_rng(0)
    probs = rng.random(5)
    return CachedHeat(
        heatmap=rng.random((7, 7)).astype(np.float32),
        class_index=3,
        predicted_index=1,
        probabilities=probs / probs.sum(),
        method="gradcam",
        box=box,
    )


def test_every_field_changes_the_key_and_no_image_bytes_or_ids_are_in_it() -> None:
    base = key()
    variants = [
        key(content_hash="cd" * 32),
        key(bundle_version="other"),
        key(preprocessing="cellcrop-224"),
        key(model="svm"),
        key(method="gradcam++"),
        key(target_class="myeloblast"),
    ]
    rendered = {k.render("p:") for k in [base, *variants]}
    assert len(rendered) == 1 + len(variants)
    assert base.render("p:").startswith("p:cam:v1:")


def test_separators_inside_fields_cannot_make_two_keys_collide() -> None:
    a = key(model="a:b", method="c")
    b = key(model="a", method="b:c")
    assert a.render("") != b.render("")


@pytest.mark.parametrize("box", [None, (10, 20, 200, 210)])
def test_values_round_trip_exactly(box: tuple[int, int, int, int] | None) -> None:
    value = heat(box)
    back = CachedHeat.decode(value.encode())
    assert back is not None
    assert back.heatmap.dtype == np.float32 and np.array_equal(back.heatmap, value.heatmap)
    assert np.array_equal(back.probabilities, value.probabilities)
    assert (back.class_index, back.predicted_index, back.method, back.box) == (3, 1, "gradcam", box)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"{}",
        b'{"heatmap": [], "probabilities": [1], "class_index": 0, '
        b'"predicted_index": 0, "method": "gradcam", "box": null}',
        b"[1, 2]",
    ],
)
def test_corrupt_values_are_misses(data: bytes) -> None:
    assert CachedHeat.decode(data) is None
    cache = build_explain_cache(None, prefix="", ttl_s=60, memory_entries=4, redis_timeout_s=0.05)
    cache.store.put(key().render(""), data)
    assert cache.get(key()) is None


def test_out_of_range_indices_are_misses() -> None:
    value = heat()
    bad = CachedHeat(value.heatmap, 7, 1, value.probabilities, "gradcam", None)
    assert CachedHeat.decode(bad.encode()) is None


def test_memory_cache_is_an_lru_and_zero_entries_disables_it() -> None:
    cache = build_explain_cache(None, prefix="x:", ttl_s=60, memory_entries=2, redis_timeout_s=0.05)
    assert cache.backend == "memory"
    keys = [key(model=f"m{i}") for i in range(3)]
    cache.put(keys[0], heat())
    cache.put(keys[1], heat())
    assert cache.get(keys[0]) is not None  # now most recently used
    cache.put(keys[2], heat())  # evicts keys[1]
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is not None and cache.get(keys[2]) is not None
    assert isinstance(cache.store, MemoryStore) and len(cache.store) == 2
    off = build_explain_cache(None, prefix="", ttl_s=60, memory_entries=0, redis_timeout_s=0.05)
    off.put(keys[0], heat())
    assert off.backend == "none" and off.get(keys[0]) is None


def test_admission_refuses_beyond_the_queue_and_times_out_waiters() -> None:
    admission = Admission(max_concurrent=1, max_queue=1)
    entered = threading.Event()
    release = threading.Event()
    outcome: list[str] = []

    def holder() -> None:
        with admission.slot():
            entered.set()
            release.wait(10)

    def waiter() -> None:
        with admission.slot(timeout=10) as waited:
            outcome.append(f"waited {waited >= 0}")

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    assert entered.wait(10)
    threads.append(threading.Thread(target=waiter))
    threads[1].start()
    for _ in range(1000):  # until the waiter is queued
        if admission.waiting == 1:
            break
        threading.Event().wait(0.01)
    assert admission.waiting == 1
    with pytest.raises(ResourceExhausted), admission.slot(timeout=10):  # one running, one waiting: full
        pass
    release.set()
    for thread in threads:
        thread.join(10)
    assert outcome == ["waited True"] and admission.waiting == 0


def test_admission_deadline_while_waiting() -> None:
    admission = Admission(max_concurrent=1, max_queue=4)
    with admission.slot(), pytest.raises(DeadlineExceeded), admission.slot(timeout=0.05):
        pass
    with admission.slot(timeout=0.05) as waited:  # released: free again
        assert waited < 1
