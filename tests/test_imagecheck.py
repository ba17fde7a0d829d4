"""The one image check (explainer.inputs.imagecheck), the CLI's use of it, and weights files refused in one plain
line."""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save

from bundles import required_shapes_metadata as shapes_meta
from explainer.inputs.imagecheck import MAX_PIXELS, WORKING_SIDE, ImageError, check_image, reduce_in_bands
from explainer.pair.bundle import BundleError, load_bundle, save_bundle
from explainer.pair.models import build_pair, reference_shapes_architecture

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_WORDS = ("PIL", "Pillow", "Error", "Traceback", "/tmp", "\\")


def png_header_only(width: int, height: int, mode_byte: int = 6) -> bytes:
    """A valid PNG whose header declares width x height (RGBA by default) and whose data is a few bytes of zeros:
    a decompression bomb when the size is large (the image data is compressed all-zero rows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, mode_byte, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def square_image(size: int = 64) -> Image.Image:
    pixels = np.full((size, size), 255, np.uint8)
    pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 0
    return Image.fromarray(pixels)


def assert_plain(message: str) -> None:
    assert message and not any(word in message for word in LIBRARY_WORDS), message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"this is not an image", "not an image"),
        (png_bytes(square_image())[:90], "cut short or damaged"),
        (png_header_only(20000, 20000), "at most 40.0 megapixels"),
        (png_header_only(100000, 100000), "pixels"),  # past the decoder's own bomb limit: refused at the header
        (png_bytes(Image.new("L", (1, 1), 0)), "at least 8 pixels on each side"),
        (png_bytes(Image.new("L", (7, 300), 0)), "at least 8 pixels on each side"),
        (png_header_only(60000, 1), "at least 8 pixels"),
        (png_bytes(square_image(8).resize((400, 8))), "at most 20 to 1"),
        (png_header_only(40000, 8), "at most 20 to 1"),
        (png_bytes(Image.new("RGB", (300, 200), (12, 200, 40))), "nothing to classify"),
        (png_bytes(Image.new("RGBA", (64, 64), (0, 0, 0, 0))), "nothing to classify"),  # fully transparent
    ],
)
def test_bad_images_are_refused_in_plain_words(data: bytes, words: str) -> None:
    with pytest.raises(ImageError) as caught:
        check_image(data)
    assert words in str(caught.value)
    assert_plain(str(caught.value))


def test_bombs_are_refused_before_decoding() -> None:
    """A 40-megapixel-plus header costs nothing: no allocation of the declared size happens."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        with pytest.raises(ImageError):
            check_image(png_header_only(8000, 6000))  # 48 Mpx RGBA would be 192 MB decoded
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_missing_file_and_folder(tmp_path: Path) -> None:
    for source, words in ((tmp_path / "absent.png", "no such file"), (tmp_path, "folder")):
        with pytest.raises(ImageError, match=words) as caught:
            check_image(source)
        assert str(tmp_path) not in str(caught.value)


def test_good_images_keep_mode_orientation_and_are_reduced_when_large() -> None:
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[5:25, 10:40] = (0, 0, 255, 255)
    assert check_image(png_bytes(Image.fromarray(rgba))).mode == "RGBA"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated = check_image(png_bytes(square_image(40).resize((40, 20)).convert("RGB"), "JPEG", exif=exif))
    assert rotated.size == (20, 40)
    palette = square_image(64).convert("P")
    assert check_image(png_bytes(palette)).mode == "P"  # small: untouched
    large = check_image(png_bytes(square_image(64).resize((5000, 3000), Image.NEAREST).convert("P")))
    assert max(large.size) <= WORKING_SIDE and large.mode == "RGB"  # expanded before averaging, then reduced
    jpeg = check_image(png_bytes(square_image(64).resize((6000, 4000)).convert("RGB"), "JPEG"))
    assert max(jpeg.size) <= WORKING_SIDE and min(jpeg.size) >= 1000
    deep = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    assert check_image(png_bytes(deep)).size == (64, 64)
    gif_frames = [square_image(32).convert("P"), Image.new("P", (32, 32), 3)]
    first = check_image(png_bytes(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:]))
    assert first.size == (32, 32)
    assert MAX_PIXELS == 40_000_000


def test_one_pixel_line_on_a_large_canvas_is_not_blank() -> None:
    canvas = np.full((2048, 2048), 255, np.uint8)
    canvas[1000, 200:1800] = 0
    assert check_image(png_bytes(Image.fromarray(canvas))).size == (2048, 2048)


# -- the command line -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "shapes.safetensors"
    save_bundle(path, build_pair(reference_shapes_architecture()), shapes_meta())
    return path


def run_cli(weights: Path, *images: Path, memory_mb: int | None = None) -> subprocess.CompletedProcess:
    limit = None
    if memory_mb is not None:

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))

    return subprocess.run(
        [sys.executable, "-m", "explainer", "predict", "--weights", str(weights), *map(str, images)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        preexec_fn=limit,
    )


def test_cli_refuses_tiny_flat_and_strip_images_and_goes_on(shapes_weights: Path, tmp_path: Path) -> None:
    files = {
        "good.png": png_bytes(square_image()),
        "one.png": png_bytes(Image.new("L", (1, 1), 0)),
        "two.png": png_bytes(Image.new("L", (2, 2), 0)),
        "flat.png": png_bytes(Image.new("RGB", (64, 64), (90, 90, 90))),
        "strip.png": png_header_only(60000, 1),
        "long.png": png_header_only(40000, 8),
        "bomb.png": png_header_only(20000, 20000),
        "last.png": png_bytes(square_image(100)),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    run = run_cli(shapes_weights, *(tmp_path / name for name in files))
    assert run.returncode == 1, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [Path(r["image"]).name for r in rows] == list(files)
    assert "predicted_class" in rows[0] and "predicted_class" in rows[-1]
    for row in rows[1:-1]:
        assert_plain(row["error"])
    assert "Traceback" not in run.stderr


def test_cli_under_a_memory_cap_keeps_the_batch(shapes_weights: Path, tmp_path: Path) -> None:
    """60000x1 and the largest allowed RGBA image under a 5 GB address-space cap (importing the CUDA build of torch
    alone maps 3.3 GB of address space): good files still answer."""
    (tmp_path / "a.png").write_bytes(png_bytes(square_image()))
    (tmp_path / "strip.png").write_bytes(png_header_only(60000, 1))
    big = Image.new("RGBA", (7000, 5700), (255, 255, 255, 255))
    big.paste((0, 0, 0, 255), (2000, 2000, 5000, 4000))
    big.save(tmp_path / "big.png")
    (tmp_path / "z.png").write_bytes(png_bytes(square_image(80)))
    run = run_cli(
        shapes_weights,
        tmp_path / "a.png",
        tmp_path / "strip.png",
        tmp_path / "big.png",
        tmp_path / "z.png",
        memory_mb=5000,
    )
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == 4 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "predicted_class" in rows[0] and "predicted_class" in rows[2] and "predicted_class" in rows[3]
    assert "error" in rows[1]


# -- weights files ----------------------------------------------------------------------------------------------------


def write_raw_bundle(path: Path, meta: dict, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """A weights file written without save_bundle's checks, as a hand-edited or damaged file would be."""
    if tensors is None:
        tensors = {k: v.contiguous() for k, v in build_pair(reference_shapes_architecture()).state_dict().items()}
    path.write_bytes(save(tensors, metadata={"explainer": json.dumps({**meta, "format_version": 1})}))
    return path


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"defaults": "oops"}, "defaults must be an object"),
        ({"defaults": {"threshold": "high", "top_n": 1}}, "threshold must be a number"),
        ({"defaults": {"threshold": 0.5, "top_n": 0}}, "top_n must be a whole number, at least 1"),
        ({"class_names": "circle"}, "class_names must be a non-empty list"),
        ({"explanation_groups": [["a"]]}, "explanation group"),
        ({"class_explanations": [[1, 0, 0, 0, "x"]] * 4}, "class_explanations"),
        (
            {"class_names": ["a", "b", "c", "d", "e"], "class_explanations": [[0.0] * 5] * 5},
            "4 class outputs and 5 explanation outputs, but the metadata names 5 classes",
        ),
    ],
)
def test_bad_metadata_is_refused_in_one_line(tmp_path: Path, change: dict, words: str) -> None:
    path = write_raw_bundle(tmp_path / "edited.safetensors", {**shapes_meta(), **change})
    with pytest.raises(BundleError, match=words) as caught:
        load_bundle(path)
    assert "\n" not in str(caught.value)


def test_non_finite_weights_are_refused(tmp_path: Path, shapes_weights: Path) -> None:
    tensors = {k: v.clone().contiguous() for k, v in build_pair(reference_shapes_architecture()).state_dict().items()}
    name = next(k for k, v in tensors.items() if v.is_floating_point() and k.startswith("mirror."))
    tensors[name][...] = float("nan")
    path = write_raw_bundle(tmp_path / "nan.safetensors", shapes_meta(), tensors)
    with pytest.raises(BundleError, match="NaN or infinite"):
        load_bundle(path)
    run = run_cli(path, tmp_path / "whatever.png")
    assert run.returncode == 2 and "NaN or infinite" in run.stderr and "Traceback" not in run.stderr
    bad_meta = write_raw_bundle(tmp_path / "oops.safetensors", {**shapes_meta(), "defaults": "oops"})
    run = run_cli(bad_meta, tmp_path / "whatever.png")
    assert run.returncode == 2 and "defaults must be an object" in run.stderr and "Traceback" not in run.stderr


def test_banded_reduction_matches_reducing_the_whole_image() -> None:
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (203, 301, 4), dtype=np.uint8))
    palette = Image.fromarray(rng.integers(0, 256, (203, 301, 3), dtype=np.uint8)).convert("P")
    for factor in (2, 3, 7):
        whole = np.asarray(rgba.reduce(factor))
        assert np.array_equal(np.asarray(reduce_in_bands(rgba, factor, band_bytes=5000)), whole)
        expanded = np.asarray(palette.convert("RGB").reduce(factor))
        assert np.array_equal(np.asarray(reduce_in_bands(palette, factor, band_bytes=5000)), expanded)
