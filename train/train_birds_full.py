"""Fine-tune every stage of the birds main network on a CPU, starting from the partial recipe's main network.

`train/train_birds_partial.py` fine-tunes only what follows the stride-16 stage, on cached activations (four fixed
views per photo). Measured on this 2-core machine with nothing else running, a whole Lite2 forward + backward at
260 px in channels-last batches of 32 takes about 50 ms per photo, so a few epochs of full fine-tuning with a fresh
random crop of every photo in every epoch fit in under half an hour each. This recipe starts from the partial
recipe's main networks (whose classifier is already trained) and fine-tunes all of it:

1. Validation run: `--val-init` (the partial recipe's validation main network, trained on the same 80% of the
   training photos, `cub.validation_split`) is fine-tuned on that 80% for `--max-epochs`; top-1 on the other 20%
   before the first epoch and after each one picks the number of epochs (0 when fine-tuning does not help: then
   nothing is written). That main network, at the chosen epoch, goes to the frozen recipe, which fits the mirror's
   head and picks the attribute targets and default threshold on the same 20%.
2. Final run: `--final-init` (the partial recipe's final main network) is fine-tuned on all training photos for the
   chosen number of epochs; the frozen recipe refits the mirror's head with the validation choices, evaluates the
   official test split once and writes the file (then `train/attach_scope.py` adds the "is this a bird?" gate).

Every epoch is checkpointed (the main network as safetensors, the optimizer's state loaded with
`torch.load(weights_only=True)`); rerun the same command after a kill and it resumes.

    PYTHONPATH=. .venv/bin/python train/train_birds_full.py --data ../shared/data/cub-200 \\
        --pretrained-file .local/lite2.pth --val-init runs/birds-lite2-partial/main-validation.safetensors \\
        --final-init runs/birds-lite2-partial/main-final.safetensors --out runs/birds-lite2-full \\
        --output runs/birds-lite2-full/birds.safetensors
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from explainer import cub
from explainer.bundle import atomic_write_bytes
from explainer.transforms import build_transform, reference_preprocessing
from train import train_birds_frozen as frozen
from train.train_birds_partial import load_main_training, save_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder holding CUB_200_2011/ (or that folder itself)")
    p.add_argument("--model", default="tf_efficientnet_lite2", help="a timm EfficientNet(-Lite)")
    p.add_argument("--pretrained-file", required=True, help="ImageNet weights (a local state-dict file)")
    p.add_argument("--val-init", required=True, help="main network trained on the validation run's 80% (safetensors)")
    p.add_argument("--final-init", required=True, help="main network trained on all training photos (safetensors)")
    p.add_argument("--img-size", type=int, default=260)
    p.add_argument("--resize", type=int, default=292, help="shorter side before the centre crop")
    p.add_argument("--max-epochs", type=int, default=3, help="validation run length; the final run uses the best")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="smoke runs and tests: this many epochs whatever the validation run says",
    )
    p.add_argument("--lr", type=float, default=2e-5, help="AdamW peak learning rate, every stage")
    p.add_argument(
        "--train-bn",
        action="store_true",
        help="update BatchNorm statistics while training (by default they stay as the starting network's)",
    )
    p.add_argument("--weight-decay", type=float, default=0.02)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.3, help="on the pooled features before the classifier")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-per-class", type=int, default=0, help="smoke runs: at most this many photos per class")
    p.add_argument("--out", required=True, help="run folder (checkpoints, reports; resumable)")
    p.add_argument("--output", required=True, help="the weights file to write (.safetensors)")
    return p.parse_args(argv)


def train_crop(preprocessing: dict) -> T.Compose:
    """A fresh random-resized crop (35-100% of the area) and flip of every photo in every epoch."""
    return T.Compose(
        [
            T.Resize(preprocessing["resize"]),
            T.RandomResizedCrop(preprocessing["crop"], scale=(0.35, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(preprocessing["mean"], preprocessing["std"]),
        ]
    )


@torch.inference_mode()
def top1(main: torch.nn.Module, loader: torch.utils.data.DataLoader) -> float:
    main.eval()
    right = seen = 0
    for images, labels, *_ in loader:
        logits = main(images.contiguous(memory_format=torch.channels_last))
        right += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    return right / max(1, seen)


def fine_tune(
    main: torch.nn.Module,
    train_set: torch.utils.data.Dataset,
    epochs: int,
    args: argparse.Namespace,
    folder: Path,
    val_loader: torch.utils.data.DataLoader | None,
) -> list[dict[str, Any]]:
    """Every stage of `main` trained for `epochs` (AdamW, half-epoch warm-up, cosine, label smoothing, dropout before
    the classifier); one checkpoint per epoch in `folder`; with `val_loader`, top-1 before and after every epoch."""
    folder.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(main.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total, warmup = max(1, epochs * steps_per_epoch), max(1, steps_per_epoch // 2)
    history_path = folder / "history.json"
    history: list[dict[str, Any]] = json.loads(history_path.read_text()) if history_path.exists() else []
    done = len([h for h in history if h["epoch"] > 0])
    if done:  # resume: the last completed epoch's weights and optimizer state
        main.load_state_dict(load_file(str(folder / f"epoch-{done}.safetensors")))
        opt.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        print(f"resumed {folder} after epoch {done}", flush=True)
    elif val_loader is not None and not history:
        history.append({"epoch": 0, "val_top1": top1(main, val_loader)})
        print(json.dumps(history[-1]), flush=True)
    classifier = main.get_classifier()
    for p in main.parameters():
        p.requires_grad_(True)
    for epoch in range(done, epochs):
        generator = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        torch.manual_seed(args.seed * 1000 + epoch)  # the crops of this epoch (the loader seeds its workers from it)
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=args.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=args.workers,
            drop_last=False,
        )
        main.train()
        if not args.train_bn:  # batches of 32 random crops would move the statistics the classifier was fitted on
            for module in main.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        started, seen, loss_sum = time.time(), 0, 0.0
        for s, (images, labels, *_) in enumerate(loader):
            step = epoch * steps_per_epoch + s
            scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in opt.param_groups:
                group["lr"] = args.lr * scale
            pooled = main.forward_head(
                main.forward_features(images.contiguous(memory_format=torch.channels_last)), pre_logits=True
            )
            logits = classifier(F.dropout(pooled, args.dropout, True))
            loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(labels)
            loss_sum += float(loss.detach()) * len(labels)
            if s % 20 == 0:
                rate = (time.time() - started) / seen
                print(
                    f"epoch {epoch + 1}/{epochs}: {seen}/{len(train_set)} photos, loss {loss_sum / seen:.3f}, "
                    f"{rate * 1000:.0f} ms/photo",
                    flush=True,
                )
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "seconds": round(time.time() - started, 1),
        }
        if val_loader is not None:
            entry["val_top1"] = top1(main, val_loader)
        tensors = {k: v.contiguous() for k, v in main.state_dict().items()}
        atomic_write_bytes(folder / f"epoch-{epoch + 1}.safetensors", save_tensors(tensors))
        buffer = io.BytesIO()
        torch.save(opt.state_dict(), buffer)
        atomic_write_bytes(folder / "optimizer.pt", buffer.getvalue())
        history.append(entry)
        atomic_write_bytes(history_path, json.dumps(history, indent=1).encode())
        print(json.dumps(entry), flush=True)
    for p in main.parameters():
        p.requires_grad_(False)
    main.eval()
    return history


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = cub.read_cub(args.data)
    classes = meta.class_indices
    n_classes, n_expl = meta.num_classes, meta.num_attributes

    def limit(positions: np.ndarray) -> np.ndarray:
        if args.limit_per_class <= 0:
            return positions
        return np.sort(
            np.concatenate(
                [positions[classes[positions] == c][: args.limit_per_class] for c in np.unique(classes[positions])]
            )
        )

    def build(init: str) -> torch.nn.Module:
        pair, _ = frozen.build_frozen_pair(
            args.model, n_classes, n_expl, args.pretrained_file, half=False, main_init=init
        )
        return pair

    import timm.data

    pair = build(args.val_init)
    data_cfg = timm.data.resolve_model_data_config(pair.main)
    preprocessing = reference_preprocessing(
        size=args.img_size, resize=args.resize, mean=data_cfg["mean"], std=data_cfg["std"]
    )
    crop, plain = train_crop(preprocessing), build_transform(preprocessing, train=False)
    fit_pos, val_pos = cub.validation_split(meta, args.val_fraction, args.seed)
    fit_pos, val_pos, train_pos = limit(fit_pos), limit(val_pos), limit(meta.train_indices)
    recipe = {
        k: getattr(args, k)
        for k in (
            "model",
            "img_size",
            "resize",
            "max_epochs",
            "lr",
            "weight_decay",
            "label_smoothing",
            "dropout",
            "batch_size",
            "val_fraction",
            "seed",
            "train_bn",
        )
    }
    recipe["file_recipe"] = (
        "ImageNet backbone; its last stages and classifier fine-tuned on cached activations "
        "(train/train_birds_partial.py), then every stage fine-tuned (train/train_birds_full.py); "
        "the mirror warm-started from it, its head fitted on cached features"
    )
    recipe["file_how"] = "every stage fine-tuned on a CPU"
    recipe["starts_from"] = {
        "validation": load_main_training(args.val_init),
        "final": load_main_training(args.final_init),
    }
    common = [
        "--data",
        args.data,
        "--model",
        args.model,
        "--pretrained-file",
        args.pretrained_file,
        "--img-size",
        str(args.img_size),
        "--resize",
        str(args.resize),
        "--views",
        "plain",
        "--val-fraction",
        str(args.val_fraction),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--workers",
        str(args.workers),
        "--top-n",
        str(args.top_n),
        "--half",
        "--keep-main-head",
    ]
    if args.limit_per_class:
        common += ["--limit-per-class", str(args.limit_per_class)]

    # -- validation run ----------------------------------------------------------------------------------------------
    val_loader = torch.utils.data.DataLoader(
        cub.CubImages(meta, indices=val_pos, transform=plain), batch_size=64, num_workers=args.workers
    )
    history = fine_tune(
        pair.main,
        cub.CubImages(meta, indices=fit_pos, transform=crop),
        args.max_epochs,
        args,
        out / "validation-run",
        val_loader,
    )
    best = max(history, key=lambda h: (h["val_top1"], -h["epoch"]))
    epochs = int(best["epoch"]) if args.epochs is None else args.epochs
    report = {
        "recipe": recipe,
        "validation_run": {
            "history": history,
            "chosen_epochs": epochs,
            "rule": "best validation top-1 (earliest on ties; 0 = not at all)",
            "images_fit": len(fit_pos),
            "images_val": len(val_pos),
        },
    }
    atomic_write_bytes(out / "full_report.json", json.dumps(report, indent=1).encode())
    print(f"chosen: {epochs} epochs (best validation top-1 {best['val_top1']:.4f} after {best['epoch']})", flush=True)
    if epochs == 0:
        print("full fine-tuning did not raise validation top-1: nothing written", flush=True)
        return 1
    val_main = out / "main-validation.safetensors"
    if not (out / "validation" / "report.json").exists():
        pair.main.load_state_dict(load_file(str(out / "validation-run" / f"epoch-{epochs}.safetensors")))
        save_main(pair, val_main, {**recipe, "epochs": epochs, "trained_on": "80% of the training photos"})
        val_args = common + [
            "--main-init",
            str(val_main),
            "--skip-test",
            "--cache",
            str(out / "pooled-validation"),
            "--out",
            str(out / "validation"),
        ]
        if frozen.main(val_args) != 0:
            raise SystemExit("the validation run's head fitting failed")

    # -- final run ---------------------------------------------------------------------------------------------------
    pair = build(args.final_init)
    history = fine_tune(
        pair.main, cub.CubImages(meta, indices=train_pos, transform=crop), epochs, args, out / "final-run", None
    )
    report["final_run"] = {
        "history": history,
        "epochs": epochs,
        "images": len(train_pos),
        "seconds_before_heads": round(time.time() - started, 1),
    }
    atomic_write_bytes(out / "full_report.json", json.dumps(report, indent=1).encode())
    final_main = out / "main-final.safetensors"
    save_main(pair, final_main, {**recipe, "epochs": epochs, "trained_on": "all training photos"})
    final_args = common + [
        "--main-init",
        str(final_main),
        "--cache",
        str(out / "pooled-final"),
        "--out",
        str(out),
        "--output",
        args.output,
        "--validation-report",
        str(out / "validation" / "report.json"),
    ]
    return frozen.main(final_args)


if __name__ == "__main__":
    sys.exit(main())
