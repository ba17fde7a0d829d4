"""Drawings stored as strokes (pen positions between pen-down and pen-up): reading them and rendering them the way the
app's sketchpad paints a drawing.

Real hand-drawn shapes come as stroke data (``{"id", "label", "strokes": [[[x...], [y...]], ...]}``, one JSON object
per line, optionally gzipped). The same drawing can then be shown to a model at any size, position, pen width and
polarity: :func:`render_strokes` scales it to a chosen share of a square canvas, moves it anywhere inside, and paints
the strokes with round caps and joins and ~1 px anti-aliasing (``explainer.shapes.strokes.stroke_coverage``, the
canvas-like rasteriser), dark on light or light on dark. The pen width is a fraction of the drawing's own size, so a
thin pen on a big drawing and on a small one look alike once the app crops to the ink. Deterministic for a given random
generator. Used by the real-drawing evaluation and by training on stroke data that may be trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .strokes import stroke_coverage

PEN_FRACTION_RANGE = (0.0075, 0.035)  # pen width / the drawing's largest extent, as people draw in the sketchpad
SIZE_RANGE = (0.15, 0.9)  # the drawing's largest extent / the canvas side
MARGIN_FRACTION = 0.02  # the ink stays this far (fraction of the canvas) from the canvas border
BACKGROUNDS = ("white", "black")  # black ink on white, white ink on black
TRAINABLE_COLLECTIONS = ("quickdraw_onestroke",)  # the only collection whose licence allows training (CC BY 4.0)


class DrawingFormatError(ValueError):
    """A line of a drawings file is not a drawing (no strokes, unreadable numbers, x and y of different lengths)."""


@dataclass(frozen=True)
class StrokeDrawing:
    """One drawing: its strokes as (n, 2) float arrays of (x, y) in the source's units (y down), and its label.

    acceptable: the labels that count as right for it when the source says so (else empty); extra: other fields.
    """

    id: str
    label: str
    strokes: tuple[np.ndarray, ...]
    collection: str = ""
    acceptable: tuple[str, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)


def parse_strokes(raw: object) -> tuple[np.ndarray, ...]:
    """``[[[x0, x1, ...], [y0, y1, ...]], ...]`` -> a tuple of (n, 2) float64 arrays; empty strokes are dropped."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise DrawingFormatError("a drawing needs a non-empty list of strokes, each [[x values], [y values]]")
    strokes = []
    for index, stroke in enumerate(raw):
        if not isinstance(stroke, (list, tuple)) or len(stroke) < 2:
            raise DrawingFormatError(f"stroke {index} is not [[x values], [y values]]")
        try:
            xs, ys = np.asarray(stroke[0], dtype=np.float64), np.asarray(stroke[1], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DrawingFormatError(f"stroke {index} holds values that are not numbers") from err
        if xs.ndim != 1 or xs.shape != ys.shape:
            raise DrawingFormatError(f"stroke {index} has {xs.size} x values but {ys.size} y values")
        if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
            raise DrawingFormatError(f"stroke {index} holds values that are not finite numbers")
        if xs.size:
            strokes.append(np.column_stack([xs, ys]))
    if not strokes:
        raise DrawingFormatError("every stroke of the drawing is empty")
    return tuple(strokes)


def read_drawings(path: str | Path) -> list[StrokeDrawing]:
    """Every drawing of a JSON-lines file (``.gz`` read as gzip); the collection is the file name without suffixes."""
    path = Path(path)
    collection = path.name.split(".")[0]
    opener = gzip.open if path.suffix == ".gz" else open
    drawings = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                strokes = parse_strokes(record["strokes"])
                label = str(record["label"])
            except (json.JSONDecodeError, KeyError, TypeError, DrawingFormatError) as err:
                raise DrawingFormatError(f"{path.name}, line {number}: not a drawing ({err})") from None
            extra = {k: v for k, v in record.items() if k not in ("id", "label", "strokes", "acceptable")}
            drawings.append(
                StrokeDrawing(
                    str(record.get("id", f"{collection}-{number}")),
                    label,
                    strokes,
                    collection,
                    tuple(str(a) for a in record.get("acceptable", ())),
                    extra,
                )
            )
    return drawings


def read_collections(paths: Iterable[str | Path]) -> list[StrokeDrawing]:
    """The drawings of several files, in file order."""
    return [drawing for path in paths for drawing in read_drawings(path)]


def is_training_drawing(drawing: StrokeDrawing) -> bool:
    """Half of each trainable collection (by a hash of the id, so the split never depends on file order) may be used
    for training; the other half, and every other collection, is for evaluation only."""
    if drawing.collection not in TRAINABLE_COLLECTIONS:
        return False
    return hashlib.blake2b(drawing.id.encode("utf-8"), digest_size=2).digest()[0] < 128


def drawing_extent(strokes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest (x, y) over all the strokes."""
    points = np.vstack(strokes)
    return points.min(axis=0), points.max(axis=0)


def place_strokes(
    strokes: Sequence[np.ndarray], canvas: int, size_fraction: float, pen_px: float, position: tuple[float, float]
) -> list[np.ndarray]:
    """Scale the drawing so that its largest extent is size_fraction of the canvas and move it to ``position``
    (each in [0, 1]: 0 as far up / left as the margin and the pen allow, 1 as far down / right), aspect kept."""
    low, high = drawing_extent(strokes)
    extent = float(max(high - low))
    span = size_fraction * canvas
    factor = span / extent if extent > 0 else 1.0
    scaled = [(np.asarray(s, dtype=np.float64) - low) * factor for s in strokes]
    size = (high - low) * factor
    margin = MARGIN_FRACTION * canvas + pen_px / 2.0 + 1.0
    room = np.maximum(canvas - 2.0 * margin - size, 0.0)
    offset = margin + np.asarray(position, dtype=np.float64) * room
    if extent == 0:  # a single dot: put it where the position says
        offset = offset - size / 2.0
    return [s + offset for s in scaled]


def paint_coverage(coverage: np.ndarray, background: str) -> np.ndarray:
    """Ink coverage in [0, 1] -> a grey uint8 image, black ink on white or white ink on black (8-bit like a canvas)."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    ink = np.rint(np.clip(coverage, 0.0, 1.0) * 255.0).astype(np.uint8)
    return 255 - ink if background == "white" else ink


def render_strokes(
    strokes: Sequence[np.ndarray],
    rng: np.random.Generator,
    canvas: int = 512,
    pen_fraction: float | None = None,
    size_fraction: float | None = None,
    background: str | None = None,
) -> np.ndarray:
    """Render a drawing as the sketchpad would show it: a canvas x canvas grey uint8 image.

    Unset choices are drawn from ``rng``: the pen width (log-uniform over PEN_FRACTION_RANGE of the drawing's size,
    at least 0.5 px), the drawing's size (uniform over SIZE_RANGE of the canvas), its position (anywhere inside) and
    the background (white or black, equally often). The same rng state gives the same image.
    """
    if not isinstance(canvas, (int, np.integer)) or canvas < 32:
        raise ValueError(f"canvas must be an int >= 32 pixels, got {canvas!r}")
    if pen_fraction is None:
        pen_fraction = math.exp(rng.uniform(math.log(PEN_FRACTION_RANGE[0]), math.log(PEN_FRACTION_RANGE[1])))
    if size_fraction is None:
        size_fraction = rng.uniform(*SIZE_RANGE)
    if not 0.0 < size_fraction <= 1.0:
        raise ValueError(f"size_fraction must be in (0, 1], got {size_fraction!r}")
    if not pen_fraction > 0.0:
        raise ValueError(f"pen_fraction must be > 0, got {pen_fraction!r}")
    position = (rng.uniform(), rng.uniform())
    if background is None:
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    pen_px = max(0.5, pen_fraction * size_fraction * canvas)
    placed = place_strokes(strokes, int(canvas), float(size_fraction), pen_px, position)
    return paint_coverage(stroke_coverage(placed, pen_px, int(canvas)), background)


def resample_stroke(stroke: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ``spacing`` units along a polyline (its ends kept): uniform density whatever the source's rate."""
    stroke = np.asarray(stroke, dtype=np.float64)
    if len(stroke) < 2:
        return stroke.copy()
    cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(stroke, axis=0), axis=1))])
    if cumulative[-1] <= 0:
        return stroke[:1].copy()
    positions = np.linspace(0.0, cumulative[-1], max(2, int(math.ceil(cumulative[-1] / spacing)) + 1))
    return np.column_stack([np.interp(positions, cumulative, stroke[:, axis]) for axis in range(2)])
