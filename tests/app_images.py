"""Image files, good and bad, that the app must handle: each builder writes one file into a folder and returns its path.

Built in a few milliseconds each, nothing downloaded. The "bomb" is a valid PNG header claiming 20000x20000 pixels
(a real one would take seconds to write); the guard must refuse it from the header alone.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw


def _triangle_rgb(size: int = 200, ink: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).polygon(
        [(0.15 * size, 0.85 * size), (0.85 * size, 0.85 * size), (0.5 * size, 0.2 * size)], fill=ink
    )
    return image


def triangle_png(folder: Path) -> Path:
    path = folder / "triangle.png"
    _triangle_rgb().save(path)
    return path


def outline_square_png(folder: Path) -> Path:
    """A hand-drawn-looking square outline on a big canvas, like a sketchpad export."""
    image = Image.new("RGB", (512, 512), "white")
    ImageDraw.Draw(image).rectangle([140, 150, 360, 370], outline="black", width=6)
    path = folder / "square.png"
    image.save(path)
    return path


def bird_like_jpeg(folder: Path) -> Path:
    """A textured photo-like RGB image (no real bird needed for an untrained network)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:240, 0:320]
    base = np.stack([120 + 80 * np.sin(x / 17.0), 110 + 70 * np.cos(y / 13.0), 90 + 60 * np.sin((x + y) / 23.0)], -1)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    path = folder / "bird.jpg"
    Image.fromarray(noisy).save(path, quality=90)
    return path


def blank_png(folder: Path) -> Path:
    path = folder / "blank.png"
    Image.new("RGB", (300, 300), "white").save(path)
    return path


def uniform_png(folder: Path) -> Path:
    path = folder / "uniform.png"
    Image.new("RGB", (300, 200), (90, 140, 200)).save(path)
    return path


def one_pixel_png(folder: Path) -> Path:
    path = folder / "one.png"
    Image.new("RGB", (1, 1), "black").save(path)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(folder: Path, side: int = 20000) -> Path:
    """A PNG whose header claims side x side pixels (one row of data): refused before any decoding."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row))
        + _png_chunk(b"IEND", b"")
    )
    path = folder / "bomb.png"
    path.write_bytes(data)
    return path


def truncated_png(folder: Path) -> Path:
    buffer = io.BytesIO()
    _triangle_rgb(400).save(buffer, format="PNG")
    path = folder / "truncated.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def non_image(folder: Path) -> Path:
    path = folder / "notes.png"  # an image name, but text inside
    path.write_text("this is not an image\n" * 20)
    return path


def rgba_png(folder: Path) -> Path:
    """Black triangle on a fully transparent background whose hidden colour is black (a naive convert shows black)."""
    image = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(image).polygon([(30, 170), (170, 170), (100, 40)], fill=(0, 0, 0, 255))
    path = folder / "rgba.png"
    image.save(path)
    return path


def palette_png(folder: Path) -> Path:
    path = folder / "palette.png"
    _triangle_rgb(ink=(200, 30, 30)).convert("P", palette=Image.ADAPTIVE, colors=8).save(path)
    return path


def cmyk_jpeg(folder: Path) -> Path:
    path = folder / "cmyk.jpg"
    _triangle_rgb().convert("CMYK").save(path, quality=95)
    return path


def grey16_png(folder: Path) -> Path:
    """16-bit greyscale: a dark triangle on a mid-grey (about 20000 of 65535) background."""
    grey = np.asarray(_triangle_rgb().convert("L"), dtype=np.float64)
    values = (grey / 255.0 * 20000 + 1000).astype(np.uint16)
    path = folder / "grey16.png"
    Image.fromarray(values).save(path)
    return path


def greyscale_png(folder: Path) -> Path:
    path = folder / "grey.png"
    _triangle_rgb().convert("L").save(path)
    return path


def exif_rotated_jpeg(folder: Path) -> Path:
    """Stored 300x200 with the left half black; EXIF orientation 6 says "rotate 90 degrees clockwise to view", so
    the viewed image is 200x300 with the TOP half black."""
    pixels = np.full((200, 300, 3), 255, dtype=np.uint8)
    pixels[:, :150] = 0
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = folder / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    return path


def animated_gif(folder: Path) -> Path:
    """Two frames: a triangle, then a blank frame (classifying the second frame would find nothing)."""
    first = _triangle_rgb().convert("P")
    second = Image.new("RGB", (200, 200), "white").convert("P")
    path = folder / "animated.gif"
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    return path


def strip_png(folder: Path) -> Path:
    """40000x8 pixels in a few hundred bytes: scaling its shorter side to the network's input would need gigabytes."""
    path = folder / "strip.png"
    pixels = np.full((8, 40000), 255, np.uint8)
    pixels[2:6, 100:39900] = 0
    Image.fromarray(pixels).save(path)
    return path


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    # name: (builder, a phrase the user-facing message must contain, lower case)
    "blank": (blank_png, "nothing"),
    "uniform": (uniform_png, "nothing"),
    "one pixel": (one_pixel_png, "1x1"),
    "bomb": (bomb_png, "megapixels"),
    "truncated": (truncated_png, "cut short"),
    "strip": (strip_png, "20 to 1"),
    "non-image": (non_image, "not an image"),
}
GOOD_ODD_INPUTS: dict[str, Callable[[Path], Path]] = {
    "rgba": rgba_png,
    "palette": palette_png,
    "cmyk": cmyk_jpeg,
    "16-bit": grey16_png,
    "greyscale": greyscale_png,
    "exif-rotated": exif_rotated_jpeg,
    "animated gif": animated_gif,
}
