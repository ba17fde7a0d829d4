"""The one birds recipe on a tiny CUB-format fixture: the main network's validation and final steps, the frozen
early stages, the moving average, the per-epoch log and the resume after a finished or killed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cub_fixture import make_cub_fixture

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _imagenet_file(tmp_path: Path) -> Path:
    """A stand-in for the downloaded ImageNet weights: a seeded Lite0 with its 1000-class head, as a .pth."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    path = tmp_path / "lite0.pth"
    torch.save(model.state_dict(), path)
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "train/train_birds.py", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )


def test_main_steps_train_choose_on_validation_and_resume(tmp_path: Path) -> None:
    data = make_cub_fixture(tmp_path, n_classes=3, n_attributes=12, images_per_class=6)
    imagenet, out = _imagenet_file(tmp_path), tmp_path / "run"
    args = ["--data", str(data), "--pretrained-file", str(imagenet), "--out", str(out), "--model",
            "tf_efficientnet_lite0", "--img-size", "64", "--eval-size", "64", "--epochs", "2", "--batch-size", "2",
            "--val-fraction", "0.34", "--workers", "0", "--stop-after", "main-final"]  # fmt: skip
    first = _run(args)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "main-val" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0.0 <= r["raw_val_top1"] <= 1.0 and 0.0 <= r["ema_val_top1"] <= 1.0 for r in rows)
    summary = json.loads((out / "main-val" / "summary.json").read_text())
    assert summary["weights"] in ("raw", "ema") and summary["train_photos"] == 6  # 9 training photos less 3
    final = json.loads((out / "main-final" / "summary.json").read_text())
    assert final["weights"] == summary["weights"] and final["train_photos"] == 9  # the choice applied to all

    start = torch.load(imagenet, weights_only=True)
    trained = load_file(out / "main-final" / "main.safetensors")
    assert trained["classifier.weight"].shape == (3, 1280)
    for key in ("conv_stem.weight", "bn1.running_mean", "blocks.0.0.conv_dw.weight", "blocks.1.1.bn1.running_var"):
        assert torch.equal(trained[key], start[key]), f"{key} should keep its ImageNet value"
    for key in ("blocks.2.0.conv_pw.weight", "blocks.6.0.conv_pwl.weight", "conv_head.weight", "bn2.running_mean"):
        assert not torch.equal(trained[key], start[key]), f"{key} should be fine-tuned"

    again = _run(args)  # finished steps are not trained again
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("resuming after epoch 2") == 2 and "epoch 1/2" not in again.stdout
    assert load_file(out / "main-final" / "main.safetensors")["conv_head.weight"].equal(trained["conv_head.weight"])

    refused = _run([*args[:-2], "--lr", "0.5", "--stop-after", "main-val"])  # another recipe in the same folder
    assert refused.returncode != 0 and "another configuration" in refused.stderr and "Traceback" not in refused.stderr
