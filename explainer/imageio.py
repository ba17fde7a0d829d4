"""Opening user images safely: kept as the historical name of :func:`explainer.imagecheck.check_image`.

Every caller (the app, the CLI, the evaluation scripts, the birds data loader) goes through the one check in
:mod:`explainer.imagecheck`; this module only re-exports it so that older imports keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from PIL import Image

from .imagecheck import MAX_PIXELS, ImageError, check_image

__all__ = ["MAX_PIXELS", "ImageError", "open_image"]


def open_image(
    source: str | Path | bytes | BinaryIO, max_pixels: int = MAX_PIXELS, allow_flat: bool = False
) -> Image.Image:
    """The checked, decoded image (see :func:`explainer.imagecheck.check_image`); raises :class:`ImageError`."""
    return check_image(source, max_pixels=max_pixels, allow_flat=allow_flat)
