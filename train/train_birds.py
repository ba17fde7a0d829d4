"""Train the birds pair on CUB-200-2011 in one command: main network, mirror, "is this a bird?" gate, one file.

The main network is EfficientNet-Lite2 from its ImageNet weights, fine-tuned in every stage after the first two
(the stem and ``blocks.0-1``, a few thousand generic edge filters, stay at ImageNet: on a CPU their backward pass
at full resolution costs more than the rest of the network). The mirror is a part mirror
(:class:`explainer.pair.models.PartMirror`): fed by the main network's last two stages, it finds each body region
(trained on the official part locations of the training photos) and reads every explanation from the region it names,
so its heatmap shows where it read it. Every choice is made on a class-stratified validation split of the training
photos (``--val-fraction``); the test photos are evaluated once, at the end.

Steps, each resumable (rerun the same command after a kill; a finished step is not run again), each in ``--out``:
1. ``main-val``: the main network trained on the training photos less the validation split; after every epoch its
   top-1 on the validation photos (raw weights and their moving average), which picks raw or averaged weights;
2. ``main-final``: the same recipe on all training photos, the choice of step 1 applied; then ``views.json``: the
   test view (shorter side, centre crop or the whole photo, alone or with its mirror image) with the best
   validation top-1 of step 1's network among those within ``--view-budget`` (the app's time);
   ``head-val`` and ``head-final``: each network's classifier refit in that view (FixRes), kept if it raises
   validation top-1 (the mirror reads the stages before it and is unaffected);
3. ``mirror-val``: the part mirror on the validation run's main network; ``validation.json``: the default threshold
   and, on the validation photos, pointing per attribute group (beside the class heatmap) and every verdict number;
4. ``mirror-final``: the part mirror on the final main network and all training photos;
5. ``--output``: the test photos evaluated once; the float16 file with its gate, written only after a trial copy
   has reproduced the predictions.
``--skip-final`` ships the validation run's networks (half the time); ``--main-file`` keeps an existing file's main
network and gate and trains only the mirror.

CPU (this 2-core machine; a main-network epoch took 5 to 6.5 minutes when nothing else ran):

    nice -n 10 python train/train_birds.py --data ../shared/data/cub-200 --pretrained-file .local/lite2.pth \
        --scope-file .local/lite0.pth --out runs/birds --output weights/birds.safetensors

GPU: add ``--device cuda --workers 8``. Several GPUs (``--batch-size`` stays the batch of one step, shared among
them; process 0 alone evaluates, prints and writes):

    torchrun --standalone --nproc_per_node 8 train/train_birds.py --data ../shared/data/cub-200 \
        --pretrained-file .local/lite2.pth --scope-file .local/lite0.pth --out runs/birds \
        --output weights/birds.safetensors --device cuda --workers 8

A GPU lent for one call (no ``../shared`` there, 64 MiB a call): ``train/pack_cub.py`` and ``train/device_birds.py``
train the main networks there and this script finishes the run here (docs/training.md, "On a lent GPU").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explainer.birds import cub
from explainer.evaluation.calibration import threshold_sensitivity
from explainer.evaluation.metrics import multilabel_report
from explainer.inputs.transforms import (
    BIRDS_AUGMENTS,
    EvalView,
    TrainView,
    birds_train_transform,
    build_transform,
    reference_preprocessing,
)
from explainer.pair.bundle import atomic_write_bytes
from explainer.pair.models import MirrorPair, PartMirror, create_timm_main, region_targets, timm_feature_info
from explainer.pair.pretrained import load_pretrained_backbone
from explainer.training.finetune import ResumeError, fit, freeze, parameter_groups
from explainer.training.loop import seed_everything
from explainer.verdict.where import collect_maps, pointing, pointing_by_group

FROZEN = ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.")  # ImageNet weights and statistics kept
HEAD = ("classifier.",)  # new, learns at --head-lr
STEPS = ("main-val", "main-final", "head-val", "head-final", "mirror-val", "mirror-final")
VIEWS = ((256, 224), (256, 256), (288, 256), (256, 0), (288, 0), (320, 0))  # test views: (shorter side, crop; 0: none)
THRESHOLDS = np.round(np.arange(0.30, 0.851, 0.05), 2)  # candidates for the default explanation threshold
MONITOR_THRESHOLD = 0.5  # kept explanations for the per-epoch pointing (the default threshold is chosen later)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder holding CUB_200_2011/ (or that folder itself)")
    p.add_argument("--pretrained-file", required=True, help="ImageNet weights of --model (a local .pth)")
    p.add_argument("--out", required=True, help="run folder: one sub-folder per step")
    p.add_argument("--model", default="tf_efficientnet_lite2")
    p.add_argument("--img-size", type=int, default=224, help="training crop (random-resized)")
    p.add_argument("--min-scale", type=float, default=0.25, help="smallest crop, as a share of the photo's area")
    p.add_argument("--eval-size", type=int, default=256, help="validation view: shorter side and centre crop")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01, help="SGD (Nesterov, momentum 0.9) for the pretrained layers")
    p.add_argument("--head-lr", type=float, default=0.1, help="for the new classifier")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--drop-rate", type=float, default=0.3, help="dropout before the classifier")
    p.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth")
    p.add_argument("--ema-decay", type=float, default=0.998, help="moving average of the weights, per step")
    p.add_argument("--augment", choices=BIRDS_AUGMENTS, default="none",
                   help="'trivial' adds TrivialAugment to the main network's training crops (colour-altering "
                        "operations included)")  # fmt: skip
    p.add_argument(
        "--amp",
        action="store_true",
        help="train the main network under bfloat16 autocast (for GPUs: about twice the speed)",
    )
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mirror-epochs", type=int, default=8)
    p.add_argument("--mirror-lr", type=float, default=2e-3, help="AdamW, warm-up and cosine")
    p.add_argument("--mirror-width", type=int, default=256, help="channels of the mirror's own feature map")
    p.add_argument("--where-weight", type=float, default=0.1, help="weight of the part-location loss")
    p.add_argument("--main-file", help="a weights file whose main network to use (skips the main network's steps)")
    p.add_argument("--scope-file", help="ImageNet weights of the 'is this a bird?' gate (Lite0 .pth); with "
                   "--main-file the file's own gate is kept")  # fmt: skip
    p.add_argument("--skip-final", action="store_true",
                   help="ship the validation run's networks (trained without the validation photos) instead of "
                   "training again on all training photos: half the time")  # fmt: skip
    p.add_argument(
        "--head-epochs",
        type=int,
        default=2,
        help="epochs of the classifier's refit on the main network's features in the test view (0: none)",
    )
    p.add_argument("--view-budget", type=int, default=256 * 256,
                   help="the most network-input pixels the test view may cost per photo (a crop's side squared, "
                   "twice with the photo's mirror image; 0: no limit). The default, one 256-px crop, keeps the "
                   "birds app's whole answer within 150 ms on a 2-core CPU; two such passes took 188.8 ms")  # fmt: skip
    p.add_argument("--top-n", type=int, default=10, help="default top N stored with the weights")
    p.add_argument("--output", help="the weights file to write (.safetensors); without it no file is written")
    p.add_argument("--stop-after", choices=STEPS, help="stop after this step")
    p.add_argument("--limit-per-class", type=int, default=0, help="at most this many photos per class (smoke runs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the network (0: torch's default)")
    return p.parse_args(argv)


@dataclass
class Processes:
    """The processes that train together: torchrun's, one per GPU, or without torchrun this one alone.

    Each process trains on its share of every batch; the first (rank 0) alone evaluates, chooses, prints and writes
    (the training loss it logs is that of its own share), while the others wait for it (:meth:`wait`) and then take
    its networks (:meth:`share`)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def barrier(self):
        """What :func:`fit` calls to hold the other processes while the first evaluates and writes (None alone)."""
        return self.wait if self.world > 1 else None

    def wait(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as it trains: alone, itself; with several processes, wrapped so that their gradients are
        averaged at every step (the batch is shared among them, so the step is the one of the whole batch).

        BatchNorm keeps per-process statistics (plain DistributedDataParallel, no SyncBatchNorm): each process
        normalises its own share of the batch, and the running averages of process 0, broadcast at every forward
        pass, are the ones saved. SyncBatchNorm would normalise the whole batch, as one process does, but it runs
        on GPUs only (this could not be tested here) and timm's BatchNormAct2d layers need timm's converter."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def share(self, net: nn.Module) -> nn.Module:
        """Every process takes process 0's tensors of ``net`` (its choice of raw or averaged weights, its BatchNorm
        statistics), so all go on from the same network."""
        if self.world > 1:
            with torch.no_grad():
                for value in net.state_dict().values():
                    torch.distributed.broadcast(value, 0)
        return net

    def epoch(self, batches: torch.utils.data.DataLoader, epoch: int, seed: int) -> torch.utils.data.DataLoader:
        """The training batches of ``epoch``. With several processes each reseeds at the start of every epoch (its
        own dropout, stochastic depth and, without loader workers, random crops, from the seed, the epoch and its
        rank) and its sampler takes the epoch's order, so a resumed run trains as the killed one would have (loader
        workers keep the random streams they started with, as with one process). Alone, nothing changes."""
        if self.world > 1:
            seed_everything(seed * 1_000_000 + epoch * 1_000 + self.rank)
            batches.generator.manual_seed(seed * 1_000_000 + epoch * 1_000 + self.rank)  # the loader workers' seeds
            batches.sampler.set_epoch(epoch)
        return batches

    def close(self) -> None:
        if self.world > 1:
            torch.distributed.destroy_process_group()


def start_processes(args: argparse.Namespace) -> Processes:
    """Under torchrun (``WORLD_SIZE`` > 1): join the others, each process on its own GPU with ``--device cuda``
    (NCCL; gloo on CPUs). ``--batch-size`` stays the batch of one step, shared evenly among the processes. Without
    torchrun: this process alone, as before."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes()
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if args.batch_size % world:  # every process says it: torchrun may stop the others before process 0 has spoken
        raise SystemExit(f"error: --batch-size {args.batch_size} is the batch of all {world} processes together; it "
                         f"must divide evenly among them (a multiple of {world})")  # fmt: skip
    backend, options = "gloo", {}
    if torch.device(args.device).type == "cuda":
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
        backend, options = "nccl", {"device_id": torch.device(args.device)}
    # the others wait while process 0 alone evaluates (the test photos, every view): minutes on a GPU, an hour or
    # more on CPUs, longer than the default timeout of NCCL (10 minutes)
    torch.distributed.init_process_group(backend, timeout=timedelta(hours=6), **options)
    return Processes(rank, world)


def main_config(args: argparse.Namespace) -> dict[str, Any]:
    """The options that decide the main network's training (a checkpoint resumes only under the same ones)."""
    keys = ("model", "img_size", "min_scale", "eval_size", "epochs", "batch_size", "lr", "head_lr", "weight_decay",
            "warmup_epochs", "label_smoothing", "drop_rate", "drop_path", "ema_decay", "val_fraction", "seed",
            "limit_per_class")  # fmt: skip
    config = {key: getattr(args, key) for key in keys} | {"pretrained_file": Path(args.pretrained_file).name}
    # options added later are recorded only when used, so the runs (and files) made before them still resume
    later = {"augment": (args.augment, "none"), "amp": (args.amp, False)}
    return config | {key: value for key, (value, default) in later.items() if value != default}


@dataclass
class Split:
    train: np.ndarray  # positions into meta.images
    validation: np.ndarray


def limit(positions: np.ndarray, classes: np.ndarray, per_class: int) -> np.ndarray:
    if per_class <= 0:
        return positions
    kept = [positions[classes[positions] == c][:per_class] for c in np.unique(classes[positions])]
    return np.sort(np.concatenate(kept))


def read_split(meta: cub.CubMetadata, args: argparse.Namespace) -> Split:
    train, validation = cub.validation_split(meta, args.val_fraction, args.seed)
    classes = meta.class_indices
    return Split(limit(train, classes, args.limit_per_class), limit(validation, classes, args.limit_per_class))


def new_main(args: argparse.Namespace, n_classes: int) -> nn.Module:
    """The main network from ImageNet weights with a fresh classifier; dropout and stochastic depth for training."""
    net = create_timm_main(args.model, n_classes, drop_rate=args.drop_rate, drop_path_rate=args.drop_path)
    left = load_pretrained_backbone(net, args.pretrained_file)
    if sorted(left) != ["classifier.bias", "classifier.weight"]:
        raise SystemExit(f"the ImageNet file left more than the classifier at its initialisation: {left}")
    return net


def train_loader(dataset, args: argparse.Namespace, processes: Processes) -> torch.utils.data.DataLoader:
    """Shuffled batches of ``--batch-size`` photos, the last incomplete one dropped. With several processes each
    takes batches of its share from its part of every epoch's order (a DistributedSampler, seeded by ``--seed``);
    the few photos past a multiple of the number of processes are dropped too, so an epoch has as many steps as
    one process alone would take (the same warm-up and cosine)."""
    sampler = None
    if processes.world > 1:
        sampler = torch.utils.data.DistributedSampler(
            dataset, processes.world, processes.rank, shuffle=True, seed=args.seed, drop_last=True
        )
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size // processes.world, shuffle=sampler is None, sampler=sampler,
        drop_last=True, num_workers=args.workers, persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip


def loader(meta, positions, transform, batch_size, args) -> torch.utils.data.DataLoader:
    """Photos in their order, for evaluation (training batches come from :func:`train_loader`)."""
    dataset = cub.CubImages(meta, indices=positions, transform=transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=args.workers, persistent_workers=args.workers > 0
    )


def view_loader(meta, positions, preprocessing: dict[str, Any], args) -> torch.utils.data.DataLoader:
    """:func:`loader` for photos in a test view: batches of 64, one by one for whole photos (they differ in shape)."""
    return loader(meta, positions, build_transform(preprocessing, train=False), 64 if preprocessing["crop"] else 1,
                  args)  # fmt: skip


@torch.no_grad()
def top1(net: nn.Module, batches: torch.utils.data.DataLoader, device: torch.device) -> float:
    return top1_views(net, batches, device)[0]


@torch.no_grad()
def top1_views(
    net: nn.Module, batches: torch.utils.data.DataLoader, device: torch.device, flip: bool = False
) -> tuple[float, float | None]:
    """Top-1 of the photos as given and, with ``flip``, of the mean logits of each photo and its mirror image (what
    :class:`MirrorPair` does with ``flip_average``), from one pass over the photos."""
    net.eval()
    right = flipped = seen = 0
    for images, labels, *_ in batches:
        images = images.to(device).to(memory_format=torch.channels_last)
        logits = net(images)
        right += int((logits.argmax(1).cpu() == labels).sum())
        if flip:
            flipped += int(((logits + net(images.flip(-1))).argmax(1).cpu() == labels).sum())
        seen += len(labels)
    return right / max(seen, 1), (flipped / max(seen, 1) if flip else None)


def train_main(
    args: argparse.Namespace,
    meta: cub.CubMetadata,
    train: np.ndarray,
    validation: np.ndarray | None,
    folder: Path,
    processes: Processes,
) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune the main network on ``train``; returns the network (raw or averaged weights, as chosen) and a
    summary. With ``validation`` the choice is made there; without, ``args.weights_choice`` is applied. Every
    process returns the same network and choice (made from process 0's log)."""
    device = torch.device(args.device)
    config = main_config(args) | {"train_photos": int(len(train))}
    finished = finished_main(folder, config, meta.num_classes, args, processes.main)
    if finished is not None:
        return finished
    mean, std = [0.5] * 3, [0.5] * 3  # what the Lite weights were trained with (timm's data config for them)
    eval_view = build_transform(reference_preprocessing(args.eval_size, args.eval_size, mean=mean, std=std), False)
    train_tf = birds_train_transform(args.img_size, args.min_scale, mean, std, args.augment)
    net = new_main(args, meta.num_classes)
    freeze(net, FROZEN)
    net.to(device).to(memory_format=torch.channels_last)
    groups = parameter_groups(net, args.lr, args.head_lr, args.weight_decay, HEAD)
    optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
    batches = train_loader(cub.CubImages(meta, indices=train, transform=train_tf), args, processes)
    steps = len(batches)
    trained = processes.wrap(net)
    val_batches = loader(meta, validation, eval_view, 64, args) if validation is not None else None

    def train_batches(epoch: int):
        batches.generator.manual_seed(args.seed * 1000 + epoch)  # the same order after a resume
        return processes.epoch(batches, epoch, args.seed)

    def loss_fn(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
        images, labels, *_ = batch  # ``model`` is ``net``, which trains through ``trained``
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            logits = trained(images.to(device).to(memory_format=torch.channels_last))
        return F.cross_entropy(logits.float(), labels.to(device), label_smoothing=args.label_smoothing), len(labels)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"val_top1": top1(model, val_batches, device)} if val_batches is not None else {}

    started = time.time()
    result, ema = fit(
        folder, net, optimizer, train_batches, loss_fn, evaluate, args.epochs, steps,
        round(args.warmup_epochs * steps), args.ema_decay, config, log=lambda line: print(line, flush=True),
        is_main=processes.main, barrier=processes.barrier,
    )  # fmt: skip
    last = result.history[-1] if result.history else {}
    if validation is not None:
        raw, averaged = last.get("raw_val_top1", 0.0), last.get("ema_val_top1", -1.0)
        choice = "ema" if ema is not None and averaged > raw else "raw"
    else:
        choice = args.weights_choice
    chosen = processes.share(ema.module if choice == "ema" and ema is not None else net)
    summary = {"weights": choice, "epochs": args.epochs, "history": result.history,
               "train_photos": int(len(train)), "seconds_this_run": round(time.time() - started, 1),
               "config": config}  # fmt: skip
    return chosen.eval(), summary


def finished_main(
    folder: Path, config: dict[str, Any], n_classes: int, args: argparse.Namespace, say: bool = True
) -> tuple[nn.Module, dict[str, Any]] | None:
    """A main-network step finished under ``config``: its ``summary.json`` (written once the step is done, with
    the configuration it ran under) and ``main.safetensors`` (the chosen network), read back without the 60 MB
    training checkpoint ``last.pt``, which a run trained elsewhere (a lent GPU) need not bring back. None otherwise."""
    from safetensors.torch import load_file

    summary_path, weights = folder / "summary.json", folder / "main.safetensors"
    if not (summary_path.is_file() and weights.is_file()):
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("config") != config:
        return None
    net = create_timm_main(args.model, n_classes)
    net.load_state_dict(load_file(weights))  # safetensors: tensors only, nothing unpickled
    if say:
        print(f"{folder.name}: finished, its network read from {weights.name}", flush=True)
    return net.to(torch.device(args.device)).to(memory_format=torch.channels_last).eval(), summary


@torch.no_grad()
def pooled_features(
    net: nn.Module, meta: cub.CubMetadata, positions: np.ndarray, preprocessing: dict[str, Any], flip: bool, args
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the main network's classifier reads (its pooled features, timm's ``pre_logits``) for photos in the test
    view, or in their mirror image with ``flip``, and their species."""
    batches = view_loader(meta, positions, preprocessing, args)
    features, species = [], []
    net.eval()
    for images, labels, *_ in batches:
        images = images.to(args.device).to(memory_format=torch.channels_last)
        images = images.flip(-1) if flip else images
        features.append(net.forward_head(net.forward_features(images), pre_logits=True).float().cpu())
        species.append(labels)
    return torch.cat(features), torch.cat(species)


def refit_head(
    args: argparse.Namespace,
    meta: cub.CubMetadata,
    net: nn.Module,
    preprocessing: dict[str, Any],
    train: np.ndarray,
    validation: np.ndarray | None,
    folder: Path,
    processes: Processes,
) -> tuple[nn.Module, dict[str, Any]]:
    """Refit the main network's classifier in the test view (FixRes: the network trained on random crops at
    ``--img-size`` is read on a larger, centred view, whose features the classifier never saw), on its pooled
    features of the ``train`` photos and their mirror images, for ``--head-epochs`` (AdamW, label smoothing).
    Nothing else changes: the mirror reads the stages before, so it stays valid. With ``validation`` the refit is
    kept only if it raises validation top-1 in the test view; without, ``args.head_choice`` is applied. Process 0
    computes and writes ``head.safetensors`` and ``head.json``; every process then loads them; a finished step is
    not run again."""
    from safetensors.torch import load_file, save

    classifier = net.get_classifier()
    config = {"head_epochs": args.head_epochs, "preprocessing": preprocessing, "train_photos": int(len(train)),
              "seed": args.seed, "label_smoothing": args.label_smoothing}  # fmt: skip
    if validation is None:
        config["applied"] = args.head_choice  # the validation step's choice
    # its own record: ``summary.json`` is rewritten by ``run`` while the other processes may be reading this one
    summary_path, head_path = folder / "head.json", folder / "head.safetensors"
    finished = summary_path.exists() and json.loads(summary_path.read_text()).get("config") == config
    if processes.main and not finished:
        started = time.time()
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in classifier.state_dict().items()}
        keep = args.head_epochs > 0 and (validation is not None or args.head_choice == "refit")
        features = species = None
        if keep:
            parts = [pooled_features(net, meta, train, preprocessing, flip, args) for flip in (False, True)]
            features, species = torch.cat([f for f, _ in parts]), torch.cat([y for _, y in parts])
        read: list[tuple[torch.Tensor, torch.Tensor]] = []
        if validation is not None and keep:  # the test view: the photo, and its mirror image if it averages them
            views = [False, True] if preprocessing.get("flip_average") else [False]
            read = [pooled_features(net, meta, validation, preprocessing, flip, args) for flip in views]

        def val_top1() -> dict[str, float]:
            if not read:
                return {}
            with torch.no_grad():
                logits = sum(classifier(f.to(args.device)).cpu() for f, _ in read)
            return {"val_top1": float((logits.argmax(1) == read[0][1]).float().mean())}

        history = [{"epoch": 0, "seconds": round(time.time() - started, 1)} | val_top1()]  # the features' pass
        if keep:
            order = torch.Generator().manual_seed(args.seed)
            optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-3, weight_decay=1e-4)
            for epoch in range(1, args.head_epochs + 1):
                begun = time.time()
                for rows in torch.randperm(len(features), generator=order).split(64):
                    logits = classifier(features[rows].to(args.device))
                    loss = F.cross_entropy(logits, species[rows].to(args.device), label_smoothing=args.label_smoothing)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                row = {"epoch": epoch, "loss": round(loss.item(), 4), "seconds": round(time.time() - begun, 1)}
                history.append(row | val_top1())
                print(f"[head] epoch {epoch}/{args.head_epochs}: {history[-1]}", flush=True)
        if read:  # with validation photos, the refit stays only if it helps there
            keep = history[-1]["val_top1"] > history[0]["val_top1"]
            print(f"[head] validation top-1 {history[0]['val_top1']:.4f} as trained, {history[-1]['val_top1']:.4f} "
                  f"refit: {'refit kept' if keep else 'kept as trained'}", flush=True)  # fmt: skip
        if not keep:
            classifier.load_state_dict(state)
        tensors = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
        atomic_write_bytes(head_path, save(tensors))
        summary = {"config": config, "choice": "refit" if keep else "as trained", "history": history}
        atomic_write_bytes(summary_path, json.dumps(summary, indent=2).encode())
    processes.wait()
    if processes.main and finished:
        print(f"[head] {folder.name} finished: {json.loads(summary_path.read_text())['choice']}", flush=True)
    classifier.load_state_dict(load_file(head_path))
    return net, json.loads(summary_path.read_text())


def save_main(net: nn.Module, path: Path) -> None:
    """The main network's tensors as safetensors, written atomically (what the later steps start from)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(path, save(state))


def mirror_config(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("mirror_epochs", "mirror_lr", "mirror_width", "where_weight", "img_size", "min_scale", "val_fraction",
            "seed", "limit_per_class")  # fmt: skip
    return {key: getattr(args, key) for key in keys}


class ReadMaps(nn.Module):
    """A part mirror whose forward pass is its ``forward_maps``: what DistributedDataParallel must run to average
    the mirror's gradients among the processes (it sees only calls to the module it wraps)."""

    def __init__(self, mirror: PartMirror) -> None:
        super().__init__()
        self.mirror = mirror

    def forward(self, images: torch.Tensor, taps: list[torch.Tensor]):
        return self.mirror.forward_maps(images, taps)


def train_mirror(
    args: argparse.Namespace,
    meta: cub.CubMetadata,
    main: nn.Module,
    preprocessing: dict[str, Any],
    train: np.ndarray,
    validation: np.ndarray | None,
    folder: Path,
    processes: Processes,
) -> tuple[PartMirror, dict[str, Any]]:
    """Train the part mirror on the frozen ``main`` network's activations: the explanations of the photo's species
    (class-level labels, >= 50%) and, where the photo has part locations, where each body region is."""
    device = torch.device(args.device)
    points, boxes = cub.read_part_locations(args.data, meta), cub.read_stored_boxes(args.data, meta)
    routes = cub.group_regions(meta.attribute_raw_names)
    mirror = PartMirror(timm_feature_info(main), meta.num_attributes, cub.REGIONS, routes, width=args.mirror_width)
    main.to(device).eval()
    mirror.to(device)
    for parameter in main.parameters():
        parameter.requires_grad_(False)
    labels = torch.from_numpy((meta.class_attributes >= 50.0).astype(np.float32))
    mean, std = preprocessing["mean"], preprocessing["std"]
    train_set = cub.CubPartImages(meta, train, points, boxes, TrainView(args.img_size, args.min_scale, mean, std))
    batches = train_loader(train_set, args, processes)
    trained = processes.wrap(ReadMaps(mirror))  # the main network is frozen and not wrapped: only the mirror trains
    val_batches = None
    if validation is not None:
        val_set = cub.CubPartImages(meta, validation, points, boxes, EvalView(preprocessing))
        val_batches = torch.utils.data.DataLoader(val_set, batch_size=64, num_workers=args.workers)
    point_regions = list(cub.PART_REGION)

    def taps_of(images: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return main.forward_intermediates(images.to(device).to(memory_format=torch.channels_last))[1]

    def loss_fn(model: nn.Module, batch) -> tuple[torch.Tensor, int]:
        images, classes, where, box = batch  # ``model`` is ``mirror``, which trains through ``trained``
        logits, region_logits, _ = trained(images, taps_of(images))
        explained = F.binary_cross_entropy_with_logits(logits, labels[classes].to(device))
        targets, known = region_targets(where, point_regions, box, region_logits.shape[-2:], images.shape[-2:])
        log_p = torch.log_softmax(region_logits.flatten(2), dim=-1)
        located = -((targets.to(device) * log_p).sum(-1) * known.to(device)).sum() / known.sum().clamp(min=1)
        return explained + args.where_weight * located, len(classes)

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        if val_batches is None:
            return {}
        model.eval()
        probs, truth, hits, counted = [], [], 0, 0
        for images, classes, where, box in val_batches:
            logits, _, maps = model.forward_maps(images, taps_of(images))
            p = torch.sigmoid(logits).cpu()
            h, c = pointing(maps.cpu(), p.numpy() >= MONITOR_THRESHOLD, where.numpy(), point_regions, routes,
                            box.numpy(), tuple(images.shape[-2:]))  # fmt: skip
            hits, counted = hits + int(h.sum()), counted + int(c.sum())
            probs.append(p.numpy())
            truth.append(labels[classes].numpy())
        report = multilabel_report(np.concatenate(truth), np.concatenate(probs))
        return {"mean_auroc": report["mean_auroc"], "pointing": hits / max(counted, 1), "pointed": float(counted)}

    steps = len(batches)
    optimizer = torch.optim.AdamW(parameter_groups(mirror, args.mirror_lr, args.mirror_lr, 1e-4, ()))
    config = mirror_config(args) | {"train_photos": int(len(train)), "main": args.main_digest}
    started = time.time()
    result, _ = fit(
        folder, mirror, optimizer, lambda epoch: processes.epoch(batches, epoch, args.seed), loss_fn, evaluate,
        args.mirror_epochs, steps, round(0.5 * steps), None, config,
        log=lambda line: print(f"[mirror] {line}", flush=True), is_main=processes.main, barrier=processes.barrier,
    )  # fmt: skip
    summary = {"epochs": args.mirror_epochs, "history": result.history, "train_photos": int(len(train)),
               "seconds_this_run": round(time.time() - started, 1)}  # fmt: skip
    return processes.share(mirror).eval(), summary


def main_from_file(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """The main network and preprocessing of an existing weights file (the mirror is retrained for it)."""
    from explainer.pair.bundle import load_bundle

    pair, meta = load_bundle(path)
    return pair.main, meta["preprocessing"]


def digest(net: nn.Module) -> str:
    """A short fingerprint of a network's tensors (a mirror checkpoint belongs to one main network)."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def view_preprocessing(resize: int, crop: int, flip: bool) -> dict[str, Any]:
    """A test view as stored in the weights file: shorter side ``resize``, centre crop ``crop`` (0: the whole
    photo), the photo alone or averaged with its mirror image."""
    cfg = reference_preprocessing(crop or resize, resize, mean=[0.5] * 3, std=[0.5] * 3)
    return cfg | {"crop": crop, "flip_average": flip}


def view_pixels(resize: int, crop: int, flip: bool) -> int:
    """Network-input pixels a view costs per photo, the measure of its serving time: the crop's, or a whole photo's
    at CUB's usual 4:3; twice with the mirror image."""
    pixels = crop * crop if crop else round(resize * resize * 4 / 3)
    return pixels * (2 if flip else 1)


def view_name(resize: int, crop: int, flip: bool) -> str:
    return f"{resize}/{crop or 'whole'}" + ("+flip" if flip else "")


@torch.no_grad()
def score_views(net: nn.Module, meta: cub.CubMetadata, validation: np.ndarray, args) -> dict[str, float]:
    """Validation top-1 of every test view (:data:`VIEWS`, each alone and averaged with its mirror image)."""
    scores: dict[str, float] = {}
    for resize, crop in VIEWS:
        cfg = view_preprocessing(resize, crop, False)
        batches = view_loader(meta, validation, cfg, args)
        plain, flipped = top1_views(net, batches, torch.device(args.device), flip=True)
        scores[view_name(resize, crop, False)], scores[view_name(resize, crop, True)] = plain, float(flipped)
        print(f"view {view_name(resize, crop, False)}: validation top-1 {plain:.4f}, with its mirror image "
              f"{flipped:.4f}", flush=True)  # fmt: skip
    return scores


def pick_view(scores: dict[str, float], budget: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The test view with the best validation top-1 among those within ``budget`` network-input pixels per photo
    (0: any); a tie goes to the fewer pixels, then to one pass. Returns its preprocessing and the record for
    ``views.json``."""
    views = [(resize, crop, flip) for resize, crop in VIEWS for flip in (False, True)]
    pixels = {view_name(*view): view_pixels(*view) for view in views}
    allowed = [view for view in views if not budget or pixels[view_name(*view)] <= budget]
    if not allowed:
        raise SystemExit(f"no test view fits --view-budget {budget} (the smallest costs {min(pixels.values())})")
    best = max(allowed, key=lambda view: (scores[view_name(*view)], -view_pixels(*view), not view[2]))
    record = {"validation_top1": {name: scores[name] for name in pixels} | {"chosen": view_name(*best)},
              "input_pixels": pixels, "budget_pixels": budget}  # fmt: skip
    return view_preprocessing(*best), record


@torch.no_grad()
def run_pair(pair: MirrorPair, meta: cub.CubMetadata, positions, preprocessing, args) -> tuple[np.ndarray, np.ndarray]:
    """Class and explanation probabilities of photos through the serving view."""
    batches = view_loader(meta, positions, preprocessing, args)
    probs, expls = [], []
    pair.eval()
    for images, *_ in batches:
        logits, expl = pair(images.to(args.device).to(memory_format=torch.channels_last))
        probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
        expls.append(torch.sigmoid(expl.float()).cpu().numpy())
    return np.concatenate(probs), np.concatenate(expls)


def pick_threshold(expls: np.ndarray, truth: np.ndarray) -> tuple[float, dict[str, float]]:
    """The default explanation threshold: the candidate whose kept explanations agree best with the species'
    attributes on the validation photos (mean balanced accuracy over attributes). The mirror never trained on
    those photos, whether or not the main network did."""
    scores = {f"{t:.2f}": multilabel_report(truth, expls, threshold=float(t))["balanced_accuracy"] for t in THRESHOLDS}
    best = max(scores, key=lambda key: (scores[key], -abs(float(key) - 0.5)))
    return float(best), scores


def part_architecture(main_name: str, meta: cub.CubMetadata, width: int) -> dict[str, Any]:
    return {
        "family": "timm",
        "model_name": main_name,
        "n_classes": meta.num_classes,
        "n_explanations": meta.num_attributes,
        "mirror": {"kind": "parts", "regions": list(cub.REGIONS), "routes": [list(r) for r in cub.group_regions(
            meta.attribute_raw_names)], "width": width},
    }  # fmt: skip


@torch.no_grad()
def validation_report(
    pair: MirrorPair, meta: cub.CubMetadata, positions: np.ndarray, preprocessing: dict[str, Any], args
) -> dict[str, Any]:
    """On the validation photos: the threshold choice, then pointing per attribute group for the part mirror's maps
    and, as the baseline, the predicted class's map (for the same kept explanations), and every verdict number."""
    from explainer.evaluation.reports import evaluate_predictions
    from explainer.verdict.predictor import Explainer

    points, boxes = cub.read_part_locations(args.data, meta), cub.read_stored_boxes(args.data, meta)
    dataset = cub.CubPartImages(meta, positions, points, boxes, EvalView(preprocessing))
    batch_size = 32 if preprocessing["crop"] else 1  # whole photos differ in shape
    rows = collect_maps(pair, torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=args.workers),
                        args.device)  # fmt: skip
    probs, expls, classes = rows.stacked()
    truth = (meta.class_attributes >= 50.0).astype(np.float32)
    threshold, scores = pick_threshold(expls, truth[classes])
    routes = [list(r) for r in cub.group_regions(meta.attribute_raw_names)]
    pointed = pointing_by_group(rows, threshold, routes, list(cub.PART_REGION), list(meta.attribute_raw_names))
    defaults = {"threshold": threshold, "top_n": min(args.top_n, meta.num_classes)}
    file_meta = {
        "task": "birds", "class_names": meta.class_names, "explanation_names": meta.attribute_raw_names,
        "explanation_groups": meta.groups, "class_explanations": meta.class_attributes_unit, "ranking": "weighted",
        "defaults": defaults, "preprocessing": preprocessing,
    }  # fmt: skip
    verdicts = evaluate_predictions(Explainer(pair, file_meta), probs, expls, classes, truth[classes])
    return {
        "photos": int(len(positions)),
        "threshold": threshold,
        "threshold_rule": "mean balanced accuracy of the attributes against the species' attributes, best of "
        + ", ".join(f"{t:.2f}" for t in THRESHOLDS),
        "threshold_scores": scores,
        "pointing": pointed,
        "top1": verdicts["accuracy"],
        "verdict": {k: verdicts[k] for k in ("explanations", "verdict", "error_detection") if k in verdicts},
    }


def other_threshold(threshold: float) -> float:
    """Where the file's slider check moves the threshold to: 0.3, or 0.6 when the default is that low."""
    return 0.6 if threshold <= 0.45 else 0.3


def describe(
    args: argparse.Namespace, meta: cub.CubMetadata, top1: float, n_test: int, preprocessing: dict[str, Any]
) -> str:
    """The plain-words line the app shows: what was trained on what, how a photo is read, and the measured top-1."""
    mirror_photos = len(read_split(meta, args).train) if args.skip_final else len(meta.train_indices)
    if args.main_file:
        main = f"the main network of {Path(args.main_file).name} ({args.model}, ImageNet-pretrained, fine-tuned)"
    else:
        main_photos = mirror_photos if args.skip_final else len(meta.train_indices)
        main = f"{args.model} ImageNet-pretrained and fine-tuned on {main_photos:,} training photos"
    return (
        f"200 species of CUB-200-2011: {main}, with a part mirror that reads each explanation from the body part it "
        f"names, trained on {mirror_photos:,} training photos; "
        + ("each photo is read together with its mirror image; " if preprocessing.get("flip_average") else "")
        + f"top-1 {100 * top1:.1f}% on {n_test:,} held-out images"
    )


def write_weights(
    args: argparse.Namespace,
    meta: cub.CubMetadata,
    pair: MirrorPair,
    preprocessing: dict[str, Any],
    choices: dict[str, Any],
    history: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """Evaluate the pair once on the official test photos and write the self-describing weights file (float16,
    the gate attached) once its stored form has reproduced the predictions (:func:`save_checked`)."""
    from explainer.evaluation.reports import evaluate_predictions
    from explainer.pair.bundle import read_bundle
    from explainer.pair.scope import (
        BIRD_GATE_THRESHOLD,
        BIRD_GATE_THRESHOLD_SELECTION,
        imagenet_gate_from_file,
        scope_tensors,
    )
    from explainer.tasks import BIRDS
    from explainer.verdict.predictor import Explainer

    base_tensors, base_meta = read_bundle(args.main_file) if args.main_file else ({}, None)
    architecture = part_architecture(args.model, meta, args.mirror_width)
    file_meta = BIRDS.bundle_metadata(
        architecture,
        class_explanations=meta.class_attributes_unit,
        preprocessing=preprocessing,
        defaults={"threshold": choices["threshold"], "top_n": args.top_n},
        vocabulary={
            "class_names": meta.class_names,
            "class_raw_names": meta.class_raw_names,
            "explanation_names": meta.attribute_raw_names,
            "explanation_display_names": meta.attribute_display_names,
            "explanation_groups": meta.groups,
        },
    )
    test = limit(meta.test_indices, meta.class_indices, args.limit_per_class)
    probs, expls = run_pair(pair, meta, test, preprocessing, args)
    saved = Path(args.out) / "test_predictions.npz"  # for train/evaluate_birds.py --predictions
    np.savez_compressed(saved, positions=test, class_probs=probs, explanation_probs=expls)
    labels = (meta.class_attributes >= 50.0).astype(np.float32)[meta.class_indices[test]]
    explainer = Explainer(pair, file_meta)
    results = evaluate_predictions(explainer, probs, expls, meta.class_indices[test], labels)
    results["test_images"] = int(len(test))
    results["validation"] = choices["validation"]
    results["threshold_slider"] = threshold_sensitivity(expls, meta.groups, choices["threshold"], other_threshold(
        choices["threshold"]))  # fmt: skip
    file_meta["metrics"] = results
    file_meta["training"] = {
        "command": "python " + " ".join(sys.argv) if args.command is None else args.command,
        "recipe": "train/train_birds.py: main network fine-tuned from ImageNet (stem and blocks.0-1 kept), its "
        "classifier refit in the test view, part mirror on the frozen main network, choices on a validation split "
        "of the training photos",
        "main_network": "from " + Path(args.main_file).name if args.main_file else "trained by this command",
        "label_source": "class",  # the species' attributes (>= 50% of its photos): CUB has no per-photo labels here
        "skip_final": bool(args.skip_final),
        "choices": {k: v for k, v in choices.items() if k != "validation"},
        "steps": history,
        "wall_seconds_of_this_run": round(time.time() - started, 1),
    }
    file_meta["description"] = describe(args, meta, results["accuracy"], len(test), preprocessing)
    scope: dict[str, torch.Tensor] = {}
    if base_meta is not None and "scope" in base_meta:  # the same main network: its gate stays as it was
        file_meta["scope"] = base_meta["scope"]
        scope = {k: v for k, v in base_tensors.items() if k.startswith("scope.")}
    elif args.scope_file:
        gate = imagenet_gate_from_file(args.scope_file, BIRD_GATE_THRESHOLD,
                                       threshold_selection=BIRD_GATE_THRESHOLD_SELECTION)  # fmt: skip
        gate.description["storage_dtype"] = "float16"
        file_meta["scope"] = gate.description
        scope = scope_tensors(gate.network, half=True)
    save_checked(Path(args.output), Path(args.out), pair, file_meta, scope, probs[:32], expls[:32],
                 lambda checked: run_pair(checked, meta, test[:32], preprocessing, args))  # fmt: skip
    return results


def save_checked(
    output: Path,
    scratch: Path,
    pair: MirrorPair,
    file_meta: dict[str, Any],
    scope: dict[str, torch.Tensor],
    probs: np.ndarray,
    expls: np.ndarray,
    predict: Callable[[MirrorPair], tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """Write the weights file to ``output`` only once its stored form (float16) is shown to reproduce ``probs`` and
    ``expls``: a trial copy in ``scratch`` is loaded back and ``predict`` runs it; then ``output`` is written once,
    atomically, with the check recorded in it, and the trial copy removed. A failed check leaves ``output`` as it was
    (an earlier file stays; no unchecked file appears)."""
    from explainer.pair.bundle import save_bundle
    from explainer.verdict.predictor import Explainer

    trial = scratch / ("checking-" + output.name)
    save_bundle(trial, pair, file_meta, half=True, extra_tensors=scope)
    try:
        check_probs, check_expls = predict(Explainer.load(trial).pair)
    finally:
        trial.unlink(missing_ok=True)
    file_check = {
        "photos": int(len(probs)),
        "max_abs_class_prob_diff": float(np.abs(check_probs - probs).max()),
        "max_abs_explanation_prob_diff": float(np.abs(check_expls - expls).max()),
        "top1_agreement": float((check_probs.argmax(1) == probs.argmax(1)).mean()),
    }
    # float16 storage moved a class probability by up to 0.0030 (the Lite2 of 7 December with the mirror image) and
    # 0.0044 (without it), 32 photos each; the other of those two views moved one by 0.22 and changed an answer
    if file_check["max_abs_class_prob_diff"] > 1e-2 or file_check["top1_agreement"] < 1.0:
        raise SystemExit(f"the weights file would not reproduce the predictions, so {output} was not written: "
                         f"{file_check}")  # fmt: skip
    file_meta["metrics"]["weights_file_check"] = file_check
    save_bundle(output, pair, file_meta, half=True, extra_tensors=scope)
    return file_check


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    args = parse_args(argv)
    args.command = launcher() + " train/train_birds.py " + " ".join(sys.argv[1:] if argv is None else argv)
    processes = start_processes(args)
    try:
        return run(args, processes, started)
    finally:
        processes.close()


def launcher() -> str:
    """How this process was started, for the file's record: python, or torchrun with its number of processes."""
    world, here = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if world == 1:
        return "python"
    return f"torchrun --nproc_per_node {here}" + (f" --nnodes {world // here}" if world != here else "")


def run(args: argparse.Namespace, processes: Processes, started: float) -> int:
    """The steps in order, each skipped when its folder holds it finished; only process 0 writes and prints."""
    seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out, first = Path(args.out), processes.main
    out.mkdir(parents=True, exist_ok=True)
    meta = cub.read_cub(args.data, image_level_attributes=False)
    split = read_split(meta, args)
    everything = limit(meta.train_indices, meta.class_indices, args.limit_per_class)
    if first:
        print(f"{len(split.train)} training, {len(split.validation)} validation photos, {meta.num_classes} species")
    history: dict[str, Any] = {}

    def done(step: str, summary: dict[str, Any]) -> bool:
        if first:
            (out / step / "summary.json").write_text(json.dumps(summary, indent=2))
        epochs = summary["history"]  # every epoch's own seconds, over all the sessions the step took
        history[step] = {k: v for k, v in summary.items() if k != "history"} | {
            "last": epochs[-1:],
            "wall_seconds": round(sum(row.get("seconds", 0.0) for row in epochs), 1),
        }
        return args.stop_after == step

    if args.main_file:  # an existing main network: only the mirror is trained
        val_main, preprocessing = main_from_file(args.main_file)
        final_main = val_main
    else:
        val_main, summary = train_main(args, meta, split.train, split.validation, out / "main-val", processes)
        if first:
            save_main(val_main, out / "main-val" / "main.safetensors")
        if done("main-val", summary):
            return 0
        args.weights_choice, final_main = summary["weights"], val_main
        if not args.skip_final:
            final_main, summary = train_main(args, meta, everything, None, out / "main-final", processes)
            if first:
                save_main(final_main, out / "main-final" / "main.safetensors")
            if done("main-final", summary):
                return 0
        views = out / "views.json"  # the test views scored once with the validation run's main network
        if first:
            scores = json.loads(views.read_text())["validation_top1"] if views.exists() else None
            if scores is None:
                scores = score_views(val_main, meta, split.validation, args)
            preprocessing, record = pick_view(scores, args.view_budget)  # again on a resume: the budget may change
            views.write_text(json.dumps({"preprocessing": preprocessing} | record, indent=2))
        processes.wait()
        chosen = json.loads(views.read_text())
        preprocessing = chosen["preprocessing"]
        history["test_view"] = chosen["validation_top1"] | {"budget_pixels": chosen["budget_pixels"]}

    flipped = bool(preprocessing.get("flip_average", False))  # the test view: the photo and its mirror image
    # the mirrors belong to the main networks as trained: the classifier's refit changes nothing they read
    val_digest, final_digest = digest(val_main), digest(final_main)
    if not args.main_file:
        val_main, summary = refit_head(args, meta, val_main, preprocessing, split.train, split.validation,
                                       out / "head-val", processes)  # fmt: skip
        if done("head-val", summary):
            return 0
        args.head_choice = summary["choice"]
        if not args.skip_final:
            final_main, summary = refit_head(args, meta, final_main, preprocessing, everything, None,
                                             out / "head-final", processes)  # fmt: skip
            if done("head-final", summary):
                return 0
    args.main_digest = val_digest
    val_mirror, summary = train_mirror(args, meta, val_main, preprocessing, split.train, split.validation,
                                       out / "mirror-val", processes)  # fmt: skip
    if done("mirror-val", summary):
        return 0
    report: dict[str, Any] = {}
    if first:
        report = validation_report(
            MirrorPair(val_main, val_mirror, flip_average=flipped), meta, split.validation, preprocessing, args
        )
        (out / "validation.json").write_text(json.dumps(report, indent=2))
        pointed = report["pointing"]
        print(f"validation: top-1 {report['top1']:.4f}, threshold {report['threshold']}, pointing "
              f"{pointed['mirror']:.3f} (class map {pointed['class_map']:.3f})", flush=True)  # fmt: skip
    processes.wait()
    final_mirror = val_mirror
    if not args.skip_final:
        args.main_digest = final_digest
        final_mirror, summary = train_mirror(args, meta, final_main, preprocessing, everything, None,
                                             out / "mirror-final", processes)  # fmt: skip
        if done("mirror-final", summary):
            return 0
    if args.output and first:
        choices = {"threshold": report["threshold"], "main_weights": getattr(args, "weights_choice", "from file"),
                   "classifier": getattr(args, "head_choice", "from file"),
                   "validation": report}  # fmt: skip
        pair = MirrorPair(final_main, final_mirror, flip_average=flipped).eval()
        results = write_weights(args, meta, pair, preprocessing, choices, history, started)
        print(f"test: top-1 {results['accuracy']:.4f}; wrote {args.output}", flush=True)
    processes.wait()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ResumeError as error:
        sys.exit(f"error: {error}")
