"""Tests of the hand-drawing simulator (explainer/shapes/strokes.py) and the out-of-distribution image generator
(explainer/shapes/ood.py)."""

from __future__ import annotations

import numpy as np
import pytest

from explainer.shapes.ood import LETTERS, OOD_KINDS, generate_ood, letter_skeleton, ood_image
from explainer.shapes.strokes import (
    CLASS_NAMES,
    EQUILATERAL_MAX_EDGE_RATIO,
    EXPLANATION_NAMES,
    BrushStyle,
    composite_over,
    drawing_rng,
    humanise_outline,
    ink_mask,
    paint,
    pointer_path,
    simulate_dataset,
    simulate_drawing,
    stroke_coverage,
)


def _distance_to_polyline(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """Distance of each point to the nearest segment of an open polyline."""
    seg_a, seg_b = polyline[:-1], polyline[1:]
    delta = seg_b - seg_a
    rel = points[:, None, :] - seg_a[None]
    along = np.clip((rel * delta).sum(-1) / np.maximum((delta * delta).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(rel - along[..., None] * delta, axis=-1).min(axis=1)


def _closed(outline: np.ndarray) -> np.ndarray:
    return np.vstack([outline, outline[:1]])


@pytest.fixture(scope="module")
def small_dataset() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    return simulate_dataset(12, seed=5, canvas=256)


def test_dataset_shapes_dtypes_and_every_class(small_dataset):
    images, labels, explanations = small_dataset
    assert len(images) == 48 and labels.shape == (48,) and explanations.shape == (48, len(EXPLANATION_NAMES))
    assert labels.dtype == np.int64 and explanations.dtype == np.float32
    assert sorted(set(labels.tolist())) == list(range(len(CLASS_NAMES)))
    assert labels[:4].tolist() == [0, 1, 2, 3]  # interleaved in CLASS_NAMES order
    for image in images:
        assert image.dtype == np.uint8 and image.shape[:2] == (256, 256) and image.shape[2] in (3, 4)
    channel_counts = {image.shape[2] for image in images}
    assert channel_counts == {3, 4}, "expected both opaque (RGB) and transparent (RGBA) canvases"


def test_dataset_is_deterministic_and_prefix_stable():
    images_a, labels_a, expl_a = simulate_dataset(2, seed=11, canvas=128)
    images_b, labels_b, expl_b = simulate_dataset(2, seed=11, canvas=128)
    images_c, _, _ = simulate_dataset(1, seed=11, canvas=128)
    images_d, _, _ = simulate_dataset(2, seed=12, canvas=128)
    assert all(np.array_equal(a, b) for a, b in zip(images_a, images_b, strict=False))
    assert np.array_equal(labels_a, labels_b) and np.array_equal(expl_a, expl_b)
    assert all(np.array_equal(a, c) for a, c in zip(images_a[:4], images_c, strict=False))  # item i ignores n_per_class
    assert not all(a.shape == d.shape and np.array_equal(a, d) for a, d in zip(images_a, images_d, strict=False))


def test_drawings_have_ink_inside_the_canvas(small_dataset):
    images, _, _ = small_dataset
    for image in images:
        ink = ink_mask(image)
        assert ink.sum() > 50, "a drawing without ink"
        assert not ink[:2].any() and not ink[-2:].any() and not ink[:, :2].any() and not ink[:, -2:].any()
        rows, cols = np.nonzero(ink)
        extent = max(rows.max() - rows.min(), cols.max() - cols.min()) / image.shape[0]
        assert 0.1 <= extent <= 0.98


def test_transparent_background_is_alpha_zero_and_composites_to_white(small_dataset):
    images, _, _ = small_dataset
    rgba = next(image for image in images if image.shape[2] == 4)
    assert rgba[0, 0, 3] == 0 and (rgba[..., 3] == 0).mean() > 0.5
    flat = composite_over(rgba)
    assert flat.shape == rgba.shape[:2] + (3,) and tuple(flat[0, 0]) == (255, 255, 255)


def test_explanations_are_consistent_with_the_class():
    for item in range(40):
        for class_index, kind in enumerate(CLASS_NAMES):
            path = pointer_path(kind, drawing_rng(3, class_index, item), canvas=256)
            no_vertex, three, four, parallel, same = path.explanation.tolist()
            assert no_vertex + three + four == 1.0, "exactly one vertex-count explanation must hold"
            if kind == "circle":
                assert path.explanation.tolist() == [1, 0, 0, 0, 0]
            elif kind == "square":
                assert (four, parallel, same) == (1, 1, 1)
            elif kind == "rectangle":
                assert (four, parallel, same) == (1, 1, 0)
                edges = np.linalg.norm(np.diff(_closed(path.intended_outline), axis=0), axis=1)
                assert edges.max() / edges.min() >= 1.3 - 1e-6
            else:
                edges = np.linalg.norm(np.diff(_closed(path.intended_outline), axis=0), axis=1)
                assert three == 1 and parallel == 0
                assert same == float(edges.max() / edges.min() <= EQUILATERAL_MAX_EDGE_RATIO)


def test_both_kinds_of_triangle_occur():
    same_size = {simulate_drawing("triangle", drawing_rng(0, 1, item), canvas=64)[1][4] for item in range(40)}
    assert same_size == {0.0, 1.0}


def test_pointer_events_follow_the_intended_outline_like_a_hand():
    stroke_counts, intervals = set(), []
    for item in range(25):
        for class_index, kind in enumerate(CLASS_NAMES):
            path = pointer_path(kind, drawing_rng(8, class_index, item), canvas=512)
            points = np.vstack(path.strokes)
            deviation = _distance_to_polyline(points, _closed(path.intended_outline)) / path.intended_size_px
            assert deviation.max() < 0.12 and np.quantile(deviation, 0.95) < 0.07
            assert deviation.mean() > 0.001, "a perfectly clean trace is not a hand drawing"
            for xy, times in zip(path.strokes, path.times, strict=False):
                assert xy.ndim == 2 and xy.shape[1] == 2 and len(xy) == len(times)
                assert np.all(np.diff(times) > 0)
                intervals.extend(np.diff(times).tolist())
            assert all(a[-1] < b[0] for a, b in zip(path.times, path.times[1:], strict=False)), (
                "strokes overlap in time"
            )
            assert path.events()[0].shape[1] == 3
            stroke_counts.add(len(path.strokes))
    assert {1, 2, 4} <= stroke_counts
    assert 1 / 130 < np.median(intervals) < 1 / 50, "pointer events should come at about 60 Hz"


def _densify(polyline: np.ndarray) -> np.ndarray:
    """Points every ~1 px along a polyline, so point-to-polyline distances approximate polyline-to-polyline ones."""
    cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(polyline, axis=0), axis=1))])
    samples = np.linspace(0.0, cumulative[-1], int(cumulative[-1]) + 2)
    return np.column_stack([np.interp(samples, cumulative, polyline[:, axis]) for axis in range(2)])


def test_a_closed_outline_can_close_or_leave_a_gap():
    """Single-stroke squares: the stroke's last quarter either reaches/crosses its first quarter or stops short."""
    gaps, gap_px, widest = [], 0.0, None
    for item in range(120):
        path = pointer_path("square", drawing_rng(4, 2, item), canvas=512)
        if len(path.strokes) != 1:
            continue
        stroke = path.strokes[0]
        head, tail = _densify(stroke[: len(stroke) // 4 + 1]), stroke[3 * len(stroke) // 4 :]
        distance = _distance_to_polyline(head, tail).min()
        gaps.append(distance / path.intended_size_px)
        if distance > gap_px:
            gap_px, widest = distance, (head, _densify(tail), path)
    gaps = np.array(gaps)
    assert len(gaps) > 30
    assert (gaps < 0.005).mean() > 0.2, "many single-stroke squares should close (or overshoot)"
    assert (gaps > 0.03).mean() > 0.08, "some single-stroke squares should leave a clear corner gap"
    assert gap_px > 6.0
    head, tail, path = widest
    pairwise = np.linalg.norm(head[:, None] - tail[None], axis=-1)
    head_index, tail_index = np.unravel_index(pairwise.argmin(), pairwise.shape)
    coverage = stroke_coverage(path.strokes, 2.0, 512)  # with a thin brush the raster is open there too
    middle = ((head[head_index] + tail[tail_index]) / 2.0).astype(int)
    assert coverage[middle[1], middle[0]] == 0.0


@pytest.mark.parametrize("width", [2.0, 5.0, 12.0])
def test_rasteriser_draws_the_requested_width_with_round_caps(width):
    coverage = stroke_coverage([np.array([[10.0, 32.0], [54.0, 32.0]])], width, 64)
    column = coverage[:, 32]
    assert column.sum() == pytest.approx(width, abs=0.25)  # anti-aliased ink across the line sums to its width
    assert abs(int((column >= 0.5).sum()) - width) <= 1
    row = coverage[32]
    assert row.sum() == pytest.approx(44.0 + width, abs=0.5)  # round caps add a radius at each end
    assert coverage[:, : int(10 - width / 2 - 1)].max() == 0.0 and coverage[:20].max() == 0.0
    assert 0.0 < coverage.max() <= 1.0


def test_rasteriser_joins_and_dots():
    vee = stroke_coverage([np.array([[8.0, 8.0], [32.0, 56.0], [56.0, 8.0]])], 4.0, 64)
    assert vee[54, 32] > 0.9 and vee[54, 20] == 0.0
    dot = stroke_coverage([np.array([[20.5, 20.5]])], 6.0, 64)
    assert dot[20, 20] == 1.0 and (dot > 0.5).sum() == pytest.approx(np.pi * 9, rel=0.2)
    with pytest.raises(ValueError, match="brush_width"):
        stroke_coverage([np.zeros((2, 2))], 0.0, 64)


def test_paint_backgrounds():
    coverage = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    white = paint(coverage, BrushStyle(3.0, (0, 0, 0), "white"))
    assert white.shape == (1, 3, 3) and white[0, :, 0].tolist() == [255, 127, 0]  # 8-bit alpha 128
    dark = paint(coverage, BrushStyle(3.0, (255, 255, 255), "black"))
    assert dark[0, :, 1].tolist() == [0, 128, 255]
    clear = paint(coverage, BrushStyle(3.0, (30, 80, 220), "transparent"))
    assert clear.shape == (1, 3, 4) and clear[0, :, 3].tolist() == [0, 128, 255]
    assert clear[0, 2, :3].tolist() == [30, 80, 220] and clear[0, 0].tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="background"):
        paint(coverage, BrushStyle(3.0, (0, 0, 0), "grey"))


def test_bad_input_names_the_value():
    with pytest.raises(ValueError, match="hexagon"):
        simulate_drawing("hexagon", np.random.default_rng(0))
    with pytest.raises(ValueError, match="-1"):
        simulate_dataset(-1)
    with pytest.raises(ValueError, match="canvas"):
        pointer_path("circle", np.random.default_rng(0), canvas=8)
    with pytest.raises(ValueError, match="blob"):
        ood_image("blob", np.random.default_rng(0))
    with pytest.raises(ValueError, match="Q"):
        letter_skeleton("Q")
    with pytest.raises(ValueError, match="vertices"):
        humanise_outline(np.zeros((1, 2)), np.random.default_rng(0))


@pytest.fixture(scope="module")
def ood_set() -> tuple[list[np.ndarray], list[str]]:
    return generate_ood(4, seed=2, size=128)


def test_ood_every_kind_shapes_and_dtypes(ood_set):
    images, kinds = ood_set
    assert len(images) == len(kinds) == 4 * len(OOD_KINDS) and set(kinds) == set(OOD_KINDS)
    for image, kind in zip(images, kinds, strict=False):
        assert image.dtype == np.uint8 and image.shape[:2] == (128, 128)
        assert image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3), (kind, image.shape)
        if kind == "photo-like":
            assert image.ndim == 3
        if kind not in ("uniform noise", "photo-like"):
            ink = ink_mask(image)
            assert 20 < ink.sum() < 0.9 * ink.size, f"{kind} should have some ink on a background"
            assert not ink[0].any() and not ink[-1].any() and not ink[:, 0].any() and not ink[:, -1].any()


def test_ood_is_deterministic(ood_set):
    images, kinds = generate_ood(4, seed=2, size=128)
    assert kinds == ood_set[1] and all(np.array_equal(a, b) for a, b in zip(images, ood_set[0], strict=False))
    other, _ = generate_ood(4, seed=3, size=128)
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(images, other, strict=False))


def test_uniform_noise_spans_the_full_range():
    image = ood_image("uniform noise", np.random.default_rng(0), size=128)
    assert image.min() <= 2 and image.max() >= 253 and abs(float(image.mean()) - 127.5) < 5


def test_letter_skeletons_fit_the_unit_box():
    for letter in LETTERS:
        strokes = letter_skeleton(letter)
        points = np.vstack(strokes)
        assert points.min() >= -0.01 and points.max() <= 1.01 and all(len(s) >= 2 for s in strokes)


def test_names_and_thresholds_agree_with_the_training_renderer():
    shapes = pytest.importorskip("explainer.shapes")
    assert CLASS_NAMES == shapes.CLASS_NAMES and EXPLANATION_NAMES == shapes.EXPLANATION_NAMES
    assert EQUILATERAL_MAX_EDGE_RATIO == shapes.SAME_SIZE_MAX_RATIO
