"""One check for every user image: the app (uploads, examples, the sketchpad), the CLI and the evaluation scripts.

:func:`check_image` turns a file, bytes or a file object into a decoded image whose memory is bounded whatever
arrives, or raises :class:`ImageError` with a sentence a person can act on (no library names, no file paths: the
caller knows which file it passed). In order:

1. readable: the header must name a known image format (only the header is read at this point);
2. not a bomb: the pixel count the header declares is at most :data:`MAX_PIXELS`, checked *before* decoding, so a
   415-byte PNG that declares 40000x8000 pixels costs nothing;
3. at least :data:`MIN_SIDE` pixels on each side, and no longer than :data:`MAX_ASPECT` times its width (a 60000x1
   strip would otherwise grow without bound when the shorter side is scaled up to the network's input);
4. decoded (JPEGs at a reduced scale when they are large), then reduced at once by an integer factor, a band of
   rows at a time, so that the longer side is at most :data:`WORKING_SIDE`: whatever runs next (mode conversions,
   alpha compositing, resizes) works on at most 2048x2048 pixels, and the peak is the decoded image plus a few MB;
5. not blank: an image whose colours span less than :data:`FLAT_RANGE` of 255 (after transparency is laid on
   white) is a single flat colour with nothing in it to classify.

The first frame of an animation is used and the EXIF orientation applied; the mode is kept (RGBA, 16-bit, CMYK...),
except that a large palette, 1-bit or 16-bit image is expanded before it is reduced (averaging palette indices would
be wrong).
"""

from __future__ import annotations

import io
import math
import re
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # declared width x height above this is refused before decoding (at most 160 MB decoded)
MIN_SIDE = 8  # smaller images carry no shape or bird to classify
MAX_ASPECT = 20  # longer side / shorter side
WORKING_SIDE = 2048  # decoded images are area-reduced at once so that the longer side is at most this
FLAT_RANGE = 3  # colours spanning less than this (of 255) on a 256 px summary: a single flat colour
_SUMMARY_SIDE = 256
_BAND_BYTES = 8 << 20  # working memory of one band when reducing a large decoded image
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageError(ValueError):
    """An input that is not a usable image; the message says why in plain words, without naming a file."""


class NothingToClassify(ValueError):
    """A usable image that holds nothing to classify: blank, uniform, or its only marks a few specks of noise (a
    task's preprocessing raises it; the shapes normalisation does)."""


ImageSource = str | Path | bytes | BinaryIO


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels" if pixels >= 100_000 else f"{pixels:,} pixels"


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """The checks that need only the declared size: pixel count, smallest side, aspect ratio."""
    if width < 1 or height < 1:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"the image is {width}x{height} pixels ({_megapixels(width * height)}); at most "
            f"{_megapixels(max_pixels)} are accepted, so make it smaller first"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"the image is only {width}x{height} pixels; it needs at least {MIN_SIDE} pixels on each side")
    if max(width, height) > MAX_ASPECT * min(width, height):
        ratio = max(width, height) / min(width, height)
        raise ImageError(
            f"the image is {width}x{height} pixels, a strip {ratio:.0f} times longer than it is wide; at most "
            f"{MAX_ASPECT} to 1 is accepted, so crop it to the subject first"
        )


def _expand_for_reduction(image: Image.Image) -> Image.Image:
    """Modes whose pixels cannot be averaged (palette indices, 1-bit, 16-bit) become ones that can."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        return image.convert("RGBA")
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I;16"):
        return image.convert("I")
    return image


def reduce_in_bands(image: Image.Image, factor: int, band_bytes: int = _BAND_BYTES) -> Image.Image:
    """``image.reduce(factor)`` (area average) a band of rows at a time, palette, 1-bit and 16-bit bands expanded
    first. Pillow reduces RGBA and LA through a premultiplied copy of the whole image, which doubles the peak memory
    of a 40-megapixel decode; bands of at most ``band_bytes`` keep the extra memory to a few MB."""
    width, height = image.size
    bytes_per_row = max(1, width * 4)
    rows = max(factor, (band_bytes // bytes_per_row) // factor * factor)
    out: Image.Image | None = None
    for top in range(0, height, rows):
        band = _expand_for_reduction(image.crop((0, top, width, min(top + rows, height)))).reduce(factor)
        if out is None:
            out = Image.new(band.mode, (math.ceil(width / factor), math.ceil(height / factor)))
        out.paste(band, (0, top // factor))
    assert out is not None
    return out


def _on_white_rgb(image: Image.Image) -> np.ndarray:
    """A small summary as 8-bit RGB with any transparency laid on white (16-bit and float scaled, not clipped)."""
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max(initial=0.0))
        scale = 1.0 if top <= 1.0 and image.mode == "F" else 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        grey = np.clip(values / scale * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, (0, 0), rgba)
        return np.asarray(white)
    return np.asarray(image.convert("RGB"))


def is_flat(image: Image.Image) -> bool:
    """True when every colour channel spans less than FLAT_RANGE on an area-averaged summary (<= 256 px a side).

    Averaging first keeps JPEG noise on a plain background from counting as content; a one-pixel line on a 2048 px
    canvas still spans about 30 levels after the 8x averaging."""
    summary = _expand_for_reduction(image)
    factor = math.ceil(max(summary.size) / _SUMMARY_SIDE)
    if factor > 1:
        summary = summary.reduce(factor)
    extrema = Image.fromarray(_on_white_rgb(summary)).getextrema()  # ten times numpy's ptp here
    return max(high - low for low, high in extrema) < FLAT_RANGE


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block is not worth refusing the picture for
        return 1


def check_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS, allow_flat: bool = False) -> Image.Image:
    """Open, check and decode one image with bounded memory; raises :class:`ImageError` in plain words.

    ``allow_flat`` keeps a blank image (data loaders that must not drop files); every user-facing path refuses it.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(bytes(source))
    try:
        with warnings.catch_warnings():
            # check_size below refuses these, from the header, with the image's size in the message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:  # reads the header only
                check_size(*img.size, max_pixels=max_pixels)
                orientation = _orientation(img)
                img.seek(0)  # animated GIF / WebP / multi-page TIFF: the first frame
                if img.format == "JPEG" and max(img.size) > WORKING_SIDE:
                    factor = math.ceil(max(img.size) / WORKING_SIDE)
                    img.draft(img.mode, (math.ceil(img.width / factor), math.ceil(img.height / factor)))
                img.load()
                factor = math.ceil(max(img.size) / WORKING_SIDE)
                if factor > 1:
                    out = reduce_in_bands(img, factor)
                else:
                    out = img.copy()  # detach from the file, which the with-block closes
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError("there is no such file") from err
    except IsADirectoryError as err:
        raise ImageError("this is a folder, not an image") from err
    except PermissionError as err:
        raise ImageError("the file cannot be read (no permission)") from err
    except UnidentifiedImageError as err:
        raise ImageError(
            "the file is not an image in a format this tool reads (PNG, JPEG, GIF, WebP, BMP, TIFF...)"
        ) from err
    except Image.DecompressionBombError as err:  # raised by the header reader itself, far above our limit
        declared = re.search(r"\((\d+) pixels\)", str(err))
        size = f" ({_megapixels(int(declared.group(1)))})" if declared else ""
        raise ImageError(
            f"the image declares more pixels than can be opened safely{size}; at most "
            f"{_megapixels(max_pixels)} are accepted, so make it smaller first"
        ) from err
    except MemoryError as err:
        raise ImageError("the image is too large to open with the memory available") from err
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as err:
        raise ImageError("the file is cut short or damaged: it cannot be read as an image") from err
    if orientation in _TRANSPOSE:
        out = out.transpose(_TRANSPOSE[orientation])
    if not allow_flat and is_flat(out):
        raise ImageError("the image is blank (a single flat colour): there is nothing to classify in it")
    return out
