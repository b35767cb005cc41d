"""A working image passed in (computed once for the input check and the cell crop) gives what each step
computes from the pixels alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hemascope.imaging.cellseg import working_image
from hemascope.imaging.decode import decode_image
from hemascope.imaging.inputcheck import blank_reason, check_input
from hemascope.imaging.preprocess import PREPROCESSING


def test_a_shared_working_image_changes_nothing(real_images: list[Path]) -> None:
    blank = np.full((90, 80, 3), 200, np.uint8)
    for pixels in [*(decode_image(p.read_bytes()).pixels for p in real_images[::3]), blank]:
        working = working_image(pixels)
        assert check_input(pixels, working=working) == check_input(pixels)
        assert blank_reason(pixels, working=working) == blank_reason(pixels)
        for option in PREPROCESSING.values():
            shared = option.prepare_report(pixels, working)
            alone = option.prepare_report(pixels)
            assert np.array_equal(shared.pixels, alone.pixels), option.name
            assert (shared.fallbacks, shared.box) == (alone.fallbacks, alone.box)
