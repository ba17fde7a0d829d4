"""A short birds training run on a tiny CUB-format fixture: reader, augmentation, both phases, weights, evaluation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cub_fixture import make_cub_fixture
from explainer.predictor import Explainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_and_evaluate_birds_on_a_fixture(tmp_path):
    data = make_cub_fixture(tmp_path, n_classes=3, n_attributes=12, images_per_class=6)
    out, weights = tmp_path / "run", tmp_path / "birds.safetensors"
    common = [
        "--model",
        "resnet18",
        "--img-size",
        "64",
        "--resize",
        "72",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--optimizer",
        "adamw",
        "--lr",
        "1e-3",
        "--labels",
        "class",
        "--pos-weight",
        "--warm-start-mirror",
        "--top-n",
        "2",
        "--no-progress",
        "--device",
        "cpu",
    ]
    run = subprocess.run(
        [
            sys.executable,
            "train/train_birds.py",
            "--data",
            str(data),
            "--epochs-main",
            "2",
            "--epochs-mirror",
            "1",
            "--out",
            str(out),
            "--output",
            str(weights),
            "--half",
            *common,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in rows] == [("main", 1), ("main", 2), ("mirror", 1)]
    explainer = Explainer.load(weights)
    meta = explainer.meta
    assert meta["task"] == "birds" and len(meta["class_names"]) == 3
    assert meta["defaults"] == {"threshold": 0.8, "top_n": 2}
    assert meta["storage_dtype"] == "float16" and "float16_storage" in meta["metrics"]
    assert meta["training"]["label_source"] == "class" and "top-1" in meta["description"]
    assert meta["explanation_display_names"][0].count(":") == 1  # "group: value", not has_group::value
    evaluated = subprocess.run(
        [
            sys.executable,
            "train/evaluate_birds.py",
            "--weights",
            str(weights),
            "--data",
            str(data),
            "--noise",
            "4",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "eval"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    summary = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    assert 0.0 <= summary["top1"] <= 1.0 and len(summary["noise_questioned"]) == 1
    assert (tmp_path / "eval" / "report.md").read_text().startswith("# Birds evaluation")
