"""What both shapes training scripts share: the 64 px input tensors, noise images, the augmentation, shuffled
batches that resume exactly, Keras's Nadam and the learning-rate schedules, batched prediction, explanation scores.

``train/train_shapes.py`` (the pair from scratch) and ``train/finetune_shapes_sketches.py`` (towards drawings, and
the part mirror) both use them; scripts never import each other.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .normalize import normalize_shape_image

IMAGE_SIZE = 64
CROP_MARGIN = 0.1
EVAL_BATCH = 1024


def to_tensor(images: np.ndarray | Sequence[np.ndarray], crop_to_content: bool) -> torch.Tensor:
    """uint8 images ((N, H, W), or a list of any sizes, grey or RGB) -> float (N, 1, 64, 64) in [0, 1], exactly as
    Explainer.preprocess."""
    out = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = normalize_shape_image(image, size=IMAGE_SIZE, crop_to_content=crop_to_content, margin=CROP_MARGIN)
    out /= 255.0
    return torch.from_numpy(out)[:, None]


def uniform_noise_images(count: int, seed: int) -> np.ndarray:
    """uint8 (count, 64, 64) images, every pixel uniform over the full 0..255 range."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)


def training_noise_images(count: int, seed: int) -> list[np.ndarray]:
    """Uniform-noise images as people could upload them: a side of 64 to 512 px, half grey, half RGB. Once reduced to
    64 px, their texture and contrast differ with the size and the colour, so one size alone does not teach the
    mirror to stay silent on the others."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        side = int(rng.integers(IMAGE_SIZE, 513))
        images.append(rng.integers(0, 256, (side, side, 3) if rng.random() < 0.5 else (side, side), dtype=np.uint8))
    return images


def augment_batch(x: torch.Tensor, generator: torch.Generator, return_theta: bool = False) -> Any:
    """Small label-preserving changes: rotation +-15 degrees, isotropic scale 0.85-1.15, shift +-4 px, pixel noise.

    Isotropic only: a stretch would turn a square into a rectangle and break the "same size" explanation.
    ``return_theta``: also return the sampling map (N, 2, 3) of ``F.affine_grid``, to move points with the pixels.
    """
    n, device = x.shape[0], x.device
    angle = (torch.rand(n, generator=generator, device=device) * 2 - 1) * (15 * torch.pi / 180)
    scale = 0.85 + torch.rand(n, generator=generator, device=device) * 0.30
    shift = (torch.rand(n, 2, generator=generator, device=device) * 2 - 1) * (4 / (IMAGE_SIZE / 2))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    ink = F.grid_sample(1.0 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sigma = torch.rand(n, 1, 1, 1, generator=generator, device=device) * 0.05
    noisy = (1.0 - ink + sigma * torch.randn(x.shape, generator=generator, device=device)).clamp_(0.0, 1.0)
    return (noisy, theta) if return_theta else noisy


def batches(
    tensors: Sequence[torch.Tensor], batch_size: int, seed: int, augment: bool
) -> Callable[[int], Iterator[tuple[int, list[torch.Tensor]]]]:
    """Epoch -> shuffled batches (first tensor augmented) on the tensors' device; deterministic per (seed, epoch), so
    a resumed run repeats exactly what the killed one would have done. Yields (iteration from the phase start, tensors).
    """
    n, device = tensors[0].shape[0], tensors[0].device
    per_epoch = (n + batch_size - 1) // batch_size

    def epoch_batches(epoch: int) -> Iterator[tuple[int, list[torch.Tensor]]]:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).to(device)
        pixels = torch.Generator(device=device).manual_seed(seed * 100_003 + epoch + 50_000)
        for b in range(per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            items = [t[idx] for t in tensors]
            if augment:
                items[0] = augment_batch(items[0], pixels)
            yield (epoch - 1) * per_epoch + b, items

    return epoch_batches


def nadam(params: Sequence[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Keras's Nadam: momentum schedule decay 0.004 (torch's momentum_decay), epsilon 1e-7."""
    return torch.optim.NAdam(params, lr=lr, betas=(0.9, 0.999), eps=1e-7, momentum_decay=4e-3)


def scheduled_lr(schedule: str, lr: float, epochs: int, per_epoch: int, iteration: int) -> float:
    """The learning rate of batch ``iteration`` (from 0). "keras": the reference's ``decay = lr / epochs`` time decay,
    lr / (1 + decay * iteration), which barely decays (to ~0.9 lr); "cosine": half a cosine from lr to 0."""
    if schedule == "keras":
        return lr / (1.0 + (lr / epochs) * iteration)
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * min(iteration / max(epochs * per_epoch, 1), 1.0)))
    raise ValueError(f"schedule {schedule!r} is not one of ('keras', 'cosine')")


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value


def steps_per_epoch(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


@torch.no_grad()
def predict_logits(model: Callable, x: torch.Tensor, device: torch.device) -> Any:
    outputs = [model(x[i : i + EVAL_BATCH].to(device)) for i in range(0, x.shape[0], EVAL_BATCH)]
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat([o[k] for o in outputs]) for k in range(len(outputs[0])))
    return torch.cat(outputs)


def explanation_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    preds = logits >= 0  # sigmoid >= 0.5
    right = preds == targets.bool()
    return {
        "val_expl_loss": float(F.binary_cross_entropy_with_logits(logits, targets)),
        "val_binary_accuracy": float(right.float().mean()),
        "val_exact_match": float(right.all(dim=1).float().mean()),
    }
