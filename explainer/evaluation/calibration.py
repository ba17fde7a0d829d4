"""Are the explanation probabilities calibrated, and does the threshold slider change anything?

Why: the birds explanations are learnt from class-level labels (the class x attribute matrix), so a probability can
mean "this species has the attribute" (binary targets at 50%) or "this share of the species' photos shows it" (soft
targets, the matrix / 100). A reliability diagram and the expected calibration error (ECE) say which reading holds;
`threshold_sensitivity` says whether moving the app's threshold slider changes the kept explanations at all (with
probabilities pressed against 0 and 1 it does not).

The bins and the ECE are NumPy: scikit-learn's ``calibration_curve`` takes 0/1 targets only and returns neither the
bin sizes nor an ECE (tests/test_metrics.py checks that its bins agree on 0/1 targets). The diagram is matplotlib's
(the optional evaluation extra, ``pip install -e .[eval]``, imported when a diagram is drawn).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from explainer.verdict import postprocess


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Equal-width reliability bins over all (sample, explanation) pairs and the expected calibration error.

    ``targets`` may be 0/1 or soft (in [0, 1]): each bin compares its mean predicted probability with its mean target.
    ECE = sum over bins of (share of pairs in the bin) x |mean prediction - mean target|.
    """
    probs = np.asarray(probs, dtype=np.float64).ravel()
    targets = np.asarray(targets, dtype=np.float64).ravel()
    if probs.shape != targets.shape:
        raise ValueError(f"probabilities ({probs.size}) and targets ({targets.size}) differ in size")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if probs.size == 0:
        raise ValueError("no probabilities to calibrate")
    index = np.minimum((probs * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    pred_sum = np.bincount(index, weights=probs, minlength=bins)
    target_sum = np.bincount(index, weights=targets, minlength=bins)
    filled = counts > 0
    mean_pred = np.where(filled, pred_sum / np.maximum(counts, 1), np.nan)
    mean_target = np.where(filled, target_sum / np.maximum(counts, 1), np.nan)
    gaps = np.where(filled, np.abs(mean_pred - mean_target), 0.0)
    return {
        "ece": float(np.sum(counts / probs.size * gaps)),
        "bins": bins,
        "count": counts.astype(int).tolist(),
        "mean_prediction": [None if np.isnan(v) else float(v) for v in mean_pred],
        "mean_target": [None if np.isnan(v) else float(v) for v in mean_target],
    }


def threshold_sensitivity(
    explanation_probs: np.ndarray, groups: Sequence[Sequence[int]], base: float, other: float
) -> dict[str, Any]:
    """How many samples keep a different set of explanations at threshold ``other`` than at ``base``.

    Kept = thresholded, then one explanation per exclusive group (as the app and the verdict use them).
    """
    probs = np.asarray(explanation_probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"explanation probabilities must be (samples, explanations), got shape {probs.shape}")
    kept_base = postprocess.kept_explanations(probs, base, groups) > 0
    kept_other = postprocess.kept_explanations(probs, other, groups) > 0
    changed = np.any(kept_base != kept_other, axis=1)
    return {
        "base_threshold": float(base),
        "other_threshold": float(other),
        "n": int(len(probs)),
        "n_changed": int(changed.sum()),
        "share_changed": float(changed.mean()) if len(probs) else float("nan"),
        "mean_kept_base": float(kept_base.sum(1).mean()) if len(probs) else float("nan"),
        "mean_kept_other": float(kept_other.sum(1).mean()) if len(probs) else float("nan"),
    }


def plot_reliability(curves: Mapping[str, Mapping[str, Any]], title: str, path: str | Path) -> Path:
    """One reliability line per entry (mean target against mean prediction per bin) and the diagonal; ECE in the
    legend. Bins holding fewer than 0.1% of the pairs are drawn as hollow dots (too few to trust)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.6, 5.6), dpi=100, layout="constrained")  # drawn by Agg: no display, no pyplot
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linewidth=1, label="perfectly calibrated")
    for name, curve in curves.items():
        total = max(sum(curve["count"]), 1)
        points = [
            (p, t, c / total >= 1e-3)
            for p, t, c in zip(curve["mean_prediction"], curve["mean_target"], curve["count"], strict=True)
            if p is not None and t is not None
        ]
        predicted, observed, trusted = (np.array(column) for column in zip(*points, strict=True))
        (line,) = axes.plot(predicted, observed, linewidth=2, label=f"{name} (ECE {curve['ece']:.4f})")
        colour = line.get_color()
        axes.scatter(predicted[trusted], observed[trusted], color=colour, zorder=3)
        axes.scatter(predicted[~trusted], observed[~trusted], facecolors="white", edgecolors=colour, zorder=3)
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.set_aspect("equal")
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("mean target (share present)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
