"""The CPU recipe for birds on a tiny CUB-format fixture: frozen backbone, feature cache that resumes, heads fitted on
the cache, a weights file that reproduces the cached predictions, and a cache made with other settings refused."""

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
from explainer.calibration import reliability, threshold_sensitivity
from explainer.predictor import Explainer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _imagenet_file(tmp_path: Path) -> Path:
    """A stand-in for downloaded ImageNet weights: a seeded timm resnet18 with its 1000-class head."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, whatever else is installed
    return subprocess.run(
        [sys.executable, "train/train_birds_frozen.py", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=400,
    )


def test_frozen_recipe_caches_resumes_and_writes_a_loadable_pair(tmp_path: Path) -> None:
    data = make_cub_fixture(tmp_path, n_classes=3, n_attributes=12, images_per_class=6)
    cache, out, weights = tmp_path / "cache", tmp_path / "run", tmp_path / "birds.safetensors"
    common = [
        "--data",
        str(data),
        "--model",
        "resnet18",
        "--pretrained-file",
        str(_imagenet_file(tmp_path)),
        "--img-size",
        "64",
        "--resize",
        "72",
        "--chunk",
        "4",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--threads",
        "1",
        "--views",
        "plain,flip",
        "--val-fraction",
        "0.34",
        "--top-n",
        "2",
        "--half",
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--output",
        str(weights),
    ]
    first = _run(common)
    assert first.returncode == 0, first.stderr[-2000:]
    chunks = sorted(p.name for p in cache.glob("*.npz"))
    assert chunks == [f"{kind}-{k:04d}.npz" for kind in ("test-plain", "train-flip", "train-plain") for k in range(3)]

    explainer = Explainer.load(weights)
    meta = explainer.meta
    assert len(explainer.class_names) == 3 and meta["storage_dtype"] == "float16"
    assert meta["training"]["recipe"].startswith("frozen ImageNet backbone")
    assert meta["training"]["label_source"] == "class" and 0.3 < meta["defaults"]["threshold"] < 1.0
    metrics = meta["metrics"]
    assert metrics["test_images"] == 9
    assert set(metrics["calibration"]) == {"against class >= 50%", "against class share"}
    assert metrics["weights_file_check"]["max_abs_class_prob_diff"] < 2e-3  # the file reproduces the cached features
    assert metrics["weights_file_check"]["max_abs_explanation_prob_diff"] < 2e-3
    assert (out / "reliability_test.png").stat().st_size > 0
    evaluated = subprocess.run(  # the evaluation script on a trained file and the fixture's test photos
        [sys.executable, "train/evaluate_birds.py", "--weights", str(weights), "--data", str(data), "--noise", "4",
         "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    summary = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    assert 0.0 <= summary["top1"] <= 1.0 and len(summary["noise_questioned"]) == 1
    assert (tmp_path / "eval" / "report.md").read_text().startswith("# Birds evaluation")
    report = json.loads((out / "report.json").read_text())
    assert any(key.startswith("binary targets") for key in report["validation"]["mirror"])
    assert any(key.startswith("soft targets") for key in report["validation"]["mirror"])
    assert report["choices"]["targets"] in ("binary", "soft") and set(report["validation"]["thresholds"]) == {
        "binary",
        "soft",
    }

    # The frozen backbone is the ImageNet one; only the two classifiers were learnt.
    from safetensors.torch import load_file

    source = load_file(str(tmp_path / "imagenet.safetensors"))
    shipped = explainer.pair.main.state_dict()
    np.testing.assert_allclose(
        shipped["layer1.0.conv1.weight"].numpy(), source["layer1.0.conv1.weight"].half().float().numpy()
    )

    # The validation choices of a run can be reused (no second search); the same settings give the same file.
    reused = _run(
        [*common[:-2], "--output", str(tmp_path / "again.safetensors"), "--validation-report", str(out / "report.json")]
    )
    assert reused.returncode == 0, reused.stderr[-2000:]
    assert "validation choices from" in reused.stdout
    assert Explainer.load(tmp_path / "again.safetensors").default_threshold == explainer.default_threshold

    # Resume: a missing chunk is recomputed, the others are reused untouched.
    kept = (cache / "train-plain-0000.npz").stat().st_mtime_ns
    (cache / "test-plain-0002.npz").unlink()
    again = _run([*common, "--extract-only"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "cache test/plain: chunk 3/3" in again.stdout and "train/plain" not in again.stdout
    assert (cache / "train-plain-0000.npz").stat().st_mtime_ns == kept

    # A cache made at another resolution is refused in plain words.
    refused = _run([a if a != "64" else "56" for a in common] + ["--extract-only"])
    assert refused.returncode != 0 and "was made with other settings (preprocessing)" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_reliability_and_threshold_sensitivity_by_hand() -> None:
    probs = np.array([[0.05, 0.95], [0.15, 0.85]])
    targets = np.array([[0, 1], [1, 1]])
    curve = reliability(probs, targets, bins=2)
    assert curve["count"] == [2, 2]
    # bin 0: mean prediction 0.10, mean target 0.5; bin 1: 0.90 and 1.0 -> ECE = 0.5 * 0.4 + 0.5 * 0.1
    assert curve["ece"] == pytest.approx(0.25)
    soft = reliability(np.array([0.2, 0.8]), np.array([0.2, 0.8]), bins=5)
    assert soft["ece"] == pytest.approx(0.0)
    groups = [[0, 1]]
    expl = np.array([[0.6, 0.4, 0.2], [0.9, 0.1, 0.95], [0.35, 0.2, 0.5]])
    moved = threshold_sensitivity(expl, groups, 0.5, 0.3)
    # sample 0: 0.6 kept either way; 0.2 never -> same. sample 1: same. sample 2: 0.35 gains a place at 0.3.
    assert moved["n_changed"] == 1 and moved["share_changed"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        reliability(np.array([0.5]), np.array([1.0, 0.0]))
