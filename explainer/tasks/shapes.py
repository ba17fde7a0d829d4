"""The shapes task: one drawn or generated shape (circle, triangle, square, rectangle), grey, 64 px."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from explainer.verdict.where import InputFrame

from .base import FramedPreprocessor, ImageLike, Preprocessor, Task

LOG = logging.getLogger("explainer.tasks")


class ShapesTask(Task):
    name: ClassVar[str] = "shapes"
    preprocessing_kind: ClassVar[str] = "shapes"
    ranking: ClassVar[str] = "normalized"

    def preprocessor(self, preprocessing: Mapping[str, Any]) -> Preprocessor:
        """Grey, cropped to the ink, 64 px in [0, 1]; raises :class:`explainer.shapes.normalize.NothingToClassify` for a
        blank image."""
        from explainer.shapes.normalize import normalize_shape_image

        size = int(preprocessing.get("size", 64))
        crop_to_content = bool(preprocessing.get("crop_to_content", True))
        margin = float(preprocessing.get("margin", 0.1))

        def preprocess(image: ImageLike) -> torch.Tensor:
            grey = normalize_shape_image(image, size=size, crop_to_content=crop_to_content, margin=margin)
            return torch.from_numpy(grey.astype(np.float32) / 255.0)[None]

        return preprocess

    def framed_preprocessor(self, preprocessing: Mapping[str, Any]) -> FramedPreprocessor:
        """:meth:`preprocessor` and the square of the image it took (the ink's box and margin)."""
        from explainer.shapes.normalize import normalize_shape_image_framed

        size = int(preprocessing.get("size", 64))
        crop_to_content = bool(preprocessing.get("crop_to_content", True))
        margin = float(preprocessing.get("margin", 0.1))

        def preprocess(image: ImageLike) -> tuple[torch.Tensor, InputFrame]:
            grey, (left, top, side) = normalize_shape_image_framed(image, size, crop_to_content, margin)
            height, width = (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]
            frame = InputFrame(left, top, side / size, side / size, size, size, int(width), int(height))
            return torch.from_numpy(grey.astype(np.float32) / 255.0)[None], frame

        return preprocess

    def preview(self, tensor: torch.Tensor, preprocessing: Mapping[str, Any], size: int) -> Image.Image:
        """The cropped 64 px shape, enlarged without smoothing."""
        array = tensor.detach().float().cpu().numpy()
        grey = np.clip(array[0] * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").resize((size, size), Image.NEAREST)

    def bundle_metadata(
        self,
        architecture: dict,
        class_explanations: np.ndarray | Sequence | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        vocabulary: Mapping[str, Sequence] | None = None,
    ) -> dict:
        """Shapes: the fixed names and vertex-count group (``vocabulary`` must be None), the prior (default: the
        reference's table), the normalized ranking, 64 px input (``preprocessing``: ``crop_to_content``, default
        True, and ``margin``, default 0.1), defaults threshold 0.5 and top N 1 unless ``defaults`` says otherwise."""
        from explainer.shapes import CLASS_NAMES, EXPLANATION_GROUPS, EXPLANATION_NAMES, reference_class_explanations

        if vocabulary is not None:
            raise ValueError("the shapes task's names are fixed; leave vocabulary out")
        prior = reference_class_explanations() if class_explanations is None else np.asarray(class_explanations)
        options = dict(preprocessing or {})
        return {
            "task": self.name,
            "architecture": architecture,
            "class_names": list(CLASS_NAMES),
            "explanation_names": list(EXPLANATION_NAMES),
            "explanation_groups": [list(group) for group in EXPLANATION_GROUPS],
            "class_explanations": np.round(prior.astype(np.float64), 6).tolist(),
            "ranking": self.ranking,
            "preprocessing": {
                "kind": self.preprocessing_kind,
                "size": 64,
                "crop_to_content": bool(options.get("crop_to_content", True)),
                "margin": float(options.get("margin", 0.1)),
            },
            "defaults": {"threshold": 0.5, "top_n": 1, **dict(defaults or {})},
        }

    def own_scope(self, explanation_probs: np.ndarray, class_explanations: np.ndarray, threshold: float) -> Any:
        """The pair's own "none of the four" judgement (:func:`explainer.pair.scope.explanation_scope`): the mirror
        learnt to stay silent on outliers and noise, so an image is in scope when some kept explanation supports a
        class."""
        from explainer.pair.scope import explanation_scope

        return explanation_scope(explanation_probs, class_explanations, threshold)

    def sample_image(self) -> np.ndarray:
        """A black rectangle on white."""
        image = np.full((64, 64), 255, np.uint8)
        image[16:48, 10:54] = 0
        return image

    def example_images(self, seed: int = 7) -> list[tuple[str, np.ndarray]]:
        """One image per class and style ("filled", then hand-drawn "outline"), drawn by the project's generator in a
        few milliseconds, so that no image is committed. A style the generator fails on is logged and left out."""
        from explainer.shapes import CLASS_NAMES, generate_shapes

        examples = []
        for style in ("filled", "outline"):
            try:
                shape_set = generate_shapes(n_per_class=1, seed=seed, style=style)
            except Exception:  # examples are a convenience: the app must start without them
                LOG.exception("could not draw the %s example shapes", style)
                continue
            for class_index, class_name in enumerate(CLASS_NAMES):
                row = int(np.flatnonzero(shape_set.labels == class_index)[0])
                examples.append((f"{class_name}-{style}", shape_set.images[row]))
        return examples
