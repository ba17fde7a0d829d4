"""Evaluation metrics in plain NumPy: imbalance-aware explanation metrics and error detection.

Error detection treats "is this prediction wrong?" as the positive class and a score where higher means "more
likely wrong" (e.g. ``-margin`` of the explanation verdict, or ``1 - max softmax``).
"""

from __future__ import annotations

import numpy as np


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def fpr_at_tpr(labels: np.ndarray, scores: np.ndarray, tpr: float = 0.95) -> float:
    """False-positive rate at the smallest threshold that flags at least ``tpr`` of the positives."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.sum() == 0 or (~labels).sum() == 0:
        return float("nan")
    pos = np.sort(scores[labels])[::-1]
    cut = pos[int(np.ceil(tpr * len(pos))) - 1]
    return float(np.mean(scores[~labels] >= cut))


def risk_coverage(errors: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Selective prediction: keep the samples least likely wrong first.

    Returns (coverage, risk, area under the risk-coverage curve). ``errors``: 1 where the prediction is wrong;
    ``scores``: higher = more likely wrong.
    """
    errors = np.asarray(errors, dtype=np.float64).ravel()
    order = np.argsort(np.asarray(scores, dtype=np.float64).ravel(), kind="mergesort")
    cum = np.cumsum(errors[order])
    n = np.arange(1, len(errors) + 1)
    coverage, risk = n / len(errors), cum / n
    return coverage, risk, float(np.mean(risk)) if len(risk) else float("nan")


def binary_counts(
    targets: np.ndarray, predictions: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """Per-column TP, FP, FN, TN of 0/1 arrays (N, K), with an optional mask of known labels."""
    t = np.asarray(targets).astype(bool)
    p = np.asarray(predictions).astype(bool)
    m = np.ones_like(t, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    return (
        (t & p & m).sum(0),
        (~t & p & m).sum(0),
        (t & ~p & m).sum(0),
        (~t & ~p & m).sum(0),
    )


def multilabel_report(
    targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Per-explanation accuracy (Keras's binary accuracy), exact match, macro-F1, balanced accuracy, mean AUROC,
    and the all-zeros baseline accuracy, so that accuracy dominated by negatives is never reported alone."""
    targets = np.asarray(targets).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    preds = probs >= threshold
    m = np.ones_like(targets) if mask is None else np.asarray(mask).astype(bool)
    tp, fp, fn, tn = binary_counts(targets, preds, m)
    known = m.sum()
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    tpr = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
    tnr = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
    aurocs = np.array(
        [auroc(targets[m[:, k], k], probs[m[:, k], k]) for k in range(targets.shape[1])], dtype=np.float64
    )
    return {
        "per_explanation_accuracy": float((tp.sum() + tn.sum()) / max(known, 1)),
        "all_zeros_accuracy": float(((~targets) & m).sum() / max(known, 1)),
        "exact_match": float(np.mean(np.all((preds == targets) | ~m, axis=1))) if len(targets) else float("nan"),
        "macro_f1": float(np.nanmean(f1)) if np.any(~np.isnan(f1)) else float("nan"),
        "balanced_accuracy": float(np.nanmean((tpr + tnr) / 2)) if np.any(~np.isnan(tpr + tnr)) else float("nan"),
        "mean_auroc": float(np.nanmean(aurocs)) if np.any(~np.isnan(aurocs)) else float("nan"),
        "auroc_defined_for": int(np.sum(~np.isnan(aurocs))),
    }


def error_detection(errors: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, FPR at 95% TPR and the risk-coverage area for detecting wrong predictions with ``scores``."""
    _, _, aurc = risk_coverage(errors, scores)
    return {"auroc": auroc(errors, scores), "fpr_at_95_tpr": fpr_at_tpr(errors, scores, 0.95), "aurc": aurc}
