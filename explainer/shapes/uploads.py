"""Drawings as people upload them rather than draw them in the app: rendered the way other tools store them.

The sketchpad paints a drawing on a 512 px canvas with a thin to medium pen (``explainer.shapes.drawn.render_strokes``).
An uploaded file comes from elsewhere: a bitmap stored small (28 to 96 px a side, down-sampled with or without
anti-aliasing), a hairline or a marker, light ink on a dark app background, a drawing turned to any angle, or a phone
photo of a drawing on paper (paper grain, ruled or squared lines, uneven light and a shadow, a mild perspective,
camera blur and noise, JPEG). Each of these is a named :class:`UploadCondition` in :data:`CONDITIONS`; its
``render`` turns a drawing's strokes into such an image, deterministically for a given random generator. Used to
measure the upload path on real drawings (``train/evaluate_real_drawings.py --conditions``). The images are
simulations made from the strokes, not photographs: what they measure is only as honest as the list of what they
imitate, which the docstring of each condition gives.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from .drawn import BACKGROUNDS, drawing_extent, paint_coverage, place_strokes
from .strokes import stroke_coverage

BITMAP_SIDES = (28, 48, 64, 96)
BITMAP_SUPERSAMPLE = 4  # small bitmaps are drawn this many times larger, then reduced
PEN_CANVAS = 256  # the canvas of the pen, polarity and rotation conditions: a mid-sized upload
PHOTO_SIDE = 384  # the photo conditions' output side: a photo reduced for upload (the normalisation reduces any
# photo to 1,024 px first, so larger ones differ mainly in the time they take)
VALIDATION_SHARE = 0.3  # share of the drawings (by a hash of collection and id) kept to choose settings on

Strokes = Sequence[np.ndarray]


@dataclass(frozen=True)
class UploadCondition:
    """One way an uploaded drawing may have been stored: a name, what it imitates, the backgrounds it is rendered on
    (each drawing once per background) and ``render(strokes, rng, background)`` -> uint8 grey (H, W) or RGB image."""

    name: str
    description: str
    backgrounds: tuple[str, ...]
    render: Callable[[Strokes, np.random.Generator, str], np.ndarray]


def is_validation_drawing(collection: str, drawing_id: str) -> bool:
    """About VALIDATION_SHARE of the drawings of every collection, by a hash of collection and id (independent of
    ``explainer.shapes.drawn.is_training_drawing``'s hash): the part upload settings are chosen on; the rest is for the
    report only."""
    digest = hashlib.blake2b(f"uploads:{collection}:{drawing_id}".encode("utf-8"), digest_size=2).digest()
    return int.from_bytes(digest, "big") < VALIDATION_SHARE * 65536


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _coverage(
    strokes: Strokes, rng: np.random.Generator, canvas: int, size_fraction: float, pen_px: float
) -> np.ndarray:
    """Ink coverage in [0, 1] of the drawing scaled to size_fraction of a square canvas, anywhere on it."""
    position = (rng.uniform(), rng.uniform())
    placed = place_strokes(strokes, canvas, size_fraction, pen_px, position)
    return stroke_coverage(placed, max(pen_px, 0.5), canvas)


def _reduce(coverage: np.ndarray, side: int, anti_aliased: bool) -> np.ndarray:
    """A supersampled coverage to ``side`` px: the mean of each block (anti-aliased), or the block's centre pixel
    thresholded at half (a nearest-neighbour resize of a two-level image, as a pixel-art or 1-bit export stores it)."""
    factor = coverage.shape[0] // side
    if anti_aliased:
        return coverage[: side * factor, : side * factor].reshape(side, factor, side, factor).mean(axis=(1, 3))
    centre = factor // 2
    return (coverage[centre::factor, centre::factor][:side, :side] >= 0.5).astype(np.float32)


def render_bitmap(
    strokes: Strokes, rng: np.random.Generator, background: str, side: int, anti_aliased: bool
) -> np.ndarray:
    """A small stored bitmap (``side`` px): the drawing fills 70-95% of it, pen 2-7% of the side (at least 1 px),
    drawn BITMAP_SUPERSAMPLE times larger and reduced with or without anti-aliasing."""
    canvas = side * BITMAP_SUPERSAMPLE
    pen_px = max(1.0, _log_uniform(rng, 0.02, 0.07) * side) * BITMAP_SUPERSAMPLE
    coverage = _coverage(strokes, rng, canvas, rng.uniform(0.7, 0.95), pen_px)
    return paint_coverage(_reduce(coverage, side, anti_aliased), background)


def render_thumbnail(
    strokes: Strokes, rng: np.random.Generator, background: str, resample: Image.Resampling
) -> np.ndarray:
    """A drawing made with a thin pen (1-3 px) on a large canvas (256, 384 or 512 px, the drawing 50-90% of it),
    then stored small (a side of BITMAP_SIDES) by a filtered resize (an area average or a bicubic filter, as image
    editors and browsers reduce): each line turns into a faint grey trace (1 px on 512 px is a 5% grey at 28 px).
    Not imitated: a resize without a filter (nearest neighbour), which breaks such lines into dots or loses them."""
    canvas = int(rng.choice((256, 384, 512)))
    side = int(rng.choice(BITMAP_SIDES))
    pen_px = float(rng.uniform(1.0, 3.0))
    coverage = _coverage(strokes, rng, canvas, rng.uniform(0.5, 0.9), pen_px)
    large = Image.fromarray(paint_coverage(coverage, background))
    return np.asarray(large.resize((side, side), resample))


def render_pen(
    strokes: Strokes, rng: np.random.Generator, background: str, pen_range: tuple[float, float]
) -> np.ndarray:
    """A PEN_CANVAS px upload drawn at 40-90% of the canvas with a pen of ``pen_range`` (fraction of the drawing's
    size, log-uniform; at least 0.7 px, so a hairline stays one device pixel wide)."""
    size_fraction = rng.uniform(0.4, 0.9)
    pen_px = max(0.7, _log_uniform(rng, *pen_range) * size_fraction * PEN_CANVAS)
    return paint_coverage(_coverage(strokes, rng, PEN_CANVAS, size_fraction, pen_px), background)


def render_dark_app(strokes: Strokes, rng: np.random.Generator, background: str) -> np.ndarray:
    """A drawing app in dark mode: light (sometimes coloured) ink on a dark grey or tinted background, medium pen,
    RGB."""
    size_fraction = rng.uniform(0.4, 0.9)
    pen_px = max(0.7, _log_uniform(rng, 0.01, 0.04) * size_fraction * PEN_CANVAS)
    coverage = _coverage(strokes, rng, PEN_CANVAS, size_fraction, pen_px)[:, :, None]
    dark = rng.uniform(15, 70) + rng.uniform(-12, 12, size=3)
    light = rng.uniform(190, 255, size=3) if rng.random() < 0.5 else np.full(3, rng.uniform(200, 255))
    return np.rint(dark * (1.0 - coverage) + light * coverage).clip(0, 255).astype(np.uint8)


def rotate_strokes(strokes: Strokes, angle_degrees: float) -> list[np.ndarray]:
    """The strokes turned about the drawing's centre (y down, so a positive angle turns clockwise on screen)."""
    low, high = drawing_extent(strokes)
    centre = (low + high) / 2.0
    turn = math.radians(angle_degrees)
    matrix = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    return [(np.asarray(s, dtype=np.float64) - centre) @ matrix.T + centre for s in strokes]


def render_rotated(strokes: Strokes, rng: np.random.Generator, background: str) -> np.ndarray:
    """The drawing turned to any angle (uniform over the full turn), otherwise as :func:`render_pen` with a medium
    pen: a rectangle drawn askew is still a rectangle, a triangle still has three vertices."""
    return render_pen(rotate_strokes(strokes, rng.uniform(0.0, 360.0)), rng, background, (0.01, 0.04))


def _smooth_noise(rng: np.random.Generator, side: int, scale: int) -> np.ndarray:
    """Noise with features about ``scale`` px across, mean 0 and standard deviation about 1."""
    cells = max(2, side // scale + 2)
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def _paper_lines(side: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    """Coverage of a page's printed lines: horizontal rules ('ruled', with a margin line sometimes) or a grid
    ('squared'), 1-2 px wide, every 14-32 px; nothing for 'plain'."""
    lines = np.zeros((side, side), dtype=np.float32)
    if kind == "plain":
        return lines
    spacing = rng.uniform(14, 32)
    width = rng.uniform(1.0, 2.2)
    coordinates = np.arange(side, dtype=np.float32) + 0.5
    phase = rng.uniform(0, spacing)
    distance = np.abs((coordinates - phase + spacing / 2) % spacing - spacing / 2)
    profile = np.clip(width / 2 + 0.5 - distance, 0.0, 1.0)
    lines = np.maximum(lines, profile[:, None])
    if kind == "squared":
        lines = np.maximum(lines, profile[None, :])
    elif rng.random() < 0.4:  # the margin line of a ruled page
        x = rng.uniform(0.05, 0.2) * side
        lines = np.maximum(lines, np.clip(width / 2 + 0.5 - np.abs(coordinates - x), 0, 1)[None, :])
    return lines


def render_paper_photo(strokes: Strokes, rng: np.random.Generator, background: str, lines: str) -> np.ndarray:
    """A phone photo of the drawing on paper, RGB PHOTO_SIDE px, the page filling the frame.

    Paper: off-white to grey or cream, with grain and blotches; printed lines (``lines``: 'plain', 'ruled',
    'squared') in light blue or grey. Ink: pencil (grey, grainy), ballpoint (dark blue or black) or felt pen (thick,
    black), the drawing 25-65% of the photo's side and whole inside it. Light: a gradient across the page (down to
    55-90%), a soft-edged shadow over a part of it (60-85%) half the time. Camera: a mild perspective (corners moved
    up to 6% of the side), blur, sensor noise, JPEG quality 35-85.
    """
    big = PHOTO_SIDE + PHOTO_SIDE // 4  # drawn larger, warped, then the centre kept: the page fills the frame
    tint = np.array([rng.uniform(-4, 8), rng.uniform(-3, 5), rng.uniform(-14, 2)], dtype=np.float32)
    paper = np.float32(rng.uniform(175, 245)) + tint
    grain = 3.0 * rng.standard_normal((big, big), dtype=np.float32) + 4.0 * _smooth_noise(rng, big, 40)
    page = paper[None, None, :] + grain[:, :, None]
    line_coverage = _paper_lines(big, rng, lines)[:, :, None] * np.float32(rng.uniform(0.25, 0.55))
    line_colour = np.array([110, 160, 220] if rng.random() < 0.7 else [140, 140, 140], dtype=np.float32)
    page = page * (1 - line_coverage) + line_colour * line_coverage
    ink_kind = rng.choice(["pencil", "ballpoint", "felt"], p=[0.3, 0.45, 0.25])
    inner = round(PHOTO_SIDE * 0.8)  # the drawing stays whole inside the photo whatever the perspective does
    size_fraction = rng.uniform(0.25, 0.65) * PHOTO_SIDE / inner
    drawing_px = size_fraction * inner
    pen_fraction = {"pencil": (0.006, 0.015), "ballpoint": (0.006, 0.02), "felt": (0.02, 0.05)}[str(ink_kind)]
    pen_px = max(1.2, _log_uniform(rng, *pen_fraction) * drawing_px)
    position = (rng.uniform(), rng.uniform())
    shift_in = (big - inner) / 2.0
    placed = [s + shift_in for s in place_strokes(strokes, inner, size_fraction, pen_px, position)]
    coverage = stroke_coverage(placed, pen_px, big)
    if ink_kind == "pencil":
        ink = np.full(3, rng.uniform(70, 120), dtype=np.float32)
        coverage = coverage * np.clip(0.75 + 0.25 * rng.standard_normal(coverage.shape, dtype=np.float32), 0.3, 1.0)
    elif ink_kind == "ballpoint":
        ink = np.array([25, 35, 110] if rng.random() < 0.5 else [30, 30, 30], dtype=np.float32)
    else:
        ink = np.full(3, rng.uniform(10, 40), dtype=np.float32)
    page = page * (1 - coverage[:, :, None]) + ink * coverage[:, :, None]
    across = (np.arange(big, dtype=np.float32) + 0.5) / big
    xs, ys = across[None, :], across[:, None]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (
        np.float32(np.cos(angle)) * (xs - 0.5) + np.float32(np.sin(angle)) * (ys - 0.5) + 0.5
    )  # 0 .. 1 across the page, roughly
    light = 1.0 - np.float32(rng.uniform(0.1, 0.45)) * np.clip(ramp, 0, 1)
    if rng.random() < 0.5:
        edge_angle = rng.uniform(0, 2 * math.pi)
        signed = np.float32(np.cos(edge_angle)) * (xs - 0.5) + np.float32(np.sin(edge_angle)) * (ys - 0.5)
        signed -= np.float32(rng.uniform(-0.3, 0.3))
        softness = np.float32(rng.uniform(0.01, 0.06))
        shade = np.float32(rng.uniform(0.15, 0.4))
        light = light * (1.0 - shade / (1.0 + np.exp(-np.clip(signed / softness, -30, 30))))
    page = np.clip(page * light[:, :, None], 0, 255).astype(np.uint8)
    image = Image.fromarray(page, mode="RGB")
    shift = 0.06 * big
    corners = [(0, 0), (0, big), (big, big), (big, 0)]  # QUAD's order: upper left, lower left, lower right, upper right
    moved = [(x + rng.uniform(-shift, shift), y + rng.uniform(-shift, shift)) for x, y in corners]
    image = image.transform((big, big), Image.Transform.QUAD, [c for point in moved for c in point], Image.BILINEAR)
    margin = (big - PHOTO_SIDE) // 2
    image = image.crop((margin, margin, margin + PHOTO_SIDE, margin + PHOTO_SIDE))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    noisy = np.asarray(image, dtype=np.float32) + np.float32(rng.uniform(1.0, 4.0)) * rng.standard_normal(
        (PHOTO_SIDE, PHOTO_SIDE, 1), dtype=np.float32
    )
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=int(rng.integers(35, 86)))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _conditions() -> dict[str, UploadCondition]:
    both = BACKGROUNDS
    found: list[UploadCondition] = []
    for side in BITMAP_SIDES:
        for anti_aliased in (True, False):
            found.append(
                UploadCondition(
                    f"bitmap-{side}-{'aa' if anti_aliased else 'binary'}",
                    f"stored as a {side} px bitmap, "
                    + ("anti-aliased" if anti_aliased else "two levels, no anti-aliasing"),
                    both,
                    lambda s, r, b, side=side, aa=anti_aliased: render_bitmap(s, r, b, side, aa),
                )
            )
    for name, resample, words in (
        ("area", Image.Resampling.BOX, "an area average"),
        ("bicubic", Image.Resampling.BICUBIC, "a bicubic filter"),
    ):
        found.append(
            UploadCondition(
                f"thumbnail-{name}",
                f"thin pen on a 256-512 px canvas, stored at 28-96 px by {words}",
                both,
                lambda s, r, b, resample=resample: render_thumbnail(s, r, b, resample),
            )
        )
    for name, pens, words in (
        ("hairline", (0.002, 0.005), "a one-pixel hairline"),
        ("medium", (0.01, 0.03), "a medium pen (1-3% of the drawing)"),
        ("marker", (0.05, 0.1), "a marker (5-10% of the drawing)"),
    ):
        found.append(
            UploadCondition(
                f"pen-{name}",
                f"{PEN_CANVAS} px upload, {words}",
                both,
                lambda s, r, b, pens=pens: render_pen(s, r, b, pens),
            )
        )
    found.append(UploadCondition("dark-app", "light ink on a dark app background, RGB", ("black",), render_dark_app))
    found.append(UploadCondition("rotated", "turned to any angle, medium pen", both, render_rotated))
    found.append(
        UploadCondition(
            "photo-plain",
            "phone photo of the drawing on plain paper: paper grain, uneven light, shadow, perspective, blur, JPEG",
            ("paper",),
            lambda s, r, b: render_paper_photo(s, r, b, "plain"),
        )
    )
    found.append(
        UploadCondition(
            "photo-lined",
            "as photo-plain, on ruled or squared paper (half each)",
            ("paper",),
            lambda s, r, b: render_paper_photo(s, r, b, "ruled" if r.random() < 0.5 else "squared"),
        )
    )
    return {condition.name: condition for condition in found}


CONDITIONS: dict[str, UploadCondition] = _conditions()


def condition_names(spec: str) -> list[str]:
    """A comma-separated list of condition names (or prefixes such as ``bitmap``, or ``all``) -> the names, in
    :data:`CONDITIONS` order; raises ValueError naming an unknown entry and the valid ones."""
    wanted = [part.strip() for part in spec.split(",") if part.strip()]
    if not wanted:
        raise ValueError(f"no condition given; valid: all, or any of {', '.join(CONDITIONS)}")
    names: list[str] = []
    for part in wanted:
        matches = [n for n in CONDITIONS if part == "all" or n == part or n.startswith(part + "-")]
        if not matches:
            raise ValueError(f"unknown upload condition {part!r}; valid: all, or any of {', '.join(CONDITIONS)}")
        names += [n for n in matches if n not in names]
    return [n for n in CONDITIONS if n in names]
