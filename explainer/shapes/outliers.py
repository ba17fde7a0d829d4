"""Outliers: drawings that are none of the four shapes (many-sided polygons, stars, concave polygons, open zigzags),
labelled with no explanation, for teaching the explanations network to stay silent on them.
"""

from __future__ import annotations

import math

import numpy as np

from .generation import (
    _HAND_DRAWN_FILLED_SHARE,
    _MAX_ATTEMPTS,
    _MIN_EDGE_PX,
    _REFERENCE_SIZE,
    _check_generator_arguments,
    _Dice,
    _extent_and_pen,
    _hand_drawn_polygons,
    _new_image,
    _place_filled,
    _place_hand_drawn,
    _polygon_drawing,
    _Prepared,
    _rotated_centred,
    _sample_extent,
    _with_min_edge,
)
from .labels import EXPLANATION_NAMES, _Point

# ----------------------------------------------------------------------------------------------------------------
# Outliers: drawings that are none of the four shapes, for teaching the explanations network to stay silent
# ----------------------------------------------------------------------------------------------------------------

OUTLIER_KINDS: tuple[str, ...] = ("polygon", "star", "concave", "zigzag")
_OUTLIER_MIN_EXTENT_PX = 20.0  # smaller, a many-sided polygon is hard to tell from a small lumpy circle
_OUTLIER_MIN_TURN_DEGREES = 35.0


def _turns_degrees(corners: list[_Point], closed: bool) -> list[float]:
    """How sharply the outline turns at each corner (0: straight on, 180: doubles back); ends of an open line
    excluded."""
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
        corners = [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles, strict=False)]
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
        images[row], _ = _new_image(lambda _: _outlier_drawing(dice, kind, hand_drawn, size), size, seen, kind)  # noqa: B023
    return images, kinds
