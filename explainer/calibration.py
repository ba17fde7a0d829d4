"""Are the explanation probabilities calibrated, and does the threshold slider change anything?

Why: the birds explanations are learnt from class-level labels (the class x attribute matrix), so a probability can
mean "this species has the attribute" (binary targets at 50%) or "this share of the species' photos shows it" (soft
targets, the matrix / 100). A reliability diagram and the expected calibration error (ECE) say which reading holds;
`threshold_sensitivity` says whether moving the app's threshold slider changes the kept explanations at all (with
probabilities pressed against 0 and 1 it does not).

Pure NumPy and Pillow, no plotting library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from explainer import postprocess


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


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed bitmap font
        return ImageFont.load_default()


_LINE_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]


def plot_reliability(curves: Mapping[str, Mapping[str, Any]], title: str, path: str | Path) -> Path:
    """One reliability line per entry (mean target against mean prediction per bin) and the diagonal; ECE in the
    legend. Bins holding fewer than 0.1% of the pairs are drawn as hollow dots (too few to trust)."""
    width, height = 560, 560
    left, right, top, bottom = 70, 20, 60, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)

    def to_xy(x: float, y: float) -> tuple[float, float]:
        return left + x * plot_w, top + plot_h - y * plot_h

    draw.text((10, 10), title, fill="black", font=font)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for tick in np.linspace(0, 1, 6):
        x, y = to_xy(float(tick), float(tick))
        draw.line([x, top, x, top + plot_h], fill=(235, 235, 235))
        draw.line([left, y, left + plot_w, y], fill=(235, 235, 235))
        draw.text((x - 10, top + plot_h + 8), f"{tick:.1f}", fill="black", font=small)
        draw.text((left - 30, y - 7), f"{tick:.1f}", fill="black", font=small)
    draw.line([to_xy(0, 0), to_xy(1, 1)], fill=(150, 150, 150), width=1)
    draw.text((left + plot_w / 2 - 70, height - 28), "mean predicted probability", fill="black", font=small)
    draw.text((5, top - 20), "mean target (share present)", fill="black", font=small)
    for idx, (name, curve) in enumerate(curves.items()):
        colour = _LINE_COLOURS[idx % len(_LINE_COLOURS)]
        total = max(sum(curve["count"]), 1)
        points = [
            (to_xy(p, t), c / total >= 1e-3)
            for p, t, c in zip(curve["mean_prediction"], curve["mean_target"], curve["count"], strict=False)
            if p is not None and t is not None
        ]
        if len(points) > 1:
            draw.line([xy for xy, _ in points], fill=colour, width=2)
        for (x, y), trusted in points:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=colour, fill=colour if trusted else "white", width=2)
        ly = top + 10 + 18 * idx
        draw.line([left + 15, ly + 7, left + 40, ly + 7], fill=colour, width=3)
        draw.text((left + 46, ly), f"{name} (ECE {curve['ece']:.4f})", fill="black", font=small)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
