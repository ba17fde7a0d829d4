"""Stroke data (explainer/shapes/drawn.py): reading drawings, rendering them like the sketchpad; the drawn training
sketches (explainer/shapes/sketches.py); and the real-drawing evaluation (train/evaluate_real_drawings.py) on a
fixture built here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from explainer.shapes.drawn import (
    DrawingFormatError,
    StrokeDrawing,
    is_training_drawing,
    parse_strokes,
    place_strokes,
    read_drawings,
    render_strokes,
)
from explainer.shapes.sketches import (
    CLASS_KINDS,
    DRAWN_SAME_SIZE_MAX,
    OUTLIER_KINDS,
    generate_sketch_outliers,
    generate_sketches,
    sketch_outlier,
    sketch_shape,
)

# A square of side 100 in one stroke, an L in two strokes, in a source's own units (y down).
SQUARE = [[[10.0, 110.0, 110.0, 10.0, 10.0], [20.0, 20.0, 120.0, 120.0, 20.0]]]
TWO_STROKES = [[[0.0, 0.0], [0.0, 50.0]], [[0.0, 30.0], [50.0, 50.0]]]


def write_collection(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def ink_box(image: np.ndarray, background: str = "white") -> tuple[int, int, int, int]:
    ink = image < 128 if background == "white" else image > 127
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def test_read_drawings_keeps_strokes_labels_and_extra_fields(tmp_path: Path) -> None:
    path = write_collection(
        tmp_path / "pens.ndjson.gz",
        [
            {"id": "a", "label": "square", "strokes": SQUARE, "speed": "slow"},
            {"id": "b", "label": "v", "acceptable": [], "strokes": TWO_STROKES},
        ],
    )
    first, second = read_drawings(path)
    assert (first.collection, first.id, first.label, first.extra) == ("pens", "a", "square", {"speed": "slow"})
    assert first.strokes[0].shape == (5, 2) and first.strokes[0][2].tolist() == [110.0, 120.0]
    assert len(second.strokes) == 2 and second.acceptable == ()


@pytest.mark.parametrize("strokes", [[], [[[1.0, 2.0], [1.0]]], [[["a"], ["b"]]], [[[], []]], "nope"])
def test_malformed_strokes_are_refused_in_plain_words(strokes: object) -> None:
    with pytest.raises(DrawingFormatError) as err:
        parse_strokes(strokes)
    assert "Traceback" not in str(err.value) and "stroke" in str(err.value)


def test_a_bad_line_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.ndjson"
    path.write_text(json.dumps({"id": "a", "label": "circle", "strokes": SQUARE}) + "\n{not json\n")
    with pytest.raises(DrawingFormatError, match="broken.ndjson, line 2"):
        read_drawings(path)


def test_render_places_the_drawing_at_the_size_asked_inside_the_canvas() -> None:
    strokes = parse_strokes(SQUARE)
    image = render_strokes(
        strokes, np.random.default_rng(0), canvas=256, pen_fraction=0.02, size_fraction=0.5, background="white"
    )
    assert image.shape == (256, 256) and image.dtype == np.uint8
    top, bottom, left, right = ink_box(image)
    # the square's outer edge spans 50% of the canvas plus the pen (2% of its size), whatever the source's units
    assert abs((bottom - top + 1) - 0.5 * 256 * 1.02) <= 2 and abs((right - left + 1) - 0.5 * 256 * 1.02) <= 2
    assert image[128, 128] == 255  # an outline: the middle stays paper
    assert image[0].min() == 255 and image[-1].min() == 255 and image[:, 0].min() == 255 and image[:, -1].min() == 255


def test_render_white_on_black_is_the_negative_and_the_seed_repeats_it() -> None:
    strokes = parse_strokes(SQUARE)
    white = render_strokes(strokes, np.random.default_rng(3), background="white", canvas=128)
    black = render_strokes(strokes, np.random.default_rng(3), background="black", canvas=128)
    assert np.array_equal(255 - white, black)
    assert np.array_equal(white, render_strokes(strokes, np.random.default_rng(3), background="white", canvas=128))
    assert not np.array_equal(white, render_strokes(strokes, np.random.default_rng(4), background="white", canvas=128))


def test_the_pen_width_is_a_share_of_the_drawing_size() -> None:
    strokes = parse_strokes(SQUARE)

    def ink(pen: float, size: float) -> float:
        image = render_strokes(
            strokes, np.random.default_rng(1), canvas=512, pen_fraction=pen, size_fraction=size, background="white"
        )
        return float((255 - image.astype(np.float64)).sum() / 255.0)

    # ink area = perimeter x width: 4 x side x pen x side; doubling the pen doubles it, at any size
    assert ink(0.03, 0.4) / ink(0.015, 0.4) == pytest.approx(2.0, rel=0.1)
    assert ink(0.02, 0.8) / ink(0.02, 0.4) == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize("position", [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0)])
def test_any_position_keeps_the_whole_drawing_on_the_canvas(position: tuple[float, float]) -> None:
    placed = np.vstack(place_strokes(parse_strokes(TWO_STROKES), 200, 0.9, 6.0, position))
    assert placed.min() >= 200 * 0.02 + 3.0 - 1e-9 and placed.max() <= 200 - 200 * 0.02 - 3.0 + 1e-9


def test_only_half_of_the_trainable_collection_is_for_training() -> None:
    strokes = parse_strokes(SQUARE)
    drawings = [StrokeDrawing(f"id-{i}", "circle", strokes, "quickdraw_onestroke") for i in range(400)]
    share = np.mean([is_training_drawing(d) for d in drawings])
    assert 0.4 < share < 0.6
    assert not any(is_training_drawing(StrokeDrawing(d.id, "circle", strokes, "ipad_pencil")) for d in drawings)


def test_sketches_carry_labels_by_the_drawn_rules() -> None:
    images, labels, explanations, teach = generate_sketches(12, seed=5)
    assert len(images) == 48 and labels.tolist() == list(range(4)) * 12
    for image in images:
        assert image.dtype == np.uint8 and image.ndim == 2 and (image < 128).any() != (image > 127).all()
    assert (explanations[labels == 0] == [1, 0, 0, 0, 0]).all()
    assert (explanations[labels == 1][:, 1] == 1).all()
    quads = np.isin(labels, (2, 3))
    assert (explanations[quads][:, 2:4] == 1).all()
    assert (explanations[labels == 2][:, 4] == 1).all() and (explanations[labels == 3][:, 4] == 0).all()
    assert teach[labels != 2].all()  # only squares between 1.10 and 1.25 are left to the mirror
    again = generate_sketches(12, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(images, again[0], strict=False))
    assert DRAWN_SAME_SIZE_MAX == 1.25


@pytest.mark.parametrize("kind", OUTLIER_KINDS)
def test_every_outlier_kind_draws_strokes(kind: str) -> None:
    strokes = sketch_outlier(kind, np.random.default_rng(2))
    points = np.vstack(strokes)
    assert points.shape[1] == 2 and np.all(np.isfinite(points)) and np.ptp(points, axis=0).max() > 0.5


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown shape kind"):
        sketch_shape("hexagon", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown outlier kind"):
        sketch_outlier("square", np.random.default_rng(0))
    assert CLASS_KINDS == ("circle", "triangle", "square", "rectangle")


def test_outliers_come_in_equal_shares() -> None:
    images, kinds = generate_sketch_outliers(len(OUTLIER_KINDS) * 2, seed=1)
    assert sorted(set(kinds)) == sorted(OUTLIER_KINDS) and len(images) == 2 * len(OUTLIER_KINDS)


def test_real_drawing_evaluation_reports_every_kind(tmp_path: Path) -> None:
    from bundles import make_shapes_bundle
    from train.evaluate_real_drawings import main

    write_collection(
        tmp_path / "pens.ndjson.gz",
        [
            {"id": "s", "label": "square", "strokes": SQUARE},
            {"id": "v", "label": "v", "strokes": TWO_STROKES},
            {"id": "d", "label": "diamond", "strokes": SQUARE},
        ],
    )
    weights = make_shapes_bundle(tmp_path / "w.safetensors")
    out = tmp_path / "out"
    assert main(["--weights", str(weights), "--data", str(tmp_path), "--out", str(out), "--canvas", "128"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_drawings"] == 3 and report["n_images"] == 6  # each drawing black on white and white on black
    assert report["totals"]["shapes"]["n"] == 2 and report["totals"]["none_of_the_four"]["n"] == 2
    assert [row["label"] for row in report["per_label"]["ambiguous"]] == ["diamond"]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    square = [r for r in rows if r["label"] == "square"]
    assert all(r["right"] == (r["predicted"] in ("square", "rectangle")) for r in square)
    failed = sum(report["failures"].values())
    assert failed == 0 or any(out.glob("failures-*.png"))
    assert "| pens |" in (out / "report.md").read_text()


def test_real_drawing_evaluation_says_when_there_is_no_data(tmp_path: Path) -> None:
    from train.evaluate_real_drawings import main

    with pytest.raises(SystemExit):
        main(["--weights", "w", "--data", str(tmp_path), "--out", str(tmp_path / "o")])


def test_tall_boxes_are_an_option_that_keeps_the_shipped_recipe() -> None:
    from explainer.shapes.sketches import _quad

    def tall(corners: np.ndarray) -> bool:
        span = np.ptp(corners, axis=0)
        return bool(span[1] > span[0])

    wide_only = [tall(_quad(2.0, np.random.default_rng(s))) for s in range(40)]
    either = [tall(_quad(2.0, np.random.default_rng(s), tall_boxes=True)) for s in range(40)]
    assert not any(wide_only) and 10 < sum(either) < 30
    # without the option the images are exactly the recipe the shipped file was trained with
    images = generate_sketches(3, seed=5)[0]
    assert all(
        np.array_equal(a, b) for a, b in zip(images, generate_sketches(3, seed=5, tall_boxes=False)[0], strict=False)
    )
