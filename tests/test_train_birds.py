"""The one birds recipe on a tiny CUB-format fixture: the main network's validation and final steps, the frozen
early stages, the moving average, the per-epoch log and the resume after a finished or killed run."""

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
    # read back from the chosen network and the summary: the 60 MB checkpoint is not needed (nor read) once finished
    assert again.stdout.count("finished, its network read from main.safetensors") == 2
    assert "epoch 1/2" not in again.stdout
    assert load_file(out / "main-final" / "main.safetensors")["conv_head.weight"].equal(trained["conv_head.weight"])

    refused = _run([*args[:-2], "--lr", "0.5", "--stop-after", "main-val"])  # another recipe in the same folder
    assert refused.returncode != 0 and "another configuration" in refused.stderr and "Traceback" not in refused.stderr


def test_one_command_writes_the_file_and_retrains_the_mirror_for_a_given_main(tmp_path: Path) -> None:
    from explainer.pair.bundle import read_bundle
    from explainer.verdict.predictor import Explainer

    data = make_cub_fixture(tmp_path, n_classes=3, n_attributes=12, images_per_class=6)
    imagenet, out, output = _imagenet_file(tmp_path), tmp_path / "run", tmp_path / "birds.safetensors"
    common = ["--data", str(data), "--pretrained-file", str(imagenet), "--model", "tf_efficientnet_lite0",
              "--img-size", "64", "--eval-size", "64", "--epochs", "1", "--mirror-epochs", "1", "--batch-size", "2",
              "--val-fraction", "0.34", "--workers", "0", "--mirror-width", "8"]  # fmt: skip
    made = _run([*common, "--out", str(out), "--scope-file", str(imagenet), "--output", str(output)])
    assert made.returncode == 0, made.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= {
        "main-val",
        "main-final",
        "head-val",
        "head-final",
        "mirror-val",
        "mirror-final",
        "validation.json",
    }
    explainer = Explainer.load(output)
    meta = explainer.meta
    assert meta["architecture"]["mirror"]["kind"] == "parts" and explainer.scope is not None
    assert meta["training"]["command"].startswith("python train/train_birds.py --data")
    assert meta["training"]["wall_seconds_of_this_run"] > 0 and not meta["training"]["skip_final"]
    head = json.loads((out / "head-val" / "summary.json").read_text())  # the classifier's refit in the test view
    assert meta["training"]["choices"]["classifier"] == head["choice"] in ("refit", "as trained")
    assert head["config"]["preprocessing"] == meta["preprocessing"]
    steps = meta["training"]["steps"]
    assert all(steps[step]["wall_seconds"] > 0 for step in ("main-val", "main-final", "mirror-val", "mirror-final"))
    views = json.loads((out / "views.json").read_text())  # every view alone and with its mirror image, on validation
    assert len(views["validation_top1"]) == 13 and "320/whole+flip" in views["validation_top1"]
    assert meta["preprocessing"] == views["preprocessing"] and steps["test_view"]["chosen"] == views["validation_top1"][
        "chosen"]  # fmt: skip
    assert explainer.pair.flip_average is meta["preprocessing"]["flip_average"]
    assert ("mirror image" in meta["description"]) is meta["preprocessing"]["flip_average"]
    report = meta["metrics"]["validation"]
    assert report["threshold"] == meta["defaults"]["threshold"] and 0 <= report["pointing"]["mirror"] <= 1
    assert meta["metrics"]["test_images"] == 9 and 0 <= meta["metrics"]["accuracy"] <= 1
    evaluated = subprocess.run(  # the evaluation script on the file, reusing the saved test predictions
        [sys.executable, "train/evaluate_birds.py", "--weights", str(output), "--data", str(data), "--noise", "4",
         "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "eval"), "--predictions",
         str(out / "test_predictions.npz")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    summary = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    assert summary["top1"] == pytest.approx(meta["metrics"]["accuracy"]) and len(summary["noise_questioned"]) == 1
    assert (tmp_path / "eval" / "report.md").read_text().startswith("# Birds evaluation")
    pointed = subprocess.run(  # the pointing table and contact sheets of the file on the validation photos
        [sys.executable, "train/evaluate_where.py", "--weights", str(output), "--data", str(data), "--out",
         str(tmp_path / "where"), "--val-fraction", "0.34", "--sheet", "2", "--workers", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert pointed.returncode == 0, pointed.stderr[-2000:]
    table = json.loads((tmp_path / "where" / "pointing.json").read_text())
    assert table["photos"] == 3 and table["counted"] > 0 and 0 <= table["mirror"] <= 1
    assert (tmp_path / "where" / "report.md").read_text().startswith("# Where the explanations look (birds)")
    intervened = subprocess.run(  # test-time intervention from the saved test predictions
        [sys.executable, "train/evaluate_intervention.py", "--weights", str(output), "--data", str(data),
         "--predictions", str(out / "test_predictions.npz"), "--out", str(tmp_path / "intervention")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert intervened.returncode == 0, intervened.stderr[-2000:]
    curve = json.loads((tmp_path / "intervention" / "intervention.json").read_text())["ranking_top1_by_k"]
    assert len(curve) == 4 and curve[-1] == 1.0  # 3 groups; all corrected: the species' own attributes win
    assert (tmp_path / "intervention" / "intervention.png").stat().st_size > 0
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    _, _, where = explainer.where(image)
    assert where.explanation_maps.shape[0] == 12

    again = _run([*common, "--out", str(tmp_path / "mirror-only"), "--main-file", str(output), "--skip-final",
                  "--output", str(tmp_path / "again.safetensors")])  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    first, _ = read_bundle(output)
    second, second_meta = read_bundle(tmp_path / "again.safetensors")
    for key in first:
        if key.startswith(("main.", "scope.")):
            assert torch.equal(first[key], second[key]), f"{key} should come unchanged from --main-file"
    assert second_meta["training"]["skip_final"] and "main-final" not in {
        p.name for p in (tmp_path / "mirror-only").iterdir()
    }


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """The script under torchrun, two processes on the CPU (gloo)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*command, "train/train_birds.py", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )


def test_two_processes_under_torchrun_write_once_and_resume(tmp_path: Path) -> None:
    from explainer.verdict.predictor import Explainer

    data = make_cub_fixture(tmp_path, n_classes=3, n_attributes=12, images_per_class=6)
    imagenet, out, output = _imagenet_file(tmp_path), tmp_path / "run", tmp_path / "birds.safetensors"
    args = ["--data", str(data), "--pretrained-file", str(imagenet), "--model", "tf_efficientnet_lite0",
            "--img-size", "64", "--eval-size", "64", "--epochs", "1", "--mirror-epochs", "1", "--batch-size", "2",
            "--val-fraction", "0.34", "--workers", "0", "--mirror-width", "8", "--device", "cpu", "--out", str(out),
            "--scope-file", str(imagenet), "--output", str(output)]  # fmt: skip
    made = _torchrun(args)
    assert made.returncode == 0, made.stderr[-3000:]
    meta = Explainer.load(output).meta
    assert meta["training"]["command"].startswith("torchrun --nproc_per_node 2 train/train_birds.py --data")
    for step in ("main-val", "main-final", "mirror-val", "mirror-final"):  # process 1 wrote no line of its own
        assert len((out / step / "metrics.jsonl").read_text().splitlines()) == 1, step
    assert made.stdout.count("validation photos") == 1 and made.stdout.count("test: top-1") == 1  # printed once

    again = _torchrun(args)  # every step finished: all are resumed, none is trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("resuming after epoch 1") == 2 and "epoch 1/1" not in again.stdout  # the mirrors
    assert again.stdout.count("finished, its network read from") == 2  # the main networks, said once
    assert all(len((out / step / "metrics.jsonl").read_text().splitlines()) == 1 for step in ("main-val", "mirror-val"))

    refused = _torchrun([*args[:-2], "--batch-size", "3"])  # 3 photos do not divide between 2 processes
    assert refused.returncode != 0 and "must divide evenly among them" in refused.stderr
    assert 'train_birds.py", line' not in refused.stderr  # no traceback of the script (torchrun prints its own)
