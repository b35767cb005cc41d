"""The drift rule: when a caller's recent answers say its images are not what the bundle was validated on.

Each answer contributes one bit: was its acquisition *atypical* for the class it was given
(:class:`hemascope.bundle.site.SiteReference`; about ``expected_rate`` of in-distribution answers are, by
construction). A caller's window holds its last ``window`` bits. Once it holds at least ``min_images``,
the caller is flagged when the atypical share in the window reaches ``flag_share``, and cleared when the
share falls back to ``clear_share`` (hysteresis, so a caller near the line does not flap). The defaults
were chosen on leave-one-source-out streams (``hemascope study site-shift``): a held-out laboratory is
flagged within a window while no stream of the training laboratories is, over a thousand images each.

Pure logic, no clock and no I/O: the gateway keeps one :class:`DriftWindow` per caller.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class SiteStatus(StrEnum):
    #: fewer than ``min_images`` answers seen: no judgement yet
    LEARNING = "learning"
    #: the caller's recent images look like those the bundle was validated on
    CONSISTENT = "consistent"
    #: the caller's recent images do not: its answers need a local validation before they are relied on
    UNVALIDATED = "unvalidated site"
    #: the bundle has no acquisition reference, so nothing is monitored
    UNMONITORED = "unmonitored"


@dataclass(frozen=True)
class DriftRule:
    window: int = 50
    min_images: int = 30
    flag_share: float = 0.4
    clear_share: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.min_images <= self.window:
            raise ValueError("min_images must lie between 1 and window")
        if not 0 < self.clear_share < self.flag_share <= 1:
            raise ValueError("need 0 < clear_share < flag_share <= 1")


@dataclass
class DriftWindow:
    rule: DriftRule
    bits: deque[bool] = field(default_factory=deque)
    flagged: bool = False
    seen: int = 0

    def add(self, atypical: bool) -> SiteStatus:
        """Adds one answer's bit and returns the caller's status after it."""
        self.bits.append(bool(atypical))
        if len(self.bits) > self.rule.window:
            self.bits.popleft()
        self.seen += 1
        if len(self.bits) >= self.rule.min_images:
            share = self.share
            if not self.flagged and share >= self.rule.flag_share:
                self.flagged = True
            elif self.flagged and share <= self.rule.clear_share:
                self.flagged = False
        return self.status

    @property
    def share(self) -> float:
        return sum(self.bits) / len(self.bits) if self.bits else 0.0

    @property
    def status(self) -> SiteStatus:
        if self.flagged:
            return SiteStatus.UNVALIDATED
        if len(self.bits) < self.rule.min_images:
            return SiteStatus.LEARNING
        return SiteStatus.CONSISTENT
