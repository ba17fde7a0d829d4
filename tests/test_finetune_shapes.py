"""train/finetune_shapes_sketches.py on a tiny run: it writes a loadable pair, records every step, and the extra
filled shapes reach the training data."""

from __future__ import annotations

import json
from pathlib import Path

from bundles import make_shapes_bundle
from explainer.pair.bundle import load_bundle
from train.finetune_shapes_sketches import main

TINY = [
    "--base-per-class",
    "6",
    "--sketches-per-class",
    "4",
    "--sketch-outliers",
    "22",
    "--outliers",
    "8",
    "--noise",
    "4",
    "--batch-size",
    "16",
    "--no-progress",
    "--threads",
    "1",
]


def test_a_mirror_only_step_with_filled_shapes_and_tall_boxes(tmp_path: Path) -> None:
    init = make_shapes_bundle(tmp_path / "init.safetensors")
    first = tmp_path / "first.safetensors"
    main(
        [
            "--init",
            str(init),
            "--out",
            str(tmp_path / "run1"),
            "--output",
            str(first),
            "--epochs",
            "1",
            "--mirror-epochs",
            "1",
            *TINY,
        ]
    )
    second = tmp_path / "second.safetensors"
    report = main(
        [
            "--init",
            str(first),
            "--out",
            str(tmp_path / "run2"),
            "--output",
            str(second),
            "--epochs",
            "0",
            "--mirror-epochs",
            "1",
            "--filled-per-class",
            "10",
            "--tall-boxes",
            *TINY,
        ]
    )
    assert report["phases"]["main"]["best_epoch"] == 0
    before, _ = load_bundle(first)
    after, meta = load_bundle(second)
    main_before, main_after = before.main.state_dict(), after.main.state_dict()
    assert all((main_before[k] == main_after[k]).all() for k in main_before)  # --epochs 0 keeps the main network
    steps = meta["training"]["finetune"]
    assert isinstance(steps, list) and len(steps) == 2
    assert steps[0]["filled_per_class"] == 0 and not steps[0]["tall_boxes"]
    assert steps[1]["filled_per_class"] == 10 and steps[1]["tall_boxes"]
    # (6 mixed + 10 filled) per class, four classes, less the validation share
    assert steps[1]["data"]["main_train"] > steps[0]["data"]["main_train"] + 20
    json.dumps(meta)
