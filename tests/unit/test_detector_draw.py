"""Box drawings: labels never cover one another, and a legend below the image names each colour."""

from __future__ import annotations

import itertools

import numpy as np

from hemascope.imaging.boxes import CLASS_COLOURS, Box, draw_boxes, place_labels


def crowded() -> list[Box]:
    """Overlapping cells, as on a smear: many boxes share their top-left corner region."""
    boxes = [Box(10 + 6 * i, 12 + 4 * i, 80 + 6 * i, 70 + 4 * i, 1, "RBC", 0.3 + 0.02 * i) for i in range(12)]
    boxes.append(Box(30, 20, 120, 110, 0, "WBC", 0.9))
    return boxes


def test_labels_never_overlap_and_stay_inside() -> None:
    boxes = crowded()
    sizes = [(48.0, 14.0)] * len(boxes)
    placed = place_labels(boxes, sizes, 200, 160)
    rects = [rect for rect in placed if rect is not None]
    for a, b in itertools.combinations(rects, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert all(r[0] >= 0 and r[2] <= 200 and r[1] >= 0 and r[3] <= 160 for r in rects)
    assert placed[-1] is not None  # the most confident cell always gets its label
    assert len(rects) < len(boxes)  # the crowd cannot all be labelled without overlaps


def test_a_legend_below_the_image_names_each_class() -> None:
    pixels = np.full((160, 200, 3), 240, np.uint8)
    drawn = np.asarray(draw_boxes(pixels, crowded()))
    assert drawn.shape[0] > 160 and drawn.shape[1] == 200  # a strip added below, nothing covered
    legend = drawn[160:]
    for name in ("WBC", "RBC"):
        assert (legend == CLASS_COLOURS[name]).all(axis=2).any(), name
    assert not (legend == CLASS_COLOURS["Platelets"]).all(axis=2).any()  # only the classes found
