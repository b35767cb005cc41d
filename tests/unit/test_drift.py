"""The per-caller drift rule: learning, flagging at the share, hysteresis on the way back."""

from __future__ import annotations

import pytest

from hemascope.site.drift import DriftRule, DriftWindow, SiteStatus


def test_learning_until_min_images_then_consistent() -> None:
    window = DriftWindow(DriftRule(window=10, min_images=4, flag_share=0.5, clear_share=0.2))
    assert [window.add(False) for _ in range(3)] == [SiteStatus.LEARNING] * 3
    assert window.add(False) is SiteStatus.CONSISTENT
    assert window.seen == 4


def test_flags_when_the_share_reaches_the_line_and_keeps_only_the_window() -> None:
    rule = DriftRule(window=10, min_images=4, flag_share=0.5, clear_share=0.2)
    window = DriftWindow(rule)
    statuses = [window.add(bit) for bit in [True, False, True, False]]
    assert statuses[-1] is SiteStatus.UNVALIDATED  # 2 of 4 = 0.5
    for _ in range(20):
        window.add(False)
    assert len(window.bits) == 10 and window.share == 0.0
    assert window.status is SiteStatus.CONSISTENT


def test_hysteresis_keeps_the_flag_between_the_two_shares() -> None:
    rule = DriftRule(window=10, min_images=10, flag_share=0.5, clear_share=0.2)
    window = DriftWindow(rule)
    for bit in [True] * 5 + [False] * 5:
        window.add(bit)
    assert window.status is SiteStatus.UNVALIDATED
    # 3 of 10 atypical: below the flag line, above the clear line: still flagged
    for bit in [False, False]:
        window.add(bit)
    assert window.share == pytest.approx(0.3) and window.status is SiteStatus.UNVALIDATED
    window.add(False)
    assert window.share == pytest.approx(0.2) and window.status is SiteStatus.CONSISTENT


@pytest.mark.parametrize(
    "kwargs", [{"min_images": 0}, {"min_images": 60}, {"flag_share": 0.1}, {"clear_share": 0.0}]
)
def test_rule_refuses_inconsistent_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must lie|need 0"):
        DriftRule(**kwargs)  # type: ignore[arg-type]
