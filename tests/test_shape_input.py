"""Tests for the one input normalisation of shape images (CLI, app and training all use it)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from explainer.shapes import generate_shapes
from explainer.shapes.normalize import (
    MIN_CONTRAST,
    NothingToClassify,
    _as_8bit_pil_or_float,
    _grey_from_8bit,
    has_uneven_background,
    normalize_shape_image,
    to_grey_ink_on_white,
)

TRIANGLE = [(30, 20), (90, 35), (45, 80)]


def _triangle(mode: str, size=(120, 100), background=255, ink=0) -> Image.Image:
    image = Image.new(mode, size, background)
    ImageDraw.Draw(image).polygon(TRIANGLE, fill=ink)
    return image


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    """The normalised plain black-on-white triangle every variant below must reproduce."""
    return normalize_shape_image(_triangle("L"))


def _close(result: np.ndarray, expected: np.ndarray, tolerance: int = 2) -> bool:
    return result.shape == expected.shape and int(np.abs(result.astype(int) - expected.astype(int)).max()) <= tolerance


def _ink_box(image: np.ndarray) -> tuple[int, int, int, int]:
    rows, columns = np.flatnonzero((image < 128).any(axis=1)), np.flatnonzero((image < 128).any(axis=0))
    return int(rows[0]), int(rows[-1]), int(columns[0]), int(columns[-1])


def test_plain_triangle_is_cropped_centred_and_framed(expected):
    assert expected.shape == (64, 64) and expected.dtype == np.uint8
    assert expected.min() == 0 and expected.max() == 255
    top, bottom, left, right = _ink_box(expected)
    longest = max(bottom - top, right - left) + 1
    assert abs(longest - 64 / 1.2) <= 2  # margin 0.1 on each side of the longer side
    assert abs((top + bottom) / 2 - 31.5) <= 1.5 and abs((left + right) / 2 - 31.5) <= 1.5


def test_rgba_with_transparent_background(expected):
    image = _triangle("RGBA", background=(0, 0, 0, 0), ink=(0, 0, 0, 255))  # hidden colour black: naive grey fails
    assert _close(normalize_shape_image(image), expected)
    assert _close(normalize_shape_image(np.asarray(image)), expected)


def test_grey_alpha_and_palette_with_transparency(expected):
    assert _close(normalize_shape_image(_triangle("LA", background=(0, 0), ink=(0, 255))), expected)
    palette_image = Image.new("P", (120, 100), 0)
    palette_image.putpalette([0, 0, 0, 0, 0, 0])  # index 0 and 1 both black ...
    palette_image.info["transparency"] = 0  # ... but index 0 is transparent
    ImageDraw.Draw(palette_image).polygon(TRIANGLE, fill=1)
    assert _close(normalize_shape_image(palette_image), expected)


@pytest.mark.parametrize(
    "image",
    [
        _triangle("L", background=0, ink=255),  # white on black
        _triangle("RGB", background=(0, 0, 0), ink=(255, 255, 255)),
        _triangle("RGB", background=(255, 255, 255), ink=(255, 0, 0)),  # red on white
        _triangle("RGB", background=(255, 255, 255), ink=(0, 0, 255)),  # blue on white
        _triangle("RGB", background=(255, 255, 255), ink=(255, 220, 0)),  # yellow: light, yet clearly ink
        _triangle("RGB", background=(240, 235, 220), ink=(30, 30, 160)),  # blue pen on cream paper
        _triangle("RGB").convert("P"),
        _triangle("RGB").convert("CMYK"),
        _triangle("L").convert("1"),
    ],
    ids=["white-on-black", "white-on-black-rgb", "red", "blue", "yellow", "paper", "palette", "cmyk", "1-bit"],
)
def test_modes_colours_and_polarity(image, expected):
    assert _close(normalize_shape_image(image), expected)


def test_sixteen_bit_and_float_inputs(expected):
    sixteen = (np.asarray(_triangle("L")).astype(np.uint16) * 257).astype(np.uint16)
    assert _close(normalize_shape_image(sixteen), expected)
    assert _close(normalize_shape_image(Image.fromarray(sixteen)), expected)  # I;16
    assert _close(normalize_shape_image(Image.fromarray(sixteen.astype(np.int32))), expected)  # I
    assert _close(normalize_shape_image(Image.fromarray(sixteen.astype(np.float32) / 65535)), expected)  # F
    rgb = np.asarray(_triangle("RGB"))
    assert _close(normalize_shape_image(rgb.astype(np.float64) / 255), expected)
    assert _close(normalize_shape_image(rgb.astype(np.float32)), expected)  # floats in 0..255
    assert _close(normalize_shape_image(np.asarray(_triangle("L")) < 128), expected, tolerance=3)  # bool: True = ink


def test_generated_images_pass_through_to_grey_unchanged():
    images = generate_shapes(n_per_class=5, seed=0, style="mixed").images
    for image in images:
        assert np.array_equal(to_grey_ink_on_white(image), image)
        assert np.array_equal(normalize_shape_image(image, crop_to_content=False), image)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1), dtype=np.uint8),
        Image.new("L", (1, 1), 0),
        Image.new("L", (300, 200), 255),
        Image.new("RGB", (300, 200), (0, 0, 0)),
        Image.new("L", (300, 200), 128),
        Image.new("RGB", (300, 200), (200, 120, 40)),
        Image.new("RGBA", (300, 200), (0, 0, 0, 0)),
        np.full((50, 60, 3), 0.5),
        np.tile(np.linspace(215, 255, 300).astype(np.uint8), (200, 1)),  # gentle shading only
    ],
    ids=["1x1-array", "1x1-pil", "white", "black", "grey", "orange", "transparent", "float-grey", "gradient"],
)
def test_blank_or_uniform_is_nothing_to_classify(image):
    with pytest.raises(NothingToClassify, match="nothing to classify"):
        normalize_shape_image(image)


def test_jpeg_noise_and_specks_are_nothing_to_classify():
    noise = np.random.default_rng(0).normal(0, 6, (300, 300, 3))
    noisy = np.clip(235 + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=60)
    with pytest.raises(NothingToClassify):
        normalize_shape_image(Image.open(io.BytesIO(buffer.getvalue())))
    specks = np.full((200, 200), 255, dtype=np.uint8)
    specks[[10, 50, 120, 180], [30, 170, 60, 100]] = 0  # isolated dead pixels, no shape
    with pytest.raises(NothingToClassify):
        normalize_shape_image(specks)
    assert issubclass(NothingToClassify, ValueError)


def test_shape_survives_jpeg_noise_and_specks(expected):
    image = np.asarray(_triangle("RGB")).copy()
    image[2, 117] = 0  # a speck far away must not stretch the crop
    noisy = np.clip(image + np.random.default_rng(1).normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=70)
    result = normalize_shape_image(Image.open(io.BytesIO(buffer.getvalue())))
    assert max(abs(a - b) for a, b in zip(_ink_box(result), _ink_box(expected), strict=False)) <= 1


@pytest.mark.parametrize("shape", [(2, 3), (3, 2, 3), (2, 2, 4)])
def test_tiny_images_do_not_crash(shape):
    image = np.full(shape, 255, dtype=np.uint8)
    image[0, 0] = 0
    try:
        result = normalize_shape_image(image)
    except NothingToClassify:
        return
    assert result.shape == (64, 64) and result.dtype == np.uint8


def test_small_shape_in_a_corner_of_a_big_canvas_frames_like_the_same_shape_drawn_large():
    big_canvas = Image.new("L", (1600, 1200), 255)
    ImageDraw.Draw(big_canvas).regular_polygon((70, 1120, 50), 4, rotation=20, fill=0)  # a 70 px square in a corner
    large = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(large).regular_polygon((32, 32, 28), 4, rotation=20, fill=0)  # the same square filling 64x64
    from_canvas, from_large = normalize_shape_image(big_canvas), normalize_shape_image(large)
    ink_canvas, ink_large = from_canvas < 128, from_large < 128
    overlap = (ink_canvas & ink_large).sum() / (ink_canvas | ink_large).sum()
    assert overlap > 0.9
    top, bottom, left, right = _ink_box(from_canvas)
    assert abs((top + bottom) / 2 - 31.5) <= 1 and abs((left + right) / 2 - 31.5) <= 1


def test_thin_strokes_on_a_big_canvas_stay_black():
    canvas = Image.new("RGB", (800, 800), "white")
    ImageDraw.Draw(canvas).ellipse((100, 150, 700, 650), outline=(20, 20, 20), width=3)
    result = normalize_shape_image(canvas)
    assert result.min() == 0
    assert (result < 128).sum() > 100  # a visible ring, not a faint trace
    assert result[32, 32] == 255  # still an outline: the middle is empty


def test_large_input_is_reduced_and_framed():
    canvas = Image.new("L", (5000, 4000), 255)
    ImageDraw.Draw(canvas).rectangle((1000, 1000, 3000, 2000), fill=0)
    result = normalize_shape_image(canvas)
    top, bottom, left, right = _ink_box(result)
    assert abs((right - left + 1) - 64 / 1.2) <= 2 and abs((bottom - top + 1) - 64 / 1.2 / 2) <= 2


def test_without_crop_the_whole_image_is_padded_square_and_resized():
    image = Image.new("L", (200, 100), 255)
    ImageDraw.Draw(image).rectangle((0, 0, 49, 99), fill=0)  # the left quarter, full height
    result = normalize_shape_image(image, size=32, crop_to_content=False)
    assert result.shape == (32, 32)
    top, bottom, left, right = _ink_box(result)
    assert (top, bottom) == (8, 23) and (left, right) == (0, 7)


def test_margin_sets_the_framing():
    image = _triangle("L")
    for margin in (0.0, 0.1, 0.25):
        top, bottom, left, right = _ink_box(normalize_shape_image(image, size=100, margin=margin))
        assert abs(max(bottom - top, right - left) + 1 - 100 / (1 + 2 * margin)) <= 2


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="expected a PIL.Image.Image or a numpy array"):
        normalize_shape_image([[0, 255]])
    with pytest.raises(ValueError, match="unsupported image array shape"):
        normalize_shape_image(np.zeros((10, 10, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        normalize_shape_image(np.full((10, 10), np.nan))
    with pytest.raises(ValueError, match="size"):
        normalize_shape_image(_triangle("L"), size=4)
    with pytest.raises(ValueError, match="margin"):
        normalize_shape_image(_triangle("L"), margin=-0.1)


def _photo_of(image: Image.Image, seed: int = 0, lines: bool = False, shadow: bool = True) -> np.ndarray:
    """The image as if photographed on grey paper: a light gradient, a soft shadow over one side (optional), grain,
    printed rules (optional) and JPEG."""
    rng = np.random.default_rng(seed)
    height, width = image.height, image.width
    ink = 1.0 - np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    paper = 215.0 + 2.5 * rng.standard_normal((height, width))
    if lines:
        paper = np.where(ys % 12 < 1.5, paper - 45.0, paper)  # faint printed rules
    light = 1.0 - 0.3 * xs / width
    if shadow:
        light = light * (1.0 - 0.3 / (1.0 + np.exp(-(ys - 0.7 * height) / 3.0)))
    photo = (paper * (1.0 - ink) + 30.0 * ink) * light
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).convert("RGB").save(buffer, "JPEG", quality=60)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.mark.parametrize("lines", [False, True], ids=["plain-paper", "ruled-paper"])
def test_a_photo_of_paper_frames_like_the_clean_drawing(lines):
    """Uneven light, a shadow's edge, grain and printed rules are paper, not ink: the outline triangle photographed
    on paper comes out framed as the clean one, on white."""
    clean = Image.new("L", (300, 240), 255)
    ImageDraw.Draw(clean).polygon([(80, 50), (230, 90), (120, 200)], outline=0, width=4)
    photo = _photo_of(clean, lines=lines)
    assert has_uneven_background(_as_8bit_pil_or_float(photo))
    result, expected = normalize_shape_image(photo), normalize_shape_image(clean)
    assert max(abs(a - b) for a, b in zip(_ink_box(result), _ink_box(expected), strict=False)) <= 2
    inside_not_ink = (expected > 200) & (np.abs(np.arange(64)[:, None] - 32) < 28)
    assert np.median(result[inside_not_ink]) >= 250 and np.percentile(result[inside_not_ink], 5) > 200


def test_even_backgrounds_keep_the_plain_path():
    """Screen drawings, generated images, small bitmaps and filled shapes touching the border are not photos."""
    filled = Image.new("L", (200, 100), 255)
    ImageDraw.Draw(filled).rectangle((0, 0, 49, 99), fill=0)
    noisy_small = np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)
    for image in (_triangle("RGB"), filled, generate_shapes(1, seed=4).images[0], noisy_small):
        assert not has_uneven_background(_as_8bit_pil_or_float(image))


def test_noise_too_big_for_a_bitmap_is_read_the_plain_way():
    """Nothing stands out of uniform noise against a local paper level: it is read as before (not refused as blank),
    so that the explanations can question it."""
    noise = np.random.default_rng(5).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    assert has_uneven_background(_as_8bit_pil_or_float(noise))
    assert np.array_equal(to_grey_ink_on_white(noise), _grey_from_8bit(Image.fromarray(noise)))


def _thin_triangle_thumbnail(side: int, canvas: int = 512, pen: int = 2) -> Image.Image:
    """A triangle drawn with a thin pen on a large canvas, reduced to ``side`` px by an area average."""
    large = Image.new("L", (canvas, canvas), 255)
    ImageDraw.Draw(large).polygon([(256, 60), (450, 420), (62, 420)], outline=0, width=pen)
    return large.resize((side, side), Image.Resampling.BOX)


@pytest.mark.parametrize("side", [28, 32, 40])
def test_a_faint_thumbnail_of_a_thin_pen_drawing_keeps_the_whole_shape(side):
    """A 2 px line on 512 px reduced to 28 px is a grey of about 7%: the whole triangle must come out dark, not a
    fragment and not "nothing to classify"."""
    thumbnail = _thin_triangle_thumbnail(side)
    assert 255 - int(np.asarray(thumbnail).min()) < 255 * MIN_CONTRAST  # fainter than a large image is stretched
    result = normalize_shape_image(thumbnail)
    top, bottom, left, right = _ink_box(result)
    height, width = bottom - top, right - left
    assert min(height, width) >= 40 and (result < 128).sum() >= 60


@pytest.mark.parametrize("side", [32, 64, 120])
def test_a_small_noisy_blank_bitmap_is_still_nothing_to_classify(side):
    noise = np.random.default_rng(side).normal(0, 6, (side, side, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(235 + noise, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=60)
    with pytest.raises(NothingToClassify):
        normalize_shape_image(Image.open(io.BytesIO(buffer.getvalue())))


def _outline_triangle() -> np.ndarray:
    """Ink coverage (1 = ink) of a 3 px outline triangle on a 300 px page."""
    clean = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(clean).polygon([(60, 60), (200, 90), (100, 190)], outline=0, width=3)
    return 1.0 - np.asarray(clean, dtype=np.float32) / 255.0


def _jpeg(page: np.ndarray, quality: int = 70) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).convert("RGB").save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def _ink_on_outline(photo: np.ndarray, coverage: np.ndarray) -> tuple[float, int]:
    """Share of the outline's pixels that come out as ink, and how many ink pixels lie off the outline (one pixel of
    tolerance around it)."""
    ink = to_grey_ink_on_white(photo) < 128
    near = np.asarray(Image.fromarray((coverage > 0).astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))) > 0
    return float((ink & (coverage > 0.5)).sum() / (coverage > 0.5).sum()), int((ink & ~near).sum())


def test_a_sharp_shadow_edge_next_to_faint_ink_is_not_ink():
    """A shadow's edge a few pixels wide is a step in the light, not a line: with faint ink (the strongest marks barely
    above the step) it stays paper and the crop is the drawing's."""
    coverage = _outline_triangle()
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:300, 0:300].astype(np.float32)
    paper = 215.0 + 2.5 * rng.standard_normal(coverage.shape)
    light = (1.0 - 0.25 * ys / 300) - 0.4 / (1.0 + np.exp(np.clip(-(xs + 0.3 * ys - 250) / 4.0, -30, 30)))
    photo = _jpeg((paper * (1 - coverage) + 170.0 * coverage) * light)
    assert has_uneven_background(_as_8bit_pil_or_float(photo))
    top, bottom, left, right = _ink_box(to_grey_ink_on_white(photo))
    assert abs(top - 60) <= 2 and abs(bottom - 190) <= 2 and abs(left - 60) <= 2 and abs(right - 200) <= 2


def test_faint_grainy_pencil_stays_one_line():
    """Pencil on paper is grainy: its faint pixels continue the stroke and are kept (hysteresis), so the outline is not
    broken into dashes, while the paper's grain around it stays white."""
    coverage = _outline_triangle()
    rng = np.random.default_rng(1)
    coverage = coverage * np.clip(0.75 + 0.25 * rng.standard_normal(coverage.shape), 0.3, 1.0)
    paper = 200.0 + 3.0 * rng.standard_normal(coverage.shape)
    light = 1.0 - 0.3 * np.arange(300, dtype=np.float32)[None, :] / 300
    kept, stray = _ink_on_outline(_jpeg((paper * (1 - coverage) + 150.0 * coverage) * light, 60), coverage)
    assert kept > 0.75 and stray <= 5


def test_a_photo_brighter_in_the_middle_keeps_dark_ink():
    """Light falling off towards the edges (a lens's vignetting, a lamp above the page) makes the border darker than the
    paper in the middle: the ink's polarity is judged against the local paper, not the border, so faint dark ink is
    still dark ink."""
    coverage = _outline_triangle()
    rng = np.random.default_rng(2)
    ys, xs = np.mgrid[0:300, 0:300].astype(np.float32)
    paper = 225.0 + 2.5 * rng.standard_normal(coverage.shape)
    light = 1.0 - 0.35 * ((xs - 150) ** 2 + (ys - 150) ** 2) / 150**2
    kept, stray = _ink_on_outline(_jpeg((paper * (1 - coverage) + 150.0 * coverage) * light), coverage)
    assert kept > 0.9 and stray == 0


def test_a_speck_apart_from_the_drawing_does_not_stretch_the_crop():
    """A blot on the paper far from the drawing (a few pixels, a tiny share of the ink) is not part of what is
    framed."""
    coverage = _outline_triangle()
    rng = np.random.default_rng(3)
    page = (215.0 + 2.5 * rng.standard_normal(coverage.shape)) * (1 - coverage) + 40.0 * coverage
    page[255:260, 260:265] = 60.0
    photo = _jpeg(page * (1.0 - 0.2 * np.arange(300, dtype=np.float32)[None, :] / 300))
    top, bottom, left, right = _ink_box(to_grey_ink_on_white(photo))
    assert abs(top - 60) <= 2 and abs(bottom - 190) <= 2 and abs(left - 60) <= 2 and abs(right - 200) <= 2
