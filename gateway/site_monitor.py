"""Per-caller drift monitor: does this caller's stream of images look like what the bundle was validated on?

Every classified image contributes one bit: the majority of the models whose acquisition was checked found
it atypical for their answer (classifier.proto ModelPrediction.atypical_acquisition). The monitor keeps one
rolling window per caller (:class:`hemascope.site.drift.DriftWindow`) and its status. While a caller is
flagged "unvalidated site", every answer to it is referred with the reason and a malignant call is marked
unconfirmed; the status is in every AnalyzeResponse, in GetCapabilities, and exported per caller as a
metric. Callers are kept in least-recently-seen order up to ``max_callers`` so memory stays bounded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

from prometheus_client import Counter, Gauge

from gateway.domain import AnalysisReport, Classification, SiteReport
from hemascope.site.drift import DriftRule, DriftWindow, SiteStatus
from hemascope.v1 import classifier_pb2

SITE_ATYPICAL_SHARE = Gauge(
    "hemascope_gateway_site_atypical_share",
    "Share of a caller's recent images whose acquisition was atypical for the answered class.",
    ["caller"],
)
SITE_UNVALIDATED = Gauge(
    "hemascope_gateway_site_unvalidated",
    "1 while a caller's recent images are flagged as an unvalidated site (drift), else 0.",
    ["caller"],
)
SITE_FLAGS = Counter(
    "hemascope_gateway_site_flags_total", "Times a caller was flagged as an unvalidated site.", ["caller"]
)
UNVALIDATED_REASON = "site: this caller's recent images are unlike those the bundle was validated on"


def image_bit(predictions: Sequence[classifier_pb2.ModelPrediction]) -> bool | None:
    """Atypical when most models whose acquisition was checked say so; None when none was checked."""
    checked = [p for p in predictions if p.acquisition_checked]
    if not checked:
        return None
    return 2 * sum(p.atypical_acquisition for p in checked) > len(checked)


class SiteMonitor:
    def __init__(self, rule: DriftRule, max_callers: int = 10_000) -> None:
        self.rule = rule
        self._max_callers = max_callers
        self._windows: OrderedDict[str, DriftWindow] = OrderedDict()
        self._lock = threading.Lock()

    def status(self, caller_id: str) -> SiteReport:
        with self._lock:
            window = self._windows.get(caller_id)
            return self._report(window) if window is not None else SiteReport(SiteStatus.UNMONITORED)

    def observe(self, caller_id: str, report: AnalysisReport) -> None:
        """Adds the report's image to its caller's window; sets ``report.site`` and, while the caller is
        unvalidated, refers the answer and marks a malignant call unconfirmed."""
        classification = report.classification
        if classification is None:
            return
        bit = image_bit(classification.predictions)
        with self._lock:
            window = self._windows.get(caller_id)
            if bit is None:
                site = self._report(window) if window is not None else SiteReport(SiteStatus.UNMONITORED)
            else:
                if window is None:
                    window = self._windows[caller_id] = DriftWindow(self.rule)
                    while len(self._windows) > self._max_callers:
                        evicted, _ = self._windows.popitem(last=False)
                        SITE_ATYPICAL_SHARE.remove(evicted)
                        SITE_UNVALIDATED.remove(evicted)
                self._windows.move_to_end(caller_id)
                was_flagged = window.flagged
                window.add(bit)
                if window.flagged and not was_flagged:
                    SITE_FLAGS.labels(caller_id).inc()
                SITE_ATYPICAL_SHARE.labels(caller_id).set(window.share)
                SITE_UNVALIDATED.labels(caller_id).set(int(window.flagged))
                site = self._report(window)
        report.site = site
        if site.status is SiteStatus.UNVALIDATED:
            report.classification = _unvalidated(classification)

    def _report(self, window: DriftWindow) -> SiteReport:
        return SiteReport(
            window.status,
            window.share,
            len(window.bits),
            self.rule.window,
            self.rule.flag_share,
            window.seen,
        )


def _unvalidated(classification: Classification) -> Classification:
    verdict = classification.consensus
    reasons = (*verdict.refer_reasons, UNVALIDATED_REASON)
    verdict = replace(verdict, refer=True, refer_reasons=reasons, malignant_unconfirmed=verdict.malignant)
    return replace(classification, consensus=verdict)
