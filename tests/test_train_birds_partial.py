"""The CPU recipe that fine-tunes the main network's last stages on cached activations, on a tiny CUB-format fixture:
the activation cache resumes, the early stages keep their ImageNet weights while the last ones learn, the validation
run is reused, and the written file reproduces the predictions computed from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cub_fixture import make_cub_fixture
from explainer.predictor import Explainer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _imagenet_file(tmp_path: Path) -> Path:
    """A stand-in for downloaded ImageNet weights: a seeded EfficientNet-Lite0 with its 1000-class head."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    path = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "train/train_birds_partial.py", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def test_partial_recipe_fine_tunes_the_last_stages_and_writes_a_loadable_pair(tmp_path: Path) -> None:
    data = make_cub_fixture(tmp_path, n_classes=3, n_attributes=12, images_per_class=6)
    imagenet = _imagenet_file(tmp_path)
    cache, out, weights = tmp_path / "taps", tmp_path / "run", tmp_path / "birds.safetensors"
    common = [
        "--data",
        str(data),
        "--model",
        "tf_efficientnet_lite0",
        "--pretrained-file",
        str(imagenet),
        "--img-size",
        "64",
        "--resize",
        "72",
        "--views",
        "plain,flip,crop1",
        "--max-epochs",
        "2",
        "--chunk",
        "4",
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
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--output",
        str(weights),
    ]
    first = _run(common)
    assert first.returncode == 0, first.stderr[-3000:]
    chunks = sorted(p.name for p in cache.glob("*.npz"))
    assert chunks == [
        f"{kind}-{k:04d}.npz" for kind in ("test-plain", "train-crop1", "train-flip", "train-plain") for k in range(3)
    ]
    with np.load(cache / "train-plain-0000.npz") as plain, np.load(cache / "train-crop1-0000.npz") as crop:
        assert plain["main"].shape[1:] == plain["mirror"].shape[1:] and plain["main"].dtype == np.float16
        assert crop["mirror"].size == 0 and not np.array_equal(plain["main"], crop["main"])

    explainer = Explainer.load(weights)
    meta = explainer.meta
    assert meta["training"]["recipe"].startswith("ImageNet backbone, its last stages and classifier fine-tuned")
    assert meta["training"]["main_network"]["trained_on"] == "all training photos"
    assert "last two stages fine-tuned" in meta["description"]
    check = meta["metrics"]["weights_file_check"]  # the file, from the images, against the cache's predictions
    assert check["max_abs_class_prob_diff"] < 5e-3 and check["max_abs_explanation_prob_diff"] < 5e-3
    report = json.loads((out / "partial_report.json").read_text())
    assert [h["epoch"] for h in report["validation_run"]["history"]] == [1, 2]
    assert report["final_run"]["epochs"] == report["validation_run"]["chosen_epochs"]
    assert "kept classifier" in json.loads((out / "validation" / "report.json").read_text())["validation"]["main"]

    # Frozen up to the cached level (ImageNet weights, rounded to float16), learnt after it.
    from safetensors.torch import load_file

    source, shipped = load_file(str(imagenet)), explainer.pair.main.state_dict()
    for key in ("conv_stem.weight", "blocks.4.0.conv_pw.weight", "blocks.4.0.bn1.running_mean"):
        np.testing.assert_array_equal(shipped[key].numpy(), source[key].half().float().numpy())
    for key in ("blocks.5.0.conv_pw.weight", "conv_head.weight"):
        assert not np.array_equal(shipped[key].numpy(), source[key].half().float().numpy())
    # the mirror is warm-started from the fine-tuned main network
    mirror = explainer.pair.mirror.net.state_dict()
    np.testing.assert_array_equal(mirror["blocks.5.0.conv_pw.weight"].numpy(), shipped["blocks.5.0.conv_pw.weight"])

    # Resume: the validation run and the cache are reused; a missing chunk is recomputed, the others are untouched.
    kept = (cache / "train-plain-0000.npz").stat().st_mtime_ns
    (cache / "train-crop1-0001.npz").unlink()
    again = _run([*common[:-2], "--output", str(tmp_path / "again.safetensors")])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "activations train/crop1: chunk 2/3" in again.stdout and "train/plain" not in again.stdout
    assert "validation run reused" in again.stdout
    assert (cache / "train-plain-0000.npz").stat().st_mtime_ns == kept
    assert Explainer.load(tmp_path / "again.safetensors").default_threshold == explainer.default_threshold

    # A cache made at another resolution is refused in plain words.
    refused = _run([a if a != "64" else "56" for a in common] + ["--extract-only"])
    assert refused.returncode != 0 and "was made with other settings (preprocessing)" in refused.stderr
    assert "Traceback" not in refused.stderr
