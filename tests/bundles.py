"""Tiny, untrained weights files for the app's tests and benchmarks (no download, no real data, a second or less).

``make_shapes_bundle(path)``: the reference shapes pair with the real shapes metadata.
``make_birds_bundle(path)``: a small timm pair (``test_resnet`` by default) with CUB-like display names and groups.
``birds_like_metadata(n_classes, n_explanations)``: metadata of the real birds size (200 x 312) without a network,
for timing the post-processing and charts alone.
``running_app()``: ``app.py`` on such bundles, launched once per test process (for the client and browser tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from explainer.pair.bundle import save_bundle
from explainer.pair.models import build_pair, reference_shapes_architecture
from webapp.process import free_port

SHAPES_CLASSES = ["circle", "triangle", "square", "rectangle"]
SHAPES_EXPLANATIONS = [
    "no vertices",
    "three vertices",
    "four vertices",
    "all opposite edges are parallel",
    "all edges have the same size",
]
SHAPES_PRIOR = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0]]
IMAGENET_PREPROCESSING = {
    "kind": "imagenet",
    "resize": 256,
    "crop": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bilinear",
    "train_variant": "code",
}
_BIRD_GROUPS = (
    ("has_bill_shape", "bill shape", ("dagger", "hooked", "needle", "cone", "spatulate", "all-purpose")),
    ("has_wing_color", "wing color", ("blue", "brown", "grey", "yellow", "black", "white", "red", "buff")),
    ("has_size", "size", ("small", "medium", "large", "very large")),
    ("has_tail_shape", "tail shape", ("forked", "rounded", "notched", "fan-shaped", "pointed", "squared")),
)


def required_shapes_metadata(architecture: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shapes task's required metadata exactly as the brief describes it (spelled out here, not taken from the
    library, so that the tests check the library against the brief)."""
    return {
        "task": "shapes",
        "architecture": architecture or reference_shapes_architecture(),
        "class_names": list(SHAPES_CLASSES),
        "explanation_names": list(SHAPES_EXPLANATIONS),
        "explanation_groups": [[0, 1, 2]],
        "class_explanations": [list(map(float, row)) for row in SHAPES_PRIOR],
        "ranking": "normalized",
        "preprocessing": {"kind": "shapes", "size": 64, "crop_to_content": True, "margin": 0.1},
        "defaults": {"threshold": 0.5, "top_n": 1},
    }


def shapes_metadata() -> dict[str, Any]:
    """The required metadata plus what a trained file also carries: a description, metrics, training details."""
    return {
        **required_shapes_metadata(),
        "description": "Untrained development pair (test fixture).",
        "metrics": {"main_accuracy": 0.25, "explanation_accuracy": 0.5},
        "training": {"epochs": 0, "note": "untrained"},
    }


def make_shapes_bundle(path: str | Path, seed: int = 0) -> Path:
    """Write an untrained reference shapes pair (random weights from ``seed``) to ``path``."""
    torch.manual_seed(seed)
    pair = build_pair(reference_shapes_architecture())
    path = Path(path)
    save_bundle(path, pair, shapes_metadata())
    return path


def _bird_names(n_explanations: int) -> tuple[list[str], list[str], list[list[int]]]:
    """Raw names, display names and groups for ``n_explanations`` CUB-like attributes, cycling over the groups."""
    raw, display, groups = [], [], []
    index, round_ = 0, 0
    while index < n_explanations:
        for prefix, readable, values in _BIRD_GROUPS:
            group = []
            for value in values:
                if index >= n_explanations:
                    break
                suffix = "" if round_ == 0 else f" {round_ + 1}"
                raw.append(f"{prefix}{suffix.replace(' ', '_')}::{value}")
                display.append(f"{readable}{suffix}: {value}")
                group.append(index)
                index += 1
            if group:
                groups.append(group)
            if index >= n_explanations:
                break
        round_ += 1
    return raw, display, groups


def birds_like_metadata(
    n_classes: int = 200,
    n_explanations: int = 312,
    architecture: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """CUB-shaped metadata: weighted ranking, a continuous class x explanation prior, groups, readable names."""
    raw, display, groups = _bird_names(n_explanations)
    rng = np.random.default_rng(seed)
    prior = np.round(rng.random((n_classes, n_explanations)) ** 3, 4)
    return {
        "task": "birds",
        "architecture": architecture
        or {
            "family": "timm",
            "model_name": "test_resnet",
            "n_classes": n_classes,
            "n_explanations": n_explanations,
            "join": "add",
        },
        "class_names": [f"Bird species {i + 1:03d}" for i in range(n_classes)],
        "explanation_names": raw,
        "explanation_display_names": display,
        "explanation_groups": groups,
        "class_explanations": prior.tolist(),
        "ranking": "weighted",
        "preprocessing": dict(IMAGENET_PREPROCESSING),
        "defaults": {"threshold": 0.8, "top_n": min(10, n_classes)},
        "description": "Untrained development pair (test fixture).",
        "metrics": {"main_accuracy": 0.0, "explanations": {"mean_auroc": 0.5}},
        "training": {"epochs": 0},
    }


def make_birds_bundle(
    path: str | Path,
    n_classes: int = 5,
    n_explanations: int = 12,
    model_name: str = "test_resnet",
    seed: int = 0,
    default_top_n: int | None = None,
) -> Path:
    """Write an untrained timm pair (add join) with birds-like metadata to ``path``.

    ``default_top_n`` overrides the metadata's default top N (e.g. 10 with 5 classes, to test the cap).
    """
    architecture = {
        "family": "timm",
        "model_name": model_name,
        "n_classes": n_classes,
        "n_explanations": n_explanations,
        "join": "add",
    }
    torch.manual_seed(seed)
    pair = build_pair(architecture, verify=False)
    meta = birds_like_metadata(n_classes, n_explanations, architecture, seed)
    if default_top_n is not None:
        meta["defaults"]["top_n"] = default_top_n
    path = Path(path)
    save_bundle(path, pair, meta)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# The app, launched once per test process on tiny weights
# ----------------------------------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
_RUNNING: dict[str, Any] = {}


def import_app(env: dict[str, str], module_name: str = "app") -> Any:
    """Import ``app.py`` (which loads its models at import) with ``env`` applied to ``os.environ`` meanwhile.

    app.py sets torch to one thread for serving; the thread count is restored so that later tests in the same
    process (training, evaluation) keep torch's default.
    """
    import importlib.util
    import os
    import sys

    saved = {key: os.environ.get(key) for key in env}
    threads = torch.get_num_threads()
    os.environ.update(env)
    try:
        spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / "app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        torch.set_num_threads(threads)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def running_app(shipped: bool = False) -> tuple[Any, str]:
    """``app.py`` launched once per test process: (module, base URL). On tiny shapes and birds bundles, or with
    ``shipped`` on the weights in ``weights/`` (what users get)."""
    key = "app-shipped" if shipped else "app"
    if key not in _RUNNING:
        import atexit
        import tempfile

        if shipped:
            env = {
                "EXPLAINER_SHAPES_WEIGHTS": str(REPO_ROOT / "weights" / "shapes.safetensors"),
                "EXPLAINER_BIRDS_WEIGHTS": str(REPO_ROOT / "weights" / "birds.safetensors"),
            }
        else:
            folder = Path(tempfile.mkdtemp(prefix="explainer-app-test-"))
            env = {
                "EXPLAINER_SHAPES_WEIGHTS": str(make_shapes_bundle(folder / "shapes.safetensors")),
                "EXPLAINER_BIRDS_WEIGHTS": str(make_birds_bundle(folder / "birds.safetensors")),
            }
        module = import_app(env, key.replace("-", "_"))
        port = free_port()
        module.demo.launch(
            **module.LAUNCH_OPTIONS, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
        )
        atexit.register(module.demo.close)
        _RUNNING[key] = (module, f"http://127.0.0.1:{port}/")
    return _RUNNING[key]
