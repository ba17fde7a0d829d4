"""Tests for drawings rendered as other tools store them (explainer/shapes/uploads.py) and for the per-condition report
of train/evaluate_real_drawings.py --conditions. Tiny stroke fixtures only."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from explainer.shapes.normalize import normalize_shape_image
from explainer.shapes.uploads import (
    BITMAP_SIDES,
    CONDITIONS,
    PHOTO_SIDE,
    condition_names,
    is_validation_drawing,
    render_bitmap,
    rotate_strokes,
)

# A wide box (2:1) in one stroke and a triangle, in a source's own units (y down).
BOX = (np.array([[0.0, 0.0], [200.0, 0.0], [200.0, 100.0], [0.0, 100.0], [0.0, 0.0]]),)
TRIANGLE = (np.array([[50.0, 0.0], [100.0, 90.0], [0.0, 90.0], [50.0, 0.0]]),)


def _ink_box(grey: np.ndarray) -> tuple[int, int]:
    """Height and width of the dark ink of a normalised image."""
    rows, cols = np.flatnonzero((grey < 128).any(axis=1)), np.flatnonzero((grey < 128).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_every_condition_renders_the_same_image_for_the_same_seed(name: str) -> None:
    condition = CONDITIONS[name]
    for background in condition.backgrounds:
        first = condition.render(BOX, np.random.default_rng(3), background)
        again = condition.render(BOX, np.random.default_rng(3), background)
        assert first.dtype == np.uint8 and first.ndim in (2, 3)
        assert np.array_equal(first, again)
        assert first.min() < first.max()


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_every_condition_keeps_a_wide_box_wide_after_normalisation(name: str) -> None:
    """What each condition adds (pixels, pens, paper, light, JPEG) must leave the drawing recognisable: the
    normalised box still spans about twice its height, except when turned (then only its size is checked)."""
    condition = CONDITIONS[name]
    image = condition.render(BOX, np.random.default_rng(5), condition.backgrounds[0])
    height, width = _ink_box(normalize_shape_image(image))
    if name == "rotated":
        assert max(height, width) >= 40
    else:
        assert 1.5 < width / height < 2.7, (name, height, width)


@pytest.mark.parametrize("side", BITMAP_SIDES)
def test_bitmaps_have_their_side_and_binary_ones_two_levels(side: int) -> None:
    smooth = render_bitmap(TRIANGLE, np.random.default_rng(0), "white", side, anti_aliased=True)
    binary = render_bitmap(TRIANGLE, np.random.default_rng(0), "black", side, anti_aliased=False)
    assert smooth.shape == binary.shape == (side, side)
    assert set(np.unique(binary).tolist()) == {0, 255} and binary[0, 0] == 0  # white ink on black
    assert len(np.unique(smooth)) > 2 and smooth[0, 0] == 255


def test_pens_are_ordered_hairline_medium_marker() -> None:
    ink = {
        name: float((CONDITIONS[f"pen-{name}"].render(BOX, np.random.default_rng(1), "white") < 128).mean())
        for name in ("hairline", "medium", "marker")
    }
    assert ink["hairline"] < ink["medium"] < ink["marker"]


def test_photos_are_rgb_on_paper_that_is_never_pure_white() -> None:
    for name in ("photo-plain", "photo-lined"):
        photo = CONDITIONS[name].render(TRIANGLE, np.random.default_rng(2), "paper")
        assert photo.shape == (PHOTO_SIDE, PHOTO_SIDE, 3)
        assert np.median(photo) < 250  # grey paper, uneven light: the hard part of a photo


def test_rotating_a_quarter_turn_swaps_width_and_height() -> None:
    (turned,) = rotate_strokes(BOX, 90.0)
    extent = turned.max(axis=0) - turned.min(axis=0)
    assert np.allclose(extent, [100.0, 200.0])


def test_condition_names_take_prefixes_and_refuse_unknown_ones() -> None:
    assert condition_names("all") == list(CONDITIONS)
    assert condition_names("bitmap") == [n for n in CONDITIONS if n.startswith("bitmap-")]
    assert condition_names("photo-plain,pen-marker") == ["pen-marker", "photo-plain"]  # CONDITIONS order
    with pytest.raises(ValueError, match="unknown upload condition 'crayon'"):
        condition_names("crayon")


def test_the_validation_part_is_about_thirty_percent_and_stable() -> None:
    ids = [f"d{i}" for i in range(3000)]
    share = np.mean([is_validation_drawing("ipad_pencil", i) for i in ids])
    assert 0.26 < share < 0.34
    assert [is_validation_drawing("ipad_pencil", i) for i in ids[:50]] == [
        is_validation_drawing("ipad_pencil", i) for i in ids[:50]
    ]


def test_the_evaluation_writes_one_report_per_condition(tmp_path: Path) -> None:
    from bundles import make_shapes_bundle
    from train.evaluate_real_drawings import main

    with gzip.open(tmp_path / "pens.ndjson.gz", "wt", encoding="utf-8") as handle:
        for name, label, strokes in (("b", "rectangle", BOX), ("t", "triangle", TRIANGLE), ("z", "zigzag", BOX)):
            handle.write(json.dumps({"id": name, "label": label, "strokes": [s.T.tolist() for s in strokes]}) + "\n")
    weights = make_shapes_bundle(tmp_path / "w.safetensors")
    out = tmp_path / "out"
    args = ["--weights", str(weights), "--data", str(tmp_path), "--out", str(out), "--conditions", "bitmap-28,dark-app"]
    assert main(args) == 0
    for name, images in (("bitmap-28-aa", 6), ("bitmap-28-binary", 6), ("dark-app", 3)):
        report = json.loads((out / name / "report.json").read_text())
        assert report["condition"] == name and report["n_images"] == images
        assert (out / name / "report.md").is_file()
    table = (out / "conditions.md").read_text()
    assert "| bitmap-28-binary |" in table and "| dark-app |" in table and "pen-marker" not in table
