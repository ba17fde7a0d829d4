"""Tests for explainer.pair.pretrained: reading weight files and mapping differently-named state dicts by order."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from explainer.pair.pretrained import (
    PretrainedWeightsError,
    classifier_prefixes,
    load_pretrained_backbone,
    load_state_dict_file,
    map_state_dict_by_order,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class TinyNet(nn.Module):
    """A small CNN with BatchNorm (running stats + num_batches_tracked) and a Linear classifier."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.block = nn.Conv2d(width, width, 3)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(torch.relu(self.bn(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def renamed(state: dict[str, torch.Tensor], keep_counters: bool = True) -> OrderedDict[str, torch.Tensor]:
    """Same tensors, same order, other names (layer0.weight, ...), like the package file versus timm."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for index, (key, value) in enumerate(state.items()):
        if key.endswith("num_batches_tracked"):
            if keep_counters:
                out[f"layer{index}.num_batches_tracked"] = value.clone()
            continue
        out[f"layer{index}.{key.rsplit('.', 1)[-1]}"] = value.clone()
    return out


def load_via_file(model: nn.Module, source: dict[str, torch.Tensor], folder: Path) -> list[str]:
    """Save a source state dict as a .pth file and load it with the public entry point."""
    path = folder / "source.pth"
    torch.save(source, path)
    return load_pretrained_backbone(model, path)


def randomised(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    return model


def test_timm_efficientnet_lite0_renamed_keys_map_back_exactly(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    source_model = randomised(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000))
    source = renamed(source_model.state_dict())
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    assert classifier_prefixes(target) == ["classifier"]

    mapping = map_state_dict_by_order(source, target)
    assert mapping.matched_by == "order" and mapping.skipped_target_keys == []
    assert len(mapping.state_dict) == 247  # 296 tensors minus 49 num_batches_tracked
    left = load_via_file(target, source, tmp_path)
    assert left == []
    for key, value in source_model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(target.state_dict()[key], value), key


def test_classifier_skipped_when_class_count_differs(tmp_path: Path) -> None:
    source_model = randomised(TinyNet(num_classes=1000))
    path = tmp_path / "weights.pth"
    torch.save(renamed(source_model.state_dict()), path)
    target = TinyNet(num_classes=200)
    head_before = target.head.weight.detach().clone()

    left = load_pretrained_backbone(target, path)

    assert left == ["head.weight", "head.bias"]
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.stem.weight, source_model.stem.weight)
    assert torch.equal(target.bn.running_var, source_model.bn.running_var)
    mapping = map_state_dict_by_order(renamed(source_model.state_dict()), TinyNet(num_classes=200))
    assert mapping.unused_source_keys == ["layer8.weight", "layer9.bias"]
    with pytest.raises(PretrainedWeightsError, match="weights.pth.*head.weight"):
        load_pretrained_backbone(TinyNet(num_classes=200), path, skip_classifier=False)


def test_same_class_count_loads_the_classifier_too(tmp_path: Path) -> None:
    source_model = randomised(TinyNet(num_classes=10))
    target = TinyNet(num_classes=10)
    assert load_via_file(target, renamed(source_model.state_dict()), tmp_path) == []
    assert torch.equal(target.head.weight, source_model.head.weight)


def test_shape_mismatch_names_index_keys_and_shapes() -> None:
    source = renamed(TinyNet(width=8).state_dict())
    with pytest.raises(PretrainedWeightsError) as error:
        map_state_dict_by_order(source, TinyNet(width=16))
    message = str(error.value)
    assert "tensor 0" in message and "layer0.weight" in message and "stem.weight" in message
    assert "(8, 3, 3, 3)" in message and "(16, 3, 3, 3)" in message


def test_count_mismatch_raises_for_extra_and_missing_tensors() -> None:
    source = renamed(TinyNet().state_dict())
    extra = OrderedDict(source)
    extra["layer99.weight"] = torch.zeros(3)
    with pytest.raises(PretrainedWeightsError, match=r"first unmatched source tensor: index 9 'layer99.weight'"):
        map_state_dict_by_order(extra, TinyNet())
    short = OrderedDict(list(source.items())[:-1])  # drops the classifier bias
    expected = "first unmatched target tensor.*head.bias.*8 tensors but target has 9"
    with pytest.raises(PretrainedWeightsError, match=expected):
        map_state_dict_by_order(short, TinyNet())


def test_feature_dimension_of_classifier_must_still_match() -> None:
    source = renamed(TinyNet(num_classes=1000).state_dict())
    source = OrderedDict((key, value[:, :4] if key == "layer8.weight" else value) for key, value in source.items())
    with pytest.raises(PretrainedWeightsError, match="classifier: only its class count may differ"):
        map_state_dict_by_order(source, TinyNet(num_classes=200))


@pytest.mark.parametrize("keep_counters", [True, False])
def test_num_batches_tracked_present_on_one_side_only(keep_counters: bool, tmp_path: Path) -> None:
    source_model = randomised(TinyNet())
    source = renamed(source_model.state_dict(), keep_counters=keep_counters)
    target = TinyNet()
    mapping = map_state_dict_by_order(source, target)
    assert not any(key.endswith("num_batches_tracked") for key in mapping.state_dict)
    load_via_file(target, source, tmp_path)
    assert torch.equal(target.bn.running_mean, source_model.bn.running_mean)


def test_exact_names_match_by_name_even_if_order_differs() -> None:
    source_model = randomised(TinyNet())
    shuffled = OrderedDict(reversed(list(source_model.state_dict().items())))
    mapping = map_state_dict_by_order(shuffled, TinyNet())
    assert mapping.matched_by == "name"
    assert torch.equal(mapping.state_dict["stem.weight"], source_model.stem.weight)


def test_load_state_dict_file_formats_and_wrappers(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {key: value.contiguous() for key, value in TinyNet().state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "w.ckpt")
    torch.save({"model": state}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.ckpt", "w.pt"):
        loaded = load_state_dict_file(tmp_path / name)
        assert sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], state[k]) for k in state), name
    assert list(load_state_dict_file(tmp_path / "w.pt")) == list(state)  # torch pickles keep the order


def test_safetensors_refuses_order_mapping(tmp_path: Path) -> None:
    """safetensors stores keys sorted by name, so their order says nothing: only exact names may be matched."""
    from safetensors.torch import save_file

    source_model = randomised(TinyNet())
    save_file(dict(renamed(source_model.state_dict())), tmp_path / "renamed.safetensors")
    with pytest.raises(PretrainedWeightsError, match="renamed.safetensors.*sorted by name"):
        load_pretrained_backbone(TinyNet(), tmp_path / "renamed.safetensors")
    save_file(dict(source_model.state_dict()), tmp_path / "same_names.safetensors")
    target = TinyNet()
    assert load_pretrained_backbone(target, tmp_path / "same_names.safetensors") == []
    assert torch.equal(target.bn.running_var, source_model.bn.running_var)


def test_load_state_dict_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="missing.pth does not exist"):
        load_state_dict_file(tmp_path / "missing.pth")
    (tmp_path / "weights.onnx").write_bytes(b"x")
    with pytest.raises(PretrainedWeightsError, match=r"weights.onnx.*suffix '.onnx'"):
        load_state_dict_file(tmp_path / "weights.onnx")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(PretrainedWeightsError, match="garbage.pth cannot be read"):
        load_state_dict_file(tmp_path / "garbage.pth")
    # weights_only=True refuses arbitrary pickled objects instead of executing them
    with open(tmp_path / "pickled.pth", "wb") as handle:
        pickle.dump({"weight": TinyNet}, handle, protocol=2)
    with pytest.raises(PretrainedWeightsError, match="pickled.pth cannot be read"):
        load_state_dict_file(tmp_path / "pickled.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "not_tensors.pth")
    with pytest.raises(PretrainedWeightsError, match="not_tensors.pth: entry 'epoch' is not a tensor"):
        load_state_dict_file(tmp_path / "not_tensors.pth")
