"""The consensus of the classifier models on one cell, and whether to refer it to a human.

One implementation for every entry point: the gateway (votes from the classifier service's answer) and the
batch pipeline (votes from the classifier core's outputs) both call :func:`consensus`.

consensus label = the class with the largest mean calibrated probability over the models that ran;
agreement = the fraction of models whose own label is that class; malignant probability = the mean of the
models' malignant probabilities, flagged at the threshold; refer when any model abstains (low confidence,
out of distribution, or both, or the image is not a single centred white cell) or when the models disagree on
the label, with one reason per cause; the input check's own reason, when the image is not a single cell,
comes first. When any model found the image's acquisition atypical for its answer (the class was never
validated on images taken like this one), a malignant call is still reported but marked unconfirmed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Refer reasons as the classifier reports them (classifier.proto ReferReason), in words.
REFER_WORDS: Mapping[str, str] = {
    "LOW_CONFIDENCE": "low confidence",
    "OUT_OF_DISTRIBUTION": "out of distribution",
    "LOW_CONFIDENCE_AND_OUT_OF_DISTRIBUTION": "low confidence and out of distribution",
    "NOT_SINGLE_CELL": "not a single-cell image",
    "ATYPICAL_ACQUISITION": "acquisition atypical for its class",
}
DEFAULT_MALIGNANT_THRESHOLD = 0.5
#: Input-check kinds (hemascope.imaging.inputcheck.InputKind values) on which the classifier may answer.
ANSWERABLE_KINDS = frozenset({"", "single_cell"})


@dataclass(frozen=True)
class ModelVote:
    """One model's verdict, as the consensus needs it."""

    model: str
    label: str
    probabilities: Mapping[str, float]
    malignant_probability: float
    abstain: bool = False
    refer_reason: str = ""
    """A key of :data:`REFER_WORDS` ("LOW_CONFIDENCE", "NOT_SINGLE_CELL", ...) or empty."""
    atypical_acquisition: bool = False


@dataclass(frozen=True)
class Consensus:
    label: str
    probability: float
    agreement: float
    malignant_probability: float
    malignant: bool
    refer: bool
    refer_reasons: tuple[str, ...]
    atypical_acquisition: bool = False
    #: malignant, but from an acquisition the bundle was not validated on: to be confirmed by a reviewer
    malignant_unconfirmed: bool = False


def consensus(
    votes: Sequence[ModelVote],
    classes: Sequence[str],
    malignant_threshold: float = DEFAULT_MALIGNANT_THRESHOLD,
    input_reason: str = "",
) -> Consensus:
    """Combines the votes; ``classes`` fixes the order (ties go to the earlier class). Needs >= 1 vote.

    ``input_reason``: why the image is not a single centred white cell (the input check), or empty; when
    set the cell is referred whatever the votes say.
    """
    if not votes:
        raise ValueError("consensus needs at least one model's vote")
    if not 0 < malignant_threshold <= 1:
        raise ValueError("malignant_threshold must be in (0, 1]")
    n = len(votes)
    means = {name: sum(vote.probabilities.get(name, 0.0) for vote in votes) / n for name in classes}
    label = max(classes, key=lambda name: means[name])  # max keeps the first of equal values
    agreement = sum(vote.label == label for vote in votes) / n
    malignant_probability = sum(vote.malignant_probability for vote in votes) / n
    reasons = [f"input: {input_reason}"] if input_reason else []
    reasons += [
        f"{vote.model}: {REFER_WORDS.get(vote.refer_reason, 'abstains')}" for vote in votes if vote.abstain
    ]
    labels = sorted({vote.label for vote in votes})
    if len(labels) > 1:
        reasons.append(f"models disagree: {', '.join(labels)}")
    malignant = malignant_probability >= malignant_threshold
    atypical = any(vote.atypical_acquisition for vote in votes)
    return Consensus(
        label=label,
        probability=means[label],
        agreement=agreement,
        malignant_probability=malignant_probability,
        malignant=malignant,
        refer=bool(reasons),
        refer_reasons=tuple(reasons),
        atypical_acquisition=atypical,
        malignant_unconfirmed=malignant and atypical,
    )


def input_reason(kind: str, reason: str) -> str:
    """Why the input check found no single centred white cell ("" when it did, or the image was unchecked).

    ``kind`` is an InputKind value ("multiple_cells", ...) or "" when unchecked; ``reason`` the check's words.
    """
    if kind in ANSWERABLE_KINDS:
        return ""
    return reason or kind
