"""Fine-tuning a pretrained network: parameter groups, a warm-up + cosine learning rate per step, an exponential
moving average (EMA) of the weights, and an epoch loop that resumes after a kill.

``fit`` writes into its folder, after every epoch and atomically:
- ``last.pt``: the network, its EMA, the optimizer, RNG states, the epoch just completed and the configuration
  (a rerun with another configuration refuses to resume: it would mix two recipes);
- ``metrics.jsonl``: one line per completed epoch (lines past the checkpoint, from a killed run, are dropped).
Checkpoints hold only tensors and plain values, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .loop import _rng_state, _set_rng_state, _truncate_log, load_checkpoint, save_checkpoint


class ResumeError(ValueError):
    """A run folder holds a checkpoint of another configuration."""


EvalFn = Callable[[nn.Module], dict[str, float]]  # network -> validation metrics


def freeze(model: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Stop gradients into the parameters under ``prefixes`` and return their names.

    Their BatchNorm layers are kept in eval mode by :func:`train_mode`: frozen early stages keep their ImageNet
    statistics, and their backward pass (the costliest part on a CPU, at the highest resolution) is never run.
    """
    prefixes = tuple(prefixes)
    frozen = []
    for name, parameter in model.named_parameters():
        if prefixes and name.startswith(prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except modules whose parameters are all frozen, which stay in eval mode."""
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            module.eval()


def parameter_groups(
    model: nn.Module, lr: float, head_lr: float, weight_decay: float, head_prefixes: Iterable[str]
) -> list[dict[str, Any]]:
    """Trainable parameters in four groups: backbone or new head, with or without weight decay.

    Biases and normalisation weights (1-D tensors) get no decay; the new head learns at ``head_lr``.
    """
    head_prefixes = tuple(head_prefixes)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        key = (name.startswith(head_prefixes), parameter.ndim > 1)
        groups.setdefault(key, []).append(parameter)
    return [
        {"params": params, "lr": head_lr if is_head else lr, "base_lr": head_lr if is_head else lr,
         "weight_decay": weight_decay if decays else 0.0}
        for (is_head, decays), params in sorted(groups.items())
    ]  # fmt: skip


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning-rate factor at ``step``: linear warm-up from 0 to 1, then a cosine down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class WeightAverage(nn.Module):
    """An exponential moving average of a network's parameters and buffers (``decay`` per optimizer step)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        import copy

        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be between 0 and 1, got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        averaged = self.module.state_dict()
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                averaged[name].lerp_(value.detach(), 1.0 - self.decay)
            else:
                averaged[name].copy_(value)


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    epochs_run: int


def _read_history(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def fit(
    out_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, int]],
    evaluate: EvalFn,
    epochs: int,
    steps_per_epoch: int,
    warmup_steps: int,
    ema_decay: float | None,
    config: dict[str, Any],
    log: Callable[[str], None] = print,
    is_main: bool = True,
    barrier: Callable[[], None] | None = None,
) -> tuple[FitResult, WeightAverage | None]:
    """Train ``model`` for ``epochs`` epochs (resuming from ``out_dir/last.pt``), learning rate per step.

    Each param group's ``base_lr`` is scaled by :func:`warmup_cosine`. ``loss_fn(model, batch)`` returns the mean
    loss and the batch size. ``evaluate(network)`` is called after every epoch on the network and on its EMA;
    their metrics are logged with the prefixes ``raw_`` and ``ema_``. Returns the history and the EMA.

    Several processes (torchrun): each calls ``fit`` with the same arguments, ``model`` being the plain network
    (``loss_fn`` may run it through its DistributedDataParallel wrapper); all load the same checkpoint, but only
    the one with ``is_main`` evaluates, logs and writes, while the others wait in ``barrier`` (called by every
    process after every epoch and before the history is read back from ``metrics.jsonl``, so all return the same).
    """
    wait = barrier if barrier is not None else lambda: None
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, log_path = out_dir / "last.pt", out_dir / "metrics.jsonl"
    ema = WeightAverage(model, ema_decay) if ema_decay else None
    start_epoch = 1
    if last_path.exists():
        ckpt = load_checkpoint(last_path)
        if ckpt.get("config") != config:
            raise ResumeError(f"{last_path} was written by another configuration; use a new folder or the same options")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["ema"])
        _set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"]) + 1
        if is_main:
            _truncate_log(log_path, "fit", start_epoch - 1)
            log(f"resuming after epoch {start_epoch - 1} from {last_path}")
    total_steps = epochs * steps_per_epoch
    for epoch in range(start_epoch, epochs + 1):
        started = time.perf_counter()
        train_mode(model)
        total, count, step = 0.0, 0, (epoch - 1) * steps_per_epoch
        for batch in train_batches(epoch):
            factor = warmup_cosine(step, total_steps, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            loss, size = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model)
            total += float(loss.detach()) * size
            count += size
            step += 1
        train_seconds = time.perf_counter() - started
        model.eval()
        if not is_main:  # the main process evaluates and writes meanwhile
            wait()
            continue
        metrics = {f"raw_{k}": v for k, v in evaluate(model).items()}
        if ema is not None:
            metrics.update({f"ema_{k}": v for k, v in evaluate(ema.module).items()})
        row = {
            "phase": "fit",
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            **metrics,
            "lr_factor": warmup_cosine(step - 1, total_steps, warmup_steps),
            "train_seconds": round(train_seconds, 1),
            "seconds": round(time.perf_counter() - started, 1),
        }
        with log_path.open("a") as fh:  # log first: a kill before the checkpoint leaves a line that resume drops
            fh.write(json.dumps(row) + "\n")
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(),
            "epoch": epoch,
            "config": config,
        }
        if ema is not None:
            payload["ema"] = ema.module.state_dict()
        save_checkpoint(last_path, payload)
        log(f"epoch {epoch}/{epochs} " + " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)))
        wait()
    wait()
    return FitResult(_read_history(log_path), epochs - start_epoch + 1), ema
