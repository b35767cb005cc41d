"""The gateway's consensus of the classifier models: label, agreement, malignancy, refer reasons."""

from __future__ import annotations

import pytest

from hemascope.consensus import ModelVote, consensus

CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")


def vote(model: str, probs: dict[str, float], abstain: bool = False, reason: str = "") -> ModelVote:
    label = max(probs, key=lambda name: probs[name])
    return ModelVote(model, label, probs, probs.get("myeloblast", 0.0), abstain, reason)


def test_unanimous_confident_models_are_not_referred() -> None:
    votes = [
        vote("lr", {"monocyte": 0.9, "myeloblast": 0.1}),
        vote("svm", {"monocyte": 0.8, "myeloblast": 0.2}),
    ]
    result = consensus(votes, CLASSES)
    assert result.label == "monocyte"
    assert result.probability == pytest.approx(0.85)
    assert result.agreement == 1.0
    assert result.malignant_probability == pytest.approx(0.15)
    assert not result.malignant
    assert not result.refer
    assert result.refer_reasons == ()


def test_label_is_the_largest_mean_probability_not_the_majority_vote() -> None:
    votes = [
        vote("a", {"monocyte": 0.51, "myeloblast": 0.49}),
        vote("b", {"monocyte": 0.51, "myeloblast": 0.49}),
        vote("c", {"monocyte": 0.02, "myeloblast": 0.98}),
    ]
    result = consensus(votes, CLASSES)
    assert result.label == "myeloblast"  # mean 0.653 vs 0.347, though two of three models say monocyte
    assert result.agreement == pytest.approx(1 / 3)
    assert result.malignant_probability == pytest.approx((0.49 + 0.49 + 0.98) / 3)
    assert result.malignant
    assert result.refer
    assert result.refer_reasons == ("models disagree: monocyte, myeloblast",)


def test_malignant_flag_is_inclusive_at_the_threshold() -> None:
    votes = [vote("a", {"myeloblast": 0.3, "monocyte": 0.7})]
    assert consensus(votes, CLASSES, malignant_threshold=0.3).malignant
    assert not consensus(votes, CLASSES, malignant_threshold=0.31).malignant


def test_abstentions_are_referred_with_their_reasons() -> None:
    votes = [
        vote("logistic_regression", {"monocyte": 0.9}, abstain=True, reason="OUT_OF_DISTRIBUTION"),
        vote("svm", {"monocyte": 0.6}, abstain=True, reason="LOW_CONFIDENCE"),
        vote("xgboost", {"monocyte": 0.5}, abstain=True, reason="LOW_CONFIDENCE_AND_OUT_OF_DISTRIBUTION"),
        vote("kmeans", {"monocyte": 0.99}),
    ]
    result = consensus(votes, CLASSES)
    assert result.refer
    assert result.refer_reasons == (
        "logistic_regression: out of distribution",
        "svm: low confidence",
        "xgboost: low confidence and out of distribution",
    )


def test_ties_go_to_the_earlier_class_and_bad_input_is_refused() -> None:
    votes = [vote("a", {"basophil": 0.5, "seg_neutrophil": 0.5})]
    assert consensus(votes, CLASSES).label == "basophil"
    with pytest.raises(ValueError, match="at least one"):
        consensus([], CLASSES)
    with pytest.raises(ValueError, match="malignant_threshold"):
        consensus(votes, CLASSES, malignant_threshold=0)


def test_an_image_that_is_not_a_single_cell_is_referred_first_whatever_the_votes() -> None:
    votes = [
        vote("lr", {"monocyte": 0.95, "myeloblast": 0.05}),
        vote("svm", {"monocyte": 0.9, "myeloblast": 0.1}, abstain=True, reason="NOT_SINGLE_CELL"),
    ]
    result = consensus(votes, CLASSES, input_reason="2 white-cell nuclei apart from each other")
    assert result.refer
    assert result.refer_reasons == (
        "input: 2 white-cell nuclei apart from each other",
        "svm: not a single-cell image",
    )
    assert result.label == "monocyte"  # still computed, for the person the cell is referred to


def test_a_malignant_call_from_an_atypical_acquisition_is_reported_but_unconfirmed() -> None:
    probs = {"myeloblast": 0.9, "monocyte": 0.1}
    atypical = ModelVote(
        "lr", "myeloblast", probs, 0.9, True, "ATYPICAL_ACQUISITION", atypical_acquisition=True
    )
    result = consensus([atypical, vote("svm", probs)], CLASSES)
    assert result.label == "myeloblast" and result.malignant
    assert result.atypical_acquisition and result.malignant_unconfirmed
    assert result.refer_reasons == ("lr: acquisition atypical for its class",)
    plain = consensus([vote("lr", probs), vote("svm", probs)], CLASSES)
    assert plain.malignant and not plain.malignant_unconfirmed and not plain.atypical_acquisition


def test_input_reason_only_for_images_that_are_not_one_cell() -> None:
    from hemascope.consensus import input_reason

    assert input_reason("", "") == ""
    assert input_reason("single_cell", "one centred cell") == ""
    assert input_reason("multiple_cells", "3 cells") == "3 cells"
    assert input_reason("no_cell", "") == "no_cell"
