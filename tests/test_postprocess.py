"""Post-processing and verdict against hand-computed cases (the reference's worked example included)."""

import numpy as np
import pytest

from explainer.verdict import postprocess as pp

# circle, triangle, square, rectangle x (no vertices, three, four, parallel, same size): the reference's matrix
PRIOR = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=float)
GROUPS = [[0, 1, 2]]


def test_threshold_keeps_values_at_or_above():
    out = pp.apply_threshold(np.array([0.2, 0.5, 0.49, 0.9]), 0.5)
    assert out.tolist() == [0.0, 0.5, 0.0, 0.9]


def test_threshold_out_of_range_names_the_value():
    with pytest.raises(ValueError, match="threshold 1.5"):
        pp.apply_threshold(np.zeros(3), 1.5)


def test_group_cleaning_keeps_only_the_most_probable_of_each_group():
    probs = np.array([0.6, 0.9, 0.7, 0.8, 0.3])
    assert pp.clean_groups(probs, GROUPS).tolist() == [0.0, 0.9, 0.0, 0.8, 0.3]
    batch = np.array([[0.6, 0.9, 0.7, 0.8, 0.3], [0.95, 0.1, 0.2, 0.0, 0.0]])
    assert pp.clean_groups(batch, GROUPS)[1].tolist() == [0.95, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="out of range"):
        pp.clean_groups(probs, [[0, 7]])


def test_reference_worked_example_gives_rectangle_one_half():
    kept = pp.kept_explanations(np.array([0.2, 0.1, 0.3, 0.5, 0.6]), 0.5, GROUPS)
    scores = pp.rank_scores(kept, PRIOR, "normalized")
    assert scores[3] == pytest.approx(0.5)  # rectangle: (0,0,0,1,1) . (0,0,1,1,0) = 1, over 2 explanations
    assert scores.tolist() == pytest.approx([0.0, 0.5, 2 / 3, 0.5])


def test_birds_ranking_multiplies_cleaned_scores_by_the_matrix():
    prior = np.array([[0.5, 0.0, 1.0], [0.0, 1.0, 0.2]])
    kept = pp.kept_explanations(np.array([0.9, 0.85, 0.95]), 0.8, [[0, 1]])
    assert kept.tolist() == [0.9, 0.0, 0.95]
    assert pp.rank_scores(kept, prior, "weighted").tolist() == pytest.approx([0.9 * 0.5 + 0.95, 0.95 * 0.2])


def test_rank_scores_checks_shapes_and_formula():
    with pytest.raises(ValueError, match="expected \\(classes, 5\\)"):
        pp.rank_scores(np.zeros(5), np.zeros((4, 3)), "normalized")
    with pytest.raises(ValueError, match="ranking 'sum'"):
        pp.rank_scores(np.zeros(5), PRIOR, "sum")


def test_verdict_consistent_case_2_and_case_3():
    scores = np.array([0.0, 0.5, 1.0, 1.0])  # square and rectangle tie at the top
    v = pp.verdict(scores, predicted_class=2, top_n=1)
    assert (v.questioned, v.case, v.rank, v.preferred_class) == (False, 2, 1, 2)
    v = pp.verdict(np.array([0.0, 0.5, 2 / 3, 0.5]), predicted_class=3, top_n=1)
    assert (v.questioned, v.case, v.preferred_class, v.rank) == (True, 3, 2, 2)
    assert v.margin < 0
    v = pp.verdict(np.array([0.0, 0.5, 2 / 3, 0.5]), predicted_class=3, top_n=2)  # tie at the cut counts as inside
    assert (v.questioned, v.case) == (False, 2)
    v = pp.verdict(np.array([0.0, 1.0, 0.5, 0.2]), predicted_class=1, top_n=1)
    assert (v.questioned, v.case, v.margin) == (False, None, pytest.approx(0.5))


def test_verdict_case_1_no_support_is_questioned_even_when_all_tie():
    v = pp.verdict(np.zeros(4), predicted_class=0, top_n=1)
    assert (v.questioned, v.case) == (True, 1)
    assert v.margin < 0
    v = pp.verdict(np.array([0.0, 1.0, 0.0, 0.0]), predicted_class=0, top_n=3)
    assert (v.questioned, v.case, v.preferred_class) == (True, 1, 1)


def test_verdict_rejects_bad_arguments():
    with pytest.raises(ValueError, match="predicted class 4"):
        pp.verdict(np.zeros(4), 4, 1)
    with pytest.raises(ValueError, match="top N 5"):
        pp.verdict(np.zeros(4), 0, 5)
    with pytest.raises(ValueError, match="one sample"):
        pp.verdict(np.zeros((2, 4)), 0, 1)


def test_batch_verdicts_match_single_ones():
    rng = np.random.default_rng(0)
    scores = rng.random((20, 6)).round(1)
    predicted = rng.integers(0, 6, 20)
    batch = pp.verdicts(scores, predicted, 3)
    assert batch == [pp.verdict(s, int(p), 3) for s, p in zip(scores, predicted, strict=False)]


def test_the_thresholds_that_keep_the_same_explanations():
    """A confident image keeps the same explanations over almost the whole slider; the range is (the strongest
    candidate below, the weakest kept], group losers never count (they are never kept) and a 0 is never kept."""
    probs = np.array([0.0003, 0.9991, 0.2, 0.004, 0.97])  # "three vertices" wins its group over 0.2 and 0.0003
    assert pp.kept_threshold_range(probs, 0.5, GROUPS) == pytest.approx((0.004, 0.97))
    assert pp.kept_threshold_range(probs, 0.98, GROUPS) == pytest.approx((0.97, 0.9991))
    assert pp.kept_threshold_range(probs, 0.001, GROUPS) == (None, pytest.approx(0.004))
    low, high = pp.kept_threshold_range(np.array([0.0, 0.1, 0.0, 0.0, 0.2]), 0.5, GROUPS)
    assert (low, high) == (pytest.approx(0.2), None)  # nothing kept: the same up to 1
    assert pp.kept_threshold_range(np.zeros(5), 0.5, GROUPS) == (None, None)
    with pytest.raises(ValueError, match="threshold 2"):
        pp.kept_threshold_range(probs, 2.0, GROUPS)
