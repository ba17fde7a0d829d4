"""Train the birds pair on a CPU with the main network's last stages fine-tuned on cached activations.

The frozen-backbone recipe (`train/train_birds_frozen.py`) trains only linear heads: 69.7% top-1 with Lite0. Most of
the cost of a forward pass is in the early, high-resolution stages (for EfficientNet-Lite2 at 260 px the stages after
the stride-16 activation take under a tenth of it), and those are the stages fine-grained recognition needs least.
So this recipe keeps the main network frozen up to its stride-16 stage (`blocks.4`), caches that activation once per
training view, and fine-tunes only what follows (`blocks.5`, `blocks.6`, the 1x1 head convolution, its BatchNorm
and the classifier) with AdamW, about 14 ms per image per step on two cores.

Steps (one command; every step resumes from what is on disk):
1. Activation cache (`--cache`): the main network's stride-16 activation of every training photo in each view
   (`plain`, `flip`, and by default `crop1`, `crop2`, up to `crop4`: a seeded random-resized crop, 35-100% of the
   area, random flip), and for the plain view of the training and test photos also the mirror's state at the same
   depth (the mirror is fed from the main stem and joined by addition; its stages up to there are the ImageNet copy
   and do not depend on what is fine-tuned). float16 chunks of 64 photos, written atomically.
2. Validation run: the tail is trained on 80% of the training photos (`cub.validation_split`, never the test split),
   top-1 on the other 20% after every epoch picks the number of epochs; then the frozen recipe, given this main
   network, fits the mirror's head and chooses the attribute targets and the default threshold on the same 20%.
3. Final run: the tail is trained again on all training photos for the chosen number of epochs, the mirror's head is
   refitted with the validation choices, the pair is evaluated once on the official test split and written.

The mirror is warm-started from the (fine-tuned) main network, as the project's design says; only its head is
trained. Pooled features for the frozen recipe's head fitting are computed from the activation cache, and the weights
file check (32 test photos through the file, from the images) compares them with a full forward.

The command that produced the shipped `weights/birds.safetensors` (76.9% top-1; then `train/attach_scope.py` adds
the "is this a bird?" gate, see the README):

    PYTHONPATH=. nice -n 5 .venv/bin/python train/train_birds_partial.py --data ../shared/data/cub-200 \\
        --pretrained-file .local/lite2.pth --cache runs/birds-taps-lite2-260 --out runs/birds-lite2-partial \\
        --max-epochs 12 --output runs/birds-lite2-partial/birds.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from explainer import cub
from explainer.bundle import atomic_write_bytes
from explainer.models import MirrorPair, timm_feature_info
from explainer.transforms import build_transform, reference_preprocessing
from train import train_birds_frozen as frozen

TAP_FORMAT = 1
TAP_LEVEL = 3  # the main network's feature level whose activation is cached: stride 16 (`blocks.4` in EfficientNet)
VIEWS = ("plain", "flip", "crop1", "crop2", "crop3", "crop4")
DEFAULT_VIEWS = VIEWS[:4]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="folder holding CUB_200_2011/ (or that folder itself)")
    p.add_argument("--model", default="tf_efficientnet_lite2", help="a timm EfficientNet(-Lite)")
    p.add_argument("--pretrained-file", required=True, help="ImageNet weights (a local state-dict file)")
    p.add_argument("--img-size", type=int, default=260)
    p.add_argument("--resize", type=int, default=292, help="shorter side before the centre crop")
    p.add_argument("--views", default=",".join(DEFAULT_VIEWS), help=f"comma list of training views from {VIEWS}")
    p.add_argument("--max-epochs", type=int, default=12, help="validation run length; the final run uses the best")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate of the fine-tuned stages")
    p.add_argument("--head-lr", type=float, default=5e-3, help="AdamW learning rate of the new classifier")
    p.add_argument("--weight-decay", type=float, default=0.02)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.3, help="on the pooled features before the classifier")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--top-n", type=int, default=10, help="the ranking's N for the verdict (head fitting, evaluation)")
    p.add_argument("--chunk", type=int, default=64, help="images per cache file")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-per-class", type=int, default=0, help="pilot: at most this many images per class")
    p.add_argument("--extract-only", action="store_true", help="fill the activation cache and stop")
    p.add_argument("--cache", required=True, help="activation cache folder (reused and resumed across runs)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--output", help="the weights file to write (.safetensors)")
    args = p.parse_args(argv)
    views = tuple(v.strip() for v in args.views.split(",") if v.strip())
    if not views or views[0] != "plain" or any(v not in VIEWS for v in views):
        p.error(f"--views must start with plain and use only {VIEWS}, got {args.views!r}")
    args.views = views
    if not args.extract_only and not args.output:
        p.error("give --output (the weights file), or --extract-only")
    return args


# -- the network split at the cached level ---------------------------------------------------------------------------


def _block_index(module_name: str) -> int:
    head, _, index = module_name.partition(".")
    if head != "blocks" or not index.isdigit():
        raise SystemExit(f"this recipe splits an EfficientNet at its blocks; feature module {module_name!r} is not one")
    return int(index)


class MainTail(torch.nn.Module):
    """The main network after the cached level: stride-16 activation -> (class logits, pooled features, last tap)."""

    def __init__(self, main: torch.nn.Module) -> None:
        super().__init__()
        modules = [f["module"] for f in timm_feature_info(main)]
        first = _block_index(modules[TAP_LEVEL]) + 1
        if _block_index(modules[-1]) != len(main.blocks) - 1 or TAP_LEVEL != len(modules) - 2:
            raise SystemExit("this recipe expects the cached level to be the one before the last")
        self.main, self.first = main, first

    def forward(self, x: torch.Tensor, dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.main
        for block in m.blocks[self.first :]:
            x = block(x)
        last = x
        pooled = m.forward_head(m.bn2(m.conv_head(x)), pre_logits=True)
        logits = m.get_classifier()(F.dropout(pooled, dropout, self.training) if dropout else pooled)
        return logits, pooled, last

    def trainable(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """(fine-tuned stage parameters, classifier parameters)."""
        m = self.main
        body = [p for b in m.blocks[self.first :] for p in b.parameters()]
        body += list(m.conv_head.parameters()) + list(m.bn2.parameters())
        return body, list(m.get_classifier().parameters())


@torch.inference_mode()
def prefix(pair: MirrorPair, images: torch.Tensor, with_mirror: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The main network's activation at the cached level and, optionally, the mirror's state after its join there."""
    taps = pair.main.forward_intermediates(
        images, indices=list(range(TAP_LEVEL + 1)), stop_early=True, intermediates_only=True
    )
    if not with_mirror:
        return taps[TAP_LEVEL], None
    mirror = pair.mirror
    x = taps[0]
    for level in range(1, TAP_LEVEL + 1):
        x = mirror._segments[level](x) + taps[level]
    return taps[TAP_LEVEL], x


@torch.inference_mode()
def pooled_from_cache(
    pair: MirrorPair, main_act: torch.Tensor, mirror_state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of both networks, as `train_birds_frozen.pair_features` gives from the image."""
    _, main_pooled, last = MainTail(pair.main).eval()(main_act)
    mirror = pair.mirror
    x = mirror._segments[TAP_LEVEL + 1](mirror_state) + last
    return main_pooled, mirror.net.forward_head(mirror._run_tail(x), pre_logits=True)


class ViewImages(torch.utils.data.Dataset):
    """CUB photos in one training view; random crops are seeded by (seed, view, photo): the cache is reproducible."""

    def __init__(self, meta: cub.CubMetadata, positions: np.ndarray, view: str, preprocessing: dict, seed: int):
        self.images = cub.CubImages(meta, indices=positions, transform=lambda image: image)  # PIL images through
        self.positions, self.view, self.seed = positions, view, seed
        self.plain = build_transform(preprocessing, train=False)
        self.crop = T.Compose(
            [
                T.Resize(preprocessing["resize"]),
                T.RandomResizedCrop(preprocessing["crop"], scale=(0.35, 1.0)),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(preprocessing["mean"], preprocessing["std"]),
            ]
        )

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images[i][0]
        if self.view == "plain":
            return self.plain(image)
        if self.view == "flip":
            return self.plain(image).flip(-1)
        torch.manual_seed(self.seed * 1_000_003 + VIEWS.index(self.view) * 100_003 + int(self.positions[i]))
        return self.crop(image)


class TapCache:
    """Chunk files `<split>-<view>-<k>.npz` (positions, main, mirror) plus `taps.json` describing what made them."""

    def __init__(self, folder: str | Path, description: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "taps.json"
        if manifest.exists():
            found = json.loads(manifest.read_text())
            if found != description:
                differ = sorted(k for k in set(found) | set(description) if found.get(k) != description.get(k))
                raise SystemExit(
                    f"activation cache {self.folder} was made with other settings ({', '.join(differ)}); "
                    "use another --cache folder"
                )
        else:
            atomic_write_bytes(manifest, json.dumps(description, indent=1).encode())

    def path(self, split: str, view: str, k: int) -> Path:
        return self.folder / f"{split}-{view}-{k:04d}.npz"

    def fill(
        self, pair: MirrorPair, dataset: ViewImages, split: str, chunk: int, batch_size: int, workers: int
    ) -> None:
        view, positions = dataset.view, dataset.positions
        with_mirror = view == "plain"
        starts = list(range(0, len(positions), chunk))
        todo = [k for k, s in enumerate(starts) if not self.path(split, view, k).exists()]
        if not todo:
            return
        rows = np.concatenate([np.arange(starts[k], min(starts[k] + chunk, len(positions))) for k in todo])
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, rows.tolist()), batch_size=batch_size, num_workers=workers
        )
        batches, started, done = iter(loader), time.time(), 0
        for k in todo:
            mains, mirrors, need = [], [], min(chunk, len(positions) - starts[k])
            while need > 0:
                images = next(batches)
                main, mirror = prefix(pair, images.contiguous(memory_format=torch.channels_last), with_mirror)
                mains.append(main.half().numpy())
                if mirror is not None:
                    mirrors.append(mirror.half().numpy())
                need -= len(images)
            buffer = io.BytesIO()
            np.savez(
                buffer,
                positions=positions[starts[k] : starts[k] + chunk],
                main=np.concatenate(mains),
                mirror=np.concatenate(mirrors) if mirrors else np.zeros((0,), np.float16),
            )
            atomic_write_bytes(self.path(split, view, k), buffer.getvalue())
            done += min(chunk, len(positions) - starts[k])
            rate = (time.time() - started) / done
            left = len(rows) - done
            print(
                f"activations {split}/{view}: chunk {k + 1}/{len(starts)}, {rate:.3f} s/image, {left} images left "
                f"(~{left * rate / 60:.1f} min)",
                flush=True,
            )

    def load(self, positions: np.ndarray, split: str, view: str, chunk: int) -> tuple[np.ndarray, np.ndarray | None]:
        mains, mirrors = [], []
        for k, start in enumerate(range(0, len(positions), chunk)):
            path = self.path(split, view, k)
            if not path.exists():
                raise SystemExit(f"activation cache {self.folder}: {path.name} is missing; run again to fill it")
            with np.load(path) as data:
                if not np.array_equal(data["positions"], positions[start : start + chunk]):
                    raise SystemExit(f"activation cache {path} holds other images; use another --cache folder")
                mains.append(data["main"])
                if data["mirror"].size:
                    mirrors.append(data["mirror"])
        return np.concatenate(mains), (np.concatenate(mirrors) if mirrors else None)


# -- fine-tuning the tail --------------------------------------------------------------------------------------------


def train_tail(
    pair: MirrorPair,
    acts: dict[str, np.ndarray],
    rows: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    args: argparse.Namespace,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict[str, float]]:
    """Fine-tune the main tail on cached activations (each step draws one cached view per photo); with `val`
    (activations, labels) report validation top-1 after every epoch."""
    generator = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    tail = MainTail(pair.main)
    body, head = tail.trainable()
    for p in pair.main.parameters():
        p.requires_grad_(False)
    for p in body + head:
        p.requires_grad_(True)
    with torch.no_grad():  # a fresh classifier: small random weights, zero bias
        torch.nn.init.normal_(pair.main.get_classifier().weight, std=0.01)
        torch.nn.init.zeros_(pair.main.get_classifier().bias)
    opt = torch.optim.AdamW(
        [{"params": body, "lr": args.lr}, {"params": head, "lr": args.head_lr}], weight_decay=args.weight_decay
    )
    steps_per_epoch = math.ceil(len(rows) / args.batch_size)
    total, warmup = epochs * steps_per_epoch, steps_per_epoch // 2
    base = [g["lr"] for g in opt.param_groups]
    views = list(acts)
    history, step = [], 0
    for epoch in range(epochs):
        tail.train()
        for module in pair.main.blocks[: tail.first]:  # the frozen part keeps its ImageNet statistics
            module.eval()
        started, seen, loss_sum = time.time(), 0, 0.0
        order = generator.permutation(rows)
        choice = generator.integers(0, len(views), size=len(order))
        for s in range(0, len(order), args.batch_size):
            batch, which = order[s : s + args.batch_size], choice[s : s + args.batch_size]
            x = np.stack([acts[views[v]][r] for r, v in zip(batch, which, strict=False)])
            x = torch.from_numpy(x).float().contiguous(memory_format=torch.channels_last)
            scale = min(1.0, (step + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g, lr in zip(opt.param_groups, base, strict=False):
                g["lr"] = lr * scale
            logits, _, _ = tail(x, args.dropout)
            loss = F.cross_entropy(logits, torch.from_numpy(labels[batch]).long(), label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(batch)
            loss_sum += float(loss.detach()) * len(batch)
        entry = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "seconds": round(time.time() - started, 1)}
        if val is not None:
            entry["val_top1"] = evaluate_tail(pair, *val)
        history.append(entry)
        print(json.dumps(entry), flush=True)
    for p in pair.main.parameters():
        p.requires_grad_(False)
    pair.main.eval()
    return history


@torch.inference_mode()
def evaluate_tail(pair: MirrorPair, acts: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    tail, right = MainTail(pair.main).eval(), 0
    for s in range(0, len(acts), batch):
        x = torch.from_numpy(acts[s : s + batch]).float().contiguous(memory_format=torch.channels_last)
        right += int((tail(x)[0].argmax(1).numpy() == labels[s : s + batch]).sum())
    return right / len(acts)


def save_main(pair: MirrorPair, path: Path, training: dict[str, Any], half: bool = True) -> None:
    """The fine-tuned main network alone (safetensors: loading it never unpickles), with how it was trained."""
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in pair.main.state_dict().items()
    }
    atomic_write_bytes(path, save_tensors(tensors, metadata={"training": json.dumps(training)}))


def load_main_training(path: str | Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("training", "{}"))


def write_pooled(
    pair: MirrorPair, taps: TapCache, pooled: frozen.FeatureCache, positions: np.ndarray, split: str, chunk: int
) -> None:
    """The frozen recipe's pooled-feature cache, computed from the activation cache with this main network."""
    for k, start in enumerate(range(0, len(positions), chunk)):
        target = pooled.path(split, "plain", k)
        if target.exists():
            continue
        with np.load(taps.path(split, "plain", k)) as data:
            if not np.array_equal(data["positions"], positions[start : start + chunk]):
                raise SystemExit(f"activation cache {taps.folder} holds other images; use another --cache folder")
            main_act = torch.from_numpy(data["main"]).float().contiguous(memory_format=torch.channels_last)
            mirror_state = torch.from_numpy(data["mirror"]).float().contiguous(memory_format=torch.channels_last)
        main, mirror = pooled_from_cache(pair, main_act, mirror_state)
        buffer = io.BytesIO()
        np.savez(
            buffer, positions=positions[start : start + chunk], main=main.half().numpy(), mirror=mirror.half().numpy()
        )
        atomic_write_bytes(target, buffer.getvalue())


# -- main ------------------------------------------------------------------------------------------------------------


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

    train_pos = frozen.interleave(limit(meta.train_indices), classes)
    test_pos = frozen.interleave(limit(meta.test_indices), classes)
    pair, _ = frozen.build_frozen_pair(args.model, n_classes, n_expl, args.pretrained_file, half=True)
    import timm.data

    data_cfg = timm.data.resolve_model_data_config(pair.main)
    preprocessing = reference_preprocessing(
        size=args.img_size, resize=args.resize, mean=data_cfg["mean"], std=data_cfg["std"]
    )
    description = {
        "format": TAP_FORMAT,
        "model": args.model,
        "weights_sha256": frozen._digest(args.pretrained_file),
        "preprocessing": preprocessing,
        "level": TAP_LEVEL,
        "chunk": args.chunk,
        "seed": args.seed,
        "train_positions_sha256": hashlib.sha256(train_pos.tobytes()).hexdigest()[:16],
        "test_positions_sha256": hashlib.sha256(test_pos.tobytes()).hexdigest()[:16],
    }
    taps = TapCache(args.cache, description)
    if args.chunk % args.batch_size and args.batch_size % args.chunk:
        raise SystemExit("--chunk and --batch-size must divide one another")
    cache_batch = min(args.batch_size, args.chunk)
    jobs = [("train", v, train_pos) for v in args.views] + [("test", "plain", test_pos)]
    extract_started = time.time()
    for split, view, positions in jobs:
        taps.fill(
            pair,
            ViewImages(meta, positions, view, preprocessing, args.seed),
            split,
            args.chunk,
            cache_batch,
            args.workers,
        )
    extract_seconds = time.time() - extract_started
    if args.extract_only:
        print(f"activation cache complete in {args.cache}")
        return 0

    acts = {v: taps.load(train_pos, "train", v, args.chunk)[0] for v in args.views}
    labels = classes[train_pos]
    fit_pos, val_pos = cub.validation_split(meta, args.val_fraction, args.seed)
    row = {int(p): i for i, p in enumerate(train_pos)}
    fit_rows = np.array([row[int(p)] for p in fit_pos if int(p) in row])
    val_rows = np.array([row[int(p)] for p in val_pos if int(p) in row])
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
        "--chunk",
        str(args.chunk),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(cache_batch),
        "--workers",
        str(args.workers),
        "--top-n",
        str(args.top_n),
        "--half",
        "--keep-main-head",
    ]
    if args.limit_per_class:
        common += ["--limit-per-class", str(args.limit_per_class)]
    recipe = {
        k: getattr(args, k)
        for k in (
            "views",
            "lr",
            "head_lr",
            "weight_decay",
            "label_smoothing",
            "dropout",
            "batch_size",
            "val_fraction",
            "seed",
            "img_size",
            "resize",
            "model",
        )
    }
    recipe["views"] = list(args.views)  # as JSON reads it back
    first = MainTail(pair.main).first
    recipe["cached_level"] = f"feature level {TAP_LEVEL} (stride 16); fine-tuned from blocks.{first}"

    # -- validation run: epochs from the tail's validation top-1, then the frozen recipe's choices --------------------
    report: dict[str, Any] = {"recipe": recipe, "activation_cache_seconds_this_run": round(extract_seconds, 1)}
    done_path = out / "validation_run.json"
    done = json.loads(done_path.read_text()) if done_path.exists() else None
    if (
        done
        and done["recipe"] == recipe
        and done["max_epochs"] == args.max_epochs
        and (out / "validation" / "report.json").exists()
    ):
        report["validation_run"] = done["validation_run"]
        epochs = done["validation_run"]["chosen_epochs"]
        print(f"validation run reused from {done_path}: {epochs} epochs", flush=True)
    else:
        history = train_tail(
            pair, acts, fit_rows, labels, args.max_epochs, args, val=(acts["plain"][val_rows], labels[val_rows])
        )
        best = max(history, key=lambda h: (h["val_top1"], -h["epoch"]))
        epochs = best["epoch"]
        report["validation_run"] = {
            "history": history,
            "chosen_epochs": epochs,
            "rule": "best validation top-1 (earliest on ties)",
            "images_fit": int(len(fit_rows)),
            "images_val": int(len(val_rows)),
        }
        print(f"chosen: {epochs} epochs (validation top-1 {best['val_top1']:.4f})", flush=True)
        # the validation pair (trained for the whole run): its mirror head, attribute targets and threshold
        val_main = out / "main-validation.safetensors"
        save_main(pair, val_main, {**recipe, "epochs": args.max_epochs, "trained_on": "80% of the training photos"})
        pair, _ = frozen.build_frozen_pair(
            args.model, n_classes, n_expl, args.pretrained_file, half=True, main_init=str(val_main)
        )
        val_args = common + [
            "--main-init",
            str(val_main),
            "--skip-test",
            "--cache",
            str(out / "pooled-validation"),
            "--out",
            str(out / "validation"),
        ]
        shutil.rmtree(out / "pooled-validation", ignore_errors=True)  # made by another main network
        described = frozen.cache_description(frozen.parse_args(val_args), preprocessing, train_pos, test_pos)
        pooled = frozen.FeatureCache(out / "pooled-validation", described)
        write_pooled(pair, taps, pooled, train_pos, "train", args.chunk)
        if frozen.main(val_args) != 0:
            raise SystemExit("the validation run's head fitting failed")
        atomic_write_bytes(
            done_path,
            json.dumps(
                {"recipe": recipe, "max_epochs": args.max_epochs, "validation_run": report["validation_run"]}, indent=1
            ).encode(),
        )
        pair, _ = frozen.build_frozen_pair(args.model, n_classes, n_expl, args.pretrained_file, half=True)

    # -- final run: all training photos, the chosen epochs; the frozen recipe writes and checks the file -------------
    history = train_tail(pair, acts, np.arange(len(train_pos)), labels, epochs, args)
    report["final_run"] = {"history": history, "epochs": epochs, "images": int(len(train_pos))}
    final_main = out / "main-final.safetensors"
    seconds = round(time.time() - started, 1)
    save_main(
        pair,
        final_main,
        {
            **recipe,
            "epochs": epochs,
            "trained_on": "all training photos",
            "activation_cache_seconds_this_run": round(extract_seconds, 1),
            "seconds_before_heads": seconds,
        },
    )
    (out / "partial_report.json").write_text(json.dumps(report, indent=1))
    pair, _ = frozen.build_frozen_pair(
        args.model, n_classes, n_expl, args.pretrained_file, half=True, main_init=str(final_main)
    )
    final_args = common + [
        "--main-init",
        str(final_main),
        "--cache",
        str(out / "pooled-final"),
        "--out",
        str(out),
        "--output",
        args.output,
    ]
    if (out / "validation" / "report.json").exists():
        final_args += ["--validation-report", str(out / "validation" / "report.json")]
    shutil.rmtree(out / "pooled-final", ignore_errors=True)  # made by another main network
    described = frozen.cache_description(frozen.parse_args(final_args), preprocessing, train_pos, test_pos)
    pooled = frozen.FeatureCache(out / "pooled-final", described)
    write_pooled(pair, taps, pooled, train_pos, "train", args.chunk)
    write_pooled(pair, taps, pooled, test_pos, "test", args.chunk)
    return frozen.main(final_args)


if __name__ == "__main__":
    sys.exit(main())
