"""The scikit-learn-backed metrics against small computations by hand (pairs, counts) on fixed arrays: ties, the
one-class NaN cases and masks of unknown labels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from explainer.evaluation import metrics
from explainer.evaluation.calibration import reliability

pytestmark = pytest.mark.filterwarnings("error")  # a NaN case must be decided here, not warned about by a library


def auroc_by_pairs(labels: np.ndarray, scores: np.ndarray) -> float:
    """The share of (positive, negative) pairs ordered right, a tie counting half."""
    pos, neg = scores[labels.astype(bool)], scores[~labels.astype(bool)]
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    return float(np.mean(pairs))


def fpr_at_tpr_by_hand(labels: np.ndarray, scores: np.ndarray, tpr: float) -> float:
    """Walk the thresholds from the highest down; the first that flags ``tpr`` of the positives decides."""
    labels = labels.astype(bool)
    for threshold in sorted(set(scores.tolist()), reverse=True):
        flagged = scores >= threshold
        if np.sum(flagged & labels) >= tpr * labels.sum():
            return float(np.sum(flagged & ~labels) / np.sum(~labels))
    raise AssertionError("the lowest threshold flags every positive")


LABELS = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1])
SCORES = np.array([0.9, 0.8, 0.8, 0.4, 0.4, 0.4, 0.3, 0.2, 0.1, 0.1])  # ties inside and across the classes


def test_auroc_counts_ties_half() -> None:
    # pairs (5 x 5): 0.9 beats all 5; 0.8 beats 4 and ties 1; 0.4 beats 2, ties 2; 0.3 beats 2; 0.1 ties 1
    assert metrics.auroc(LABELS, SCORES) == pytest.approx((5 + 4.5 + 3 + 2 + 0.5) / 25)
    assert metrics.auroc(LABELS, SCORES) == pytest.approx(auroc_by_pairs(LABELS, SCORES))
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels, scores = rng.integers(0, 2, 40), rng.integers(0, 6, 40) / 5  # many ties
        assert metrics.auroc(labels, scores) == pytest.approx(auroc_by_pairs(labels, scores))


def test_auroc_and_fpr_are_nan_with_one_class() -> None:
    for labels in (np.zeros(4), np.ones(4), np.zeros(0)):
        assert np.isnan(metrics.auroc(labels, np.arange(len(labels))))
        assert np.isnan(metrics.fpr_at_tpr(labels, np.arange(len(labels))))


def test_fpr_at_tpr_by_hand() -> None:
    # 95% of 5 positives = 4.75 -> all 5 -> threshold 0.1 flags every negative
    assert metrics.fpr_at_tpr(LABELS, SCORES, 0.95) == pytest.approx(1.0)
    # 60% = 3 positives -> threshold 0.4 (0.9, 0.8, 0.4) flags 3 of 5 negatives (0.8, 0.4, 0.4)
    assert metrics.fpr_at_tpr(LABELS, SCORES, 0.6) == pytest.approx(3 / 5)
    rng = np.random.default_rng(1)
    for n_pos in (20, 40, 60, 100, 1311):  # 95% of these is a whole number or just above one
        labels = np.r_[np.ones(n_pos), np.zeros(n_pos)]
        scores = rng.integers(0, 50, 2 * n_pos) / 49
        for tpr in (0.95, 0.9, 0.5):
            assert metrics.fpr_at_tpr(labels, scores, tpr) == pytest.approx(fpr_at_tpr_by_hand(labels, scores, tpr))


def test_risk_coverage_and_error_detection() -> None:
    errors = np.array([0, 1, 0, 1])
    scores = np.array([0.1, 0.9, 0.2, 0.3])  # kept in order: right, right, wrong, wrong
    coverage, risk, area = metrics.risk_coverage(errors, scores)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk == pytest.approx([0, 0, 1 / 3, 1 / 2])
    assert area == pytest.approx((1 / 3 + 1 / 2) / 4)
    found = metrics.error_detection(errors, scores)
    assert found == pytest.approx({"auroc": 1.0, "fpr_at_95_tpr": 0.0, "aurc": area})


# Five samples, four explanations; column 2 is all negative among its known labels, column 3 is never known.
TARGETS = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]])
PROBS = np.array(
    [[0.9, 0.2, 0.1, 0.5], [0.4, 0.6, 0.7, 0.5], [0.4, 0.6, 0.2, 0.5], [0.4, 0.1, 0.3, 0.5], [0.7, 0.6, 0.2, 0.5]]
)
MASK = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0]], dtype=bool)


def by_hand(targets: np.ndarray, probs: np.ndarray, mask: np.ndarray, threshold: float) -> dict[str, float]:
    """Per column from its known counts; the macro means over the columns where a measure is defined."""
    preds = probs >= threshold
    f1s, balanced, aurocs, right, negatives = [], [], [], 0, 0
    for k in range(targets.shape[1]):
        t, p, s = targets[mask[:, k], k].astype(bool), preds[mask[:, k], k], probs[mask[:, k], k]
        tp, fp, fn, tn = np.sum(t & p), np.sum(~t & p), np.sum(t & ~p), np.sum(~t & ~p)
        right, negatives = right + tp + tn, negatives + tn + fp
        if 2 * tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
        if tp + fn and tn + fp:
            balanced.append((tp / (tp + fn) + tn / (tn + fp)) / 2)
            aurocs.append(auroc_by_pairs(t, s))
    exact = np.all((preds == targets.astype(bool)) | ~mask, axis=1)
    return {
        "per_explanation_accuracy": right / mask.sum(),
        "all_zeros_accuracy": negatives / mask.sum(),
        "exact_match": float(np.mean(exact)),
        "macro_f1": float(np.mean(f1s)),
        "balanced_accuracy": float(np.mean(balanced)),
        "mean_auroc": float(np.mean(aurocs)),
        "auroc_defined_for": len(aurocs),
    }


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.3])
def test_multilabel_report_with_a_mask(threshold: float) -> None:
    found = metrics.multilabel_report(TARGETS, PROBS, threshold, MASK)
    assert found == pytest.approx(by_hand(TARGETS, PROBS, MASK, threshold))
    assert found["auroc_defined_for"] == 2  # column 2 has no known positive, column 3 nothing known


def test_multilabel_report_by_hand_numbers() -> None:
    found = metrics.multilabel_report(TARGETS, PROBS, 0.5, MASK)
    # column 0: preds 1,0,0,0,1 against 1,1,0,0,1: tp 2, fn 1, tn 2 -> F1 0.8, balanced (2/3 + 1) / 2
    # column 1 (4 known): preds 0,1,1,0 against 0,1,1,0 -> F1 1, balanced 1
    # column 2 (4 known, all negative): preds 0,1,0,0 -> F1 0 (a false positive), balanced and AUROC undefined
    assert found["macro_f1"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)
    assert found["balanced_accuracy"] == pytest.approx(((2 / 3 + 1) / 2 + 1) / 2)
    # AUROC: column 0 positives 0.9, 0.4, 0.7 against negatives 0.4, 0.4: (2 + 1 + 2) / 6; column 1: 1
    assert found["mean_auroc"] == pytest.approx((5 / 6 + 1) / 2)
    assert found["exact_match"] == pytest.approx(4 / 5)  # only row 1 holds a mistake among its known labels
    unmasked = metrics.multilabel_report(TARGETS, PROBS, 0.5)
    assert unmasked == pytest.approx(by_hand(TARGETS, PROBS, np.ones_like(MASK), 0.5))
    nothing = metrics.multilabel_report(np.zeros((3, 2)), np.zeros((3, 2)))
    assert np.isnan(nothing["macro_f1"]) and np.isnan(nothing["mean_auroc"]) and nothing["auroc_defined_for"] == 0


def test_reliability_bins_agree_with_calibration_curve() -> None:
    """On 0/1 targets, the filled bins hold what scikit-learn's calibration_curve finds (no probability on an edge)."""
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(2)
    probs = rng.random(500)
    probs = probs[np.abs(probs * 10 - np.round(probs * 10)) > 1e-6]
    targets = (rng.random(probs.size) < probs).astype(float)
    curve = reliability(probs, targets, bins=10)
    observed, predicted = calibration_curve(targets, probs, n_bins=10)
    assert [p for p in curve["mean_prediction"] if p is not None] == pytest.approx(predicted.tolist())
    assert [t for t in curve["mean_target"] if t is not None] == pytest.approx(observed.tolist())
    filled = np.array(curve["count"]) > 0
    gaps = np.abs(predicted - observed)
    assert curve["ece"] == pytest.approx(float(np.sum(np.array(curve["count"])[filled] / probs.size * gaps)))
