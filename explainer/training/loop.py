"""The training loop both worlds share: epochs with progress bars, a JSON-lines metrics log, atomic checkpoints,
best-validation weights, and resume after a kill.

A phase (``"main"``, ``"mirror"`` or ``"joint"``) writes into its output folder:
- ``<phase>.last.pt``: model, optimizer, scheduler, RNG states and the epoch just completed (written atomically after
  every epoch, so a run killed at any moment, SIGKILL included, resumes from its last completed epoch);
- ``<phase>.best.pt``: the model state with the best validation score so far;
- ``metrics.jsonl``: one line per completed epoch (lines of epochs that a resumed run redoes are dropped first).
Checkpoints hold only tensors and plain values, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from explainer.pair.bundle import atomic_write_bytes
from explainer.pair.models import unwrap

StepFn = Callable[[Any], tuple[torch.Tensor, int, dict[str, float]]]  # batch -> (loss, batch size, extra sums)
EvalFn = Callable[[], dict[str, float]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _rng_state() -> dict[str, Any]:
    """RNG states as plain values and tensors (what ``weights_only=True`` accepts)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _truncate_log(log: Path, phase: str, last_epoch: int) -> None:
    """Drop log lines of this phase past the checkpoint's epoch (a killed run may have written them)."""
    if not log.exists():
        return
    kept = []
    for line in log.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if row.get("phase") == phase and row.get("epoch", 0) > last_epoch:
            continue
        kept.append(line)
    atomic_write_bytes(log, ("\n".join(kept) + "\n").encode() if kept else b"")


@dataclass
class PhaseResult:
    best_score: float
    best_epoch: int
    best_metrics: dict[str, float]
    epochs_run: int


def run_phase(
    phase: str,
    out_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    train_batches: Callable[[int], Iterable[Any]],
    step: StepFn,
    evaluate: EvalFn,
    epochs: int,
    score_key: str | None,
    config: dict[str, Any] | None = None,
    progress: bool = True,
    is_main_process: bool = True,
) -> PhaseResult:
    """Train ``model`` for ``epochs`` epochs, resuming from ``<phase>.last.pt`` when present.

    ``train_batches(epoch)`` yields the epoch's batches; ``step(batch)`` returns (loss, batch size, extra sums) and
    the loop does backward + optimizer step; ``evaluate()`` returns validation metrics, of which ``score_key`` (higher
    is better) picks the best checkpoint; ``score_key=None`` keeps the last epoch (no selection, e.g. when the only
    held-out set is the test set). ``config`` is stored in the checkpoint and must match on resume.
    """
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log = out_dir / f"{phase}.last.pt", out_dir / f"{phase}.best.pt", out_dir / "metrics.jsonl"
    net = unwrap(model)
    start_epoch, best_score, best_epoch, best_metrics = 1, -math.inf, 0, {}
    if last_path.exists():
        ckpt = load_checkpoint(last_path)
        if config is not None and ckpt.get("config") not in (None, config):
            raise ValueError(
                f"{last_path} was written with another configuration; use a new output folder or the same options"
            )
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"]) + 1
        best_score, best_epoch = float(ckpt["best_score"]), int(ckpt["best_epoch"])
        best_metrics = dict(ckpt.get("best_metrics", {}))
        if is_main_process:
            _truncate_log(log, phase, start_epoch - 1)
            print(f"[{phase}] resuming after epoch {start_epoch - 1} from {last_path}", flush=True)
    for epoch in range(start_epoch, epochs + 1):
        model.train()
        started = time.perf_counter()
        total, count, extras = 0.0, 0, {}
        batches = train_batches(epoch)
        bar = tqdm(batches, desc=f"{phase} {epoch}/{epochs}", leave=False, disable=not (progress and is_main_process))
        for batch in bar:
            loss, size, extra = step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * size
            count += size
            for k, v in extra.items():
                extras[k] = extras.get(k, 0.0) + float(v)
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
        if scheduler is not None:
            scheduler.step()
        model.eval()
        metrics = evaluate()
        row = {
            "phase": phase,
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            **{f"train_{k}": v / max(count, 1) for k, v in extras.items()},
            **metrics,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 3),
        }
        score = float(epoch) if score_key is None else metrics[score_key]
        improved = score > best_score
        if improved:
            best_score, best_epoch, best_metrics = score, epoch, dict(metrics)
        if is_main_process:
            # log first: a kill before the checkpoint leaves a line that resume drops; the reverse order lost lines
            with log.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            if improved:
                save_checkpoint(best_path, {"model": net.state_dict(), "epoch": epoch, "metrics": metrics})
            save_checkpoint(
                last_path,
                {
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": _rng_state(),
                    "epoch": epoch,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "best_metrics": best_metrics,
                    "config": config,
                },
            )
            if progress:
                shown = " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float))
                print(f"[{phase}] epoch {epoch}/{epochs} {shown}", flush=True)
    if best_path.exists():
        net.load_state_dict(load_checkpoint(best_path)["model"])
    return PhaseResult(best_score, best_epoch, best_metrics, epochs - start_epoch + 1)
