"""Evaluation metrics: imbalance-aware explanation metrics and error detection, on scikit-learn's implementations.

Error detection treats "is this prediction wrong?" as the positive class and a score where higher means "more
likely wrong" (e.g. ``-margin`` of the explanation verdict, or ``1 - max softmax``).

scikit-learn is the optional evaluation extra (``pip install -e .[eval]``) and is imported inside the functions that
use it: the app never imports this module, and importing it costs nothing for a script that only needs verdicts.
Each function keeps the conventions the reports rely on: NaN where a measure is undefined (one class only) rather
than scikit-learn's warning, and a mask of known labels per (sample, explanation).
"""

from __future__ import annotations

import numpy as np


def _both_classes(labels: np.ndarray) -> bool:
    return bool(labels.any()) and not bool(labels.all())


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (``roc_auc_score``: ties count half); NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not _both_classes(labels):
        return float("nan")
    return float(roc_auc_score(labels, scores))


def fpr_at_tpr(labels: np.ndarray, scores: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold that flags at least ``tpr`` of the positives (on ``roc_curve``
    with every threshold kept); NaN when only one class is present."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not _both_classes(labels):
        return float("nan")
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(false_positive_rate[np.searchsorted(true_positive_rate, tpr, side="left")])


def risk_coverage(errors: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Selective prediction: keep the samples least likely wrong first (scikit-learn has no risk-coverage curve).

    Returns (coverage, risk, area under the risk-coverage curve). ``errors``: 1 where the prediction is wrong;
    ``scores``: higher = more likely wrong.
    """
    errors = np.asarray(errors, dtype=np.float64).ravel()
    order = np.argsort(np.asarray(scores, dtype=np.float64).ravel(), kind="mergesort")
    cum = np.cumsum(errors[order])
    n = np.arange(1, len(errors) + 1)
    coverage, risk = n / len(errors), cum / n
    return coverage, risk, float(np.mean(risk)) if len(risk) else float("nan")


def _nanmean(values: np.ndarray) -> float:
    """Mean over the defined values; NaN (without NumPy's warning) when none is."""
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def multilabel_report(
    targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Per-explanation accuracy (Keras's binary accuracy), exact match, macro-F1, balanced accuracy, mean AUROC,
    and the all-zeros baseline accuracy, so that accuracy dominated by negatives is never reported alone.

    ``mask`` (N, K): True where a label is known; unknown entries count nowhere. Per explanation, F1 is NaN when it is
    never present nor predicted, balanced accuracy and AUROC when its known labels hold one class only; the macro
    means skip NaN.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    targets = np.asarray(targets).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    preds = probs >= threshold
    known = np.ones_like(targets) if mask is None else np.asarray(mask).astype(bool)
    n_expl = targets.shape[1]
    f1, balanced, aurocs = np.full(n_expl, np.nan), np.full(n_expl, np.nan), np.full(n_expl, np.nan)
    for k in range(n_expl):
        truth, predicted, scores = targets[known[:, k], k], preds[known[:, k], k], probs[known[:, k], k]
        if truth.size:
            f1[k] = f1_score(truth, predicted, zero_division=np.nan)
        if _both_classes(truth):
            balanced[k] = balanced_accuracy_score(truth, predicted)
            aurocs[k] = auroc(truth, scores)
    known_truth, known_preds = targets[known], preds[known]
    any_known = bool(known_truth.size)
    # subset accuracy, with the unknown entries counted right
    exact = float(accuracy_score(targets, np.where(known, preds, targets))) if len(targets) else float("nan")
    return {
        "per_explanation_accuracy": float(accuracy_score(known_truth, known_preds)) if any_known else 0.0,
        "all_zeros_accuracy": float(accuracy_score(known_truth, np.zeros_like(known_truth))) if any_known else 0.0,
        "exact_match": exact,
        "macro_f1": _nanmean(f1),
        "balanced_accuracy": _nanmean(balanced),
        "mean_auroc": _nanmean(aurocs),
        "auroc_defined_for": int(np.sum(~np.isnan(aurocs))),
    }


def error_detection(errors: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, FPR at 95% TPR and the risk-coverage area for detecting wrong predictions with ``scores``."""
    _, _, aurc = risk_coverage(errors, scores)
    return {"auroc": auroc(errors, scores), "fpr_at_95_tpr": fpr_at_tpr(errors, scores, 0.95), "aurc": aurc}
