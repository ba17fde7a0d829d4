"""The shapes training script: a tiny run learns, survives SIGKILL (resume from the last completed epoch), and writes
a weights file that the Explainer loads and uses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from explainer.pair.models import build_pair
from explainer.shapes.training import augment_batch
from explainer.verdict.predictor import Explainer
from train import train_shapes

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "train_shapes.py"

EPOCHS = 6
# Small but real: 40 images per class (half for validation), small wide networks, a larger learning rate and
# PyTorch's BatchNorm momentum so that six short epochs are enough to learn.
TINY = [
    "--arch", "wide", "--main-widths", "8,16,16", "--mirror-widths", "8,16,16", "--n-per-class", "40",
    "--epochs", str(EPOCHS), "--lr", "0.005", "--batch-size", "16", "--bn-momentum", "0.1", "--seed", "0",
    "--noise-eval", "20", "--latency-repeats", "0", "--threads", "1", "--no-progress",
]  # fmt: skip


def _log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_tiny_run_learns_resumes_after_sigkill_and_loads(tmp_path: Path) -> None:
    out, weights = tmp_path / "run", tmp_path / "shapes.safetensors"
    command = [sys.executable, str(SCRIPT), *TINY, "--out", str(out), "--output", str(weights)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "main.last.pt").exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stderr = killed.stderr.read().decode() if killed.stderr else ""
    assert killed.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {stderr[-2000:]}"
    assert not weights.exists()
    done_before = max(r["epoch"] for r in _log_rows(out) if r["phase"] == "main")  # may include a not-saved epoch

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = [line for line in rerun.stdout.splitlines() if line.startswith("[main] resuming after epoch")]
    assert resumed, rerun.stdout[-2000:]
    resumed_after = int(resumed[0].split("epoch")[1].split()[0])
    assert 1 <= resumed_after < EPOCHS and resumed_after in (done_before, done_before - 1)

    rows = _log_rows(out)
    for phase in ("main", "mirror"):
        epochs = [r["epoch"] for r in rows if r["phase"] == phase]
        assert epochs == list(range(1, EPOCHS + 1)), f"{phase} log epochs {epochs}"

    explainer = Explainer.load(weights)
    meta = explainer.meta
    assert meta["task"] == "shapes" and meta["preprocessing"]["crop_to_content"] is True
    assert meta["training"]["phases"]["main"]["epochs"] == EPOCHS
    assert meta["training"]["phases"]["mirror"]["epochs"] == EPOCHS
    validation = meta["metrics"]["validation"]
    # 80 validation images, chance is 25%: >= 50% is far beyond luck (binomial p < 1e-10) yet reliably reached
    assert validation["main_accuracy"] >= 0.5, validation
    assert validation["explanation_exact_match"] >= 0.3, validation  # all five right: chance is about 3%
    prior = np.array(meta["class_explanations"])
    assert prior.shape == (4, 5) and prior[0].tolist() == [1, 0, 0, 0, 0]  # circles: only "no vertices"

    from explainer.shapes import generate_shapes

    shapes = generate_shapes(3, seed=123)
    probs, expl = explainer.infer(list(shapes.images))
    assert probs.shape == (12, 4) and expl.shape == (12, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    result = explainer.explain(probs[0], expl[0])
    assert result.predicted_class in explainer.class_names


def test_warm_start_copies_main_blocks_into_mirror() -> None:
    args = train_shapes.parse_args(["--arch", "wide", "--out", "x", "--output", "y.safetensors"])
    pair = build_pair(train_shapes.architecture_for(args))
    copied = pair.warm_start_from_main()
    assert len(copied) == 2  # mirror blocks 0 and 1 have main blocks 1 and 2; the last one has none
    main1, mirror0 = pair.main.blocks[1][0].weight, pair.mirror.blocks[0][0].weight
    torch.testing.assert_close(mirror0, main1)  # same input (main block 0's output), same widths (default 32)
    torch.testing.assert_close(pair.mirror.blocks[0][2].running_var, pair.main.blocks[1][2].running_var)
    main2, mirror1 = pair.main.blocks[2][0].weight, pair.mirror.blocks[1][0].weight
    own = pair.mirror.blocks[0][0].out_channels  # concat: the mirror's own channels come first, then the main tap
    torch.testing.assert_close(mirror1[:, own:], main2)


def test_augmentation_keeps_a_blank_frame_blank_and_moves_ink() -> None:
    blank = torch.ones(4, 1, 64, 64)
    out = augment_batch(blank, torch.Generator().manual_seed(0))
    assert out.shape == blank.shape and float(out.mean()) > 0.97  # white background stays white (plus faint noise)
    square = torch.ones(8, 1, 64, 64)
    square[:, :, 20:44, 20:44] = 0.0
    moved = augment_batch(square, torch.Generator().manual_seed(1))
    assert float((moved < 0.5).float().sum(dim=(1, 2, 3)).min()) > 200  # the shape is still there
    assert not torch.allclose(moved, square, atol=0.2)


def test_outliers_reach_only_the_mirror_labelled_with_no_explanation() -> None:
    args = train_shapes.parse_args([
        "--arch", "wide", "--n-per-class", "10", "--mirror-noise-fraction", "0.1", "--mirror-outlier-fraction", "0.5",
        "--out", "x", "--output", "y.safetensors",
    ])  # fmt: skip
    data = train_shapes.load_data(args, torch.device("cpu"))
    assert len(data["y_train"]) == 20 and data["mirror_outlier_images"] == 10
    assert data["x_noise"].shape == (2 + 10, 1, 64, 64)  # 2 noise images, then 10 outliers; the main never sees them
    x, e = train_shapes.mirror_training_set(data)
    assert x.shape[0] == 20 + 12 and float(e[20:].abs().sum()) == 0.0 and float(e[:20].sum()) > 0


@pytest.mark.parametrize(
    "bad",
    [
        ["--arch", "reference", "--main-widths", "8,8,8"],
        ["--kernel", "4"],
        ["--epochs", "0"],
        ["--joint", "--mirror-noise-fraction", "0.1"],
        ["--joint", "--mirror-outlier-fraction", "0.1"],
        ["--mirror-outlier-fraction", "-1"],
        ["--main-widths", "8,x"],
    ],
)
def test_bad_options_are_refused(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_shapes.parse_args(["--out", "x", "--output", "y", *bad])
    assert "error" in capsys.readouterr().err
