"""Drawing the four shapes: sampling the geometry, then rendering it "filled" (like the reference data set) or
"outline" (hand-drawn). :func:`generate_shapes` is the entry point; the looks are described in :mod:`explainer.shapes`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from .labels import (
    CLASS_NAMES,
    EQUILATERAL_TRIANGLE_SHARE,
    EXPLANATION_NAMES,
    MAX_RECTANGLE_SIDE_RATIO,
    MIN_TRIANGLE_ANGLE_DEGREES,
    SAME_SIZE_MAX_RATIO,
    STYLES,
    UNEQUAL_MIN_RATIO,
    ShapeSet,
    _edge_lengths,
    _explanations_of,
    _opposite_edges_parallel,
    _Point,
    _side_ratio,
    _triangle_angles,
    circle_explanations,
)

# Geometry is sampled in units of a 64-pixel image and scaled by size / 64.
_REFERENCE_SIZE = 64.0
_SUPERSAMPLE = 4
_PLACEMENT_MARGIN_PX = 3.0  # the drawn geometry (stroke half-width included) stays this far from the border
_WHITE_BORDER_PX = 2  # rendered images are checked to be pure white in this band
_MIN_SHAPE_EXTENT_PX = 10.0  # bounding-box side range, like the reference (its shapes span about 10 to 59 px)
_MAX_SHAPE_EXTENT_PX = 56.0
_FILLED_MAX_CENTRE_OFFSET_PX = 10.0  # the reference keeps its shapes near the centre
_HAND_DRAWN_FILLED_SHARE = 0.25  # the rest of the hand-drawn shapes are outlines
_ALIASED_SHARE = 1.0 / 3.0  # filled shapes drawn without anti-aliasing: the reference's edges are often jagged
_ALIASED_MIN_EXTENT_PX = 14.0  # smaller aliased shapes lose their proportions (a tiny square looks 1.2:1)
_MIN_EDGE_PX = 3.5
PEN_RELATIVE_WIDTH = (0.006, 0.08)  # hand-drawn pen width / shape extent
_MIN_PEN_PX, _MAX_PEN_PX = 0.4, 4.0
_HAND_DRAWN_MIN_EXTENT_PX = 32.0
_MAX_ATTEMPTS = 200


# ----------------------------------------------------------------------------------------------------------------
# Shape sampling
# ----------------------------------------------------------------------------------------------------------------


class _Dice:
    """Uniform numbers drawn from the generator in blocks: one numpy call per 64 numbers keeps generation fast."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._values: list[float] = []

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        if not self._values:
            self._values = self.rng.random(64).tolist()
        return low + (high - low) * self._values.pop()


def _rotated_centred(polygon: list[_Point], angle: float, extent: float) -> list[_Point]:
    """Rotate, then scale so that the bounding box's longer side is `extent`, bounding box centred on 0."""
    cosine, sine = math.cos(angle), math.sin(angle)
    rotated = [(x * cosine - y * sine, x * sine + y * cosine) for x, y in polygon]
    xs, ys = [p[0] for p in rotated], [p[1] for p in rotated]
    centre_x, centre_y = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    factor = extent / max(max(xs) - min(xs), max(ys) - min(ys))
    return [((x - centre_x) * factor, (y - centre_y) * factor) for x, y in rotated]


def _triangle_from_angles(angles_degrees: tuple[float, float, float]) -> list[_Point]:
    angle_a, angle_b, angle_c = (math.radians(a) for a in angles_degrees)
    side_b, side_c = math.sin(angle_b), math.sin(angle_c)  # law of sines: each side is opposite its angle
    return [(0.0, 0.0), (side_c, 0.0), (side_b * math.cos(angle_a), side_b * math.sin(angle_a))]


def _non_equilateral_angles(dice: _Dice) -> tuple[float, float, float]:
    """Isosceles (a third) or general (acute, right or obtuse) triangle angles outside the "same size" band."""
    minimum = MIN_TRIANGLE_ANGLE_DEGREES
    for _ in range(_MAX_ATTEMPTS):
        if dice.uniform() < 1 / 3:
            apex = dice.uniform(minimum, 180 - 2 * minimum)
            angles = [apex, (180 - apex) / 2, (180 - apex) / 2]
        else:
            first, second = dice.uniform(minimum, 180 - 2 * minimum), dice.uniform(minimum, 180 - 2 * minimum)
            angles = [first, second, 180 - first - second]
        if min(angles) < minimum:
            continue
        sines = [math.sin(math.radians(a)) for a in angles]
        if max(sines) / min(sines) >= UNEQUAL_MIN_RATIO:
            shift = int(dice.uniform(0, 3))  # which corner gets which angle
            return tuple(angles[shift:] + angles[:shift])  # type: ignore[return-value]
    raise RuntimeError("could not sample a non-equilateral triangle")  # pragma: no cover - probability ~0


def _base_polygon(dice: _Dice, class_index: int, equilateral: bool) -> list[_Point]:
    if class_index == 1:
        return _triangle_from_angles((60.0, 60.0, 60.0) if equilateral else _non_equilateral_angles(dice))
    if class_index == 2:
        return [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    ratio = math.exp(dice.uniform(math.log(UNEQUAL_MIN_RATIO), math.log(MAX_RECTANGLE_SIDE_RATIO)))
    return [(0.0, 0.0), (ratio, 0.0), (ratio, 1.0), (0.0, 1.0)]


def _polygon_matches_class(polygon: list[_Point], class_index: int, equilateral: bool) -> bool:
    """True when (jittered) corners fall inside the unambiguous band of the intended class."""
    lengths = _edge_lengths(polygon)
    ratio = max(lengths) / min(lengths)
    if class_index == 1:
        if min(_triangle_angles(polygon)) < MIN_TRIANGLE_ANGLE_DEGREES - 3:
            return False
        return ratio <= SAME_SIZE_MAX_RATIO if equilateral else ratio >= UNEQUAL_MIN_RATIO
    if not _opposite_edges_parallel(polygon):
        return False
    if class_index == 2:
        return ratio <= SAME_SIZE_MAX_RATIO
    return _side_ratio(polygon) >= UNEQUAL_MIN_RATIO and ratio >= UNEQUAL_MIN_RATIO


def _with_min_edge(polygon: list[_Point], min_edge: float) -> list[_Point]:
    """Enlarge a polygon (about the origin) so that its shortest edge is at least min_edge: shapes stay legible."""
    shortest = min(_edge_lengths(polygon))
    if shortest >= min_edge:
        return polygon
    factor = min_edge / shortest
    return [(x * factor, y * factor) for x, y in polygon]


def _sample_extent(dice: _Dice, scale: float) -> float:
    """Bounding-box side, log-uniform so that small shapes are common as in the reference."""
    return scale * math.exp(dice.uniform(math.log(_MIN_SHAPE_EXTENT_PX), math.log(_MAX_SHAPE_EXTENT_PX)))


# ----------------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Drawing:
    """Filled polygons and discs in pixel coordinates (x, y), centred near 0, before placement in the image."""

    polygons: list[list[_Point]]
    discs: list[tuple[float, float, float]]  # centre x, centre y, radius
    low: tuple[float, float]  # bounding box of everything drawn
    high: tuple[float, float]
    explanations: np.ndarray


@dataclass
class _Prepared:
    """What to rasterise, in supersampled canvas coordinates: flat polygons and ellipse bounding boxes."""

    polygons: list[list]
    ellipses: list[list[float]]
    explanations: np.ndarray
    supersample: int = _SUPERSAMPLE  # 1: hard, aliased edges (as parts of the reference have)


def _filled_reference_like(dice: _Dice, class_index: int, equilateral: bool, scale: float) -> _Drawing:
    """A black filled shape with exact geometry (squares exactly 1:1), like the reference data set."""
    extent = _sample_extent(dice, scale)
    if class_index == 0:
        radius = extent / 2
        if radius <= 12 * scale and dice.uniform() < 0.5:  # small lumpy circles, like the reference's
            count = 10 + int(dice.uniform(0, 7))
            step, start = 2 * math.pi / count, dice.uniform(0, 2 * math.pi)
            angles = [start + step * (index + dice.uniform(-0.25, 0.25)) for index in range(count)]
            radii = [radius * (1 + dice.uniform(-0.03, 0.03)) for _ in range(count)]
            polygon = [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles, strict=False)]
        else:
            return _Drawing([], [(0.0, 0.0, radius)], (-radius, -radius), (radius, radius), circle_explanations())
        explanations = circle_explanations()
    else:
        polygon = _rotated_centred(_base_polygon(dice, class_index, equilateral), dice.uniform(0, 2 * math.pi), extent)
        polygon = _with_min_edge(polygon, _MIN_EDGE_PX * scale)
        explanations = _explanations_of(polygon)
    return _polygon_drawing(polygon, explanations)


def _polygon_drawing(polygon: list[_Point], explanations: np.ndarray) -> _Drawing:
    xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
    return _Drawing([polygon], [], (min(xs), min(ys)), (max(xs), max(ys)), explanations)


def _place_filled(dice: _Dice, drawing: _Drawing, size: int) -> _Prepared:
    """Move a filled drawing to a random centre near the image centre (like the reference), wholly in frame."""
    scale = size / _REFERENCE_SIZE
    available = size - 2 * _PLACEMENT_MARGIN_PX * scale
    span_x, span_y = drawing.high[0] - drawing.low[0], drawing.high[1] - drawing.low[1]
    shrink = min(1.0, available / max(span_x, span_y))
    slack_x = min(max(0.0, (available - span_x * shrink) / 2), _FILLED_MAX_CENTRE_OFFSET_PX * scale)
    slack_y = min(max(0.0, (available - span_y * shrink) / 2), _FILLED_MAX_CENTRE_OFFSET_PX * scale)
    centre_x = size / 2 + dice.uniform(-slack_x, slack_x)
    centre_y = size / 2 + dice.uniform(-slack_y, slack_y)
    aliased = dice.uniform() < _ALIASED_SHARE and max(span_x, span_y) * shrink >= _ALIASED_MIN_EXTENT_PX * scale
    factor = 1 if aliased else _SUPERSAMPLE
    gain = shrink * factor  # canvas pixel centres sit at integers, image pixel centres at half-integers
    offset_x = (centre_x - (drawing.low[0] + drawing.high[0]) / 2 * shrink) * factor - 0.5
    offset_y = (centre_y - (drawing.low[1] + drawing.high[1]) / 2 * shrink) * factor - 0.5
    polygons = [[(x * gain + offset_x, y * gain + offset_y) for x, y in polygon] for polygon in drawing.polygons]
    ellipses = []
    for x, y, radius in drawing.discs:
        x, y, radius = x * gain + offset_x, y * gain + offset_y, radius * gain
        ellipses.append([x - radius, y - radius, x + radius, y + radius])
    return _Prepared(polygons, ellipses, drawing.explanations, factor)


def _wobble(rng: np.random.Generator, t: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """Smooth hand tremor along strokes (rows of t, parameter in about [0, 1]); amplitude per stroke."""
    frequency_low, frequency_high, phase_low, phase_high, share = rng.random((5, t.shape[0], 1))
    return amplitude[:, None] * (
        (0.7 + 0.3 * share) * np.sin(2 * math.pi * ((0.5 + frequency_low) * t + phase_low))
        + (0.3 - 0.3 * share) * np.sin(2 * math.pi * ((1.5 + 1.5 * frequency_high) * t + phase_high))
    )


def _pen_widths(rng: np.random.Generator, t: np.ndarray, base_width: np.ndarray, min_width: float) -> np.ndarray:
    """Pen pressure: the width varies smoothly along each stroke (rows of t) and tapers a little at both ends."""
    depth, frequency, phase = rng.random((3, t.shape[0], 1))
    pressure = 1 + 0.35 * depth * np.sin(2 * math.pi * ((0.5 + 1.5 * frequency) * t + phase))
    position = np.linspace(0.0, 1.0, t.shape[1])
    taper = np.minimum(1.0, 0.6 + 4 * np.minimum(position, 1 - position))
    return np.maximum(min_width, base_width[:, None] * pressure * taper)


def _stroke_sides(points: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left and right edges (N, K, 2) of strokes along points (N, K, 2) with widths (N, K)."""
    tangent = np.empty_like(points)
    tangent[:, 1:-1] = points[:, 2:] - points[:, :-2]
    tangent[:, 0], tangent[:, -1] = points[:, 1] - points[:, 0], points[:, -1] - points[:, -2]
    tangent /= np.maximum(1e-9, np.hypot(tangent[..., 0], tangent[..., 1]))[..., None]
    offset = np.stack([-tangent[..., 1], tangent[..., 0]], axis=-1) * (widths[..., None] / 2)
    return points + offset, points - offset


def _corner_extension(dice: _Dice) -> float:
    """How far (fraction of the edge) a stroke runs past (> 0, overshoot) or stops short of (< 0, gap) a corner."""
    draw = dice.uniform()
    if draw < 0.5:
        return dice.uniform(-0.015, 0.015)
    if draw < 0.75:
        return dice.uniform(0.02, 0.12)
    return -dice.uniform(0.02, 0.07)


def _jittered(dice: _Dice, polygon: list[_Point], class_index: int, equilateral: bool, jitter: float) -> list[_Point]:
    """Move each corner as a hand would, redrawing until the corners stay in the intended class's band."""
    for _ in range(_MAX_ATTEMPTS):
        moved = [(x + dice.uniform(-jitter, jitter), y + dice.uniform(-jitter, jitter)) for x, y in polygon]
        if _polygon_matches_class(moved, class_index, equilateral):
            return moved
    return polygon  # pragma: no cover - the jitter is small enough that this is practically unreachable


_EDGE_POINTS = 10  # points along each hand-drawn edge (few points keep PIL's polygon filling fast)
_CIRCLE_PIECES, _CIRCLE_PIECE_POINTS = 3, 13  # a hand-drawn circle: 3 stroke pieces sharing their end points


@dataclass
class _StrokeBatch:
    """Hand-drawn geometry of a batch, centred near 0: per image, its outline (stroke polygons and round caps) and
    the closed path to fill instead when the image is a filled one."""

    outline_polygons: np.ndarray  # (B, P, K, 2)
    caps: np.ndarray  # (B, C, 2) cap centres
    cap_radius: np.ndarray  # (B, C)
    filled_polygons: np.ndarray  # (B, 1, M, 2)
    explanations: list[np.ndarray]


def _hand_drawn_circles(
    dice: _Dice, extent: np.ndarray, base_width: np.ndarray, filled: np.ndarray, wobble: np.ndarray, scale: float
) -> _StrokeBatch:
    """Slightly oval circles drawn in one stroke that misses its start (gap or overlap) and drifts (spiral)."""
    count = len(extent)
    oval = np.array([1 + dice.uniform(0.0, 0.12) for _ in range(count)])
    tilt, start = (np.array([dice.uniform(0, 2 * math.pi) for _ in range(count)]) for _ in range(2))
    sweep = 2 * math.pi * np.array([1.0 if is_filled else 1 + _corner_extension(dice) for is_filled in filled])
    spiral = np.array([dice.uniform(-0.04, 0.04) for _ in range(count)])
    path_length = _CIRCLE_PIECES * (_CIRCLE_PIECE_POINTS - 1) + 1
    t = np.broadcast_to(np.linspace(0.0, 1.0, path_length), (count, path_length))
    radii = extent[:, None] / 2 * (1 + spiral[:, None] * t) + _wobble(dice.rng, t, wobble)
    angles = start[:, None] + sweep[:, None] * t
    x, y = radii * np.cos(angles) * oval[:, None], radii * np.sin(angles)
    cosine, sine = np.cos(tilt)[:, None], np.sin(tilt)[:, None]
    path = np.stack([x * cosine - y * sine, x * sine + y * cosine], axis=-1)  # (B, L, 2)
    left, right = _stroke_sides(path, _pen_widths(dice.rng, t, base_width, _MIN_PEN_PX * scale))
    pieces = [  # the stroke in pieces that share their end points: cheap to fill, no seams, no self-overlap
        np.concatenate([left[:, s : s + _CIRCLE_PIECE_POINTS], right[:, s : s + _CIRCLE_PIECE_POINTS][:, ::-1]], 1)
        for s in range(0, path_length - 1, _CIRCLE_PIECE_POINTS - 1)
    ]
    half_widths = np.hypot(*np.moveaxis(left - right, -1, 0)) / 2
    return _StrokeBatch(
        outline_polygons=np.stack(pieces, axis=1),
        caps=np.stack([path[:, 0], path[:, -1]], axis=1),
        cap_radius=np.stack([half_widths[:, 0], half_widths[:, -1]], axis=1),
        filled_polygons=path[:, None, :-1],
        explanations=[circle_explanations() for _ in range(count)],
    )


def _hand_drawn_polygons(
    dice: _Dice,
    make_corners: Callable[[int], list[_Point]],
    explain: Callable[[list[_Point]], np.ndarray],
    base_width: np.ndarray,
    filled: np.ndarray,
    wobble: np.ndarray,
    scale: float,
    closed: bool = True,
) -> _StrokeBatch:
    """Polygons with one wobbly stroke per edge (gaps or overshoot at the corners), or filled along a wobbly path.

    ``make_corners(index)`` gives image ``index``'s corners (all images of a batch have the same number), centred near
    0 in pixels; ``explain`` labels them. An open polyline (``closed=False``) has no edge from the last corner back to
    the first and is never filled.
    """
    count = len(filled)
    corner_rows, extension_rows, explanations = [], [], []
    for index in range(count):
        polygon = make_corners(index)
        # an outline needs room inside its strokes, or it turns into a blob
        polygon = _with_min_edge(polygon, max(_MIN_EDGE_PX * scale, 2.5 * float(base_width[index])))
        corner_rows.append(polygon)
        explanations.append(explain(polygon))
        ends = 2 * (len(polygon) if closed else len(polygon) - 1)
        extension_rows.append([0.0] * ends if filled[index] else [_corner_extension(dice) for _ in range(ends)])
    corners = np.array(corner_rows)  # (B, V, 2)
    starts = corners if closed else corners[:, :-1]
    directions = (np.roll(corners, -1, axis=1) if closed else corners[:, 1:]) - starts
    edges = starts.shape[1]
    extensions = np.array(extension_rows).reshape(count, edges, 2)
    closed_grid, open_grid = np.arange(_EDGE_POINTS) / _EDGE_POINTS, np.linspace(0.0, 1.0, _EDGE_POINTS)
    grid = np.where(filled[:, None, None], closed_grid, open_grid)
    t = -extensions[..., :1] + (1 + extensions[..., :1] + extensions[..., 1:]) * grid  # (B, E, K)
    lengths = np.hypot(directions[..., 0], directions[..., 1])
    normals = np.stack([-directions[..., 1], directions[..., 0]], axis=-1) / lengths[..., None]
    flat_t = t.reshape(count * edges, _EDGE_POINTS)
    offsets = _wobble(dice.rng, flat_t, np.minimum(wobble[:, None], 0.03 * lengths).reshape(-1)).reshape(t.shape)
    points = starts[:, :, None] + t[..., None] * directions[:, :, None] + offsets[..., None] * normals[:, :, None]
    widths = _pen_widths(dice.rng, flat_t, np.repeat(base_width, edges), _MIN_PEN_PX * scale)
    left, right = _stroke_sides(points.reshape(count * edges, _EDGE_POINTS, 2), widths)
    edge_widths = widths.reshape(count, edges, _EDGE_POINTS)
    return _StrokeBatch(
        outline_polygons=np.concatenate([left, right[:, ::-1]], axis=1).reshape(count, edges, 2 * _EDGE_POINTS, 2),
        caps=np.concatenate([points[:, :, 0], points[:, :, -1]], axis=1),
        cap_radius=np.concatenate([edge_widths[..., 0], edge_widths[..., -1]], axis=1) / 2,
        filled_polygons=points.reshape(count, 1, edges * _EDGE_POINTS, 2),
        explanations=explanations,
    )


def _place_hand_drawn(dice: _Dice, batch: _StrokeBatch, filled: np.ndarray, size: int) -> list[_Prepared]:
    """Put each drawing at a random place where all of it (strokes and caps included) stays inside the margin."""
    count, scale = len(filled), size / _REFERENCE_SIZE
    caps, cap_radius = batch.caps, batch.cap_radius[..., None]
    outline_low = np.minimum(batch.outline_polygons.min(axis=(1, 2)), (caps - cap_radius).min(axis=1))
    outline_high = np.maximum(batch.outline_polygons.max(axis=(1, 2)), (caps + cap_radius).max(axis=1))
    low = np.where(filled[:, None], batch.filled_polygons.min(axis=(1, 2)), outline_low)
    high = np.where(filled[:, None], batch.filled_polygons.max(axis=(1, 2)), outline_high)
    available = size - 2 * _PLACEMENT_MARGIN_PX * scale
    span = high - low
    shrink = np.minimum(1.0, available / span.max(axis=1))
    slack = np.maximum(0.0, (available - span * shrink[:, None]) / 2)
    centre = size / 2 + (2 * dice.rng.random((count, 2)) - 1) * slack
    gain = (shrink * _SUPERSAMPLE)[:, None, None]
    offset = ((centre - (low + high) / 2 * shrink[:, None]) * _SUPERSAMPLE - 0.5)[:, None]
    outline_rows, filled_rows = np.flatnonzero(~filled), np.flatnonzero(filled)
    outlines = batch.outline_polygons[outline_rows] * gain[outline_rows, None] + offset[outline_rows, None]
    fills = batch.filled_polygons[filled_rows] * gain[filled_rows, None] + offset[filled_rows, None]
    cap_centres = caps[outline_rows] * gain[outline_rows] + offset[outline_rows]
    cap_radii = batch.cap_radius[outline_rows, :, None] * gain[outline_rows]
    cap_boxes = np.concatenate([cap_centres - cap_radii, cap_centres + cap_radii], axis=-1).tolist()
    prepared: list[_Prepared] = [None] * count  # type: ignore[list-item]
    for row, polygons, boxes in zip(outline_rows.tolist(), _flat_coordinates(outlines), cap_boxes, strict=False):
        prepared[row] = _Prepared(polygons, boxes, batch.explanations[row])
    for row, polygons in zip(filled_rows.tolist(), _flat_coordinates(fills), strict=False):
        prepared[row] = _Prepared(polygons, [], batch.explanations[row])
    return prepared


def _extent_and_pen(dice: _Dice, scale: float) -> tuple[float, float]:
    """A hand-drawn shape's bounding-box side and pen width (pixels). The width is drawn relative to the shape, as
    a person's pen is against what they draw (a thin pen on a large canvas gives 1 to 2% of the shape's size once
    the drawing is cropped), log-uniform in PEN_RELATIVE_WIDTH, and kept between 0.4 and 4 px at 64 px. Sides are
    32 to 56 px (log-uniform): drawings are cropped to their content anyway, and a thin stroke needs room to stay
    a thin stroke."""
    extent = scale * math.exp(dice.uniform(math.log(_HAND_DRAWN_MIN_EXTENT_PX), math.log(_MAX_SHAPE_EXTENT_PX)))
    low, high = PEN_RELATIVE_WIDTH
    relative = math.exp(dice.uniform(math.log(max(low, _MIN_PEN_PX * scale / extent)), math.log(high)))
    return extent, min(relative * extent, _MAX_PEN_PX * scale)


def _hand_drawn_batch(dice: _Dice, class_index: int, equilateral: list[bool], size: int) -> list[_Prepared]:
    """Hand-drawn looking shapes, three quarters outlines and one quarter wobbly filled, placed anywhere in frame.

    Per-image choices are made in Python; the stroke geometry of the whole batch is computed with numpy at once,
    which is what keeps generation at a fraction of a millisecond per image.
    """
    count = len(equilateral)
    if count == 0:
        return []
    scale = size / _REFERENCE_SIZE
    extent, base_width = np.array([_extent_and_pen(dice, scale) for _ in range(count)]).T
    filled = np.array([dice.uniform() < _HAND_DRAWN_FILLED_SHARE for _ in range(count)])
    wobble = np.array([dice.uniform(0.0, 0.015) for _ in range(count)]) * extent
    if class_index == 0:
        batch = _hand_drawn_circles(dice, extent, base_width, filled, wobble, scale)
    else:

        def make_corners(index: int) -> list[_Point]:
            polygon = _base_polygon(dice, class_index, equilateral[index])
            polygon = _rotated_centred(polygon, dice.uniform(0, 2 * math.pi), float(extent[index]))
            return _jittered(dice, polygon, class_index, equilateral[index], dice.uniform(0.0, 0.03) * extent[index])

        batch = _hand_drawn_polygons(dice, make_corners, _explanations_of, base_width, filled, wobble, scale)
    return _place_hand_drawn(dice, batch, filled, size)


def _flat_coordinates(polygons: np.ndarray) -> list[list[list[float]]]:
    """(B, P, K, 2) -> per image, per polygon, [x0, y0, x1, y1, ...] (also for an empty batch)."""
    count, polygon_count, point_count, _ = polygons.shape
    return polygons.reshape(count, polygon_count, 2 * point_count).tolist()


def _render(prepared: _Prepared, size: int) -> np.ndarray:
    """Rasterise at 4x and average 4x4 blocks (anti-aliased edges), or at 1x for hard edges."""
    factor = prepared.supersample
    canvas = Image.new("L", (size * factor, size * factor), 255)
    pen = ImageDraw.Draw(canvas)
    for polygon in prepared.polygons:
        pen.polygon(polygon, fill=0)
    for box in prepared.ellipses:
        pen.ellipse(box, fill=0)
    return np.asarray(canvas.reduce(factor) if factor > 1 else canvas, dtype=np.uint8)


def _border_is_white(image: np.ndarray, band: int) -> bool:
    edges = (image[:band], image[-band:], image[:, :band], image[:, -band:])
    return min(edge.min() for edge in edges) == 255


def _check_generator_arguments(count_name: str, count: object, size: object, style: object) -> None:
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
        raise ValueError(f"{count_name} must be a positive integer, got {count!r}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 32:
        raise ValueError(f"size must be an integer >= 32 pixels, got {size!r}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def _new_image(
    draw: Callable[[int], _Prepared], size: int, seen: set[bytes], what: str
) -> tuple[np.ndarray, _Prepared]:
    """Render ``draw(attempt)`` until the image is new (not in ``seen``), inked and wholly in frame; remember it."""
    white_band = max(1, round(_WHITE_BORDER_PX * size / _REFERENCE_SIZE))
    for attempt in range(_MAX_ATTEMPTS):
        prepared = draw(attempt)
        image = _render(prepared, size)
        digest = hashlib.blake2b(image, digest_size=16).digest()
        if digest not in seen and _border_is_white(image, white_band) and image.min() < 128:
            seen.add(digest)
            return image, prepared
    raise RuntimeError(f"could not draw a new {what} after {_MAX_ATTEMPTS} tries")  # pragma: no cover - ~impossible


def generate_shapes(n_per_class: int = 3000, seed: int = 0, size: int = 64, style: str = "filled") -> ShapeSet:
    """Generate n_per_class images of each class, shuffled, deterministic for a seed, with no duplicate images.

    style: "filled" (reference-like black filled shapes), "outline" (hand-drawn: three quarters outlines, one quarter
    wobbly filled shapes) or "mixed" (per class, half "filled" and half "outline"). A third of the triangles are
    equilateral (labelled "all edges have the same size"); the rest are isosceles, scalene, right or obtuse.
    Every image keeps a 2-pixel (at 64 px) white border: the whole shape is in frame.
    """
    _check_generator_arguments("n_per_class", n_per_class, size, style)
    size = int(size)
    rng = np.random.default_rng(seed)
    dice = _Dice(rng)
    scale = size / _REFERENCE_SIZE
    total = n_per_class * len(CLASS_NAMES)
    images = np.empty((total, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int64), n_per_class)
    explanations = np.empty((total, len(EXPLANATION_NAMES)), dtype=np.float32)
    seen: set[bytes] = set()
    row = 0
    for class_index in range(len(CLASS_NAMES)):
        hand_drawn = np.zeros(n_per_class, dtype=bool)
        if style == "outline":
            hand_drawn[:] = True
        elif style == "mixed":
            hand_drawn[rng.permutation(n_per_class)[: n_per_class // 2]] = True
        equilateral = np.zeros(n_per_class, dtype=bool)
        if class_index == 1:
            equilateral[rng.permutation(n_per_class)[: round(n_per_class * EQUILATERAL_TRIANGLE_SHARE)]] = True
        batch = iter(_hand_drawn_batch(dice, class_index, equilateral[hand_drawn].tolist(), size))
        for is_hand_drawn, is_equilateral in zip(hand_drawn.tolist(), equilateral.tolist(), strict=False):

            def draw(
                attempt: int, hand: bool = is_hand_drawn, equi: bool = is_equilateral, c: int = class_index
            ) -> _Prepared:
                if hand:  # a rejected drawing is replaced by a fresh one, still deterministically
                    return _hand_drawn_batch(dice, c, [equi], size)[0] if attempt > 0 else next(batch)  # noqa: B023
                return _place_filled(dice, _filled_reference_like(dice, c, equi, scale), size)

            images[row], prepared = _new_image(draw, size, seen, f"{CLASS_NAMES[class_index]} image")
            explanations[row] = prepared.explanations
            row += 1
    order = rng.permutation(total)
    return ShapeSet(images=images[order], labels=labels[order], explanations=explanations[order])
