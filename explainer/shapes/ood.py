"""Out-of-distribution images: pictures that are none of the four shapes (circle, triangle, square, rectangle).

They feed the evaluation of how the tool questions inputs it was not trained for. Outlines are rendered three ways
(filled, clean outline, traced by a simulated hand from ``explainer.shapes.strokes``) at random size, position and
rotation, mostly black ink on white, sometimes coloured. Filled regions use PIL polygons (supersampled); strokes use
the numpy capsule rasteriser of ``explainer.shapes.strokes``; letters are drawn from line/arc skeletons, so no system
font is needed.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .strokes import humanise_outline, place_outline, stroke_coverage

OOD_KINDS: tuple[str, ...] = (
    "uniform noise",
    "scribble",
    "star",
    "heart",
    "pentagon",
    "hexagon",
    "crescent",
    "arrow",
    "letter",
    "photo-like",
)
LETTERS: tuple[str, ...] = ("A", "E", "F", "H", "K", "M", "N", "W", "X", "Z", "S", "G")
_SUPERSAMPLE = 4


# --------------------------------------------------------------------------------------------------------------------
# Unit outlines (around the origin, y down)


def _star(rng: np.random.Generator) -> np.ndarray:
    points = int(rng.integers(5, 9))
    inner = rng.uniform(0.38, 0.6)
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner) * (1.0 + rng.normal(0.0, 0.02, 2 * points))
    return np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])


def _heart(rng: np.random.Generator) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 120, endpoint=False)
    x = 16.0 * np.sin(t) ** 3 * rng.uniform(0.9, 1.1)
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return np.column_stack([x, y]) / 16.0


def _regular(sides: int) -> Callable[[np.random.Generator], np.ndarray]:
    def make(rng: np.random.Generator) -> np.ndarray:
        angles = -np.pi / 2 + np.arange(sides) * 2.0 * np.pi / sides + np.deg2rad(rng.normal(0.0, 3.0, sides))
        radii = 1.0 + rng.normal(0.0, 0.03, sides)
        return np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])

    return make


def _crescent(rng: np.random.Generator) -> np.ndarray:
    """Unit disc minus a disc of radius r shifted by d: outer arc, then the inner arc back."""
    inner_radius, shift = rng.uniform(0.75, 1.0), rng.uniform(0.3, 0.6)
    cross_x = (shift**2 + 1.0 - inner_radius**2) / (2.0 * shift)
    cross_y = math.sqrt(max(1.0 - cross_x**2, 1e-9))
    outer_start = math.atan2(cross_y, cross_x)
    inner_start = math.atan2(cross_y, cross_x - shift)
    outer = np.linspace(outer_start, 2.0 * np.pi - outer_start, 70)
    inner = np.linspace(2.0 * np.pi - inner_start, inner_start, 50)[1:-1]
    return np.vstack(
        [
            np.column_stack([np.cos(outer), np.sin(outer)]),
            np.column_stack([shift + inner_radius * np.cos(inner), inner_radius * np.sin(inner)]),
        ]
    )


def _arrow(rng: np.random.Generator) -> np.ndarray:
    half_shaft, half_head, neck = rng.uniform(0.08, 0.22), rng.uniform(0.3, 0.55), rng.uniform(0.05, 0.5)
    return np.array(
        [
            [-1.0, -half_shaft],
            [neck, -half_shaft],
            [neck, -half_head],
            [1.0, 0.0],
            [neck, half_head],
            [neck, half_shaft],
            [-1.0, half_shaft],
        ]
    )


_OUTLINES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "star": _star,
    "heart": _heart,
    "pentagon": _regular(5),
    "hexagon": _regular(6),
    "crescent": _crescent,
    "arrow": _arrow,
}


def _arc(
    centre: tuple[float, float], radius: tuple[float, float], start_deg: float, end_deg: float, count: int = 24
) -> list[tuple[float, float]]:
    angles = np.deg2rad(np.linspace(start_deg, end_deg, count))
    return [(centre[0] + radius[0] * math.cos(a), centre[1] + radius[1] * math.sin(a)) for a in angles]


def letter_skeleton(letter: str) -> list[np.ndarray]:
    """Pen strokes of a capital letter in a unit box (x right, y down), as (n, 2) polylines."""
    lines: dict[str, list[list[tuple[float, float]]]] = {
        "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.62), (0.78, 0.62)]],
        "E": [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.75, 0.5)]],
        "F": [[(1, 0), (0, 0), (0, 1)], [(0, 0.48), (0.75, 0.48)]],
        "H": [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
        "K": [[(0, 0), (0, 1)], [(0.95, 0), (0, 0.6)], [(0.3, 0.42), (1, 1)]],
        "M": [[(0, 1), (0, 0), (0.5, 0.65), (1, 0), (1, 1)]],
        "N": [[(0, 1), (0, 0), (1, 1), (1, 0)]],
        "W": [[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]],
        "X": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
        "Z": [[(0, 0), (1, 0), (0, 1), (1, 1)]],
        "S": [_arc((0.5, 0.25), (0.45, 0.25), -20, -270) + _arc((0.5, 0.75), (0.5, 0.25), -90, 160)[1:]],
        "G": [_arc((0.5, 0.5), (0.5, 0.5), -40, -350, 40) + [(1.0, 0.58), (0.55, 0.58)]],
    }
    if letter not in lines:
        raise ValueError(f"no skeleton for letter {letter!r}; valid letters are {LETTERS}")
    return [np.array(stroke, dtype=np.float64) for stroke in lines[letter]]


# --------------------------------------------------------------------------------------------------------------------
# Rendering


def _fill_coverage(polygon: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage of a filled polygon (PIL at 4x, box-downsampled)."""
    big = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    ImageDraw.Draw(big).polygon([tuple(p) for p in polygon * _SUPERSAMPLE], fill=255)
    return np.asarray(big.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _ink_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(ink, background) RGB: mostly black on white, sometimes coloured ink or paper, sometimes light on dark."""
    pick = rng.random()
    if pick < 0.6:
        return np.zeros(3), np.full(3, 255.0)
    if pick < 0.85:
        paper = np.full(3, 255.0) - rng.uniform(0, 40, 3) * (rng.random() < 0.5)
        while True:  # coloured ink, but always clearly visible on the paper
            ink = rng.uniform(0, 200, 3)
            if np.abs(paper - ink).max() >= 120:
                return ink, paper
    return rng.uniform(180, 255, 3), rng.uniform(0, 60, 3)


def _compose(coverage: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ink over paper through a 256-level table (fast), as grey when both are grey and the dice say so."""
    ink, background = _ink_colours(rng)
    alpha8 = np.rint(np.clip(coverage, 0.0, 1.0) * 255.0).astype(np.uint8)
    levels = np.arange(256, dtype=np.float64)[:, None] / 255.0
    table = np.zeros((256, 4), dtype=np.uint8)
    table[:, :3] = np.rint(background * (1.0 - levels) + ink * levels)
    monochrome = np.all(ink == ink[0]) and np.all(background == background[0])
    if monochrome and rng.random() < 0.6:
        return np.take(table[:, 0], alpha8)
    image = np.take(table.view("<u4").ravel(), alpha8).view(np.uint8).reshape(*alpha8.shape, 4)
    return np.ascontiguousarray(image[..., :3])


def _shape_coverage(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    outline, size_px = place_outline(_OUTLINES[kind](rng), rng, size, (0.3, 0.9))
    style = rng.choice(["filled", "clean outline", "hand outline"], p=[0.4, 0.3, 0.3])
    if style == "filled":
        return _fill_coverage(outline, size)
    if kind == "arrow" and rng.random() < 0.5:  # a line arrow: a shaft and two barbs
        tip, tail = outline[3], (outline[0] + outline[6]) / 2.0
        barb = (tip - tail) * rng.uniform(0.2, 0.35)
        normal = np.array([-barb[1], barb[0]]) * rng.uniform(0.6, 1.0)
        polylines = [np.array([tail, tip]), np.array([tip - barb + normal, tip, tip - barb - normal])]
        return _lines_coverage(polylines, rng, size, size_px, hand=style == "hand outline", clean_widths=(0.01, 0.04))
    width = rng.uniform(0.006, 0.022) * size + 1.0
    if style == "clean outline":
        return stroke_coverage([np.vstack([outline, outline[:1]])], width, size)
    strokes, _ = humanise_outline(outline, rng, size, closed=True, size_px=size_px)
    return stroke_coverage(strokes, width, size)


def _lines_coverage(
    polylines: list[np.ndarray],
    rng: np.random.Generator,
    size: int,
    size_px: float,
    hand: bool,
    clean_widths: tuple[float, float] = (0.015, 0.09),
) -> np.ndarray:
    """Open polylines as pen strokes: traced by a simulated hand (thin), or exact with a pen of clean_widths * size."""
    width = (rng.uniform(0.006, 0.022) if hand else rng.uniform(*clean_widths)) * size + 1.0
    strokes: list[np.ndarray] = []
    for line in polylines:
        strokes.extend(humanise_outline(line, rng, size, closed=False, size_px=size_px)[0] if hand else [line])
    return stroke_coverage(strokes, width, size)


def _letter_coverage(rng: np.random.Generator, size: int) -> np.ndarray:
    letter = LETTERS[int(rng.integers(len(LETTERS)))]
    skeleton = letter_skeleton(letter)
    width_ratio = rng.uniform(0.6, 1.0)
    points = np.vstack(skeleton) * [width_ratio, 1.0]
    centre = (points.max(axis=0) + points.min(axis=0)) / 2.0
    angle = rng.normal(0.0, math.radians(12.0))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    height = rng.uniform(0.3, 0.8) * size
    strokes = [((s * [width_ratio, 1.0] - centre) @ rotation.T) * height for s in skeleton]
    margin = 0.1 * size  # room for the pen width and a hand's overshoot
    points = np.vstack(strokes)
    shrink = min(1.0, (size - 2.0 * margin) / float((points.max(axis=0) - points.min(axis=0)).max()))
    strokes, height = [s * shrink for s in strokes], height * shrink  # a rotated letter must still fit
    low, high = points.min(axis=0) * shrink, points.max(axis=0) * shrink
    offset = np.array([rng.uniform(margin - low[a], max(margin - low[a], size - margin - high[a])) for a in range(2)])
    return _lines_coverage([s + offset for s in strokes], rng, size, height, hand=rng.random() < 0.5)


def _scribble_coverage(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random-walk pen strokes with momentum, turning back from the borders."""
    strokes = []
    low, high = 0.06 * size, 0.94 * size
    for _ in range(int(rng.integers(1, 4))):
        position = rng.uniform(0.25 * size, 0.75 * size, 2)
        heading, turn_rate = rng.uniform(0, 2 * np.pi), 0.0
        step = rng.uniform(0.01, 0.035) * size
        damping, wiggle = rng.uniform(0.6, 0.95), rng.uniform(0.05, 0.3)  # loopy and curly, or long and sweeping
        points = [position.copy()]
        for _ in range(int(rng.integers(40, 260))):
            turn_rate = damping * turn_rate + rng.normal(0.0, wiggle)
            heading += turn_rate
            position = position + step * rng.uniform(0.5, 1.5) * np.array([math.cos(heading), math.sin(heading)])
            if not (low < position[0] < high and low < position[1] < high):
                position = np.clip(position, low, high)
                heading = math.atan2(size / 2.0 - position[1], size / 2.0 - position[0]) + rng.normal(0.0, 0.5)
            points.append(position.copy())
        strokes.append(np.array(points))
    return stroke_coverage(strokes, rng.uniform(0.006, 0.022) * size + 1.0, size)


def _photo_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """RGB: a smooth random colour field, blurred blobs, and fine texture noise."""
    palette_centre, saturation = rng.uniform(40, 215, 3), rng.uniform(0.15, 0.8)

    def colour() -> np.ndarray:  # natural scenes are far less saturated than random RGB
        raw = rng.uniform(0, 255, 3)
        grey = raw.mean()
        return np.clip(0.5 * palette_centre + 0.5 * (grey + saturation * (raw - grey)), 0, 255)

    rows, cols = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    field = np.array([[colour() for _ in range(cols)] for _ in range(rows)])
    image = Image.fromarray(field.astype(np.uint8)).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):
        centre = rng.uniform(0, size, 2)
        radii = rng.uniform(0.04, 0.3, 2) * size
        draw.ellipse([*(centre - radii), *(centre + radii)], fill=tuple(int(c) for c in colour()))
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.01, 0.05) * size)))
    texture = rng.normal(0.0, rng.uniform(3.0, 18.0), (size, size, 1)) + rng.normal(0.0, 3.0, (size, size, 3))
    return np.clip(np.asarray(image, dtype=np.float32) + texture, 0, 255).astype(np.uint8)


def _uniform_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    shape = (size, size, 3) if rng.random() < 0.5 else (size, size)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def ood_image(kind: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One out-of-distribution image of `kind` (one of OOD_KINDS): uint8, (size, size) grey or (size, size, 3) RGB."""
    if kind not in OOD_KINDS:
        raise ValueError(f"unknown OOD kind {kind!r}; valid kinds are {OOD_KINDS}")
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size must be an int >= 32 pixels, got {size!r}")
    if kind == "uniform noise":
        return _uniform_noise(rng, size)
    if kind == "photo-like":
        return _photo_like(rng, size)
    if kind == "scribble":
        coverage = _scribble_coverage(rng, size)
    elif kind == "letter":
        coverage = _letter_coverage(rng, size)
    else:
        coverage = _shape_coverage(kind, rng, size)
    return _compose(coverage, rng)


def generate_ood(n_per_kind: int, seed: int = 0, size: int = 256) -> tuple[list[np.ndarray], list[str]]:
    """n_per_kind images of every OOD kind, interleaved in OOD_KINDS order, and their kind names.

    Deterministic for a seed (item i of a kind does not depend on n_per_kind). "uniform noise" is genuinely uniform
    over the full 0..255 range, grey or RGB (the reference used np.random.rand / 255, i.e. nearly black images).
    """
    if not isinstance(n_per_kind, (int, np.integer)) or n_per_kind < 0:
        raise ValueError(f"n_per_kind must be an int >= 0, got {n_per_kind!r}")
    images, kinds = [], []
    for item in range(n_per_kind):
        for kind_index, kind in enumerate(OOD_KINDS):
            images.append(ood_image(kind, np.random.default_rng([int(seed), kind_index, item]), size))
            kinds.append(kind)
    return images, kinds
