"""One input normalisation for shape images, shared by the CLI, the app and training.

Whatever arrives (a PIL image of any mode, or a numpy array of any common layout and depth, light-on-dark or
dark-on-light, coloured ink, transparent background) becomes dark ink on a white background, cropped to the ink
with a margin, padded to a square and resized. Training applies the same function to generated images, so the
network sees the same framing in training and in serving: a small shape in a corner of a big canvas and the same
shape filling a 64x64 image come out alike.

How ink is found: the background colour is the median of the border pixels; each pixel's ink strength is its
largest per-channel difference from that colour (so a red or blue stroke on white counts as fully as black, and
white strokes on black are ink too). Strengths are stretched so that the strongest ink becomes black, but never by
more than 1 / MIN_CONTRAST, so JPEG noise or a faint gradient on an empty canvas stays white; a small stored bitmap
(under UNEVEN_MIN_SIDE a side) is stretched from as little as STORED_MIN_CONTRAST, as a thin pen reduced from a large
canvas leaves only a faint grey trace there, unless its border is noisy.

A photo of paper (a border that is neither one colour nor two, :func:`has_uneven_background`) has no one background
colour: grain, a light gradient, a shadow with its edge, printed rules. Its paper level is measured locally instead, by
a closing wider than a stroke on a reduced copy (strokes vanish from it, the light as it falls stays, a shadow's edge
included); the ink's polarity is judged against that local paper, not the border (which light falling off towards the
edges darkens). Ink is what stands clearly out of the paper's own noise, with its fainter pixels kept where they
continue it (grainy pencil stays one line), and specks apart from the drawing are dropped so that they do not stretch
the crop.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageChops

from explainer.inputs.imagecheck import NothingToClassify

__all__ = [
    "NothingToClassify",
    "has_uneven_background",
    "normalize_shape_image",
    "normalize_shape_image_framed",
    "to_grey_ink_on_white",
]

MIN_CONTRAST = 0.3  # differences from the background below this fraction of full range are never stretched to black
INK_LEVEL = 128  # after stretching, pixels darker than this are ink (i.e. >= 0.15 of full range from the background)
MIN_INK_PIXELS = 4  # fewer connected ink pixels than this (or MIN_INK_FRACTION of the image) is nothing to classify
MIN_INK_FRACTION = 2e-5
MAX_WORKING_SIDE = 1024  # larger inputs are reduced first (area average) so that normalising stays fast
UNEVEN_BORDER_LEVELS = 6.0  # border pixels this far (of 255) from the border's one or two colours are uneven ...
UNEVEN_BORDER_SHARE = 0.1  # ... and a border with more than this share of such pixels is uneven (a photo)
UNEVEN_MIN_SIDE = 128  # smaller images are stored drawings (anti-aliased ink may touch their border), not photos
BACKGROUND_SIDE = 128  # an uneven background is estimated on a copy reduced to about this many pixels a side ...
PAPER_CLOSING = 7  # ... by a closing this many of its pixels wide (1/18 of the side: wider than a marker's stroke)
POLARITY_PERCENTILE = 99.5  # the ink is the side (darker or lighter than the paper) whose marks reach further here
PAPER_INK_PERCENTILE = 90.0  # the ink's typical strength: this percentile of the pixels standing out of the noise
PAPER_NOISE_FLOOR = 0.3  # on an uneven background, strengths below this share of the typical ink are paper ...
PAPER_MIN_CONTRAST = 4.0  # ... and ink must stand this many times the paper's noise above it to be stretched to black
PAPER_MIN_LEVEL = 24.0  # ... and this many levels (of 255)
STORED_MIN_CONTRAST = 0.08  # a small stored bitmap's faint ink (a thin pen reduced from a large canvas) is stretched
STORED_NOISE_FACTOR = 12.0  # ... unless it is not this many times stronger than the border's typical difference
PAPER_FAINT_FLOOR = 0.15  # fainter pixels down to this share are ink where they continue ink ...
PAPER_FAINT_REACH = 4  # ... up to this many pixels on (hysteresis)
SPECK_SHARE = 0.03  # groups of ink holding less than this share of all the ink, apart from the rest, are specks ...
SPECK_CELLS = 48  # ... grouped on cells of 1/48 of the longer side, up to two cells apart

_MIN_CONTRAST_LEVEL = round(MIN_CONTRAST * 255)
_SMALL_IMAGE_PIXELS = 256 * 256
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _float_from_integers(values: np.ndarray) -> np.ndarray:
    """Integers to [0, 1]: 8-bit and 16-bit ranges are recognised from the largest value, as PIL stores 16-bit PNGs
    as mode "I" (int32) without saying how many bits were used (a 16-bit image whose values all stay <= 255 would be
    almost black anyway)."""
    highest = int(values.max()) if values.size else 0
    full_scale = 255 if highest <= 255 else 65535 if highest <= 65535 else highest
    return np.clip(values.astype(np.float32) / full_scale, 0.0, 1.0)


def _float_from_floats(values: np.ndarray) -> np.ndarray:
    """Floats to [0, 1]: values up to 1 are taken as [0, 1], up to 255 as 8-bit, else as 16-bit levels."""
    values = values.astype(np.float32, copy=False)
    if not np.all(np.isfinite(values)):
        raise ValueError("the image contains NaN or infinite values; pass finite pixel values")
    highest = float(values.max()) if values.size else 0.0
    full_scale = 1.0 if highest <= 1.0 else 255.0 if highest <= 255.0 else 65535.0 if highest <= 65535.0 else highest
    return np.clip(values / full_scale, 0.0, 1.0)


def _flatten_alpha_pil(image: Image.Image) -> Image.Image:
    """Composite an image with transparency onto white, as RGB."""
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, (0, 0), rgba)  # the alpha channel as the paste mask: colour * alpha + white * (1 - alpha)
    return white


def _from_array(values: np.ndarray) -> Image.Image | np.ndarray:
    """8-bit (or bool) arrays become PIL images (L, LA, RGB, RGBA); deeper or float ones float32 (H, W, C) in [0, 1]
    with alpha flattened onto white."""
    shape = values.shape
    if values.ndim == 3 and shape[2] == 1:
        values = values[:, :, 0]
    if not (values.ndim == 2 or (values.ndim == 3 and values.shape[2] in (2, 3, 4))):
        raise ValueError(
            f"unsupported image array shape {shape}; use (H, W), (H, W, 1), (H, W, 2) grey+alpha, (H, W, 3) RGB "
            "or (H, W, 4) RGBA"
        )
    if shape[0] == 0 or shape[1] == 0:
        raise NothingToClassify(f"the image is empty (shape {shape}): there is nothing to classify")
    if values.dtype == np.bool_:
        values = values.astype(np.uint8) * 255
    if values.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(values))  # mode L, LA, RGB or RGBA from the shape
    if np.issubdtype(values.dtype, np.integer):
        unit = _float_from_integers(values)
    elif np.issubdtype(values.dtype, np.floating):
        unit = _float_from_floats(values)
    else:
        raise ValueError(f"unsupported pixel dtype {values.dtype}; use bool, an integer type or a float type")
    if unit.ndim == 2:
        unit = unit[:, :, None]
    if unit.shape[2] in (2, 4):  # alpha onto white
        alpha = unit[:, :, -1:]
        unit = unit[:, :, :-1] * alpha + (1.0 - alpha)
    return _reduce_large(unit)


def _as_8bit_pil_or_float(image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
    """An 8-bit PIL image in mode L or RGB (alpha flattened onto white), or, for deeper or float pixels, a float32
    (H, W, C) array in [0, 1] with C 1 or 3. Inputs larger than MAX_WORKING_SIDE are area-reduced."""
    if isinstance(image, np.ndarray):
        converted = _from_array(image)
        if isinstance(converted, np.ndarray):
            return converted
        image = converted
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected a PIL.Image.Image or a numpy array, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise NothingToClassify(f"the image is empty ({image.width}x{image.height}): there is nothing to classify")
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        unit = _float_from_floats(np.asarray(image)) if mode == "F" else _float_from_integers(np.asarray(image))
        return _reduce_large(unit[:, :, None])
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        image = _flatten_alpha_pil(image)
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "RGB"):
        image = image.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, ...
    factor = math.ceil(max(image.size) / MAX_WORKING_SIDE)
    return image.reduce(factor) if factor > 1 else image  # area average, in C


def _reduce_large(channels: np.ndarray) -> np.ndarray:
    """Area-average by an integer factor so that the longer side is at most MAX_WORKING_SIDE."""
    height, width = channels.shape[:2]
    factor = math.ceil(max(height, width) / MAX_WORKING_SIDE)
    if factor <= 1:
        return channels
    height, width = height // factor * factor, width // factor * factor
    blocks = channels[:height, :width].reshape(height // factor, factor, width // factor, factor, -1)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _border_background(values: np.ndarray) -> np.ndarray:
    """Median colour of the border pixels: the background, whatever the polarity."""
    border = np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]]).reshape(-1, values.shape[2])
    return np.median(border, axis=0)


def _stored_contrast_level(strength: np.ndarray) -> int:
    """The least contrast a small stored bitmap is stretched from (0..255 levels): STORED_MIN_CONTRAST, or
    STORED_NOISE_FACTOR times the typical strength of its border where the border is not clean (noise or JPEG)."""
    border = np.concatenate([strength[0], strength[-1], strength[:, 0], strength[:, -1]])
    return max(round(STORED_MIN_CONTRAST * 255), math.ceil(STORED_NOISE_FACTOR * float(np.median(border))))


def _min_contrast_level(strength: np.ndarray) -> int:
    """Differences from the background below this many levels are never stretched to black: MIN_CONTRAST, or for an
    image under UNEVEN_MIN_SIDE a side (a stored bitmap, where a thin pen reduced from a large canvas leaves a faint
    trace and no camera adds noise) :func:`_stored_contrast_level`, whichever is lower."""
    if min(strength.shape) >= UNEVEN_MIN_SIDE:
        return _MIN_CONTRAST_LEVEL
    return min(_MIN_CONTRAST_LEVEL, _stored_contrast_level(strength))


def _grey_from_8bit(image: Image.Image) -> np.ndarray:
    """Per-channel distance from the background, the largest channel, then the stretch, all by lookup tables:
    numpy for small images (no per-call setup), PIL for large ones (no strided channel copies)."""
    width, height = image.size
    channel_count = len(image.getbands())
    if width * height <= _SMALL_IMAGE_PIXELS or min(width, height) < UNEVEN_MIN_SIDE:
        values = np.asarray(image).reshape(height, width, channel_count)
        background = _border_background(values)
        strength = _distance_array(round(background[0]))[values[:, :, 0]]
        for channel in range(1, channel_count):
            np.maximum(strength, _distance_array(round(background[channel]))[values[:, :, channel]], out=strength)
        return _stretch_array(max(int(strength.max()), _min_contrast_level(strength)))[strength]
    strips = [image.crop(box) for box in ((0, 0, width, 1), (0, height - 1, width, height))]
    strips += [image.crop(box) for box in ((0, 0, 1, height), (width - 1, 0, width, height))]
    border = np.concatenate([np.asarray(strip).reshape(-1, channel_count) for strip in strips])
    background = np.median(border, axis=0)
    table = [entry for level in background.tolist() for entry in _distance_table(round(level))]
    distances = image.point(table).split()  # one lookup for all channels, then the largest channel
    strength = distances[0]
    for distance in distances[1:]:
        strength = ImageChops.lighter(strength, distance)
    return np.asarray(strength.point(_stretch_table(max(strength.getextrema()[1], _MIN_CONTRAST_LEVEL))))


@functools.lru_cache(maxsize=256)
def _distance_array(background_level: int) -> np.ndarray:
    return np.abs(np.arange(256) - background_level).astype(np.uint8)


@functools.lru_cache(maxsize=256)
def _stretch_array(contrast_level: int) -> np.ndarray:
    return np.clip(np.round(255 - np.arange(256) * (255 / contrast_level)), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=256)
def _distance_table(background_level: int) -> list[int]:
    return _distance_array(background_level).tolist()


@functools.lru_cache(maxsize=256)
def _stretch_table(contrast_level: int) -> list[int]:
    return _stretch_array(contrast_level).tolist()


def _grey_from_float(channels: np.ndarray) -> np.ndarray:
    background = _border_background(channels)
    strength = np.abs(channels[:, :, 0] - background[0])
    for channel in range(1, channels.shape[2]):
        np.maximum(strength, np.abs(channels[:, :, channel] - background[channel]), out=strength)
    contrast = max(float(strength.max()), _min_contrast_level(strength * np.float32(255.0)) / 255.0)
    return np.clip(255.0 - strength * (255.0 / contrast) + 0.5, 0, 255).astype(np.uint8)


def _border_levels(converted: Image.Image | np.ndarray) -> np.ndarray:
    """The border pixels, (n, C) float32 in 0..255 levels."""
    if isinstance(converted, np.ndarray):
        values = converted * np.float32(255.0)
        return np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]]).reshape(-1, values.shape[2])
    width, height = converted.size
    boxes = ((0, 0, width, 1), (0, height - 1, width, height), (0, 0, 1, height), (width - 1, 0, width, height))
    strips = [np.asarray(converted.crop(box)).reshape(-1, len(converted.getbands())) for box in boxes]
    return np.concatenate(strips).astype(np.float32)


def has_uneven_background(converted: Image.Image | np.ndarray) -> bool:
    """Whether the border is neither one colour nor two: over UNEVEN_BORDER_SHARE of its pixels are more than
    UNEVEN_BORDER_LEVELS (of 255) from both its median colour and the median of the pixels off that colour. Paper
    grain, a light gradient or a shadow across a photo make it uneven; a drawing made on a screen, a generated image
    or a clean scan is even, even where a shape touches the border (a second colour), and keeps the plain path.
    Images under UNEVEN_MIN_SIDE a side are never photos here: a small bitmap keeps the plain path whatever its
    border."""
    height, width = converted.shape[:2] if isinstance(converted, np.ndarray) else converted.size[::-1]
    if min(height, width) < UNEVEN_MIN_SIDE:
        return False
    border = _border_levels(converted)
    off = np.abs(border - np.median(border, axis=0)).max(axis=1) > UNEVEN_BORDER_LEVELS
    if off.any():
        rest = border[off]
        off[off] = np.abs(rest - np.median(rest, axis=0)).max(axis=1) > UNEVEN_BORDER_LEVELS
    return bool(off.mean() > UNEVEN_BORDER_SHARE)


def _running(values: np.ndarray, width: int, axis: int, pick: "np.ufunc") -> np.ndarray:
    """Running maximum or minimum over ``width`` (odd) neighbours along one axis, edges repeated."""
    reach = width // 2
    padding = [(0, 0)] * values.ndim
    padding[axis] = (reach, reach)
    padded = np.pad(values, padding, mode="edge")
    length = values.shape[axis]
    result = np.take(padded, np.arange(length), axis=axis)
    for offset in range(1, width):
        pick(result, np.take(padded, np.arange(offset, offset + length), axis=axis), out=result)
    return result


def _closing(values: np.ndarray, width: int, dark_ink: bool) -> np.ndarray:
    """Grey closing (for dark ink: a running maximum, then minimum, over width x width) of an (H, W, C) array, or the
    opening for light ink: marks narrower than ``width`` are replaced by the paper around them, while any wider
    structure (a gradient, a shadow and its edge, however sharp) is kept as it is."""
    first, second = (np.maximum, np.minimum) if dark_ink else (np.minimum, np.maximum)
    spread = _running(_running(values, width, 0, first), width, 1, first)
    return _running(_running(spread, width, 0, second), width, 1, second)


def _paper_background(image: Image.Image) -> tuple[Image.Image, bool]:
    """The paper's level under uneven light (an image of the same size and mode) and whether the ink is darker.

    Measured on a copy area-reduced to about BACKGROUND_SIDE pixels a side (which also averages grain and noise
    away): a closing of PAPER_CLOSING reduced pixels removes the strokes and keeps the light as it falls, then the
    result is enlarged smoothly. The polarity is the one whose marks stand out more from that background (a high
    percentile of luminance minus its closing, against its opening minus luminance): a local comparison, which a
    shadow or a gradient across the border does not mislead."""
    width, height = image.size
    factor = max(1.0, max(width, height) / BACKGROUND_SIDE)
    small_size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = np.asarray(image.resize(small_size, Image.Resampling.BOX), dtype=np.float32)
    small = small.reshape(small_size[1], small_size[0], -1)
    luminance = small.mean(axis=2, keepdims=True)
    darker = np.percentile(_closing(luminance, PAPER_CLOSING, True) - luminance, POLARITY_PERCENTILE)
    lighter = np.percentile(luminance - _closing(luminance, PAPER_CLOSING, False), POLARITY_PERCENTILE)
    dark_ink = bool(darker >= lighter)
    closed = np.clip(_closing(small, PAPER_CLOSING, dark_ink) + 0.5, 0, 255).astype(np.uint8)
    closed_image = Image.fromarray(closed[:, :, 0] if closed.shape[2] == 1 else closed)
    return closed_image.resize((width, height), Image.Resampling.BILINEAR), dark_ink


def _histogram_level(histogram: np.ndarray, share: float) -> float:
    """The level below which ``share`` of a 256-bin histogram's count lies."""
    cumulative = np.cumsum(histogram)
    return float(np.searchsorted(cumulative, share * cumulative[-1]))


def _grey_from_uneven(converted: Image.Image | np.ndarray) -> np.ndarray:
    """Ink on paper under uneven light (a photo), on 8-bit levels.

    The ink's strength is its distance from the local paper level (:func:`_paper_background`), averaged over the
    channels (a coloured printed rule differs from the paper in one or two channels, pencil and pen in all three). The
    paper's own strengths (its median, subtracted, and their spread, its noise) set what is ink: pixels above
    PAPER_NOISE_FLOOR of the ink's typical strength (PAPER_INK_PERCENTILE of the pixels standing out of the noise) are
    ink, and fainter ones down to PAPER_FAINT_FLOOR are kept where they continue such ink (hysteresis, up to
    PAPER_FAINT_REACH pixels on: grainy pencil stays one line, while grain, JPEG and printed rules go white); the
    typical strength is stretched to black. Last, specks apart from the drawing are removed (:func:`_drop_specks`)."""
    if isinstance(converted, Image.Image):
        image = converted
    else:
        levels = np.clip(converted * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
        image = Image.fromarray(levels[:, :, 0] if levels.shape[2] == 1 else levels)
    background, dark_ink = _paper_background(image)
    difference = ImageChops.subtract(background, image) if dark_ink else ImageChops.subtract(image, background)
    bands = difference.split()
    total = np.asarray(bands[0], dtype=np.uint16)
    for band in bands[1:]:
        total = total + np.asarray(band)
    strength = Image.fromarray(((total + len(bands) // 2) // len(bands)).astype(np.uint8))
    histogram = np.asarray(strength.histogram())
    paper = _histogram_level(histogram, 0.5)  # most pixels are paper: their median is its level of strength ...
    noise = _histogram_level(histogram, 0.84) - paper + 1.0  # ... and their spread its noise
    histogram = np.concatenate([histogram[int(paper) :], np.zeros(int(paper), dtype=histogram.dtype)])
    strength = ImageChops.subtract(strength, Image.new("L", strength.size, int(paper)))
    standing_out = histogram.copy()
    standing_out[: int(3.0 * noise) + 1] = 0
    typical = _histogram_level(standing_out, PAPER_INK_PERCENTILE / 100) if standing_out.any() else 0.0
    strongest = max(typical, PAPER_MIN_CONTRAST * noise, PAPER_MIN_LEVEL)
    floor = max(PAPER_NOISE_FLOOR * strongest, 3.0 * noise)
    faint = max(PAPER_FAINT_FLOOR * strongest, 2.0 * noise)
    levels = np.arange(256, dtype=np.float32)
    table = 255.0 - np.clip((levels - faint) * (255.0 / (strongest - faint)), 0.0, 255.0) + 0.5
    grey = np.asarray(strength.point(table.astype(np.uint8).tolist())).copy()
    strengths = np.asarray(strength)
    ink, candidates = strengths >= floor, strengths >= faint
    for _ in range(PAPER_FAINT_REACH):
        ink = _grown(ink) & candidates
    grey[~ink] = 255
    return _drop_specks(grey)


def _grown(mask: np.ndarray) -> np.ndarray:
    """A boolean mask grown by one pixel in the 8-neighbourhood."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    across = grown.copy()
    grown[:, 1:] |= across[:, :-1]
    grown[:, :-1] |= across[:, 1:]
    return grown


def _drop_specks(grey: np.ndarray) -> np.ndarray:
    """White out groups of ink that hold under SPECK_SHARE of all the ink: on a grid of cells of 1 / SPECK_CELLS of
    the longer side, ink cells up to two cells apart are one group, so the strokes of a drawing (even broken ones) stay
    together while a blotch or a speck of paper far from them, which would stretch the crop, goes."""
    ink = grey < INK_LEVEL
    height, width = ink.shape
    cell = max(2, round(max(height, width) / SPECK_CELLS))
    rows, columns = -(-height // cell), -(-width // cell)
    padded = np.zeros((rows * cell, columns * cell), dtype=np.int32)
    padded[:height, :width] = ink
    counts = padded.reshape(rows, cell, columns, cell).sum(axis=(1, 3))
    total = int(counts.sum())
    occupied = {(int(y), int(x)) for y, x in zip(*np.nonzero(counts), strict=True)}
    groups: list[list[tuple[int, int]]] = []
    seen: set[tuple[int, int]] = set()
    for start in occupied:
        if start in seen:
            continue
        seen.add(start)
        group, stack = [start], [start]
        while stack:
            y, x = stack.pop()
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    neighbour = (y + dy, x + dx)
                    if neighbour in occupied and neighbour not in seen:
                        seen.add(neighbour)
                        group.append(neighbour)
                        stack.append(neighbour)
        groups.append(group)
    specks = [group for group in groups if sum(int(counts[y, x]) for y, x in group) < SPECK_SHARE * total]
    if not specks:
        return grey
    grey = grey.copy()
    for group in specks:
        for y, x in group:
            grey[y * cell : (y + 1) * cell, x * cell : (x + 1) * cell] = 255
    return grey


def to_grey_ink_on_white(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 (H, W) grey image with dark ink on a white background, from any PIL image or numpy image array.

    Transparent areas count as white; the polarity comes from the border (light-on-dark input is inverted); coloured
    ink counts by its distance from the background colour. Inputs larger than MAX_WORKING_SIDE are area-reduced. An
    uneven background (:func:`has_uneven_background`: a photo of paper) is measured locally instead of from the
    border (:func:`_grey_from_uneven`), so light gradients, shadows and their edges, grain and faint printed lines do
    not count as ink; where nothing stands out from the paper that way (noise, a busy photo), the plain path reads it.
    """
    converted = _as_8bit_pil_or_float(image)
    if has_uneven_background(converted):
        grey = _grey_from_uneven(converted)
        ink = _connected_ink(grey)
        if int(ink.sum()) >= max(MIN_INK_PIXELS, math.ceil(MIN_INK_FRACTION * ink.size)):
            return grey
        # nothing stands out from the paper's own noise (noise images, busy photos): read it the plain way, so the
        # networks see it and the explanations can question it, as before
    if isinstance(converted, Image.Image):
        return _grey_from_8bit(converted)
    return _grey_from_float(converted)


def _connected_ink(grey: np.ndarray) -> np.ndarray:
    """Ink pixels with at least one ink neighbour (8-neighbourhood): isolated specks of noise are dropped."""
    ink = grey < INK_LEVEL
    height, width = ink.shape
    padded = np.zeros((height + 2, width + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = ink
    rows = padded[:-2] + padded[1:-1] + padded[2:]  # 3x3 box sum, separably
    box = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
    return ink & (box >= 2)


def _check_has_ink(ink: np.ndarray) -> None:
    count = int(ink.sum())
    needed = max(MIN_INK_PIXELS, math.ceil(MIN_INK_FRACTION * ink.size))
    if count < needed:
        raise NothingToClassify(
            f"nothing to classify: the image is blank or uniform ({count} ink pixels, at least {needed} needed); "
            "draw a shape first"
        )


def normalize_shape_image(
    image: Image.Image | np.ndarray, size: int = 64, crop_to_content: bool = True, margin: float = 0.1
) -> np.ndarray:
    """uint8 (size, size) black ink on white, ready for the network; raises NothingToClassify without ink.

    crop_to_content: crop to the ink's bounding box plus `margin` (fraction of its longer side, on every side),
    centred on a white square, so every shape fills about 1 / (1 + 2 * margin) of the frame wherever and however
    large it was drawn. Without it the whole image is padded to a square and resized. Reduction uses an area filter,
    enlargement bilinear interpolation. If the result has no black (thin strokes on a big canvas fade when reduced),
    it is stretched so that its darkest pixel is black.
    """
    return normalize_shape_image_framed(image, size, crop_to_content, margin)[0]


def normalize_shape_image_framed(
    image: Image.Image | np.ndarray, size: int = 64, crop_to_content: bool = True, margin: float = 0.1
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """:func:`normalize_shape_image` and the square it took from the image: (left, top, side) in the image's own
    pixels (it may reach past the image's edges, where the page counts as white)."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"margin must be a fraction between 0 and 1 of the shape's size, got {margin!r}")
    grey = to_grey_ink_on_white(image)
    ink = _connected_ink(grey)
    _check_has_ink(ink)
    height, width = grey.shape
    if crop_to_content:
        rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
        side = max(bottom - top, right - left) * (1 + 2 * margin)
        centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    else:
        side = float(max(height, width))
        centre_y, centre_x = height / 2, width / 2
    left_edge, top_edge = centre_x - side / 2, centre_y - side / 2
    # copy the square (plus one pixel for the interpolation) onto white: it may reach beyond the image
    x0, y0 = math.floor(left_edge) - 1, math.floor(top_edge) - 1
    x1, y1 = math.ceil(left_edge + side) + 1, math.ceil(top_edge + side) + 1
    region = np.full((y1 - y0, x1 - x0), 255, dtype=np.uint8)
    source_x0, source_y0, source_x1, source_y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    region[source_y0 - y0 : source_y1 - y0, source_x0 - x0 : source_x1 - x0] = grey[
        source_y0:source_y1, source_x0:source_x1
    ]
    box = (left_edge - x0, top_edge - y0, left_edge - x0 + side, top_edge - y0 + side)
    resample = Image.Resampling.BOX if side > size else Image.Resampling.BILINEAR
    result = np.asarray(Image.fromarray(region).resize((size, size), resample, box=box))
    darkest = int(result.min())
    if darkest > 0:
        if darkest >= 255:
            raise NothingToClassify("nothing to classify: no ink is left after resizing; draw a larger shape")
        result = (255 - (255 - result.astype(np.float32)) * (255.0 / (255 - darkest)) + 0.5).astype(np.uint8)
    original_height, original_width = _image_size(image)
    factor = max(1, math.ceil(max(original_height, original_width) / MAX_WORKING_SIDE))  # as _reduce_large
    square = (float(left_edge * factor), float(top_edge * factor), float(side * factor))
    return np.ascontiguousarray(result, dtype=np.uint8), square


def _image_size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(height, width) of a PIL image or an image array ((H, W) or (H, W, C), as :func:`_from_array` reads it)."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    return int(image.shape[0]), int(image.shape[1])
