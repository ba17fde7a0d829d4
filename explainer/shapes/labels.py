"""Shapes vocabulary and labels: class and explanation names, the bands that keep labels unambiguous, the
geometry -> explanations rules, the reference's class x explanation table, splits and priors.

See :mod:`explainer.shapes` for how the bands are chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
