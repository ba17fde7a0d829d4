"""The CPU recipe that fine-tunes every stage of the birds main network (train/train_birds_full.py), on a tiny
CUB-format fixture: the validation and final runs checkpoint every epoch and resume, every stage learns, and the file
says how it was trained and reproduces its own predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cub_fixture import make_cub_fixture
from explainer.predictor import Explainer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "train/train_birds_full.py", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def test_full_recipe_fine_tunes_every_stage_and_resumes(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    from train import train_birds_frozen as frozen
    from train.train_birds_partial import save_main

    data = make_cub_fixture(tmp_path, n_classes=3, n_attributes=12, images_per_class=6)
    torch.manual_seed(0)
    imagenet = tmp_path / "imagenet.safetensors"  # a stand-in for downloaded ImageNet weights
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(imagenet))
    starts = {}
    for name in ("validation", "final"):  # what train_birds_partial.py hands over: a main network with a classifier
        pair, _ = frozen.build_frozen_pair("tf_efficientnet_lite0", 3, 12, str(imagenet), half=True)
        starts[name] = tmp_path / f"main-{name}.safetensors"
        save_main(pair, starts[name], {"trained_on": name})
    out, weights = tmp_path / "run", tmp_path / "birds.safetensors"
    common = [
        "--data",
        str(data),
        "--model",
        "tf_efficientnet_lite0",
        "--pretrained-file",
        str(imagenet),
        "--val-init",
        str(starts["validation"]),
        "--final-init",
        str(starts["final"]),
        "--img-size",
        "64",
        "--resize",
        "72",
        "--max-epochs",
        "2",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--threads",
        "1",
        "--val-fraction",
        "0.34",
        "--top-n",
        "2",
        "--out",
        str(out),
        "--output",
        str(weights),
    ]
    first = _run(common)
    assert first.returncode == 0, first.stderr[-3000:]

    report = json.loads((out / "full_report.json").read_text())
    assert [h["epoch"] for h in report["validation_run"]["history"]] == [0, 1, 2]  # top-1 before any epoch too
    from explainer import cub

    n_train = len(cub.read_cub(data).train_indices)
    assert report["final_run"]["epochs"] == 1 and report["final_run"]["images"] == n_train
    assert sorted(p.name for p in (out / "validation-run").glob("epoch-*")) == [
        "epoch-1.safetensors",
        "epoch-2.safetensors",
    ]
    explainer = Explainer.load(weights)
    meta = explainer.meta
    assert "every stage fine-tuned on a CPU" in meta["description"]
    assert "then every stage fine-tuned (train/train_birds_full.py)" in meta["training"]["recipe"]
    assert meta["training"]["main_network"]["trained_on"] == "all training photos"
    check = meta["metrics"]["weights_file_check"]
    assert check["max_abs_class_prob_diff"] < 5e-3 and check["max_abs_explanation_prob_diff"] < 5e-3
    # every stage learnt, the stem included; the mirror is warm-started from the fine-tuned main network
    before, after = load_file(str(starts["final"])), explainer.pair.main.state_dict()
    for key in ("conv_stem.weight", "blocks.1.0.conv_pw.weight", "blocks.6.0.conv_pw.weight", "classifier.weight"):
        assert not np.array_equal(after[key].numpy(), before[key].float().numpy()), key
    mirror = explainer.pair.mirror.net.state_dict()
    np.testing.assert_array_equal(mirror["blocks.1.0.conv_pw.weight"].numpy(), after["blocks.1.0.conv_pw.weight"])

    # Resume: a rerun finds every epoch on disk and trains nothing again.
    again = _run([*common[:-2], "--output", str(tmp_path / "again.safetensors")])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stdout and "epoch 1/" not in again.stdout
    again_main = Explainer.load(tmp_path / "again.safetensors").pair.main.state_dict()
    np.testing.assert_array_equal(again_main["conv_stem.weight"].numpy(), after["conv_stem.weight"].numpy())
