"""Parts of the birds recipe that need no training: the test view chosen within the app's time budget, and the
weights file written only after its stored (float16) form has reproduced the predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bundles import birds_like_metadata
from explainer.pair.bundle import read_bundle
from explainer.pair.models import build_pair
from train.train_birds import save_checked

ARCHITECTURE = {"family": "timm", "model_name": "test_resnet", "n_classes": 5, "n_explanations": 12, "join": "add"}


def _pair_and_predict():
    torch.manual_seed(0)
    pair = build_pair(ARCHITECTURE, verify=False).eval()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    @torch.no_grad()
    def predict(net) -> tuple[np.ndarray, np.ndarray]:
        logits, expl = net.eval()(images)
        return torch.softmax(logits.float(), 1).numpy(), torch.sigmoid(expl.float()).numpy()

    return pair, predict


def test_a_file_that_reproduces_the_predictions_is_written_once_with_its_check(tmp_path: Path) -> None:
    pair, predict = _pair_and_predict()
    probs, expls = predict(pair)
    output, scratch = tmp_path / "out" / "birds.safetensors", tmp_path / "run"
    output.parent.mkdir()
    scratch.mkdir()
    check = save_checked(output, scratch, pair, birds_like_metadata(5, 12, ARCHITECTURE), {}, probs, expls, predict)
    assert check["photos"] == 4 and check["top1_agreement"] == 1.0 and check["max_abs_class_prob_diff"] <= 5e-3
    tensors, meta = read_bundle(output)
    assert meta["metrics"]["weights_file_check"] == check and meta["storage_dtype"] == "float16"
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.is_floating_point())
    assert list(scratch.iterdir()) == []  # the trial copy is gone


@pytest.mark.parametrize("earlier", [False, True])
def test_a_file_that_does_not_reproduce_them_is_not_written(tmp_path: Path, earlier: bool) -> None:
    pair, predict = _pair_and_predict()
    probs, expls = predict(pair)
    wrong = np.roll(probs, 1, axis=1)  # other answers: what a wrong view or a wrong tensor would give
    output = tmp_path / "birds.safetensors"
    if earlier:
        output.write_bytes(b"the file of an earlier run")
    with pytest.raises(SystemExit, match="was not written") as raised:
        save_checked(output, tmp_path, pair, birds_like_metadata(5, 12, ARCHITECTURE), {}, wrong, expls, predict)
    assert "top1_agreement" in str(raised.value)
    if earlier:
        assert output.read_bytes() == b"the file of an earlier run"
    else:
        assert not output.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["birds.safetensors"] if earlier else [])


SCORES = {"256/224": 0.70, "256/224+flip": 0.71, "256/256": 0.72, "256/256+flip": 0.74, "288/256": 0.73,
          "288/256+flip": 0.75, "256/whole": 0.70, "256/whole+flip": 0.72, "288/whole": 0.69,
          "288/whole+flip": 0.76, "320/whole": 0.68, "320/whole+flip": 0.70}  # fmt: skip


def test_the_test_view_is_the_best_on_validation_within_the_time_budget() -> None:
    from train.train_birds import pick_view

    preprocessing, record = pick_view(SCORES, 256 * 256)  # one 256-px pass: no mirror image, no whole photo
    assert record["validation_top1"]["chosen"] == "288/256" and record["budget_pixels"] == 65536
    assert preprocessing["resize"] == 288 and preprocessing["crop"] == 256 and preprocessing["flip_average"] is False
    assert record["input_pixels"]["288/256+flip"] == 2 * 256 * 256 and record["input_pixels"]["256/224"] == 224 * 224
    assert set(record["validation_top1"]) == set(SCORES) | {"chosen"}

    preprocessing, record = pick_view(SCORES, 0)  # no budget: the best of all
    assert record["validation_top1"]["chosen"] == "288/whole+flip" and preprocessing["crop"] == 0
    assert preprocessing["flip_average"] is True

    _, record = pick_view(SCORES | {"256/224": 0.73}, 256 * 256)  # a tie goes to the fewer pixels
    assert record["validation_top1"]["chosen"] == "256/224"
    with pytest.raises(SystemExit, match="no test view fits"):
        pick_view(SCORES, 1000)


def test_the_classifier_refit_in_the_test_view_is_kept_when_it_helps_and_resumed(tmp_path: Path, capsys) -> None:
    """The refit (FixRes) changes the classifier alone, is kept only when validation top-1 rises, is written once
    and read back by a rerun instead of being computed again."""
    from safetensors.torch import load_file

    from cub_fixture import make_cub_fixture
    from explainer.birds import cub
    from explainer.pair.models import create_timm_main
    from train.train_birds import Processes, parse_args, refit_head, view_preprocessing

    data = make_cub_fixture(tmp_path, n_classes=3, n_attributes=12, images_per_class=6)
    args = parse_args(["--data", str(data), "--pretrained-file", "unused", "--out", str(tmp_path), "--workers", "0",
                       "--head-epochs", "30"])  # fmt: skip
    meta = cub.read_cub(args.data, image_level_attributes=False)
    train = meta.train_indices
    torch.manual_seed(0)
    net = create_timm_main("tf_efficientnet_lite0", meta.num_classes).eval()
    trunk = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    with torch.no_grad():  # a classifier that knows nothing: every photo gets the first species
        net.get_classifier().weight.zero_()
        net.get_classifier().bias.zero_()
    view = view_preprocessing(72, 64, False)
    # validation = the training photos: a refit that fits them must raise it (the mechanics, not the gain)
    net, summary = refit_head(args, meta, net, view, train, train, tmp_path / "head-val", Processes())
    assert summary["choice"] == "refit" and summary["history"][-1]["val_top1"] > summary["history"][0]["val_top1"]
    assert len(summary["history"]) == 31 and summary["config"]["head_epochs"] == 30
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trunk.items())  # nothing but the classifier moved
    stored = load_file(tmp_path / "head-val" / "head.safetensors")
    assert torch.equal(stored["weight"], net.get_classifier().weight) and stored["weight"].abs().sum() > 0

    with torch.no_grad():
        net.get_classifier().weight.zero_()
    capsys.readouterr()
    net, again = refit_head(args, meta, net, view, train, train, tmp_path / "head-val", Processes())
    assert again == summary and "head-val finished: refit" in capsys.readouterr().out  # read back, not recomputed
    assert torch.equal(net.get_classifier().weight, stored["weight"])

    args.head_choice = "as trained"  # the final step applies the validation step's choice: here, no refit
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net, final = refit_head(args, meta, net, view, train, None, tmp_path / "head-final", Processes())
    assert final["choice"] == "as trained" and final["config"]["applied"] == "as trained"
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_no_refit_when_its_epochs_are_zero(tmp_path: Path) -> None:
    from cub_fixture import make_cub_fixture
    from explainer.birds import cub
    from explainer.pair.models import create_timm_main
    from train.train_birds import Processes, parse_args, refit_head, view_preprocessing

    data = make_cub_fixture(tmp_path, n_classes=3, n_attributes=12, images_per_class=6)
    args = parse_args(["--data", str(data), "--pretrained-file", "unused", "--out", str(tmp_path), "--workers", "0",
                       "--head-epochs", "0"])  # fmt: skip
    meta = cub.read_cub(args.data, image_level_attributes=False)
    net = create_timm_main("tf_efficientnet_lite0", meta.num_classes).eval()
    before = net.get_classifier().weight.clone()
    train = meta.train_indices
    net, summary = refit_head(args, meta, net, view_preprocessing(72, 64, False), train, train, tmp_path / "h",
                              Processes())  # fmt: skip
    assert summary["choice"] == "as trained" and len(summary["history"]) == 1
    assert torch.equal(net.get_classifier().weight, before)
