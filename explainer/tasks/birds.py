"""The birds task: a colour photo of one of the CUB-200-2011 species, ImageNet preprocessing."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from explainer.verdict.where import InputFrame

from .base import FramedPreprocessor, ImageLike, Preprocessor, Task


class BirdsTask(Task):
    name: ClassVar[str] = "birds"
    preprocessing_kind: ClassVar[str] = "imagenet"
    ranking: ClassVar[str] = "weighted"
    channels_last: ClassVar[bool] = True  # EfficientNet's depthwise convolutions: ~20% faster at batch 1 on the CPU

    def preprocessor(self, preprocessing: Mapping[str, Any]) -> Preprocessor:
        """Resize, centre crop and normalise as the weights say; alpha onto white, 16-bit scaled, CMYK/palette
        converted."""
        from explainer.inputs.transforms import build_transform, to_rgb

        transform = build_transform(dict(preprocessing), train=False)

        def preprocess(image: ImageLike) -> torch.Tensor:
            if isinstance(image, np.ndarray):
                image = Image.fromarray(image)
            return transform(to_rgb(image))

        return preprocess

    def framed_preprocessor(self, preprocessing: Mapping[str, Any]) -> FramedPreprocessor:
        """:meth:`preprocessor` and the part of the photo its centre crop keeps."""
        from explainer.inputs.transforms import build_transform, to_rgb
        from explainer.verdict.where import resize_crop_frame

        transform = build_transform(dict(preprocessing), train=False)

        def preprocess(image: ImageLike) -> tuple[torch.Tensor, InputFrame]:
            if isinstance(image, np.ndarray):
                image = Image.fromarray(image)
            frame = resize_crop_frame(image.size, preprocessing["resize"], preprocessing["crop"])
            return transform(to_rgb(image)), frame

        return preprocess

    def check_image(self, image: Image.Image) -> Image.Image:
        """The shared check; the photo comes back flattened to RGB (alpha onto white, 16-bit scaled)."""
        from explainer.inputs.transforms import to_rgb

        return to_rgb(super().check_image(image))

    def preview(self, tensor: torch.Tensor, preprocessing: Mapping[str, Any], size: int) -> Image.Image:
        """The normalised input undone, its longer side ``size`` pixels."""
        array = tensor.detach().float().cpu().numpy()
        mean = np.asarray(preprocessing.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)[:, None, None]
        std = np.asarray(preprocessing.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)[:, None, None]
        rgb = np.clip((array * std + mean) * 255.0, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        height, width = rgb.shape[:2]
        scale = size / max(height, width)  # a whole-photo view keeps its shape
        shape = (max(1, round(width * scale)), max(1, round(height * scale)))
        return Image.fromarray(rgb, mode="RGB").resize(shape, Image.BILINEAR)

    def bundle_metadata(
        self,
        architecture: dict,
        class_explanations: np.ndarray | Sequence | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        vocabulary: Mapping[str, Sequence] | None = None,
    ) -> dict:
        """Birds: CUB's names and attribute groups (``vocabulary``: ``class_names``, ``class_raw_names``,
        ``explanation_names``, ``explanation_display_names``, ``explanation_groups``), the class x attribute prior
        in [0, 1], the weighted ranking, ``preprocessing`` as given and ``defaults`` (``threshold``, ``top_n``; top N
        at most the number of classes). All required."""
        if vocabulary is None or class_explanations is None or preprocessing is None or defaults is None:
            raise ValueError("birds weights need the vocabulary, the prior, the preprocessing and the defaults")
        class_names = list(vocabulary["class_names"])
        return {
            "task": self.name,
            "architecture": architecture,
            "class_names": class_names,
            "class_raw_names": list(vocabulary["class_raw_names"]),
            "explanation_names": list(vocabulary["explanation_names"]),
            "explanation_display_names": list(vocabulary["explanation_display_names"]),
            "explanation_groups": [list(g) for g in vocabulary["explanation_groups"]],
            "class_explanations": np.round(np.asarray(class_explanations), 4).tolist(),
            "ranking": self.ranking,
            "preprocessing": dict(preprocessing),
            "defaults": {
                "threshold": float(defaults["threshold"]),
                "top_n": min(int(defaults["top_n"]), len(class_names)),
            },
        }

    def sample_image(self) -> np.ndarray:
        """Random RGB noise, 256 px."""
        return np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
