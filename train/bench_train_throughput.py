"""Training throughput of the pair step (main frozen, mirror training) against a main-only step, same run.

    python train/bench_train_throughput.py --model resnet50 --batch-size 64 --img-size 224 --bf16 --channels-last

Synthetic tensors (the data loader is not measured). Prints images/s of both steps and their ratio as JSON; the
mirror roughly doubles the compute, so a ratio near 0.5 is the ideal (the frozen main network needs no backward).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.nn.functional as F

from explainer.pair.models import MirrorPair, build_pair


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--explanations", type=int, default=312)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def build(args: argparse.Namespace, device: torch.device) -> tuple[MirrorPair, torch.memory_format]:
    """The pair of ``--model`` on ``device``, in the memory format asked for."""
    pair = build_pair(
        {
            "family": "timm",
            "model_name": args.model,
            "n_classes": args.classes,
            "n_explanations": args.explanations,
            "join": "add",
            "start": "stem",
        },
        coupling="joint",
    ).to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    pair.to(memory_format=fmt)
    return pair, fmt


def images_per_second(step: Callable[[], None], args: argparse.Namespace, device: torch.device) -> float:
    """``step`` run ``--warmup`` times, then timed over ``--steps``."""
    for _ in range(args.warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main_only_rate(
    pair: MirrorPair, x: torch.Tensor, y: torch.Tensor, autocast: Any, args: argparse.Namespace, device: torch.device
) -> float:
    """Images/s of a training step of the main network alone."""
    pair.set_coupling("joint")
    pair.main.train()
    opt_main = torch.optim.SGD(pair.main.parameters(), lr=1e-4, momentum=0.9)

    def main_step() -> None:
        with autocast:
            loss = F.cross_entropy(pair.main(x).float(), y)
        opt_main.zero_grad(set_to_none=True)
        loss.backward()
        opt_main.step()

    return images_per_second(main_step, args, device)


def pair_rate(
    pair: MirrorPair, x: torch.Tensor, t: torch.Tensor, autocast: Any, args: argparse.Namespace, device: torch.device
) -> float:
    """Images/s of a pair step: the frozen main network's forward (no backward), the mirror trained on its taps."""
    pair.set_coupling("frozen")
    pair.mirror.train()
    opt_mirror = torch.optim.SGD(pair.mirror.parameters(), lr=1e-4, momentum=0.9)

    def pair_step() -> None:
        with autocast:
            with torch.no_grad():
                _, taps = pair.forward_main(x)
            loss = F.binary_cross_entropy_with_logits(pair.mirror(x, taps).float(), t)
        opt_mirror.zero_grad(set_to_none=True)
        loss.backward()
        opt_mirror.step()

    return images_per_second(pair_step, args, device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    pair, fmt = build(args, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else nullcontext()
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device).to(memory_format=fmt)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)
    t = (torch.rand(args.batch_size, args.explanations, device=device) > 0.9).float()
    main_ips = main_only_rate(pair, x, y, autocast, args, device)
    pair_ips = pair_rate(pair, x, t, autocast, args, device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": args.model,
        "batch_size": args.batch_size,
        "img_size": args.img_size,
        "bf16": args.bf16,
        "channels_last": args.channels_last,
        "main_only_images_per_s": round(main_ips, 1),
        "pair_images_per_s": round(pair_ips, 1),
        "ratio_pair_over_main": round(pair_ips / main_ips, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
