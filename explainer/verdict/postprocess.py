"""Post-processing of predicted explanations and the verdict on the main prediction.

Pure functions on NumPy arrays, so the app can rerun them on every slider move and tests can check them by hand.
Every function accepts one sample (shape ``(E,)`` / ``(C,)``) or a batch (``(N, E)`` / ``(N, C)``).

Threshold and top N are checked once, where they enter: the public functions here check what they are given (a
caller may pass anything), :func:`resolve_controls` checks and returns :class:`Controls`, and what takes a
:class:`Controls` (:func:`process`, and through it the app, the CLI and the evaluation) trusts it and checks nothing
again. The checked functions are thin: a check, then the unchecked step (``_apply_threshold``, ``_kept_range``,
``_verdict``) that the checked paths of :mod:`explainer.verdict` share.

The reference work defines two class rankings:
- ``"normalized"`` (shapes): binarise the kept explanations, multiply by each class's explanation vector, sum, divide
  by the number of explanations the class has (the sum of its row of the prior matrix).
- ``"weighted"`` (birds): multiply the kept explanation *scores* (not binarised) by the class x explanation matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

RANKINGS = ("normalized", "weighted")


def check_threshold(threshold: float) -> float:
    """The one rule for a threshold: a number from 0 to 1 (NaN is refused). Returns it."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold:g} is out of range (0 to 1)")
    return threshold


def check_top_n(top_n: int, n_classes: int) -> int:
    """The one rule for top N: a whole number from 1 to the number of classes. Returns it."""
    if not 1 <= top_n <= n_classes:
        raise ValueError(f"top N {top_n} is out of range (1 to {n_classes})")
    return top_n


class Controls(NamedTuple):
    """A threshold and a top N that have passed their rules. Made by :func:`resolve_controls` (never by hand): what
    takes one checks nothing again. A tuple, so ``threshold, top_n = resolve_controls(...)`` reads as before."""

    threshold: float
    top_n: int


def resolve_controls(
    threshold: float | None, top_n: int | None, default_threshold: float, default_top_n: int, n_classes: int
) -> Controls:
    """Threshold and top N with the weights' defaults filled in, both checked: what every caller (app, CLI,
    evaluation, :meth:`explainer.verdict.predictor.Explainer.explain`) uses, so that the rules live in one place."""
    threshold = default_threshold if threshold is None else float(threshold)
    top_n = default_top_n if top_n is None else int(top_n)
    return Controls(check_threshold(threshold), check_top_n(top_n, n_classes))


def apply_threshold(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Scores below ``threshold`` become 0; the rest keep their value (a score equal to the threshold is kept)."""
    return _apply_threshold(probs, check_threshold(threshold))


def _apply_threshold(probs: np.ndarray, threshold: float) -> np.ndarray:
    """:func:`apply_threshold` for a threshold already checked."""
    probs = np.asarray(probs, dtype=np.float64)
    return np.where(probs >= threshold, probs, 0.0)


def clean_groups(probs: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Keep only the most probable explanation of each group (first on ties); the group's others become 0.

    Explanations in no group are untouched. This is the reference's duplicate cleaning ("bill shape" can only have
    one value), and for shapes it makes the vertex-count group mutually exclusive.
    """
    out = np.array(probs, dtype=np.float64, copy=True)
    n = out.shape[-1]
    for group in groups:
        idx = np.asarray(group, dtype=np.int64)
        if idx.size == 0:
            continue
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"explanation group {list(group)} has an index out of range (0 to {n - 1})")
        block = out[..., idx]
        winner = np.argmax(block, axis=-1)
        keep = np.zeros_like(block, dtype=bool)
        np.put_along_axis(keep, winner[..., None], True, axis=-1)
        out[..., idx] = np.where(keep, block, 0.0)
    return out


def kept_explanations(probs: np.ndarray, threshold: float, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Threshold then group cleaning: the explanation scores the ranking uses (0 where dropped)."""
    return _kept_explanations(probs, check_threshold(threshold), groups)


def _kept_explanations(probs: np.ndarray, threshold: float, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """:func:`kept_explanations` for a threshold already checked."""
    return clean_groups(_apply_threshold(probs, threshold), groups)


def kept_threshold_range(
    probs: np.ndarray, threshold: float, groups: Sequence[Sequence[int]]
) -> tuple[float | None, float | None]:
    """The thresholds that keep exactly what ``threshold`` keeps, for one sample: ``(low, high)``, and every ``t``
    with ``low < t <= high`` keeps the same explanations. ``low`` is None when nothing that could be kept lies below
    (down to 0), ``high`` None when nothing is kept (up to 1).

    Why: on a confident image the probabilities sit near 0 and 1, so a threshold slider moved between them changes
    nothing; saying over which range nothing changes makes that visible instead of looking broken. Thresholding keeps
    each group's best only if it clears the threshold (the others are never higher), so the candidates are the group
    winners and the ungrouped explanations; a score of 0 is never kept.
    """
    check_threshold(threshold)
    return _kept_range(clean_groups(np.asarray(probs, dtype=np.float64), groups), threshold)


def _kept_range(cleaned: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    """:func:`kept_threshold_range` from one sample's group-cleaned scores and a threshold already checked."""
    candidates = np.asarray(cleaned, dtype=np.float64)
    candidates = candidates[candidates > 0]
    kept = candidates[candidates >= threshold]
    below = candidates[candidates < threshold]
    return (float(below.max()) if below.size else None, float(kept.min()) if kept.size else None)


def rank_scores(kept: np.ndarray, class_explanations: np.ndarray, ranking: str) -> np.ndarray:
    """Score every class by how well its known explanations match the kept ones.

    ``kept``: (..., E) scores after :func:`kept_explanations`. ``class_explanations``: (C, E) prior matrix.
    Returns (..., C). ``"normalized"`` gives values in [0, 1]: the share of the class's explanations that were
    predicted (a continuous prior row acts as weights). ``"weighted"`` is the plain product of the reference's birds.
    """
    prior = np.asarray(class_explanations, dtype=np.float64)
    kept = np.asarray(kept, dtype=np.float64)
    if prior.ndim != 2 or prior.shape[1] != kept.shape[-1]:
        raise ValueError(f"class x explanation matrix has shape {prior.shape}; expected (classes, {kept.shape[-1]})")
    if ranking == "normalized":
        counts = prior.sum(axis=1)
        counts = np.where(counts > 0, counts, 1.0)
        return ((kept > 0).astype(np.float64) @ prior.T) / counts
    if ranking == "weighted":
        return kept @ prior.T
    raise ValueError(f"ranking {ranking!r} is not one of {RANKINGS}")


@dataclass(frozen=True)
class Verdict:
    """The cross-check of one main prediction against the explanation ranking.

    case: 1 = the explanations do not support the predicted class at all (score 0); 2 = it is inside the top N but
    ties with another class; 3 = it has some support but at least N other classes are preferred; None = consistent.
    Cases 1 and 3 are questioned, case 2 is not (the reference's choice).
    """

    questioned: bool
    case: int | None
    predicted_class: int
    preferred_class: int
    rank: int  # 1-based position of the predicted class: 1 + number of classes with a strictly higher score
    margin: float  # continuous consistency: (score - N-th best other score) / best score; < 0 means questioned


def verdict(scores: np.ndarray, predicted_class: int, top_n: int) -> Verdict:
    """Question the main prediction when the explanations do not place it among the top ``top_n`` classes.

    Ties at the cut count as inside. A predicted class with no support at all (score 0) is always questioned: the
    explanations say nothing for it, even when every class scores 0.
    """
    scores = _one_sample(scores, predicted_class)
    return _verdict(scores, predicted_class, check_top_n(top_n, scores.size))


def verdicts(scores: np.ndarray, predicted: np.ndarray, top_n: int) -> list[Verdict]:
    """:func:`verdict` for a batch: ``scores`` (N, C), ``predicted`` (N,). Top N is checked once for the batch."""
    scores = np.asarray(scores, dtype=np.float64)
    top_n = check_top_n(top_n, scores.shape[-1])
    return [
        _verdict(_one_sample(row, int(p)), int(p), top_n) for row, p in zip(scores, np.asarray(predicted), strict=False)
    ]


def _one_sample(scores: np.ndarray, predicted_class: int) -> np.ndarray:
    """One sample's scores as floats, shape (C,), with the predicted class in range (raises ValueError)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"verdict takes the scores of one sample, shape (classes,); got {scores.shape}")
    if not 0 <= predicted_class < scores.size:
        raise ValueError(f"predicted class {predicted_class} is out of range (0 to {scores.size - 1})")
    return scores


def _verdict(scores: np.ndarray, predicted_class: int, top_n: int) -> Verdict:
    """:func:`verdict` for one sample's float scores (C,), a predicted class in range and a top N already checked."""
    own = scores[predicted_class]
    higher = int(np.sum(scores > own))
    others = np.delete(scores, predicted_class)
    tied = bool(np.any(others == own))
    best = float(scores.max())
    preferred = predicted_class if own == best else int(np.argmax(scores))
    cut = np.sort(others)[::-1][top_n - 1] if others.size >= top_n else -np.inf
    scale = best if best > 0 else 1.0
    margin = float((own - cut) / scale) if np.isfinite(cut) else 1.0
    if own <= 0:
        case: int | None = 1
        margin = min(margin, -1e-9) if margin >= 0 else margin
    elif higher >= top_n:
        case = 3
    elif tied:
        case = 2
    else:
        case = None
    return Verdict(
        questioned=case in (1, 3),
        case=case,
        predicted_class=int(predicted_class),
        preferred_class=preferred,
        rank=higher + 1,
        margin=margin,
    )


@dataclass
class Processed:
    """The post-processing of a batch: what the verdicts rest on."""

    kept: np.ndarray  # (N, E) after threshold and group cleaning (0 = dropped)
    scores: np.ndarray  # (N, C) the explanation-based class ranking scores
    predicted: np.ndarray  # (N,) the main network's classes
    verdicts: list[Verdict]


def process(
    class_probs: np.ndarray,
    explanation_probs: np.ndarray,
    controls: Controls,
    groups: Sequence[Sequence[int]],
    class_explanations: np.ndarray,
    ranking: str,
) -> Processed:
    """Threshold, group cleaning, class ranking and verdict for a batch ((N, C) and (N, E)): the one path that
    :meth:`explainer.verdict.predictor.Explainer.explain` (N = 1) and the evaluation share. ``controls`` come from
    :func:`resolve_controls`, checked: nothing is checked again here, however large the batch."""
    kept = _kept_explanations(np.atleast_2d(explanation_probs), controls.threshold, groups)
    scores = rank_scores(kept, class_explanations, ranking)
    predicted = np.argmax(np.atleast_2d(class_probs), axis=1)
    found = [_verdict(row, int(p), controls.top_n) for row, p in zip(scores, predicted, strict=False)]
    return Processed(kept, scores, predicted, found)
