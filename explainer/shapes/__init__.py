"""Synthetic 2D shapes (circle, triangle, square, rectangle) with per-image explanation labels.

Three modules along the seams: :mod:`.labels` (names, bands, geometry -> explanations, splits and priors),
:mod:`.generation` (sampling and drawing, :func:`generate_shapes`) and :mod:`.outliers` (:func:`generate_outliers`).

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

from .generation import PEN_RELATIVE_WIDTH, generate_shapes
from .labels import (
    CLASS_NAMES,
    EQUILATERAL_TRIANGLE_SHARE,
    EXPLANATION_GROUPS,
    EXPLANATION_NAMES,
    MAX_RECTANGLE_SIDE_RATIO,
    MIN_TRIANGLE_ANGLE_DEGREES,
    PARALLEL_MAX_DEGREES,
    SAME_SIZE_MAX_RATIO,
    STYLES,
    UNEQUAL_MIN_RATIO,
    ShapeSet,
    circle_explanations,
    class_explanation_prior,
    edge_length_ratio,
    polygon_explanations,
    quadrilateral_side_ratio,
    reference_class_explanations,
    split_stratified,
)
from .outliers import OUTLIER_KINDS, generate_outliers

__all__ = [
    "CLASS_NAMES",
    "EQUILATERAL_TRIANGLE_SHARE",
    "EXPLANATION_GROUPS",
    "EXPLANATION_NAMES",
    "MAX_RECTANGLE_SIDE_RATIO",
    "MIN_TRIANGLE_ANGLE_DEGREES",
    "OUTLIER_KINDS",
    "PARALLEL_MAX_DEGREES",
    "PEN_RELATIVE_WIDTH",
    "SAME_SIZE_MAX_RATIO",
    "STYLES",
    "UNEQUAL_MIN_RATIO",
    "ShapeSet",
    "circle_explanations",
    "class_explanation_prior",
    "edge_length_ratio",
    "generate_outliers",
    "generate_shapes",
    "polygon_explanations",
    "quadrilateral_side_ratio",
    "reference_class_explanations",
    "split_stratified",
]
