"""Image loading and the birds task's preprocessing, described by a JSON-serialisable dict.

The dict (see `reference_preprocessing`) is stored next to the weights so that serving rebuilds exactly the
transform the network was trained with (`build_transform(cfg, train=False)`).

Two training recipes exist because the reference thesis's code and text disagree:
- "code" (what produced the published numbers): Resize(256) of the SHORTER side, RandomRotation(45) always,
  RandomResizedCrop(crop), RandomHorizontalFlip, ToTensor, Normalize. Test: Resize(256) shorter side, CenterCrop(crop).
- "text": the LONGER side resized to 256, then padded to a 256x256 square (centred; the padding is the mean colour so
  that it becomes 0 after normalisation), RandomRotation(45) with probability 0.5, plain RandomCrop(crop); no flip
  (the text names none). Test: same resize and padding, CenterCrop(crop).
Both use torchvision.transforms (v1) on PIL images, as the reference code did.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from .imagecheck import ImageError, check_image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_MAX_PIXELS = 50_000_000
TRAIN_VARIANTS = ("code", "text")
REFERENCE_ROTATION_DEGREES = 45.0
TEXT_ROTATION_PROBABILITY = 0.5
_INTERPOLATIONS = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "lanczos": T.InterpolationMode.LANCZOS,
}
_CONFIG_KEYS = ("kind", "resize", "crop", "mean", "std", "interpolation", "train_variant")
_OPTIONAL_KEYS = ("flip_average",)  # the pair also reads the mirror image (see MirrorPair); absent means False


class TransformConfigError(ValueError):
    """A preprocessing dict that `build_transform` cannot rebuild."""


def load_rgb(path_or_file: str | Path | bytes | IO[bytes], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image as RGB with its EXIF orientation applied, refusing huge images before they are decoded.

    Decoding is the one image check, `explainer.inputs.imagecheck.check_image` (the pixel count is read from the
    header, so a decompression bomb is rejected without being allocated; at least 8 px a side, at most 20:1), keeping
    flat images (a data set's file is not refused for being plain); then transparent images are composited onto white
    and 16-bit greyscale is scaled to 8 bits rather than clipped. Raises ImageError (a ValueError)
    whose message starts with the file's name.
    """
    name = str(path_or_file) if isinstance(path_or_file, (str, Path)) else "image"
    try:
        return to_rgb(check_image(path_or_file, max_pixels=max_pixels, allow_flat=True))
    except ImageError as err:
        raise ImageError(f"{name}: {err}") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB without surprises (alpha onto white, 16-bit scaled rather than clipped)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def reference_preprocessing(
    size: int = 224,
    resize: int = 256,
    variant: str = "code",
    mean: tuple[float, float, float] | list[float] = IMAGENET_MEAN,
    std: tuple[float, float, float] | list[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
) -> dict[str, Any]:
    """The reference birds preprocessing as a JSON-serialisable dict (store it with the weights).

    Pass another mean/std when the backbone's pretrained weights expect them (timm's tf_efficientnet_lite0: 0.5).
    """
    config = {
        "kind": "imagenet",
        "resize": resize,
        "crop": size,
        "mean": [float(value) for value in mean],
        "std": [float(value) for value in std],
        "interpolation": interpolation,
        "train_variant": variant,
    }
    validate_preprocessing(config)
    return config


def validate_preprocessing(cfg: dict[str, Any]) -> None:
    """Raise TransformConfigError naming the first bad entry, so a corrupt weights file fails at load, not mid-serve."""
    if not isinstance(cfg, dict):
        raise TransformConfigError(f"preprocessing config must be a dict, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(_CONFIG_KEYS) - set(_OPTIONAL_KEYS))
    missing = [key for key in _CONFIG_KEYS if key not in cfg]
    if unknown or missing:
        raise TransformConfigError(
            f"preprocessing config keys: unknown {unknown}, missing {missing}; valid keys are "
            f"{list(_CONFIG_KEYS + _OPTIONAL_KEYS)}"
        )
    if not isinstance(cfg.get("flip_average", False), bool):
        raise TransformConfigError(f"preprocessing 'flip_average' must be true or false, got {cfg['flip_average']!r}")
    if cfg["kind"] != "imagenet":
        raise TransformConfigError(f"preprocessing kind {cfg['kind']!r} is not supported; valid: 'imagenet'")
    for key in ("resize", "crop"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < (1 if key == "resize" else 0):
            raise TransformConfigError(f"preprocessing {key!r} must be a positive int, got {cfg[key]!r}")
    if cfg["crop"] == 0 and cfg["train_variant"] != "code":
        raise TransformConfigError("preprocessing crop 0 (the whole photo) needs train_variant 'code'")
    if cfg["crop"] > cfg["resize"]:
        raise TransformConfigError(f"preprocessing crop {cfg['crop']} must not exceed resize {cfg['resize']}")
    for key in ("mean", "std"):
        values = cfg[key]
        if (
            not isinstance(values, (list, tuple))
            or len(values) != 3
            or not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)
        ):
            raise TransformConfigError(f"preprocessing {key!r} must be 3 numbers (R, G, B), got {values!r}")
    if any(value <= 0 for value in cfg["std"]):
        raise TransformConfigError(f"preprocessing 'std' must be positive, got {cfg['std']!r}")
    if cfg["interpolation"] not in _INTERPOLATIONS:
        raise TransformConfigError(
            f"preprocessing interpolation {cfg['interpolation']!r} is not valid; valid: {list(_INTERPOLATIONS)}"
        )
    if cfg["train_variant"] not in TRAIN_VARIANTS:
        raise TransformConfigError(
            f"preprocessing train_variant {cfg['train_variant']!r} is not valid; valid: {list(TRAIN_VARIANTS)}"
        )


class ResizeLongerSide:
    """Resize so that the longer side equals `size`, keeping the aspect ratio (the thesis text's resize)."""

    def __init__(self, size: int, interpolation: T.InterpolationMode = T.InterpolationMode.BILINEAR) -> None:
        self.size = size
        self.interpolation = interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        scale = self.size / max(width, height)
        new_size = (max(1, round(height * scale)), max(1, round(width * scale)))
        return TF.resize(image, list(new_size), interpolation=self.interpolation, antialias=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation.value})"


class PadToSquare:
    """Pad (centred) to a `size` x `size` square with a constant colour, so a crop of up to `size` always fits."""

    def __init__(self, size: int, fill: tuple[int, int, int]) -> None:
        self.size = size
        self.fill = fill

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        pad_width, pad_height = max(0, self.size - width), max(0, self.size - height)
        if pad_width == 0 and pad_height == 0:
            return image
        left, top = pad_width // 2, pad_height // 2
        return TF.pad(image, [left, top, pad_width - left, pad_height - top], fill=self.fill)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, fill={self.fill})"


def build_transform(cfg: dict[str, Any], train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """Rebuild the train or test transform (PIL RGB image -> normalised float tensor 3 x crop x crop) from its dict.

    ``crop`` 0 means no crop: the test transform keeps the whole photo, its shorter side ``resize`` pixels."""
    validate_preprocessing(cfg)
    interpolation = _INTERPOLATIONS[cfg["interpolation"]]
    resize, crop = cfg["resize"], cfg["crop"]
    finish = [T.ToTensor(), T.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"]))]
    if cfg["train_variant"] == "code":
        if not train and crop == 0:  # the whole photo, its shorter side resized
            return T.Compose([T.Resize(resize, interpolation=interpolation), *finish])
        if not train:
            return T.Compose([T.Resize(resize, interpolation=interpolation), T.CenterCrop(crop), *finish])
        return T.Compose(
            [
                T.Resize(resize, interpolation=interpolation),
                T.RandomRotation(REFERENCE_ROTATION_DEGREES),
                T.RandomResizedCrop(crop, interpolation=interpolation),
                T.RandomHorizontalFlip(),
                *finish,
            ]
        )
    mean_colour = tuple(int(round(255 * value)) for value in cfg["mean"])
    square = [ResizeLongerSide(resize, interpolation), PadToSquare(resize, mean_colour)]
    if not train:
        return T.Compose([*square, T.CenterCrop(crop), *finish])
    rotation = T.RandomApply([T.RandomRotation(REFERENCE_ROTATION_DEGREES)], p=TEXT_ROTATION_PROBABILITY)
    return T.Compose([*square, rotation, T.RandomCrop(crop), *finish])


BIRDS_AUGMENTS = ("none", "trivial")


def birds_train_transform(
    size: int,
    min_scale: float,
    mean: list[float] | tuple[float, ...],
    std: list[float] | tuple[float, ...],
    augment: str = "none",
) -> Callable[[Image.Image], torch.Tensor]:
    """The fine-tuning augmentation: a random-resized crop (``min_scale`` to all of the area), a horizontal flip and
    a mild brightness, contrast and saturation jitter. By default no hue change and no colour-altering policies: a
    bird's colours are what tells many species, and what half its explanations name. ``augment="trivial"`` adds
    TrivialAugment (one random operation of random strength per photo, colour-altering ones included) after the
    crop: the standard strong augmentation, for longer runs to try on the validation photos."""
    if augment not in BIRDS_AUGMENTS:
        raise ValueError(f"augment must be one of {BIRDS_AUGMENTS}, not {augment!r}")
    strong = [T.TrivialAugmentWide(interpolation=T.InterpolationMode.BILINEAR)] if augment == "trivial" else []
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=T.InterpolationMode.BILINEAR),
            T.RandomHorizontalFlip(),
            *strong,
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            T.ToTensor(),
            T.Normalize(mean=list(mean), std=list(std)),
        ]
    )


class TrainView:
    """The fine-tuning augmentation of :func:`birds_train_transform`, also saying where its input lies in the photo:
    ``view(image) -> (tensor, frame, flipped)`` (see :class:`explainer.verdict.where.InputFrame`; a flipped input shows
    the frame mirrored left to right)."""

    def __init__(self, size: int, min_scale: float, mean, std) -> None:
        self.size, self.scale = size, (min_scale, 1.0)
        self.jitter = T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)
        self.finish = T.Compose([T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))])

    def __call__(self, image: Image.Image):
        from explainer.verdict.where import InputFrame

        top, left, height, width = T.RandomResizedCrop.get_params(image, self.scale, (3 / 4, 4 / 3))
        crop = TF.resized_crop(image, top, left, height, width, [self.size, self.size], antialias=True)
        flipped = bool(torch.rand(1) < 0.5)
        if flipped:
            crop = TF.hflip(crop)
        frame = InputFrame(left, top, width / self.size, height / self.size, self.size, self.size, *image.size)
        return self.finish(self.jitter(crop)), frame, flipped


class EvalView:
    """The test view of a preprocessing dict (resize the shorter side, centre crop) with its frame:
    ``view(image) -> (tensor, frame, False)``."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg, self.transform = dict(cfg), build_transform(cfg, train=False)

    def __call__(self, image: Image.Image):
        from explainer.verdict.where import resize_crop_frame

        frame = resize_crop_frame(image.size, self.cfg["resize"], self.cfg["crop"])
        return self.transform(image), frame, False
