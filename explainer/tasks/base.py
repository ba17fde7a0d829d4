"""What a task is: the one place where shapes and birds (and any later task) differ.

A :class:`Task` owns everything that depends on the kind of image: how an image becomes the network's input, which
images are refused before any network runs, how the input is shown back and how a weights file's metadata is built;
nothing of the app (its words live in :mod:`webapp.words`). The rest of the code asks the task and never compares
task names, so a new task is one subclass (registered in :mod:`explainer.tasks`), its training script and its words.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from explainer.inputs.imagecheck import MIN_SIDE, ImageError, check_size, is_flat
from explainer.verdict.where import InputFrame

ImageLike = Image.Image | np.ndarray
Preprocessor = Callable[[ImageLike], torch.Tensor]  # one image (PIL or array, any mode) -> the input tensor (C, H, W)
FramedPreprocessor = Callable[[ImageLike], tuple[torch.Tensor, InputFrame]]  # ... and where the input lies

MIN_IMAGE_SIDE = MIN_SIDE  # smaller images carry no shape or bird to classify


class ImageCheckError(ImageError):
    """An image refused before any network runs; the message is plain words for the user (a sentence)."""


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:].rstrip(".") + "."


def display_names(meta: Mapping[str, Any]) -> list[str]:
    """The explanation names people read: the weights' display names, else the explanation names."""
    return list(meta.get("explanation_display_names") or meta["explanation_names"])


class Task(ABC):
    """The base class: shared checks here; what differs is abstract, and each subclass must answer it."""

    name: ClassVar[str]  # the weights' ``task`` field and the app tab's id
    preprocessing_kind: ClassVar[str]  # the ``preprocessing.kind`` a weights file for this task carries
    ranking: ClassVar[str]  # the class ranking formula (see explainer.verdict.postprocess.rank_scores)

    @abstractmethod
    def preprocessor(self, preprocessing: Mapping[str, Any]) -> Preprocessor:
        """The function that turns one image into the network's input, for a weights file's ``preprocessing``."""
        raise NotImplementedError

    @abstractmethod
    def framed_preprocessor(self, preprocessing: Mapping[str, Any]) -> FramedPreprocessor:
        """Like :meth:`preprocessor`, also saying where the input lies in the image (for heatmaps)."""
        raise NotImplementedError

    def check_image(self, image: Image.Image) -> Image.Image:
        """Refuse a decoded image the library's one check (:mod:`explainer.inputs.imagecheck`) would refuse: too many
        pixels, a side under 8 px, longer than 20:1, a single flat colour (raises :class:`ImageCheckError`); returns
        the image to use. Files are checked by :func:`explainer.inputs.imagecheck.check_image` before they are
        decoded."""
        try:
            check_size(*image.size)
            if is_flat(image):
                raise ImageError("the image is blank (a single flat colour): there is nothing to classify in it")
        except ImageError as err:
            raise ImageCheckError(_sentence(str(err))) from err
        return image

    @abstractmethod
    def preview(self, tensor: torch.Tensor, preprocessing: Mapping[str, Any], size: int) -> Image.Image:
        """The network's input as a picture ``size`` pixels square ("what the network sees")."""
        raise NotImplementedError

    channels_last: ClassVar[bool] = False  # run the networks channels-last (faster for some CPU convolutions)

    @abstractmethod
    def bundle_metadata(
        self,
        architecture: dict,
        class_explanations: np.ndarray | Sequence | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        vocabulary: Mapping[str, Sequence] | None = None,
    ) -> dict:
        """The metadata every weights file of this task carries (explainer.pair.bundle's required keys): the pair's
        ``architecture``, names and groups (``vocabulary``: ``class_names``, ``explanation_names`` and, where the
        task's names are not fixed, ``class_raw_names``, ``explanation_display_names``, ``explanation_groups``), the
        class x explanation prior, the ranking, ``preprocessing`` (what the task does not fix) and ``defaults``
        (``threshold``, ``top_n``). Callers add training details, metrics and a description."""

    def own_scope(self, explanation_probs: np.ndarray, class_explanations: np.ndarray, threshold: float) -> Any:
        """In or out of scope judged by the pair itself, for files without a scope network: by default nothing is
        measured and every image is in scope (``scope_score`` 1.0, ``scope_method`` "none")."""
        from explainer.pair.scope import unmeasured_result

        return unmeasured_result()

    @abstractmethod
    def sample_image(self) -> np.ndarray:
        """A synthetic input for benchmarks (no data needed)."""
        raise NotImplementedError

    def example_images(self) -> list[tuple[str, np.ndarray]]:
        """(name, image) pairs the app offers as clickable examples; none by default."""
        return []
