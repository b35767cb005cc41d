"""The gateway's per-caller drift monitor: one window per caller, the status on every answer, referral and
unconfirmed malignancy while a caller is flagged, bounded memory, and the metric."""

from __future__ import annotations

from prometheus_client import REGISTRY

from gateway.domain import AnalysisReport, Classification
from gateway.site_monitor import UNVALIDATED_REASON, SiteMonitor, image_bit
from hemascope.consensus import Consensus
from hemascope.site.drift import DriftRule, SiteStatus
from hemascope.v1 import classifier_pb2

RULE = DriftRule(window=10, min_images=5, flag_share=0.5, clear_share=0.2)


def _prediction(atypical: bool, checked: bool = True) -> classifier_pb2.ModelPrediction:
    return classifier_pb2.ModelPrediction(
        model="m", label="myeloblast", acquisition_checked=checked, atypical_acquisition=atypical
    )


def _report(atypical: bool, checked: bool = True, malignant: bool = True) -> AnalysisReport:
    verdict = Consensus("myeloblast", 0.9, 1.0, 0.9 if malignant else 0.1, malignant, False, ())
    predictions = [
        _prediction(atypical, checked),
        _prediction(atypical, checked),
        _prediction(False, checked),
    ]
    report = AnalysisReport("", "00", 1, 1)
    report.classification = Classification(predictions, "v", verdict)
    return report


def test_the_image_bit_is_the_majority_of_checked_models() -> None:
    assert image_bit([_prediction(True), _prediction(True), _prediction(False)]) is True
    assert image_bit([_prediction(True), _prediction(False)]) is False
    assert image_bit([_prediction(True, checked=False)]) is None


def test_each_caller_has_its_own_window_and_status() -> None:
    monitor = SiteMonitor(RULE)
    for _ in range(5):
        typical, shifted = _report(False), _report(True)
        monitor.observe("typical-lab", typical)
        monitor.observe("new-lab", shifted)
    assert typical.site is not None and typical.site.status is SiteStatus.CONSISTENT
    assert shifted.site is not None and shifted.site.status is SiteStatus.UNVALIDATED
    assert shifted.site.images_seen == 5 and shifted.site.atypical_share == 1.0
    assert monitor.status("typical-lab").status is SiteStatus.CONSISTENT
    assert monitor.status("never-seen").status is SiteStatus.UNMONITORED
    flagged = REGISTRY.get_sample_value("hemascope_gateway_site_unvalidated", {"caller": "new-lab"})
    assert flagged == 1.0


def test_while_unvalidated_every_answer_is_referred_and_malignancy_unconfirmed() -> None:
    monitor = SiteMonitor(RULE)
    for _ in range(5):
        monitor.observe("lab", _report(True))
    # a typical image from a flagged caller: still answered, referred with the site reason
    report = _report(False)
    monitor.observe("lab", report)
    assert report.classification is not None
    verdict = report.classification.consensus
    assert verdict.label == "myeloblast" and verdict.malignant
    assert verdict.refer and verdict.refer_reasons[-1] == UNVALIDATED_REASON
    assert verdict.malignant_unconfirmed
    benign = _report(False, malignant=False)
    monitor.observe("lab", benign)
    assert benign.classification is not None and not benign.classification.consensus.malignant_unconfirmed


def test_unchecked_images_leave_the_window_alone_and_callers_are_bounded() -> None:
    monitor = SiteMonitor(RULE, max_callers=2)
    report = _report(True, checked=False)
    monitor.observe("a", report)
    assert report.site is not None and report.site.status is SiteStatus.UNMONITORED
    for caller in ("a", "b", "c"):
        monitor.observe(caller, _report(False))
    assert monitor.status("a").status is SiteStatus.UNMONITORED  # forgotten, least recently seen
    assert monitor.status("c").status is SiteStatus.LEARNING
    assert REGISTRY.get_sample_value("hemascope_gateway_site_atypical_share", {"caller": "a"}) is None
