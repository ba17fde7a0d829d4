"""The lent-GPU route of the birds recipe, played on the CPU with a tiny CUB-format fixture: the photos packed in
parts, unpacked where the "device" runs, the candidates compared there, the run brought back without its training
checkpoints, and the recipe finished here from what came back."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from cub_fixture import make_cub_fixture

ROOT = Path(__file__).resolve().parents[1]
# on a lent GPU, before the real run (docs/training.md): BIRDS_TEST_DEVICE=cuda python3 -m pytest --noconftest ...
DEVICE = os.environ.get("BIRDS_TEST_DEVICE", "cpu")
pytestmark = pytest.mark.slow
TINY = ("--model tf_efficientnet_lite0 --img-size 64 --eval-size 64 --batch-size 2 --val-fraction 0.34 "
        "--mirror-width 8 --mirror-epochs 1 --epochs 1")  # fmt: skip


def _script(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "train" / name), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=900)  # fmt: skip


def test_packed_parts_hold_the_training_photos_and_metadata_at_their_device_paths(tmp_path: Path) -> None:
    data = make_cub_fixture(tmp_path / "shared", n_classes=3, n_attributes=12, images_per_class=6)
    checkout = tmp_path / "checkout"
    (checkout / ".local").mkdir(parents=True)
    (checkout / ".local" / "weights.pth").write_bytes(b"x" * 5000)
    made = _script("pack_cub.py", ["--data", str(data), "--out", ".pack", "--add", ".local/weights.pth",
                                   "--part-mib", "0.02"], checkout)  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    record = json.loads((checkout / ".pack" / "pack.json").read_text())
    assert len(record["parts"]) > 1 and all(p["bytes"] <= 0.02 * 2**20 for p in record["parts"])
    device = tmp_path / "device"
    names = []
    for part in record["parts"]:
        with zipfile.ZipFile(checkout / ".pack" / part["part"]) as archive:
            assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())  # bytes unchanged
            names += archive.namelist()
            archive.extractall(device)
    assert ".local/weights.pth" in names and "data/cub-200/CUB_200_2011/images.txt" in names
    photos = [n for n in names if n.endswith(".jpg")]
    split = (data / "CUB_200_2011" / "train_test_split.txt").read_text().split()
    assert len(photos) == split[1::2].count("1") == sum(p["photos"] for p in record["parts"])  # training photos only
    for name in photos:
        here = data / "CUB_200_2011" / "images" / name.split("/images/", 1)[1]
        assert (device / name).read_bytes() == here.read_bytes()

    stale = checkout / ".pack" / "part-99.zip"
    stale.write_bytes(b"old")
    too_small = _script("pack_cub.py", ["--data", str(data), "--out", ".pack", "--add", ".local/weights.pth",
                                        "--part-mib", "0.001"], checkout)  # fmt: skip
    assert too_small.returncode != 0 and "does not fit in a part" in too_small.stderr
    assert "Traceback" not in too_small.stderr and stale.exists()  # refused before anything was touched
    outside = _script("pack_cub.py", ["--data", str(data), "--out", ".pack", "--add", str(data / "attributes.txt")],
                      checkout)  # fmt: skip
    assert outside.returncode != 0 and "inside the checkout" in outside.stderr


def test_candidates_on_the_device_then_the_recipe_finished_here(tmp_path: Path) -> None:
    import timm

    from explainer.verdict.predictor import Explainer

    data = make_cub_fixture(tmp_path / "shared", n_classes=3, n_attributes=12, images_per_class=6)
    device = tmp_path / "device"
    (device / "data").mkdir(parents=True)
    shutil.copytree(data, device / "data" / "cub-200")  # what the unpacked parts hold (tested above)
    (device / ".local").mkdir()
    torch.manual_seed(0)
    imagenet = device / ".local" / "lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000).state_dict(), imagenet)

    results = tmp_path / "out"
    ran = _script("device_birds.py", ["--root", str(device), "--pretrained-file", ".local/lite0.pth",
                                      "--common", f"--device {DEVICE} --workers 0 --amp", "--deadline", "1",
                                      "--candidate", f"{TINY} --augment trivial", "--candidate", TINY,
                                      "--results", str(results)], tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:] + (results / "log.txt").read_text()[-3000:]
    choice = json.loads((results / "choice.json").read_text())
    assert choice["chosen"] == "c1" and "skipped" in choice["candidates"]["c2"]  # no time left for the second
    assert 0 <= choice["candidates"]["c1"]["validation_top1"] <= 1
    finish = shlex.split(choice["finish_here"])
    assert "--amp" in finish and "--device" not in finish and "--augment" in finish  # what the configuration holds
    pieces = sorted(results.glob("run.tar.*"))
    assert pieces and (results / "log.txt").read_text().count("$ ") == 2

    here = tmp_path / "here"
    here.mkdir()
    (here / "run.tar").write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(here / "run.tar") as archive:
        names = archive.getnames()
        assert not any(n.endswith("last.pt") for n in names) and "runs/gpu/c1/main-final/main.safetensors" in names
        archive.extractall(here, filter="data")
    out, output = here / "runs" / "gpu" / "c1", here / "birds.safetensors"
    options = finish[finish.index("--output") + 2 :]  # the candidate's and the common configuration's options
    done = _script("train_birds.py", ["--data", str(data), "--pretrained-file", str(imagenet), "--out", str(out),
                                      "--scope-file", str(imagenet), "--output", str(output), "--workers", "0",
                                      *options], here)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("finished, its network read from main.safetensors") == 2  # trained there, not here
    for step in ("main-val", "main-final"):
        assert (
            len((out / step / "metrics.jsonl").read_text().splitlines()) == 1 and not (out / step / "last.pt").exists()
        )
    meta = Explainer.load(output).meta
    assert meta["training"]["steps"]["main-val"]["config"]["augment"] == "trivial"
    assert meta["metrics"]["test_images"] == 9
