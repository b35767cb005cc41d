"""Pure pieces of the explanation evaluation: ROAD's imputation system, the paired statistics, heat share."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer, neighbors_weights

from hemascope.datasets import CLASSES
from services.explain.evaluation.cellheat import heat_share
from services.explain.evaluation.data import HeldOut, stratified
from services.explain.evaluation.faithfulness import paired, relevance_order
from services.explain.evaluation.imputation import FastNoisyLinearImputer, imputation_system
from services.explain.evaluation.report import _speed


@pytest.mark.parametrize("removed", [0.2, 0.6])
def test_imputation_system_equals_the_librarys(removed: float) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 23, 31)).astype(np.float32)
    mask = (rng.random((23, 31)) > removed).astype(np.float32)
    mask[0, :5] = 0  # removed pixels on the border too
    ours, b, missing = imputation_system(mask, image)
    theirs, b_ref = NoisyLinearImputer.setup_sparse_system(mask, image, neighbors_weights)
    assert np.array_equal(missing, np.flatnonzero(mask.reshape(-1) == 0))
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), atol=1e-12)
    np.testing.assert_allclose(b, b_ref, atol=1e-6)


def test_fast_imputer_without_noise_matches_the_library_and_keeps_known_pixels() -> None:
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.normal(size=(3, 40, 40)).astype(np.float32))
    mask = torch.ones(40, 40)
    mask[10:25, 5:30] = 0
    ours = FastNoisyLinearImputer(noise=0.0)(image, mask)
    theirs = NoisyLinearImputer(noise=0.0)(image, mask)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert torch.equal(ours[:, mask > 0], image[:, mask > 0])
    assert not torch.allclose(ours[:, mask == 0], image[:, mask == 0])


def test_paired_verdicts() -> None:
    rng = np.random.default_rng(2)
    random = rng.random(50)
    better = paired(random + 0.2 + 0.01 * rng.normal(size=50), random, higher_is_better=True)
    assert better.verdict == "better than random" and better.ci_low > 0.15 and better.better_share > 0.9
    same = paired(random + 0.01 * rng.normal(size=50), random, higher_is_better=True)
    assert same.verdict == "not better than random" and same.ci_low < 0 < same.ci_high
    # deletion: a lower AUC is better, so the difference is signed accordingly
    assert paired(random - 0.2, random, higher_is_better=False).verdict == "better than random"
    assert paired(random + 0.2, random, higher_is_better=False).verdict == "WORSE than random"


def test_relevance_order_most_relevant_first_ties_in_fixed_order() -> None:
    heat = np.array([[0.1, 0.9], [0.9, 0.0]], np.float32)
    order = relevance_order(heat, np.array([3, 2, 1, 0], np.int64))
    assert order.tolist() == [2, 1, 0, 3]


def test_heat_share() -> None:
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    assert heat_share(mask.astype(np.float32), mask) == 1.0
    assert heat_share(np.ones((4, 4), np.float32), mask) == pytest.approx(0.25)
    assert np.isnan(heat_share(np.zeros((4, 4), np.float32), mask))


def test_held_out_draw_is_equal_per_class_then_per_laboratory_and_reproducible() -> None:
    items: list[HeldOut] = []
    for c in CLASSES:
        items += [
            (Path(f"/x/{c}-{i}.jpg"), c, "barcelona" if c != "myeloblast" else "munich") for i in range(30)
        ]
        items += [(Path(f"/y/{c}-{i}.jpg"), c, "johns-hopkins") for i in range(3 if c == "basophil" else 30)]
    drawn = stratified(items, 40)
    assert drawn == stratified(list(reversed(items)), 40)  # the order of the list does not matter
    counts = Counter((CLASSES[im.label], im.scanner) for im in drawn)
    assert counts[("basophil", "johns-hopkins")] == 3 and counts[("basophil", "barcelona")] == 5  # 3 are all
    assert counts[("myeloblast", "munich")] == counts[("myeloblast", "johns-hopkins")] == 4
    assert all(n == 4 for (c, _), n in counts.items() if c not in ("basophil",))
    assert len({im.path for im in drawn}) == 40 and stratified(items, 40, seed=1) != drawn


def test_the_report_gives_cam_time_against_the_forward_pass_only_when_measured() -> None:
    entry = {"method": "ablationcam", "cam_ms_p50": 12.5, "x_forward": 1.5}
    measured = {"speed": {"forward_ms_p50": 25.0, "images": 3}, "models": {"svm": entry}}
    lines = _speed("test", measured)
    assert lines[0] == "### test: 3 images, forward pass p50 25.0 ms"
    assert "| svm | ablationcam | 12.5 | 1.50 |" in lines
    assert _speed("test", {"models": {"svm": {"method": "ablationcam"}}}) == []  # maps read from a cache
