"""Simulated hand drawings: what a person produces in the app's sketchpad with a mouse or a finger.

Used only for evaluation, and deliberately an independent code path from the training renderer
(``explainer/shapes/``, PIL polygons): the intended geometry is turned into pointer events like a browser emits
(~60 Hz samples with a per-stroke speed profile, slowing at corners, hand tremor, wobble and drift, corners that
overshoot or do not close, one or several strokes), and those events are rasterised the way an HTML canvas strokes a
path (round caps and joins, ~1 px anti-aliasing) by a numpy capsule-SDF rasteriser rather than by PIL.

Coordinates are canvas pixels: x to the right, y down, the centre of pixel (row i, column j) at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import CLASS_NAMES, EXPLANATION_NAMES  # the shared vocabulary; the rendering below is independent

# Per-class explanation truth, in EXPLANATION_NAMES order; the triangle's "same size" depends on its proportions.
_BASE_EXPLANATIONS: dict[str, tuple[float, ...]] = {
    "circle": (1, 0, 0, 0, 0),
    "triangle": (0, 1, 0, 0, 0),
    "square": (0, 0, 1, 1, 1),
    "rectangle": (0, 0, 1, 1, 0),
}
EQUILATERAL_MAX_EDGE_RATIO = 1.10  # a triangle is "all edges have the same size" only up to this max/min edge ratio
_SCALENE_MIN_EDGE_RATIO = 1.25  # other triangles stay clearly away from that boundary, so labels are unambiguous
RECTANGLE_MIN_ASPECT = 1.3
_RECTANGLE_MAX_ASPECT = 3.5
SIZE_RANGE = (0.15, 0.90)  # largest extent of the intended shape, as a fraction of the canvas side
EDGE_MARGIN_FRACTION = 0.025  # pointer positions stay this far (fraction of the canvas) from the canvas border
_CORNER_TURN_DEGREES = 30.0  # a vertex turning more than this is a corner the hand slows down at


# --------------------------------------------------------------------------------------------------------------------
# Public data types


@dataclass(frozen=True)
class BrushStyle:
    """How a drawing is painted: brush width in canvas px, ink RGB, and the background.

    background is "white" (RGB output), "transparent" (RGBA output, alpha 0 where nothing was drawn, like an untouched
    canvas layer) or "black" (RGB output, light ink on a dark canvas).
    """

    width: float
    ink_rgb: tuple[int, int, int]
    background: str


@dataclass(frozen=True)
class PointerPath:
    """The pointer events of one simulated drawing, replayable with real mouse moves in a browser test.

    strokes: list of strokes (pointerdown .. pointerup), each an (n, 2) float64 array of canvas pixel coordinates
    (x, y). times: matching (n,) float64 arrays, seconds since the first pointerdown (strictly increasing within a
    stroke, with pen-up pauses between strokes). intended_outline: the (m, 2) closed loop the person meant to draw
    (polygon vertices, or dense samples of the oval). explanation: float32 (5,) in EXPLANATION_NAMES order.
    """

    kind: str
    strokes: list[np.ndarray]
    times: list[np.ndarray]
    explanation: np.ndarray
    intended_outline: np.ndarray
    canvas: int
    intended_size_px: float = 0.0
    notes: dict[str, object] = field(default_factory=dict)

    def events(self) -> list[np.ndarray]:
        """Each stroke as an (n, 3) array of (t seconds, x, y), the order a browser would dispatch them."""
        return [np.column_stack([t, xy]) for t, xy in zip(self.times, self.strokes, strict=False)]


# --------------------------------------------------------------------------------------------------------------------
# Intended geometry


def _check_kind(kind: str) -> None:
    if kind not in CLASS_NAMES:
        raise ValueError(f"unknown shape kind {kind!r}; valid kinds are {CLASS_NAMES}")


def _check_canvas(canvas: int) -> None:
    if not isinstance(canvas, (int, np.integer)) or canvas < 32:
        raise ValueError(f"canvas must be an int >= 32 pixels, got {canvas!r}")


def _edge_lengths(vertices: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.roll(vertices, -1, axis=0) - vertices, axis=1)


def _min_angle_degrees(vertices: np.ndarray) -> float:
    angles = []
    count = len(vertices)
    for index in range(count):
        to_prev = vertices[index - 1] - vertices[index]
        to_next = vertices[(index + 1) % count] - vertices[index]
        cosine = np.dot(to_prev, to_next) / (np.linalg.norm(to_prev) * np.linalg.norm(to_next))
        angles.append(math.degrees(math.acos(float(np.clip(cosine, -1.0, 1.0)))))
    return min(angles)


def _unit_triangle(rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """A triangle of varied proportions; near-equilateral ones (max/min edge <= 1.10) are the only "same size"."""
    if rng.random() < 0.35:
        while True:
            angles = np.deg2rad(np.array([90.0, 210.0, 330.0]) + rng.normal(0.0, 2.5, 3))
            radii = 1.0 + rng.normal(0.0, 0.025, 3)
            vertices = np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])
            edges = _edge_lengths(vertices)
            if edges.max() / edges.min() <= EQUILATERAL_MAX_EDGE_RATIO:
                return vertices, True
    while True:
        apex = np.array([rng.uniform(-0.4, 1.4), rng.uniform(0.35, 1.6)])
        vertices = np.array([[0.0, 0.0], [1.0, 0.0], apex])
        edges = _edge_lengths(vertices)
        if edges.max() / edges.min() >= _SCALENE_MIN_EDGE_RATIO and _min_angle_degrees(vertices) >= 18.0:
            return vertices - vertices.mean(axis=0), False


def _unit_outline(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (polygon) or dense samples (oval) of the intended shape around the origin, and its explanation."""
    explanation = np.array(_BASE_EXPLANATIONS[kind], dtype=np.float32)
    if kind == "circle":
        minor = rng.uniform(0.9, 1.0)
        theta = np.linspace(0.0, 2.0 * np.pi, 180, endpoint=False)
        return np.column_stack([np.cos(theta), minor * np.sin(theta)]), explanation
    if kind == "triangle":
        vertices, same_size = _unit_triangle(rng)
        explanation[4] = 1.0 if same_size else 0.0
        return vertices, explanation
    if kind == "square":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), explanation
    aspect = rng.uniform(RECTANGLE_MIN_ASPECT, _RECTANGLE_MAX_ASPECT)
    return np.array([[-aspect, -1.0], [aspect, -1.0], [aspect, 1.0], [-aspect, 1.0]]), explanation


def place_outline(
    unit: np.ndarray, rng: np.random.Generator, canvas: int, size_range: tuple[float, float] = SIZE_RANGE
) -> tuple[np.ndarray, float]:
    """Rotate, scale (largest extent a random fraction of the canvas in size_range) and move it fully inside."""
    # People mostly draw shapes about upright; the rest of the time at any angle.
    angle = rng.normal(0.0, math.radians(6.0)) if rng.random() < 0.5 else rng.uniform(0.0, 2.0 * np.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    rotated = unit @ rotation.T
    extent = (rotated.max(axis=0) - rotated.min(axis=0)).max()
    size_px = rng.uniform(*size_range) * canvas
    scaled = rotated * (size_px / extent)
    low, high = scaled.min(axis=0), scaled.max(axis=0)
    margin = 2.0 * EDGE_MARGIN_FRACTION * canvas
    offset = np.empty(2)
    for axis in range(2):
        lowest, highest = margin - low[axis], canvas - margin - high[axis]
        offset[axis] = rng.uniform(lowest, highest) if highest > lowest else (lowest + highest) / 2.0
    return scaled + offset, float(size_px)


# --------------------------------------------------------------------------------------------------------------------
# From intended geometry to pointer events


@dataclass
class _Hand:
    """One simulated person's motor habits for one drawing; sizes in canvas px, speeds in px/s."""

    speed: float
    rate_hz: float
    tremor_px: float
    wobble_px: float
    drift_fraction: float
    closure_mean: float
    corner_weights: tuple[float, float, float]  # sharp, rounded, hook
    quantum_px: float
    smooth_chords: bool


def _sample_hand(rng: np.random.Generator, canvas: int, size_px: float) -> _Hand:
    scale = canvas / 512.0
    touch = rng.random() < 0.25
    closure_style = rng.choice(3, p=[0.35, 0.3, 0.35])  # overshoot, about closed, gap
    closure_mean = [rng.uniform(0.01, 0.05), rng.normal(0.0, 0.004), -rng.uniform(0.008, 0.035)][closure_style]
    sharp = rng.uniform(0.2, 0.7)
    rounded = rng.uniform(0.1, 0.6)
    hook = rng.uniform(0.05, 0.4)
    total = sharp + rounded + hook
    return _Hand(
        speed=rng.uniform(220.0, 800.0) * scale * math.sqrt(size_px / (0.5 * canvas)),
        rate_hz=float(rng.choice([60.0, 60.0, 60.0, 120.0])) if touch else float(rng.choice([60.0, 60.0, 125.0])),
        tremor_px=rng.uniform(0.15, 0.9) * scale,
        wobble_px=rng.uniform(0.002, 0.014) * size_px + rng.uniform(0.2, 1.0) * scale,
        drift_fraction=rng.uniform(0.0, 0.035),
        closure_mean=float(closure_mean),
        corner_weights=(sharp / total, rounded / total, hook / total),
        quantum_px=canvas / rng.uniform(280.0, 1000.0),
        smooth_chords=bool(rng.random() < 0.3),
    )


def _corner_mask(vertices: np.ndarray, closed: bool) -> np.ndarray:
    """Vertices where the outline turns by more than _CORNER_TURN_DEGREES (never the ends of an open polyline)."""
    incoming = vertices - np.roll(vertices, 1, axis=0)
    outgoing = np.roll(vertices, -1, axis=0) - vertices
    norms = np.linalg.norm(incoming, axis=1) * np.linalg.norm(outgoing, axis=1)
    cosine = np.einsum("ij,ij->i", incoming, outgoing) / np.maximum(norms, 1e-12)
    mask = (norms > 0) & (cosine < math.cos(math.radians(_CORNER_TURN_DEGREES)))
    if not closed:
        mask[0] = mask[-1] = False
    return mask


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


@dataclass
class _StrokePlan:
    vertices: list[np.ndarray]
    corner: list[bool]  # per vertex: a corner the hand must turn (interior vertices only matter)


def _loop_slice(vertices: np.ndarray, corners: np.ndarray, start: float, end: float) -> _StrokePlan:
    """The closed loop's path from arc length start to end (either may lie outside [0, L]: it wraps around)."""
    closed_pts = np.vstack([vertices, vertices[:1]])
    cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed_pts, axis=0), axis=1))])
    perimeter = cumulative[-1]
    laps = np.arange(math.floor(start / perimeter) - 1, math.floor(end / perimeter) + 2)
    arc = (cumulative[:-1][None, :] + perimeter * laps[:, None]).ravel()
    pts = np.tile(vertices, (len(laps), 1))
    flags = np.tile(corners, len(laps))
    inside = (arc > start) & (arc < end)

    def point_at(position: float) -> np.ndarray:
        wrapped = position % perimeter
        return _along(np.array([wrapped]), cumulative, closed_pts)[0]

    plan_vertices = [point_at(start)] + list(pts[inside]) + [point_at(end)]
    plan_corners = [False] + list(flags[inside]) + [False]
    return _StrokePlan(plan_vertices, plan_corners)


def _plan_closed(vertices: np.ndarray, rng: np.random.Generator, size_px: float, hand: _Hand) -> list[_StrokePlan]:
    """Split a closed outline into 1..k strokes; each junction overshoots, about meets, or leaves a gap."""
    corners = _corner_mask(vertices, closed=True)
    if rng.random() < 0.5:
        vertices, corners = vertices[::-1].copy(), corners[::-1].copy()
    closed_pts = np.vstack([vertices, vertices[:1]])
    cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed_pts, axis=0), axis=1))])
    perimeter = float(cumulative[-1])
    corner_arcs = cumulative[:-1][corners]
    if len(corner_arcs):
        start = float(rng.choice(corner_arcs))
        max_strokes = min(len(corner_arcs), 5)
        stroke_count = 1 if rng.random() < 0.5 else int(rng.integers(1, max_strokes + 1))
        later = np.sort((corner_arcs - start) % perimeter)[1:]
        cuts = np.sort(rng.choice(later, stroke_count - 1, replace=False)) if stroke_count > 1 else np.array([])
    else:
        start = rng.uniform(0.0, perimeter)
        stroke_count = 1 if rng.random() < 0.8 else 2
        cuts = np.array([rng.uniform(0.35, 0.65) * perimeter]) if stroke_count == 2 else np.array([])
    bounds = np.concatenate([[0.0], cuts, [perimeter]]) + start
    junction_is_corner = [bool(len(corner_arcs))] * len(bounds)
    # Extension past (+) or short of (-) each junction, per stroke end; as a fraction of the intended size.
    extensions = hand.closure_mean + rng.normal(0.0, 0.008, size=(stroke_count, 2))
    plans = []
    for index in range(stroke_count):
        begin_ext, end_ext = extensions[index] * size_px
        begin, end = bounds[index], bounds[index + 1]
        # Corner junctions overshoot in a straight line (added below); smooth ones continue along the curve.
        begin_arc = begin - (begin_ext if not junction_is_corner[index] else min(begin_ext, 0.0))
        end_arc = end + (end_ext if not junction_is_corner[index + 1] else min(end_ext, 0.0))
        plan = _loop_slice(vertices, corners, begin_arc, end_arc)
        if junction_is_corner[index] and begin_ext > 0:
            direction = _unit(plan.vertices[1] - plan.vertices[0])
            plan.vertices.insert(0, plan.vertices[0] - begin_ext * direction)
            plan.corner.insert(0, False)
        if junction_is_corner[index + 1] and end_ext > 0:
            direction = _unit(plan.vertices[-1] - plan.vertices[-2])
            plan.vertices.append(plan.vertices[-1] + end_ext * direction)
            plan.corner.append(False)
        if len(cuts) and rng.random() < 0.25:
            plan = _StrokePlan(plan.vertices[::-1], plan.corner[::-1])
        plans.append(plan)
    return plans


def _plan_open(vertices: np.ndarray, rng: np.random.Generator, size_px: float) -> _StrokePlan:
    """One stroke along an open polyline, its ends a little long or short."""
    corners = list(_corner_mask(vertices, closed=False))
    pts = [np.asarray(v, dtype=np.float64) for v in vertices]
    start_ext, end_ext = rng.normal(0.0, 0.012, 2) * size_px
    head_dir, tail_dir = _unit(pts[1] - pts[0]), _unit(pts[-1] - pts[-2])
    first_len, last_len = np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(pts[-1] - pts[-2])
    pts[0] = pts[0] - max(start_ext, -0.4 * first_len) * head_dir
    pts[-1] = pts[-1] + max(end_ext, -0.4 * last_len) * tail_dir
    return _StrokePlan(pts, corners)


def _densify(
    plan: _StrokePlan, rng: np.random.Generator, size_px: float, hand: _Hand
) -> tuple[np.ndarray, list[float]]:
    """Dense (~1 px) ideal path of one stroke with corner treatments, and the arc lengths where the hand pauses."""
    vertices = plan.vertices
    waypoints: list[np.ndarray] = [vertices[0]]
    pause_points: list[int] = []  # indices into waypoints where a sub-movement ends
    for index in range(1, len(vertices) - 1):
        vertex = vertices[index]
        if not plan.corner[index]:
            waypoints.append(vertex)
            continue
        incoming, outgoing = vertex - vertices[index - 1], vertices[index + 1] - vertex
        in_len, out_len = np.linalg.norm(incoming), np.linalg.norm(outgoing)
        style = rng.choice(3, p=hand.corner_weights)
        if style == 1:  # rounded: the hand cuts the corner with a small curve, without stopping
            cut = min(rng.uniform(0.01, 0.06) * size_px, 0.3 * in_len, 0.3 * out_len)
            entry, exit_ = vertex - cut * _unit(incoming), vertex + cut * _unit(outgoing)
            for u in np.linspace(0.0, 1.0, 7):
                waypoints.append((1 - u) ** 2 * entry + 2 * (1 - u) * u * vertex + u**2 * exit_)
        elif style == 2:  # hook: overshoots the corner, then heads for the next edge
            over = min(rng.uniform(0.01, 0.045) * size_px, 0.3 * in_len)
            waypoints.append(vertex + over * _unit(incoming))
            pause_points.append(len(waypoints) - 1)
            waypoints.append(vertex + min(rng.uniform(0.0, 0.6) * over, 0.3 * out_len) * _unit(outgoing))
        else:  # sharp: decelerates into the corner, turns, sets off again
            waypoints.append(vertex)
            pause_points.append(len(waypoints) - 1)
    waypoints.append(vertices[-1])
    points = np.array(waypoints)
    seg_lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(seg_lengths)])
    total = cumulative[-1]
    if total <= 0.0:
        return points[:1], []
    samples = np.linspace(0.0, total, max(2, int(total) + 2))
    dense = _along(samples, cumulative, points)
    return dense, [float(cumulative[i]) for i in pause_points]


def _along(positions: np.ndarray, cumulative: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points at arc lengths `positions` along a polyline whose vertices sit at arc lengths `cumulative`."""
    return np.column_stack([np.interp(positions, cumulative, points[:, axis]) for axis in range(2)])


def _minimum_jerk(tau: np.ndarray) -> np.ndarray:
    return tau**3 * (10.0 - 15.0 * tau + 6.0 * tau**2)


def _oscillation(
    rng: np.random.Generator, times: np.ndarray, amplitude: float, low_hz: float, high_hz: float
) -> np.ndarray:
    """Band-limited 2-D noise: a few random sinusoids per axis (tremor, wobble)."""
    result = np.zeros((len(times), 2))
    for axis in range(2):
        for _ in range(3):
            freq = rng.uniform(low_hz, high_hz)
            result[:, axis] += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * freq * times + rng.uniform(0, 2 * np.pi))
    return result * (amplitude / 1.6)


def _time_stroke(
    dense: np.ndarray, pauses: list[float], rng: np.random.Generator, hand: _Hand, curvy: bool, start_time: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sample the ideal path at the pointer rate with a speed profile per sub-movement (slow at pauses)."""
    cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    total = float(cumulative[-1])
    bounds = np.array([0.0] + [p for p in pauses if 0.0 < p < total] + [total])
    lengths = np.diff(bounds)
    durations = 0.06 + lengths / (hand.speed * rng.uniform(0.8, 1.25, len(lengths)))
    dwell = np.where(np.arange(len(lengths)) > 0, rng.uniform(0.0, 0.06, len(lengths)), 0.0)
    starts = np.cumsum(dwell + np.concatenate([[0.0], durations[:-1]]))
    finish = float(starts[-1] + durations[-1])
    cruise = rng.uniform(0.45, 0.85, len(lengths)) if curvy else rng.uniform(0.0, 0.25, len(lengths))
    period = 1.0 / hand.rate_hz
    grid = np.arange(0.0, finish, period)
    jitter = rng.uniform(-0.15, 0.15, len(grid)) * period  # event timestamps are not perfectly regular
    jitter[0] = 0.0
    times = np.unique(np.clip(np.concatenate([grid + jitter, [finish]]), 0.0, finish))
    segment = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(lengths) - 1)
    tau = np.clip((times - starts[segment]) / durations[segment], 0.0, 1.0)
    progress = cruise[segment] * tau + (1.0 - cruise[segment]) * _minimum_jerk(tau)
    arc = bounds[segment] + lengths[segment] * progress
    xy = _along(arc, cumulative, dense)
    return start_time + times, xy


def _humanise(
    plans: Sequence[_StrokePlan], rng: np.random.Generator, canvas: int, size_px: float, hand: _Hand, curvy: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Turn stroke plans into pointer events: timing, tremor, wobble, drift, pointer quantisation, pen-up pauses."""
    strokes, stroke_times = [], []
    clock = 0.0
    low = max(EDGE_MARGIN_FRACTION * canvas, 2.0)
    high = canvas - low
    for index, plan in enumerate(plans):
        dense, pauses = _densify(plan, rng, size_px, hand)
        times, xy = _time_stroke(dense, pauses, rng, hand, curvy, clock)
        local = times - times[0]
        progress = local / max(local[-1], 1e-6)
        drift_direction = _unit(rng.normal(size=2))
        drift_px = hand.drift_fraction * size_px * rng.uniform(0.3, 1.0)
        drift = drift_px * np.outer(progress ** rng.uniform(1.0, 2.0), drift_direction)
        landing = rng.normal(0.0, 0.005 * size_px, 2) if index else np.zeros(2)
        xy = (
            xy
            + drift
            + landing
            + _oscillation(rng, times, hand.wobble_px, 0.6, 3.0)
            + _oscillation(rng, times, hand.tremor_px, 7.0, 12.0)
        )
        xy = np.round(xy / hand.quantum_px) * hand.quantum_px
        xy = np.clip(xy, low, high)
        keep = np.concatenate([[True], np.any(np.diff(xy, axis=0) != 0.0, axis=1)])  # no events while still
        keep[-1] = True
        times, xy = times[keep], xy[keep]
        if hand.smooth_chords and len(xy) > 2:  # apps that draw quadratic curves through chord midpoints
            mids = (xy[:-1] + xy[1:]) / 2.0
            xy = np.vstack([xy[:1], (mids[:-1] + 2 * xy[1:-1] + mids[1:]) / 4.0, xy[-1:]])
        strokes.append(xy)
        stroke_times.append(times)
        clock = float(times[-1]) + rng.uniform(0.15, 0.6)
    return strokes, stroke_times


def humanise_outline(
    vertices: np.ndarray,
    rng: np.random.Generator,
    canvas: int = 512,
    *,
    closed: bool = True,
    size_px: float | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pointer strokes and times (as in PointerPath) for a person tracing any outline, e.g. an OOD shape or letter.

    vertices: (m, 2) canvas px; corners (turns > 30 degrees) are slowed at, overshot or rounded; closed outlines may
    be split into several strokes whose junctions may not meet.
    """
    _check_canvas(canvas)
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 2:
        raise ValueError(f"vertices must be an (m >= 2, 2) array, got shape {vertices.shape}")
    if size_px is None:
        size_px = float((vertices.max(axis=0) - vertices.min(axis=0)).max())
    hand = _sample_hand(rng, canvas, max(size_px, 1.0))
    curvy = not _corner_mask(vertices, closed).any()
    plans = _plan_closed(vertices, rng, size_px, hand) if closed else [_plan_open(vertices, rng, size_px)]
    return _humanise(plans, rng, canvas, size_px, hand, curvy)


def pointer_path(kind: str, rng: np.random.Generator, canvas: int = 512) -> PointerPath:
    """Simulate the pointer events of a person drawing `kind` (one of CLASS_NAMES) on a canvas x canvas sketchpad."""
    _check_kind(kind)
    _check_canvas(canvas)
    unit, explanation = _unit_outline(kind, rng)
    outline, size_px = place_outline(unit, rng, canvas)
    if kind == "circle":  # a hand-drawn oval is lumpy: a little low-order radial wobble
        centre = outline.mean(axis=0)
        theta = np.linspace(0.0, 2.0 * np.pi, len(outline), endpoint=False)
        lumps = sum(rng.uniform(0.0, 0.02) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
        drawn_loop = centre + (outline - centre) * (1.0 + lumps)[:, None]
    else:
        drawn_loop = outline
    hand = _sample_hand(rng, canvas, size_px)
    plans = _plan_closed(drawn_loop, rng, size_px, hand)
    strokes, times = _humanise(plans, rng, canvas, size_px, hand, curvy=kind == "circle")
    notes = {"closure_mean_fraction": hand.closure_mean, "stroke_count": len(strokes)}
    return PointerPath(kind, strokes, times, explanation, outline, canvas, size_px, notes)


# --------------------------------------------------------------------------------------------------------------------
# Rasterisation (browser-canvas-like, numpy only)


def stroke_coverage(strokes: Sequence[np.ndarray], brush_width: float, canvas: int) -> np.ndarray:
    """Coverage in [0, 1] (canvas x canvas float32) of round-capped, round-joined polylines of a brush width.

    Each pair of consecutive points is a capsule (distance to the segment <= width / 2) with ~1 px anti-aliasing;
    strokes are united by max. Segments are cut into short pieces and evaluated on small per-piece tiles, all at once.
    """
    _check_canvas(canvas)
    if not brush_width > 0:
        raise ValueError(f"brush_width must be > 0 px, got {brush_width!r}")
    radius = brush_width / 2.0
    starts, ends = [], []
    for stroke in strokes:
        pts = np.asarray(stroke, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 0:
            continue
        if len(pts) == 1:
            pts = np.vstack([pts, pts])
        starts.append(pts[:-1])
        ends.append(pts[1:])
    coverage = np.zeros(canvas * canvas, dtype=np.float32)
    if not starts:
        return coverage.reshape(canvas, canvas)
    seg_a, seg_b = np.vstack(starts), np.vstack(ends)
    piece_len = max(4.0, 2.0 * radius + 4.0)
    pieces = np.maximum(1, np.ceil(np.linalg.norm(seg_b - seg_a, axis=1) / piece_len)).astype(np.int64)
    owner = np.repeat(np.arange(len(seg_a)), pieces)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    step = (np.arange(len(owner)) - first)[:, None]
    direction = (seg_b - seg_a)[owner] / pieces[owner][:, None]
    piece_a = seg_a[owner] + step * direction
    piece_b = piece_a + direction
    tile = int(math.ceil(piece_len + 2.0 * radius + 2.0)) + 2
    origin = np.floor(np.minimum(piece_a, piece_b) - radius - 1.0).astype(np.int64)  # (n, 2) as (x, y)
    offsets = np.arange(tile)
    cols = origin[:, 0, None, None] + offsets[None, None, :]  # (n, 1, tile)
    rows = origin[:, 1, None, None] + offsets[None, :, None]  # (n, tile, 1)
    px = (cols + 0.5 - piece_a[:, 0, None, None]).astype(np.float32)
    py = (rows + 0.5 - piece_a[:, 1, None, None]).astype(np.float32)
    dx = direction[:, 0, None, None].astype(np.float32)
    dy = direction[:, 1, None, None].astype(np.float32)
    length_sq = np.maximum(dx * dx + dy * dy, np.float32(1e-12))
    along = np.clip((px * dx + py * dy) / length_sq, 0.0, 1.0)
    distance = np.sqrt((px - along * dx) ** 2 + (py - along * dy) ** 2)
    cover = np.clip(np.float32(radius + 0.5) - distance, 0.0, 1.0)
    rows_b, cols_b = np.broadcast_to(rows, cover.shape), np.broadcast_to(cols, cover.shape)
    keep = (cover > 0.0) & (rows_b >= 0) & (rows_b < canvas) & (cols_b >= 0) & (cols_b < canvas)
    np.maximum.at(coverage, rows_b[keep] * canvas + cols_b[keep], cover[keep])
    return coverage.reshape(canvas, canvas)


_COLOUR_INKS = ((30, 80, 220), (210, 40, 40), (30, 140, 60), (120, 50, 170), (230, 120, 20))
_LIGHT_INKS = ((255, 255, 255), (240, 240, 240), (255, 235, 120), (150, 220, 255))


def sample_brush_style(rng: np.random.Generator, canvas: int = 512) -> BrushStyle:
    """A sketchpad brush: mostly thin (a few px at 512, like Gradio's default), dark ink on white or transparent."""
    _check_canvas(canvas)
    width = float(np.clip(rng.lognormal(math.log(4.5), 0.45), 2.0, 12.0)) * canvas / 512.0
    background = str(rng.choice(["white", "transparent", "black"], p=[0.55, 0.3, 0.15]))
    if background == "black":
        ink = _LIGHT_INKS[int(rng.integers(len(_LIGHT_INKS)))] if rng.random() < 0.3 else _LIGHT_INKS[0]
    else:
        pick = rng.random()
        if pick < 0.5:
            ink = (0, 0, 0)
        elif pick < 0.75:
            grey = int(rng.integers(30, 91))
            ink = (grey, grey, grey)
        else:
            ink = _COLOUR_INKS[int(rng.integers(len(_COLOUR_INKS)))]
    return BrushStyle(width, tuple(int(c) for c in ink), background)


def paint(coverage: np.ndarray, style: BrushStyle) -> np.ndarray:
    """Composite ink coverage like a canvas: RGB over an opaque background, RGBA (alpha = coverage) if transparent."""
    if style.background not in ("white", "black", "transparent"):
        raise ValueError(f"unknown background {style.background!r}; valid: 'white', 'transparent', 'black'")
    alpha8 = np.rint(np.clip(coverage, 0.0, 1.0) * 255.0).astype(np.uint8)  # canvas pixels hold 8-bit alpha
    levels = np.arange(256, dtype=np.float64)[:, None] / 255.0
    ink = np.array(style.ink_rgb, dtype=np.float64)[None, :]
    if style.background == "transparent":
        table = np.hstack([np.where(levels > 0, ink, 0.0), levels * 255.0])
    else:
        background = 255.0 if style.background == "white" else 0.0
        table = background * (1.0 - levels) + ink * levels
    table8 = np.zeros((256, 4), dtype=np.uint8)
    table8[:, : table.shape[1]] = np.rint(table)
    packed = table8.view("<u4").ravel()  # one 32-bit table look-up per pixel instead of float blending
    image = np.take(packed, alpha8).view(np.uint8).reshape(*alpha8.shape, 4)
    return image if style.background == "transparent" else np.ascontiguousarray(image[..., :3])


def composite_over(image: np.ndarray, background_rgb: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Flatten an RGBA drawing over a solid background (RGB and grey images pass through as RGB)."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    if image.shape[-1] == 3:
        return image
    if image.shape[-1] != 4:
        raise ValueError(f"expected a grey, RGB or RGBA image, got shape {image.shape}")
    alpha = image[..., 3:4].astype(np.float32) / 255.0
    blended = image[..., :3].astype(np.float32) * alpha + np.array(background_rgb, dtype=np.float32) * (1.0 - alpha)
    return blended.round().astype(np.uint8)


def ink_mask(image: np.ndarray, threshold: int = 64) -> np.ndarray:
    """Where something was drawn: alpha for RGBA, else any channel far from the background (the border's median)."""
    if image.ndim == 3 and image.shape[-1] == 4:
        return image[..., 3] >= threshold
    pixels = image.astype(np.int16).reshape(image.shape[0], image.shape[1], -1)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0).astype(np.int16)
    return np.abs(pixels - background).max(axis=-1) >= threshold


# --------------------------------------------------------------------------------------------------------------------
# Drawings and datasets


def render_pointer_path(path: PointerPath, style: BrushStyle) -> np.ndarray:
    """Rasterise a PointerPath with a brush style, like the sketchpad would."""
    return paint(stroke_coverage(path.strokes, style.width, path.canvas), style)


def simulate_drawing(kind: str, rng: np.random.Generator, canvas: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """One simulated sketchpad drawing of `kind`: (canvas x canvas RGB or RGBA uint8 image, float32 (5,) labels)."""
    style = sample_brush_style(rng, canvas)
    path = pointer_path(kind, rng, canvas)
    return render_pointer_path(path, style), path.explanation.copy()


def drawing_rng(seed: int, class_index: int, item_index: int) -> np.random.Generator:
    """The generator of one dataset item, so item i is the same whatever n_per_class is."""
    return np.random.default_rng([int(seed), int(class_index), int(item_index)])


def simulate_dataset(
    n_per_class: int, seed: int = 0, canvas: int = 512
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """n_per_class drawings of every class, interleaved in CLASS_NAMES order: (images, int64 labels, float32 N x 5)."""
    if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 0:
        raise ValueError(f"n_per_class must be an int >= 0, got {n_per_class!r}")
    _check_canvas(canvas)
    images, labels, explanations = [], [], []
    for item in range(n_per_class):
        for class_index, kind in enumerate(CLASS_NAMES):
            image, explanation = simulate_drawing(kind, drawing_rng(seed, class_index, item), canvas)
            images.append(image)
            labels.append(class_index)
            explanations.append(explanation)
    return (
        images,
        np.array(labels, dtype=np.int64),
        np.array(explanations, dtype=np.float32).reshape(len(labels), len(EXPLANATION_NAMES)),
    )
