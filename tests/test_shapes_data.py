"""Tests for the synthetic shapes generator, its explanation labels, the split and the class x explanation prior."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from explainer.shapes import (
    CLASS_NAMES,
    EXPLANATION_GROUPS,
    EXPLANATION_NAMES,
    SAME_SIZE_MAX_RATIO,
    UNEQUAL_MIN_RATIO,
    class_explanation_prior,
    edge_length_ratio,
    generate_shapes,
    polygon_explanations,
    quadrilateral_side_ratio,
    reference_class_explanations,
    split_stratified,
)

CIRCLE, TRIANGLE, SQUARE, RECTANGLE = range(4)
NO_VERTICES, THREE_VERTICES, FOUR_VERTICES, PARALLEL, SAME_SIZE = range(5)


@pytest.fixture(scope="module")
def filled():
    return generate_shapes(n_per_class=240, seed=3, style="filled")


@pytest.fixture(scope="module")
def outline():
    return generate_shapes(n_per_class=240, seed=4, style="outline")


@pytest.fixture(scope="module")
def mixed():
    return generate_shapes(n_per_class=120, seed=5, style="mixed")


def _moment_aspect(image: np.ndarray) -> float:
    """sqrt of the ratio of the ink's principal second moments: 1 for squares and circles, a/b for a rectangle."""
    ink = (255 - image.astype(np.float64)) / 255
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    mass = ink.sum()
    cy, cx = (ink * ys).sum() / mass, (ink * xs).sum() / mass
    cyy, cxx = (ink * (ys - cy) ** 2).sum() / mass, (ink * (xs - cx) ** 2).sum() / mass
    cxy = (ink * (ys - cy) * (xs - cx)).sum() / mass
    low, high = np.linalg.eigvalsh([[cyy, cxy], [cxy, cxx]])
    return float(np.sqrt(high / low))


def test_constants_are_the_reference_ones():
    assert CLASS_NAMES == ("circle", "triangle", "square", "rectangle")
    assert EXPLANATION_NAMES == (
        "no vertices",
        "three vertices",
        "four vertices",
        "all opposite edges are parallel",
        "all edges have the same size",
    )
    assert EXPLANATION_GROUPS == ((0, 1, 2),)


@pytest.mark.parametrize("style", ["filled", "mixed", "outline"])
def test_same_seed_gives_byte_identical_arrays_and_another_seed_differs(style):
    first = generate_shapes(n_per_class=20, seed=11, style=style)
    again = generate_shapes(n_per_class=20, seed=11, style=style)
    other = generate_shapes(n_per_class=20, seed=12, style=style)
    assert first.images.tobytes() == again.images.tobytes()
    assert np.array_equal(first.labels, again.labels)
    assert first.explanations.tobytes() == again.explanations.tobytes()
    assert first.images.tobytes() != other.images.tobytes()


def test_shapes_dtypes_and_class_counts(mixed):
    count = 4 * 120
    assert mixed.images.shape == (count, 64, 64) and mixed.images.dtype == np.uint8
    assert mixed.labels.shape == (count,) and mixed.labels.dtype == np.int64
    assert mixed.explanations.shape == (count, 5) and mixed.explanations.dtype == np.float32
    assert set(np.unique(mixed.explanations).tolist()) <= {0.0, 1.0}
    assert np.bincount(mixed.labels, minlength=4).tolist() == [120] * 4
    assert mixed.images.min() == 0 and mixed.images.max() == 255  # black ink on white
    assert len(set(mixed.labels[:40].tolist())) > 1  # shuffled, not one class after another


def test_other_image_size():
    shapes = generate_shapes(n_per_class=5, seed=0, size=96, style="mixed")
    assert shapes.images.shape == (20, 96, 96)


@pytest.mark.parametrize("fixture_name", ["filled", "outline", "mixed"])
def test_no_duplicate_images(fixture_name, request):
    shapes = request.getfixturevalue(fixture_name)
    digests = {hashlib.sha1(image.tobytes()).hexdigest() for image in shapes.images}
    assert len(digests) == len(shapes.images)


@pytest.mark.parametrize("fixture_name", ["filled", "outline", "mixed"])
def test_labels_consistent_with_explanations(fixture_name, request):
    shapes = request.getfixturevalue(fixture_name)
    labels, explanations = shapes.labels, shapes.explanations
    vertex_group = explanations[:, list(EXPLANATION_GROUPS[0])]
    assert np.all(vertex_group.sum(axis=1) == 1)
    assert np.all(explanations[labels == CIRCLE] == [1, 0, 0, 0, 0])
    triangles = explanations[labels == TRIANGLE]
    assert np.all(triangles[:, :4] == [0, 1, 0, 0])
    assert np.all(explanations[labels == SQUARE] == [0, 0, 1, 1, 1])
    assert np.all(explanations[labels == RECTANGLE] == [0, 0, 1, 1, 0])


def test_a_third_of_the_triangles_are_equilateral(filled, outline):
    for shapes in (filled, outline):
        same_size = shapes.explanations[shapes.labels == TRIANGLE, SAME_SIZE]
        assert same_size.sum() == round(240 / 3)


@pytest.mark.parametrize("fixture_name", ["filled", "outline", "mixed"])
def test_whole_shape_in_frame(fixture_name, request):
    images = request.getfixturevalue(fixture_name).images
    band = 2
    assert images[:, :band].min() == 255 and images[:, -band:].min() == 255
    assert images[:, :, :band].min() == 255 and images[:, :, -band:].min() == 255
    darkest = images.reshape(len(images), -1).min(axis=1)
    assert darkest.max() <= 64  # every image has clear ink (a 0.4 px pen at 64 px is dark grey, not black)
    assert np.mean(darkest == 0) >= 0.8  # and most have solid black


def test_filled_squares_are_square_and_rectangles_clearly_not(filled):
    square_aspects = [_moment_aspect(image) for image in filled.images[filled.labels == SQUARE]]
    rectangle_aspects = [_moment_aspect(image) for image in filled.images[filled.labels == RECTANGLE]]
    circle_aspects = [_moment_aspect(image) for image in filled.images[filled.labels == CIRCLE]]
    # pixelation of the smallest shapes blurs the exact proportions of a few; the bulk stays clearly apart
    assert np.percentile(square_aspects, 99) < 1.12 and np.percentile(circle_aspects, 99) < 1.12
    assert np.median(square_aspects) < 1.03 and np.median(circle_aspects) < 1.03
    assert np.percentile(rectangle_aspects, 1) > 1.2 and np.median(rectangle_aspects) > 1.8


def test_outline_style_draws_mostly_outlines(filled, outline):
    """An outlined circle is white at its centre; a quarter of the hand-drawn shapes are filled on purpose."""

    def centre_is_white(image: np.ndarray) -> bool:
        rows, columns = np.flatnonzero((image < 128).any(axis=1)), np.flatnonzero((image < 128).any(axis=0))
        return image[(rows[0] + rows[-1]) // 2, (columns[0] + columns[-1]) // 2] > 200

    outline_share = np.mean([centre_is_white(image) for image in outline.images[outline.labels == CIRCLE]])
    filled_share = np.mean([centre_is_white(image) for image in filled.images[filled.labels == CIRCLE]])
    assert 0.6 <= outline_share <= 0.9
    assert filled_share == 0.0


def test_equilateral_triangle_is_same_size_and_345_triangle_is_not():
    equilateral = [(0.0, 0.0), (10.0, 0.0), (5.0, 5.0 * np.sqrt(3))]
    assert polygon_explanations(equilateral).tolist() == [0, 1, 0, 0, 1]
    right_345 = [(0.0, 0.0), (4.0, 0.0), (0.0, 3.0)]
    assert edge_length_ratio(right_345) == pytest.approx(5 / 3)
    assert polygon_explanations(right_345).tolist() == [0, 1, 0, 0, 0]
    nearly = [(0.0, 0.0), (10.0, 0.0), (5.2, 8.9)]  # edges 10, 10.3, 10.1: within the tolerance
    assert edge_length_ratio(nearly) <= SAME_SIZE_MAX_RATIO
    assert polygon_explanations(nearly)[SAME_SIZE] == 1


def test_quadrilateral_explanations():
    assert polygon_explanations([(0, 0), (5, 0), (5, 5), (0, 5)]).tolist() == [0, 0, 1, 1, 1]
    rectangle = [(0, 0), (8, 0), (8, 5), (0, 5)]
    assert polygon_explanations(rectangle).tolist() == [0, 0, 1, 1, 0]
    assert quadrilateral_side_ratio(rectangle) == pytest.approx(1.6) and 1.6 >= UNEQUAL_MIN_RATIO
    trapezoid = [(0, 0), (10, 0), (7, 5), (3, 5)]
    assert polygon_explanations(trapezoid).tolist() == [0, 0, 1, 0, 0]


def test_polygon_explanations_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(3, 2\) or \(4, 2\)"):
        polygon_explanations([(0, 0), (1, 1)])
    with pytest.raises(ValueError, match="degenerate"):
        polygon_explanations([(0, 0), (0, 0), (1, 1)])


def test_generate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="style must be one of"):
        generate_shapes(n_per_class=2, style="dotted")
    with pytest.raises(ValueError, match="n_per_class"):
        generate_shapes(n_per_class=0)
    with pytest.raises(ValueError, match="size"):
        generate_shapes(n_per_class=2, size=8)


def test_split_stratified_properties():
    labels = np.repeat(np.arange(4), [10, 20, 30, 41])
    train, val = split_stratified(labels, val_fraction=0.5, seed=1)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.bincount(labels[val], minlength=4).tolist() == [5, 10, 15, round(41 * 0.5)]
    again_train, again_val = split_stratified(labels, val_fraction=0.5, seed=1)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    _, other_val = split_stratified(labels, val_fraction=0.5, seed=2)
    assert not np.array_equal(val, other_val)
    _, small_val = split_stratified(labels, val_fraction=0.2, seed=1)
    assert np.bincount(labels[small_val], minlength=4).tolist() == [2, 4, 6, 8]


def test_split_stratified_rejects_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction"):
        split_stratified(np.arange(4), val_fraction=1.0)


def test_prior_of_filled_data_matches_the_reference(filled):
    prior = class_explanation_prior(filled.labels, filled.explanations, n_classes=4)
    reference = reference_class_explanations()
    assert prior.shape == (4, 5) and prior.dtype == np.float32
    for class_index in (CIRCLE, SQUARE, RECTANGLE):
        assert prior[class_index].tolist() == reference[class_index].tolist()
    assert prior[TRIANGLE, :4].tolist() == reference[TRIANGLE, :4].tolist()
    assert prior[TRIANGLE, SAME_SIZE] == pytest.approx(1 / 3, abs=0.01)  # the reference's triangles are all equilateral


def test_reference_class_explanations():
    expected = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0]]
    assert reference_class_explanations().tolist() == expected


def test_prior_requires_every_class():
    with pytest.raises(ValueError, match="class 2 has no samples"):
        class_explanation_prior(np.array([0, 1]), np.zeros((2, 5), dtype=np.float32), n_classes=3)


# ----------------------------------------------------------------------------------------------------------------
# Outliers (none of the four shapes)


def test_outliers_are_deterministic_balanced_distinct_and_in_frame():
    from explainer.shapes import OUTLIER_KINDS, generate_outliers

    images, kinds = generate_outliers(80, seed=7, style="mixed")
    again, kinds_again = generate_outliers(80, seed=7, style="mixed")
    other, _ = generate_outliers(80, seed=8, style="mixed")
    assert images.shape == (80, 64, 64) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, again)
    assert kinds == kinds_again and not np.array_equal(images, other)
    assert {kind: kinds.count(kind) for kind in OUTLIER_KINDS} == {kind: 20 for kind in OUTLIER_KINDS}
    assert len({image.tobytes() for image in images}) == 80
    assert images.min(axis=(1, 2)).max() < 128  # every image has ink
    for band in (images[:, :2], images[:, -2:], images[:, :, :2], images[:, :, -2:]):
        assert band.min() == 255  # the whole drawing is in frame


def test_outlier_geometry_is_never_one_of_the_four_shapes():
    from explainer.shapes.generation import _Dice
    from explainer.shapes.outliers import _outlier_corners, _turns_degrees

    dice = _Dice(np.random.default_rng(0))
    for _ in range(300):
        for kind, fewest in (("polygon", 5), ("star", 8), ("concave", 5)):
            corners = _outlier_corners(dice, kind)
            assert len(corners) >= fewest
            # every corner is a visible corner: a pentagon with a nearly straight corner would pass for a quadrilateral
            assert min(_turns_degrees(corners, closed=True)) >= 35
        line = np.asarray(_outlier_corners(dice, "zigzag"))
        assert 2 <= len(line) <= 6
        assert np.hypot(*(line[-1] - line[0])) >= 0.5 * np.ptp(line, axis=0).max()  # open: never closes a shape


def test_outlier_arguments_are_checked():
    from explainer.shapes import generate_outliers

    with pytest.raises(ValueError, match="count"):
        generate_outliers(0)
    with pytest.raises(ValueError, match="style"):
        generate_outliers(4, style="dotted")
