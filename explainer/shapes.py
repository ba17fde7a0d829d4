"""Synthetic 2D shapes (circle, triangle, square, rectangle) with per-image explanation labels.

The reference thesis labels explanations per class; here they are computed per image from the drawn geometry, so
that the explanations network has to read the image (only near-equilateral triangles have "all edges have the same
size"). Two looks:
- "filled" mimics the reference data set: a black filled shape on white, random scale (bounding box 10 to 56 px at
  64 px, log-uniform), rotation and centre (within 10 px of the middle), anti-aliased by 4x supersampling, a third
  of those over 14 px drawn with hard (aliased) edges and half the small circles slightly lumpy, as the reference's are;
- "outline" looks hand-drawn: jittered corners, wobbly strokes 0.6 to 8% of the shape's size wide (0.4 to 4 px)
  with pen-pressure variation, gaps and overshoot at corners, slightly oval circles that miss their start; a quarter
  are wobbly filled shapes instead.

``generate_outliers`` draws, with the same code, drawings that are none of the four shapes (many-sided polygons,
stars, concave polygons, open zigzags), labelled with no explanation, for teaching the explanations network to stay
silent on them.

Bands that keep the labels unambiguous (measured on the corner positions that are actually drawn):
- "all edges have the same size" holds when longest edge / shortest edge <= SAME_SIZE_MAX_RATIO (1.10).
  Generated equilateral triangles and squares are exact in the filled style and within 1.10 after hand-drawn jitter.
- Generated non-equilateral triangles and rectangles have longest / shortest >= UNEQUAL_MIN_RATIO (1.25); for
  rectangles also long side / short side (means of the opposite-edge pairs) >= 1.25 (up to 4). Nothing is drawn
  between 1.10 and 1.25, so a square is never mistaken for a rectangle by its label.
- "all opposite edges are parallel" holds when both pairs of opposite edges differ by <= PARALLEL_MAX_DEGREES (8).
  Generated squares and rectangles always satisfy it.
- Triangles have all angles >= MIN_TRIANGLE_ANGLE_DEGREES (25; hand-drawn jitter may take off 3 more), so there
  are no slivers; a third are equilateral, the others isosceles, scalene, right or obtuse.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES: tuple[str, ...] = ("circle", "triangle", "square", "rectangle")
EXPLANATION_NAMES: tuple[str, ...] = (
    "no vertices",
    "three vertices",
    "four vertices",
    "all opposite edges are parallel",
    "all edges have the same size",
)
EXPLANATION_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1, 2),)
STYLES: tuple[str, ...] = ("filled", "outline", "mixed")

SAME_SIZE_MAX_RATIO = 1.10
UNEQUAL_MIN_RATIO = 1.25
PARALLEL_MAX_DEGREES = 8.0
MIN_TRIANGLE_ANGLE_DEGREES = 25.0
EQUILATERAL_TRIANGLE_SHARE = 1.0 / 3.0
MAX_RECTANGLE_SIDE_RATIO = 4.0

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

_CIRCLE_EXPLANATIONS = np.array([1, 0, 0, 0, 0], dtype=np.float32)
_REFERENCE_CLASS_EXPLANATIONS = np.array(
    [[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=np.float32
)


@dataclass
class ShapeSet:
    """Images with their class labels and per-image explanation labels."""

    images: np.ndarray  # uint8 (N, size, size), black ink (0) on white (255)
    labels: np.ndarray  # int64 (N,), index into CLASS_NAMES
    explanations: np.ndarray  # float32 (N, 5) of 0/1, columns as EXPLANATION_NAMES


# ----------------------------------------------------------------------------------------------------------------
# Geometry -> explanations (pure Python: the polygons have 3 or 4 corners, numpy would only add overhead)
# ----------------------------------------------------------------------------------------------------------------

_Point = tuple[float, float]


def _as_polygon(vertices: np.ndarray | list) -> list[_Point]:
    polygon = np.asarray(vertices, dtype=np.float64)
    if polygon.ndim != 2 or polygon.shape[1] != 2 or polygon.shape[0] not in (3, 4):
        raise ValueError(f"vertices must have shape (3, 2) or (4, 2), got {polygon.shape}")
    if not np.all(np.isfinite(polygon)):
        raise ValueError(f"vertices must be finite numbers, got {polygon.tolist()}")
    points = [(float(x), float(y)) for x, y in polygon]
    if min(_edge_lengths(points)) <= 1e-9:
        raise ValueError(f"degenerate polygon (an edge of length 0): {polygon.tolist()}")
    return points


def _edge_lengths(polygon: list[_Point]) -> list[float]:
    count = len(polygon)
    return [
        math.hypot(polygon[(i + 1) % count][0] - polygon[i][0], polygon[(i + 1) % count][1] - polygon[i][1])
        for i in range(count)
    ]


def _line_angle_degrees(first: _Point, second: _Point) -> float:
    """Angle between two undirected lines given by direction vectors, in [0, 90]."""
    cosine = abs(first[0] * second[0] + first[1] * second[1]) / (math.hypot(*first) * math.hypot(*second))
    return math.degrees(math.acos(min(1.0, cosine)))


def _triangle_angles(polygon: list[_Point]) -> list[float]:
    angles = []
    for index in range(3):
        (x, y), (xn, yn), (xp, yp) = polygon[index], polygon[(index + 1) % 3], polygon[(index - 1) % 3]
        angles.append(_line_angle_between_rays((xn - x, yn - y), (xp - x, yp - y)))
    return angles


def _line_angle_between_rays(first: _Point, second: _Point) -> float:
    cosine = (first[0] * second[0] + first[1] * second[1]) / (math.hypot(*first) * math.hypot(*second))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def _opposite_edges_parallel(polygon: list[_Point]) -> bool:
    edges = [(polygon[(i + 1) % 4][0] - polygon[i][0], polygon[(i + 1) % 4][1] - polygon[i][1]) for i in range(4)]
    worst = max(_line_angle_degrees(edges[0], edges[2]), _line_angle_degrees(edges[1], edges[3]))
    return worst <= PARALLEL_MAX_DEGREES


def _side_ratio(polygon: list[_Point]) -> float:
    lengths = _edge_lengths(polygon)
    pair_a, pair_b = (lengths[0] + lengths[2]) / 2, (lengths[1] + lengths[3]) / 2
    return max(pair_a, pair_b) / min(pair_a, pair_b)


def _explanations_of(polygon: list[_Point]) -> np.ndarray:
    lengths = _edge_lengths(polygon)
    explanations = np.zeros(len(EXPLANATION_NAMES), dtype=np.float32)
    if len(polygon) == 3:
        explanations[1] = 1.0
    else:
        explanations[2] = 1.0
        explanations[3] = float(_opposite_edges_parallel(polygon))
    explanations[4] = float(max(lengths) / min(lengths) <= SAME_SIZE_MAX_RATIO)
    return explanations


def edge_lengths(vertices: np.ndarray | list) -> np.ndarray:
    """Lengths of the closed polygon's edges, edge i joining vertex i to vertex i + 1."""
    return np.array(_edge_lengths(_as_polygon(vertices)))


def edge_length_ratio(vertices: np.ndarray | list) -> float:
    """Longest edge / shortest edge: 1 for equilateral shapes; the quantity the "same size" rule thresholds."""
    lengths = _edge_lengths(_as_polygon(vertices))
    return max(lengths) / min(lengths)


def quadrilateral_side_ratio(vertices: np.ndarray | list) -> float:
    """Long side / short side of a quadrilateral, each side the mean of a pair of opposite edges."""
    polygon = _as_polygon(vertices)
    if len(polygon) != 4:
        raise ValueError(f"a quadrilateral needs 4 vertices, got {len(polygon)}")
    return _side_ratio(polygon)


def triangle_angles_degrees(vertices: np.ndarray | list) -> np.ndarray:
    """Interior angles of a triangle (degrees), angle i at vertex i."""
    polygon = _as_polygon(vertices)
    if len(polygon) != 3:
        raise ValueError(f"a triangle needs 3 vertices, got {len(polygon)}")
    return np.array(_triangle_angles(polygon))


def polygon_explanations(vertices: np.ndarray | list) -> np.ndarray:
    """The 5 explanation labels (float32 0/1) of a triangle or quadrilateral given by its corner positions.

    Triangle: "three vertices", plus "all edges have the same size" when edge_length_ratio <= SAME_SIZE_MAX_RATIO.
    Quadrilateral: "four vertices", "all opposite edges are parallel" when both opposite pairs are within
    PARALLEL_MAX_DEGREES, and "all edges have the same size" under the same ratio rule.
    """
    return _explanations_of(_as_polygon(vertices))


def circle_explanations() -> np.ndarray:
    """Explanation labels of a circle (or a slightly oval hand-drawn one): only "no vertices"."""
    return _CIRCLE_EXPLANATIONS.copy()


def reference_class_explanations() -> np.ndarray:
    """The reference thesis's class x explanation table (4 x 5, float32 0/1); its triangles are all equilateral."""
    return _REFERENCE_CLASS_EXPLANATIONS.copy()


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
            polygon = [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles)]
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
    for row, polygons, boxes in zip(outline_rows.tolist(), _flat_coordinates(outlines), cap_boxes):
        prepared[row] = _Prepared(polygons, boxes, batch.explanations[row])
    for row, polygons in zip(filled_rows.tolist(), _flat_coordinates(fills)):
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
        for is_hand_drawn, is_equilateral in zip(hand_drawn.tolist(), equilateral.tolist()):

            def draw(attempt: int) -> _Prepared:
                if is_hand_drawn:  # a rejected drawing is replaced by a fresh one, still deterministically
                    fresh = attempt > 0
                    return _hand_drawn_batch(dice, class_index, [is_equilateral], size)[0] if fresh else next(batch)
                return _place_filled(dice, _filled_reference_like(dice, class_index, is_equilateral, scale), size)

            images[row], prepared = _new_image(draw, size, seen, f"{CLASS_NAMES[class_index]} image")
            explanations[row] = prepared.explanations
            row += 1
    order = rng.permutation(total)
    return ShapeSet(images=images[order], labels=labels[order], explanations=explanations[order])


# ----------------------------------------------------------------------------------------------------------------
# Outliers: drawings that are none of the four shapes, for teaching the explanations network to stay silent
# ----------------------------------------------------------------------------------------------------------------

OUTLIER_KINDS: tuple[str, ...] = ("polygon", "star", "concave", "zigzag")
_OUTLIER_MIN_EXTENT_PX = 20.0  # smaller, a many-sided polygon is hard to tell from a small lumpy circle
_OUTLIER_MIN_TURN_DEGREES = 35.0


def _turns_degrees(corners: list[_Point], closed: bool) -> list[float]:
    """How sharply the outline turns at each corner (0: straight on, 180: doubles back); ends of an open line excluded."""
    points = np.asarray(corners)
    incoming = points - np.roll(points, 1, axis=0)
    outgoing = np.roll(points, -1, axis=0) - points
    cosine = (incoming * outgoing).sum(1) / np.maximum(1e-12, np.hypot(*incoming.T) * np.hypot(*outgoing.T))
    turns = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return (turns if closed else turns[1:-1]).tolist()


def _outlier_corners(dice: _Dice, kind: str) -> list[_Point]:
    """Unit-size corners of an outlier: a 5- to 7-sided polygon (near-regular or irregular), a 4- to 8-pointed star,
    a random concave polygon of 5 to 9 corners, or an open zigzag of 1 to 5 segments. Every corner turns by at least
    _OUTLIER_MIN_TURN_DEGREES (so a pentagon never passes for a quadrilateral) and a zigzag's ends stay apart (so it
    never closes into a triangle or a square)."""
    for _ in range(_MAX_ATTEMPTS):
        if kind == "zigzag":
            x, y, heading = 0.0, 0.0, dice.uniform(0, 2 * math.pi)
            corners = [(x, y)]
            for _ in range(1 + int(dice.uniform(0, 5))):
                length = dice.uniform(0.5, 1.0)
                x, y = x + length * math.cos(heading), y + length * math.sin(heading)
                corners.append((x, y))
                heading += math.radians(dice.uniform(60, 160)) * (1 if dice.uniform() < 0.5 else -1)
            span = np.ptp(np.asarray(corners), axis=0).max()
            if math.dist(corners[0], corners[-1]) >= 0.5 * span:
                return corners
            continue
        if kind == "star":
            points, inner = 4 + int(dice.uniform(0, 5)), dice.uniform(0.3, 0.65)
            radii = [1.0 if i % 2 == 0 else inner for i in range(2 * points)]
            angles = [math.pi * i / points for i in range(2 * points)]
        else:
            count = 5 + int(dice.uniform(0, 3)) if kind == "polygon" else 5 + int(dice.uniform(0, 5))
            if kind == "polygon" and dice.uniform() < 0.5:  # near-regular
                angles = [2 * math.pi * (i + dice.uniform(-0.08, 0.08)) / count for i in range(count)]
                radii = [1.0 + dice.uniform(-0.06, 0.06) for _ in range(count)]
            else:
                steps = [0.5 + dice.uniform() for _ in range(count)]
                angles = [2 * math.pi * sum(steps[:i]) / sum(steps) for i in range(count)]
                low = 0.8 if kind == "polygon" else 0.3
                radii = [dice.uniform(low, 1.0) for _ in range(count)]
        corners = [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles)]
        if min(_turns_degrees(corners, closed=True)) >= _OUTLIER_MIN_TURN_DEGREES:
            return corners
    raise RuntimeError(f"could not sample a {kind} outlier")  # pragma: no cover - probability ~0


def _outlier_drawing(dice: _Dice, kind: str, hand_drawn: bool, size: int) -> _Prepared:
    """One outlier, drawn by the same code as the four shapes (so that only its geometry tells it apart), labelled
    with no explanation."""
    scale = size / _REFERENCE_SIZE
    nothing = np.zeros(len(EXPLANATION_NAMES), dtype=np.float32)
    corners = _outlier_corners(dice, kind)
    if not hand_drawn and kind != "zigzag":
        extent = max(_sample_extent(dice, scale), _OUTLIER_MIN_EXTENT_PX * scale)
        polygon = _rotated_centred(corners, dice.uniform(0, 2 * math.pi), extent)
        polygon = _with_min_edge(polygon, _MIN_EDGE_PX * scale)
        return _place_filled(dice, _polygon_drawing(polygon, nothing), size)
    extent, width = _extent_and_pen(dice, scale)
    base_width = np.array([width])
    closed = kind != "zigzag"
    filled = np.array([closed and dice.uniform() < _HAND_DRAWN_FILLED_SHARE])
    wobble = np.array([dice.uniform(0.0, 0.015) * extent])

    def make_corners(_: int) -> list[_Point]:
        return _rotated_centred(corners, dice.uniform(0, 2 * math.pi), extent)

    batch = _hand_drawn_polygons(dice, make_corners, lambda _: nothing, base_width, filled, wobble, scale, closed)
    return _place_hand_drawn(dice, batch, filled, size)[0]


def generate_outliers(count: int, seed: int = 0, size: int = 64, style: str = "mixed") -> tuple[np.ndarray, list[str]]:
    """``count`` images (uint8, (count, size, size)) that are none of the four shapes, and the kind of each.

    Kinds (OUTLIER_KINDS, in equal shares): many-sided polygons, stars, concave polygons and open zigzag lines. They
    are rendered by this module's own filled and hand-drawn code with the four shapes' size, position and stroke
    distributions, so a network trained on them must tell them apart by geometry rather than by drawing style.
    style: as for :func:`generate_shapes` (zigzags are always strokes). Every outlier's explanations are all "no":
    none of the four shapes' explanations is meant to be asserted for them. Deterministic for a seed; no duplicates.
    """
    _check_generator_arguments("count", count, size, style)
    size = int(size)
    rng = np.random.default_rng(seed)
    dice = _Dice(rng)
    kinds = [OUTLIER_KINDS[i % len(OUTLIER_KINDS)] for i in rng.permutation(count)]
    images = np.empty((count, size, size), dtype=np.uint8)
    seen: set[bytes] = set()
    for row, kind in enumerate(kinds):
        hand_drawn = style == "outline" or (style == "mixed" and dice.uniform() < 0.5)
        images[row], _ = _new_image(lambda _: _outlier_drawing(dice, kind, hand_drawn, size), size, seen, kind)
    return images, kinds


# ----------------------------------------------------------------------------------------------------------------
# Splits and priors
# ----------------------------------------------------------------------------------------------------------------


def split_stratified(labels: np.ndarray, val_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, sorted train and validation indices covering all samples, each class split by val_fraction."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for class_index in np.unique(labels):
        members = np.flatnonzero(labels == class_index)
        members = members[rng.permutation(members.size)]
        val_count = int(round(members.size * val_fraction))
        val_parts.append(members[:val_count])
        train_parts.append(members[val_count:])
    empty = np.empty(0, dtype=np.int64)
    train = np.sort(np.concatenate(train_parts or [empty])).astype(np.int64)
    val = np.sort(np.concatenate(val_parts or [empty])).astype(np.int64)
    return train, val


def class_explanation_prior(labels: np.ndarray, explanations: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_explanations) float32 per-class mean of the explanation labels: the class x explanation prior."""
    labels = np.asarray(labels)
    explanations = np.asarray(explanations, dtype=np.float32)
    if labels.ndim != 1 or explanations.ndim != 2 or explanations.shape[0] != labels.shape[0]:
        raise ValueError(
            f"labels must be (N,) and explanations (N, E) with the same N, got {labels.shape} and {explanations.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got range [{labels.min()}, {labels.max()}]")
    prior = np.zeros((n_classes, explanations.shape[1]), dtype=np.float32)
    for class_index in range(n_classes):
        members = labels == class_index
        if not members.any():
            raise ValueError(f"class {class_index} has no samples; a prior needs every class of the {n_classes}")
        prior[class_index] = explanations[members].mean(axis=0)
    return prior
