"""train/bench_app.py prints every timing row of the birds handler on a small file whose gate has its own trunk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from scope_fixtures import HORSE, add_scope

from bundles import make_birds_bundle

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_birds_handler_timings_with_a_gate_of_its_own(tmp_path: Path) -> None:
    path = add_scope(make_birds_bundle(tmp_path / "birds.safetensors"), HORSE, share_preprocessing=False)
    done = subprocess.run(
        [sys.executable, "train/bench_app.py", "--skip-server", "--skip-resnet", "--tasks", "birds", "--birds-weights",
         str(path), "--repeats", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("whole view", "pair + gate as served", "the gate alone", "BatchNorm folded (served)", "both networks"):
        assert row in done.stdout, done.stdout[-2000:]
