"""Opening user images safely: any format and mode Pillow reads, with clear errors instead of crashes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression-bomb guard)


class ImageError(ValueError):
    """An input that is not a usable image; the message says why in plain words."""


def open_image(source: str | Path | bytes | BinaryIO, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image fully: first frame of animations, EXIF orientation applied, original mode kept.

    Raises :class:`ImageError` for a missing, non-image, truncated or oversized file.
    """
    name = str(source) if isinstance(source, (str, Path)) else "image"
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{name}: image is {width}x{height} pixels, more than the {max_pixels:,} accepted"
                    )
                if width < 1 or height < 1:
                    raise ImageError(f"{name}: image has no pixels ({width}x{height})")
                img.seek(0)  # animated GIF / WebP: the first frame
                img.load()
                out = ImageOps.exif_transpose(img) if img.getexif() else img.copy()
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError(f"{name}: no such file") from err
    except IsADirectoryError as err:
        raise ImageError(f"{name}: is a folder, not an image") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{name}: not an image Pillow can read") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{name}: image is too large to decode safely") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"{name}: image file is truncated or corrupt ({err})") from err
    return out
