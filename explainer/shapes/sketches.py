"""Training drawings as people make them: the four shapes, and drawings that are none of them, traced as strokes
and painted by the sketchpad-like renderer (``explainer.shapes.drawn.render_strokes``).

``explainer.shapes`` draws tidy shapes (exact corners, a little jitter); real drawings are looser. Here a shape is a
path a hand follows: corners that overshoot and cross, or are rounded, or hook; a stroke that ends short of its start
(a gap) or runs on past it; one to four strokes; edges that bow; slant (shear) and rotation; sides only roughly
equal; slow wobble and fast tremor; thin to thick pens (0.75% to 3.5% of the size), black on white or white on black;
some drawn at 28 px and scaled up, as Quick, Draw! bitmaps are.

What the explanations mean for a drawing (the rule the labels follow, measured on the intended corners):
- a drawn quadrilateral has "all edges have the same size" when its long side / short side <= DRAWN_SAME_SIZE_MAX
  (1.25): people's squares are rarely better than that. Its class is "square" up to SQUARE_MAX_RATIO (1.10, the
  filled shapes' rule) and "rectangle" from RECTANGLE_MIN_RATIO (1.35); between 1.10 and 1.25 a drawing is shown
  to the explanations network only (four vertices, parallel, same size) and its class is left to the main network:
  whichever of square or rectangle it says, the explanations then back it (rectangle ties with square, which the
  verdict does not question). Nothing is drawn between 1.25 and 1.35.
- a triangle has "same size" when longest / shortest edge <= 1.10 (as ``explainer.shapes``); others are >= 1.25.
- a circle may be an oval up to 1.45:1, lumpy, and miss or overrun its start by up to 8% / 20% of its perimeter.
None of the four (labelled with no explanation, for the explanations network only): open shapes (a polygon missing
at least one whole edge: brackets, V, L; an arc of at most 3/4 of a circle), arrows, open zigzags and squiggles,
spirals, crossings (x), lines, 5- to 8-cornered polygons and stars, curves with corners (D shapes, teardrops, hearts,
crescents). The gap that makes a shape *open* (a whole edge, a quarter of a circle) is kept well apart from the gaps
a closed drawing may have, so that an imperfect shape is not taught as an outlier.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .drawn import PEN_FRACTION_RANGE, render_strokes

CLASS_KINDS = ("circle", "triangle", "square", "rectangle")
SQUARE_MAX_RATIO = 1.10
DRAWN_SAME_SIZE_MAX = 1.25
RECTANGLE_MIN_RATIO = 1.35
RECTANGLE_MAX_RATIO = 7.0
EQUILATERAL_MAX_RATIO = 1.10
SCALENE_MIN_RATIO = 1.25
OVAL_MAX = 1.45
OUTLIER_KINDS = (
    "open_polygon",
    "open_circle",
    "arrow",
    "zigzag",
    "squiggle",
    "spiral",
    "cross",
    "line",
    "many_corners",
    "star",
    "curve_with_corner",
)
LOW_RESOLUTION_SHARE = 0.15
_SPACING = 0.01  # path points per unit of size (the shapes are about 2 units across)


def _rotation(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


def _dense(points: np.ndarray, spacing: float = _SPACING) -> np.ndarray:
    """Points every ``spacing`` along a polyline."""
    points = np.asarray(points, dtype=np.float64)
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    if cumulative[-1] <= 0:
        return points[:1]
    at = np.linspace(0.0, cumulative[-1], max(2, int(cumulative[-1] / spacing) + 1))
    return np.column_stack([np.interp(at, cumulative, points[:, k]) for k in range(2)])


def _bowed_edge(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, bow: float) -> np.ndarray:
    """A straight edge drawn by hand: a slight bow (sagitta ``bow`` x length), dense points from a to b."""
    t = np.linspace(0.0, 1.0, max(3, int(np.linalg.norm(b - a) / _SPACING)))
    normal = np.array([-(b - a)[1], (b - a)[0]])
    sag = rng.normal(0.0, bow) * 4 * t * (1 - t)
    return a + np.outer(t, b - a) + np.outer(sag, normal)


def _wobble(path: np.ndarray, rng: np.random.Generator, slow: float, fast: float) -> np.ndarray:
    """Slow drift and fast tremor along a path, as offsets in both axes (amplitudes in units of size)."""
    n = len(path)
    s = np.linspace(0.0, 1.0, n)
    out = path.copy()
    for axis in range(2):
        for _ in range(2):
            out[:, axis] += slow * rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * s + rng.uniform()))
        out[:, axis] += fast * rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * (rng.uniform(15, 40) * s + rng.uniform()))
    return out + rng.normal(0.0, fast * 0.3, out.shape)


def _corner_path(corners: np.ndarray, rng: np.random.Generator, closed: bool) -> list[np.ndarray]:
    """Strokes tracing a polygon like a hand: per corner sharp, rounded, overshooting (a spike past the corner) or
    crossing (the edge runs on and the next starts apart, several strokes); a closed outline ends short of or past
    its start. Returns one or more (n, 2) strokes."""
    count = len(corners)
    start = int(rng.integers(count)) if closed else 0
    order = np.roll(corners, -start, axis=0) if closed else corners
    if closed and rng.random() < 0.5:
        order = np.vstack([order[:1], order[1:][::-1]])
    sizes = np.linalg.norm(np.roll(order, -1, axis=0) - order, axis=1)
    bow = rng.uniform(0.0, 0.035)
    edge_count = count if closed else count - 1
    several = closed and rng.random() < 0.35
    breaks = set()
    if several:
        breaks = set(rng.choice(np.arange(1, count), size=int(rng.integers(1, count)), replace=False).tolist())
    strokes, current = [], [order[0][None]]
    for e in range(edge_count):
        a, b = order[e], order[(e + 1) % count]
        edge = _bowed_edge(a, b, rng, bow)
        current.append(edge[1:])
        is_last = e == edge_count - 1
        if is_last:
            if closed:  # end short of the start (gap) or run on past it along the same direction
                reach = rng.choice(3, p=[0.4, 0.3, 0.3])
                direction = (b - a) / max(np.linalg.norm(b - a), 1e-9)
                if reach == 1:
                    extra = rng.uniform(0.02, 0.25) * sizes[e]
                    current.append(_dense(np.array([b, b + extra * direction]))[1:])
                elif reach == 2:
                    cut = rng.uniform(0.02, 0.10) * sizes[e]
                    whole = np.vstack(current)
                    keep = np.linalg.norm(whole - b, axis=1) >= cut
                    keep[: len(keep) // 2] = True
                    current = [whole[keep]]
            strokes.append(np.vstack(current))
            break
        c = order[(e + 2) % count]
        incoming, outgoing = (b - a) / max(np.linalg.norm(b - a), 1e-9), (c - b) / max(np.linalg.norm(c - b), 1e-9)
        if e + 1 in breaks:  # pen lift at this corner: the stroke ends past or short of it, the next starts apart
            end_ext = rng.uniform(-0.06, 0.15) * sizes[e]
            whole = np.vstack(current)
            if end_ext >= 0:
                whole = np.vstack([whole, _dense(np.array([b, b + end_ext * incoming]))[1:]])
            else:
                whole = whole[np.linalg.norm(whole - b, axis=1) >= -end_ext] if len(whole) > 4 else whole
            strokes.append(whole)
            start_ext = rng.uniform(-0.06, 0.15) * sizes[e + 1]
            current = [(b - start_ext * outgoing)[None]]
            continue
        style = rng.choice(4, p=[0.35, 0.3, 0.2, 0.15])
        if style == 1:  # rounded: cut the corner with a curve
            cut = rng.uniform(0.03, 0.2) * min(sizes[e], sizes[(e + 1) % count])
            whole = np.vstack(current)
            whole = whole[np.linalg.norm(whole - b, axis=1) >= cut] if len(whole) > 4 else whole
            p0, p2 = b - cut * incoming, b + cut * outgoing
            u = np.linspace(0, 1, 9)[:, None]
            current = [whole, (1 - u) ** 2 * p0 + 2 * (1 - u) * u * b + u**2 * p2]
        elif style == 2:  # overshoot: past the corner, then back to the next edge
            over = rng.uniform(0.03, 0.12) * sizes[e]
            current.append(_dense(np.array([b, b + over * incoming, b + rng.uniform(0, 0.5) * over * outgoing]))[1:])
        elif style == 3:  # hook: a little loop at the corner
            over = rng.uniform(0.02, 0.07) * sizes[e]
            side = over * np.array([-incoming[1], incoming[0]]) * rng.choice([-1, 1])
            current.append(_dense(np.array([b, b + over * incoming, b + over * incoming + side, b]))[1:])
    return [s for s in strokes if len(s) >= 2]


def _quad(ratio: float, rng: np.random.Generator, tall_boxes: bool = False) -> np.ndarray:
    """A ratio:1 rectangle's corners with a little slant (shear) and corner jitter, about unit size; wide, or with
    tall_boxes as often tall as wide (a "[" is a tall box missing its right side)."""
    corners = np.array([[-ratio, -1.0], [ratio, -1.0], [ratio, 1.0], [-ratio, 1.0]]) / ratio
    if tall_boxes and rng.random() < 0.5:
        corners = corners[:, ::-1].copy()
    shear = np.clip(rng.normal(0.0, 0.07), -0.15, 0.15)
    corners = corners @ np.array([[1.0, 0.0], [shear, 1.0]]).T
    return corners + rng.normal(0.0, 0.015, corners.shape)


def _triangle(rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """An equilateral (about a third) or an isosceles, right, obtuse or tall thin triangle (min angle 14 degrees)."""
    while True:
        if rng.random() < 0.35:
            angles = np.deg2rad(np.array([90.0, 210.0, 330.0]) + rng.normal(0.0, 2.0, 3))
            pts = np.column_stack([np.cos(angles), np.sin(angles)]) * (1 + rng.normal(0.0, 0.015, 3))[:, None]
        elif rng.random() < 0.35:  # isosceles, often tall and thin as people draw them
            apex = math.radians(rng.uniform(14.0, 120.0))
            half = math.tan(apex / 2)
            pts = np.array([[0.0, -1.0], [half * 2, 1.0], [-half * 2, 1.0]]) / 2
        else:
            apex = np.array([rng.uniform(-0.4, 1.4), rng.uniform(0.25, 1.8)])
            pts = np.array([[0.0, 0.0], [1.0, 0.0], apex])
        edges = np.linalg.norm(np.roll(pts, -1, axis=0) - pts, axis=1)
        ratio = edges.max() / edges.min()
        vectors = [(np.roll(pts, -1, 0) - pts)[i] for i in range(3)]
        angles = [
            math.degrees(
                math.acos(
                    np.clip(
                        np.dot(-vectors[i - 1], vectors[i])
                        / (np.linalg.norm(vectors[i - 1]) * np.linalg.norm(vectors[i])),
                        -1,
                        1,
                    )
                )
            )
            for i in range(3)
        ]
        if min(angles) < 14.0:
            continue
        if ratio <= EQUILATERAL_MAX_RATIO:
            return pts - pts.mean(axis=0), True
        if ratio >= SCALENE_MIN_RATIO:
            return pts - pts.mean(axis=0), False


def _circle_strokes(rng: np.random.Generator) -> list[np.ndarray]:
    """An oval (up to OVAL_MAX:1), lumpy, one stroke (or two arcs) that misses or overruns its start."""
    aspect = math.exp(rng.uniform(0.0, math.log(OVAL_MAX)))
    start = rng.uniform(0, 2 * np.pi)
    sweep = 2 * np.pi * (1 + (rng.uniform(-0.08, 0.0) if rng.random() < 0.4 else rng.uniform(0.0, 0.2)))
    theta = np.linspace(0, sweep, 240)
    lumps = sum(rng.uniform(0, 0.04) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    radius = 1 + lumps + rng.uniform(-0.08, 0.08) * theta / (2 * np.pi)  # a spiral drift as the hand goes round
    pts = np.column_stack([aspect * radius * np.cos(start + theta), radius * np.sin(start + theta)])
    if rng.random() < 0.15:  # two arcs that meet roughly
        cut = int(rng.uniform(0.35, 0.65) * len(pts))
        lap = int(rng.integers(-6, 10))
        return [pts[: cut + max(lap, 0)], pts[cut - max(-lap, 0) + 1 :]]
    return [pts]


def _finish(strokes: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Rotate (mostly near upright), add wobble and tremor; strokes stay at about unit size."""
    angle = rng.normal(0, math.radians(5)) if rng.random() < 0.55 else rng.uniform(0, 2 * np.pi)
    turn = _rotation(angle)
    slow, fast = rng.uniform(0.0, 0.02), rng.uniform(0.0, 0.008)
    return [_wobble(_dense(s), rng, slow, fast) @ turn.T for s in strokes]


def sketch_shape(
    kind: str, rng: np.random.Generator, tall_boxes: bool = False
) -> tuple[list[np.ndarray], np.ndarray, bool]:
    """Strokes of one drawn shape, its 5 explanation labels, and whether its class is one the main network is taught
    (False for quadrilaterals between SQUARE_MAX_RATIO and DRAWN_SAME_SIZE_MAX, shown to the mirror only).
    tall_boxes: upright quadrilaterals are as often tall as wide (otherwise wide, as the shipped recipe drew them)."""
    explanation = np.zeros(5, dtype=np.float32)
    teach_class = True
    if kind == "circle":
        strokes = _circle_strokes(rng)
        explanation[0] = 1
    elif kind == "triangle":
        corners, equal = _triangle(rng)
        strokes = _corner_path(corners, rng, closed=True)
        explanation[1], explanation[4] = 1, float(equal)
    elif kind in ("square", "rectangle"):
        if kind == "square":
            ratio = 1.0 + abs(rng.normal(0.0, 0.06)) if rng.random() < 0.7 else rng.uniform(1.0, DRAWN_SAME_SIZE_MAX)
            ratio = min(ratio, DRAWN_SAME_SIZE_MAX)
            teach_class = ratio <= SQUARE_MAX_RATIO
        else:
            ratio = math.exp(rng.uniform(math.log(RECTANGLE_MIN_RATIO), math.log(RECTANGLE_MAX_RATIO)))
        strokes = _corner_path(_quad(ratio, rng, tall_boxes), rng, closed=True)
        explanation[2], explanation[3] = 1, 1
        explanation[4] = float(ratio <= DRAWN_SAME_SIZE_MAX)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; valid kinds are {CLASS_KINDS}")
    return _finish(strokes, rng), explanation, teach_class


def _regular(count: int, rng: np.random.Generator, inner: float | None = None) -> np.ndarray:
    if inner is None:
        angles = 2 * np.pi * (np.arange(count) + rng.uniform(-0.08, 0.08, count)) / count
        return np.column_stack([np.cos(angles), np.sin(angles)]) * rng.uniform(0.9, 1.1, (count, 1))
    angles = np.pi * np.arange(2 * count) / count
    radii = np.where(np.arange(2 * count) % 2 == 0, 1.0, inner)
    return np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])


def sketch_outlier(kind: str, rng: np.random.Generator, tall_boxes: bool = False) -> list[np.ndarray]:
    """Strokes of one drawing that is none of the four shapes (OUTLIER_KINDS); tall_boxes as in sketch_shape."""
    if kind == "open_polygon":  # brackets, V, L, U: a triangle or quadrilateral missing one or two whole edges
        if rng.random() < 0.4:
            corners, _ = _triangle(rng)
            keep = 3  # two edges of three
        else:
            corners = _quad(math.exp(rng.uniform(0.0, math.log(4.0))), rng, tall_boxes)
            keep = int(rng.choice([4, 4, 3]))  # three or two edges of four (corners kept: edges + 1)
        first = int(rng.integers(len(corners)))
        path = np.roll(corners, -first, axis=0)[:keep]
        strokes = _corner_path(path, rng, closed=False)
    elif kind == "open_circle":  # C shapes: at most three quarters of a round
        sweep = rng.uniform(0.35, 0.75) * 2 * np.pi
        theta = rng.uniform(0, 2 * np.pi) + np.linspace(0, sweep, 160)
        aspect = math.exp(rng.uniform(0.0, math.log(OVAL_MAX)))
        strokes = [np.column_stack([aspect * np.cos(theta), np.sin(theta)])]
    elif kind == "arrow":
        length = rng.uniform(1.0, 2.0)
        tip = np.array([length, 0.0])
        head = rng.uniform(0.15, 0.45) * length
        spread = math.radians(rng.uniform(20, 50))
        left = tip + head * np.array([-math.cos(spread), math.sin(spread)])
        right = tip + head * np.array([-math.cos(spread), -math.sin(spread)])
        if rng.random() < 0.5:
            strokes = [_dense(np.array([[0.0, 0.0], tip, left])), _dense(np.array([tip, right]))]
        else:
            strokes = [_dense(np.array([[0.0, 0.0], tip, left, tip, right]))]
        if rng.random() < 0.3:  # a closed head
            strokes.append(_dense(np.array([left, right])))
    elif kind == "zigzag":
        count = int(rng.integers(2, 7))
        xs = np.linspace(0, rng.uniform(1.0, 2.5), count + 1)
        ys = np.where(np.arange(count + 1) % 2 == 0, 0.0, rng.uniform(0.4, 1.2)) + rng.normal(0, 0.1, count + 1)
        strokes = [_dense(np.column_stack([xs, ys]))]
    elif kind == "squiggle":
        t = np.linspace(0, 1, 200)
        freq = rng.uniform(1.0, 4.0)
        strokes = [
            np.column_stack(
                [t * rng.uniform(1.5, 3.0), rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * freq * t + rng.uniform())]
            )
        ]
    elif kind == "spiral":
        turns = rng.uniform(1.3, 3.0)
        theta = np.linspace(0, 2 * np.pi * turns, 300)
        radius = 0.15 + theta / theta[-1]
        strokes = [np.column_stack([radius * np.cos(theta), radius * np.sin(theta)])]
    elif kind == "cross":
        a = rng.uniform(0.2, 1.3)
        strokes = [_dense(np.array([[-1.0, -a], [1.0, a]])), _dense(np.array([[-1.0, a], [1.0, -a]]))]
    elif kind == "line":
        bend = rng.normal(0, 0.05)
        t = np.linspace(-1, 1, 100)
        strokes = [np.column_stack([t, bend * (1 - t**2)])]
    elif kind == "many_corners":
        strokes = _corner_path(_regular(int(rng.integers(5, 9)), rng), rng, closed=True)
    elif kind == "star":
        strokes = _corner_path(_regular(int(rng.integers(4, 8)), rng, rng.uniform(0.3, 0.6)), rng, closed=True)
    elif kind == "curve_with_corner":
        choice = int(rng.integers(4))
        if choice == 0:  # D: half a round closed by a straight edge
            theta = np.linspace(-np.pi / 2, np.pi / 2, 100)
            arc = np.column_stack([np.cos(theta), np.sin(theta)])
            strokes = [np.vstack([arc, _dense(np.array([arc[-1], arc[0]]))])]
        elif choice == 1:  # teardrop: a round that ends in one corner
            theta = np.linspace(0.35 * np.pi, 1.65 * np.pi, 150)
            arc = np.column_stack([np.cos(theta), np.sin(theta)])
            tip = np.array([rng.uniform(1.6, 2.4), 0.0])
            strokes = [np.vstack([_dense(np.array([tip, arc[0]])), arc, _dense(np.array([arc[-1], tip]))])]
        elif choice == 2:  # heart
            t = np.linspace(0, 2 * np.pi, 300)
            strokes = [
                np.column_stack(
                    [16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))]
                )
                / 16
            ]
        else:  # crescent: two arcs meeting at two corners
            theta = np.linspace(-0.8 * np.pi / 2 * 2, 0.8 * np.pi, 120)
            outer = np.column_stack([np.cos(theta), np.sin(theta)])
            inner = np.column_stack([0.55 + 0.6 * np.cos(theta[::-1]), 0.8 * np.sin(theta[::-1])])
            strokes = [np.vstack([outer, inner, outer[:1]])]
    else:
        raise ValueError(f"unknown outlier kind {kind!r}; valid kinds are {OUTLIER_KINDS}")
    return _finish([s for s in strokes if len(s) >= 2], rng)


def paint_sketch(strokes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Render strokes like the sketchpad (any size, place, pen, polarity); some at 28 px, scaled up as Quick, Draw!
    bitmaps are. Returns a grey uint8 image (256 px, or 112 px for the low-resolution ones)."""
    if rng.random() < LOW_RESOLUTION_SHARE:
        pen = math.exp(rng.uniform(math.log(0.03), math.log(0.08)))  # at 28 px a pen is at least about a pixel
        image = render_strokes(strokes, rng, canvas=256, pen_fraction=pen, size_fraction=rng.uniform(0.75, 0.92))
        small = Image.fromarray(image).resize((28, 28), Image.BOX)
        return np.asarray(small.resize((112, 112), Image.BILINEAR))
    pen = math.exp(rng.uniform(math.log(PEN_FRACTION_RANGE[0]), math.log(0.06)))
    return render_strokes(strokes, rng, canvas=256, pen_fraction=pen)


def generate_sketches(
    n_per_class: int, seed: int = 0, tall_boxes: bool = False
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """n_per_class drawn images of each of the four shapes: (images, labels int64, explanations float32 (N, 5),
    teach_class bool (N,): False for the in-between quadrilaterals the main network is not taught)."""
    images, labels, explanations, teach = [], [], [], []
    for item in range(n_per_class):
        for label, kind in enumerate(CLASS_KINDS):
            rng = np.random.default_rng([seed, label, item])
            strokes, explanation, teach_class = sketch_shape(kind, rng, tall_boxes)
            images.append(paint_sketch(strokes, rng))
            labels.append(label)
            explanations.append(explanation)
            teach.append(teach_class)
    return images, np.array(labels, np.int64), np.array(explanations, np.float32), np.array(teach, bool)


def generate_sketch_outliers(count: int, seed: int = 0, tall_boxes: bool = False) -> tuple[list[np.ndarray], list[str]]:
    """``count`` drawn images that are none of the four shapes, kinds in equal shares, and the kind of each."""
    images, kinds = [], []
    for item in range(count):
        kind = OUTLIER_KINDS[item % len(OUTLIER_KINDS)]
        rng = np.random.default_rng([seed, 99, item])
        images.append(paint_sketch(sketch_outlier(kind, rng, tall_boxes), rng))
        kinds.append(kind)
    return images, kinds
