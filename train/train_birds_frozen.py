"""Train the birds pair without a GPU: frozen ImageNet backbone, features cached on disk, both heads fitted on them.

The command that produced the earlier 200-species file (69.7% top-1; see the README for fetching `.local/lite0.pth`;
the shipped file comes from `train/train_birds_partial.py`, which uses this script for the mirror head):

    PYTHONPATH=. nice -n 10 .venv/bin/python train/train_birds_frozen.py --data ../shared/data/cub-200 \
        --model tf_efficientnet_lite0 --pretrained-file .local/lite0.pth --img-size 224 --resize 256 \
        --views plain --targets auto --cache runs/birds-cache-lite0-224 --out runs/birds-lite0-frozen \
        --half --output runs/birds-lite0-frozen/birds.safetensors

Why: a full fine-tuning of EfficientNet on CUB needs a GPU (forward + backward took about 0.4 s per image on this
2-core machine). Here every convolution keeps its ImageNet weights and BatchNorm its ImageNet statistics; only the
two heads learn:
- the main network's classifier (pooled features -> 200 species), multinomial logistic regression;
- the mirror's attribute classifier (pooled mirror features -> 312 attributes), one logistic regression each.
The mirror keeps the project's design (fed from the main network's stem, the main activation added after each
stage, warm-started from the main network's weights), but its convolutions stay at those copied ImageNet weights:
only its head is trained. One pair forward per image yields both networks' pooled features; they are written to
``--cache`` chunk by chunk (float16 .npz, atomic writes), so a killed run resumes where it stopped, across
sessions. With ``--half`` the backbone is rounded to float16 *before* caching: the cached features are exactly what
the shipped float16 file computes when loaded in float32.

Choices are measured on a validation split carved from the training images (``--val-fraction``, never the test
split): the L2 strength of each head, binary (class matrix >= 50%) against soft (matrix / 100) attribute targets
(both reported; ``--targets auto`` keeps the one whose verdict separates wrong from right main predictions better,
Youden's J) and the default explanation threshold (by the same rule). The heads are then refitted on all training
images and the pair is evaluated once on the official test split. Output: the normal self-describing weights file,
`<out>/report.json`, `<out>/reliability_*.png`, `<out>/test_predictions.npz`.

Pilot (a few images per class, no test split, validation numbers only): add ``--limit-per-class 8 --skip-test``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from explainer import cub
from explainer.bundle import atomic_write_bytes, save_bundle
from explainer.calibration import plot_reliability, reliability, threshold_sensitivity
from explainer.evaluation import evaluate_predictions, verdict_arrays
from explainer.metrics import multilabel_report
from explainer.models import MirrorPair, build_pair, state_dict_problem
from explainer.predictor import Explainer
from explainer.pretrained import load_pretrained_backbone
from explainer.tasks import BIRDS
from explainer.transforms import build_transform, reference_preprocessing

CACHE_FORMAT = 1
VIEWS = ("plain", "flip")
L2_MAIN = (1e-4, 3e-4, 1e-3)
L2_MIRROR = (1e-5, 1e-4, 1e-3)  # the BCE is a mean over all 312 outputs: ~312x smaller
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.35, 0.951, 0.05))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder holding CUB_200_2011/ (or that folder itself)")
    p.add_argument("--model", default="tf_efficientnet_lite0", help="a timm EfficientNet-Lite (or any timm CNN)")
    p.add_argument("--pretrained-file", required=True, help="ImageNet weights (a local state-dict file)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--resize", type=int, default=256, help="shorter side before the centre crop")
    p.add_argument("--views", default="plain", help="comma list of cached training views: plain, flip")
    p.add_argument(
        "--targets",
        choices=("auto", "soft", "binary"),
        default="auto",
        help="attribute targets of the shipped mirror head: matrix/100 or matrix >= --class-threshold "
        "(auto: the one whose verdict separates errors better on the validation photos)",
    )
    p.add_argument("--validation-report", help="reuse the choices of an earlier run's report.json (same settings)")
    p.add_argument("--class-threshold", type=float, default=50.0, help="percent: binary targets and evaluation labels")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--threshold", type=float, default=None, help="default explanation threshold (default: chosen)")
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--chunk", type=int, default=64, help="images per cache file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit-per-class", type=int, default=0, help="pilot: at most this many images per class")
    p.add_argument("--skip-test", action="store_true", help="pilot: no test features, no weights file")
    p.add_argument("--extract-only", action="store_true", help="fill the cache and stop")
    p.add_argument(
        "--partial-test",
        action="store_true",
        help="evaluate on the test images cached so far (a round-robin sample over classes); stated in the "
        "weights file",
    )
    p.add_argument("--no-extract", action="store_true", help="use the cache as it is (with --partial-test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--half", action="store_true", help="store float16 weights (the backbone is rounded before caching)")
    p.add_argument(
        "--main-init",
        help="a fine-tuned main network (safetensors, from train/train_birds_partial.py) "
        "loaded over the ImageNet weights before the mirror is warm-started from it",
    )
    p.add_argument(
        "--keep-main-head",
        action="store_true",
        help="keep the main network's classifier (from --main-init) instead of fitting one",
    )
    p.add_argument("--cache", required=True, help="feature cache folder (reused and resumed across runs)")
    p.add_argument("--out", required=True, help="run folder: report.json, reliability plots, test predictions")
    p.add_argument("--output", help="the weights file to write (.safetensors)")
    args = p.parse_args(argv)
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    if not views or any(v not in VIEWS for v in views) or views[0] != "plain":
        p.error(f"--views must start with plain and use only {VIEWS}, got {args.views!r}")
    args.views = views
    if args.keep_main_head and not args.main_init:
        p.error("--keep-main-head keeps the classifier of --main-init; give --main-init too")
    if not args.skip_test and not args.extract_only and not args.output:
        p.error("give --output (the weights file), or --skip-test / --extract-only")
    return args


# -- the frozen pair -------------------------------------------------------------------------------------------------


def build_frozen_pair(
    model: str, n_classes: int, n_expl: int, weights: str, half: bool, main_init: str | None = None
) -> tuple[MirrorPair, dict]:
    """The pair with ImageNet weights in the main network (then `main_init`'s fine-tuned main network, if given),
    copied into the mirror; heads left to be fitted."""
    architecture = {
        "family": "timm",
        "model_name": model,
        "n_classes": n_classes,
        "n_explanations": n_expl,
        "join": "add",
        "start": "stem",
    }
    pair = build_pair(architecture, coupling="frozen")
    load_pretrained_backbone(pair.main, weights)
    if main_init:
        from safetensors.torch import load_file  # never unpickles

        tensors = load_file(main_init)
        problem = state_dict_problem(pair.main.state_dict(), tensors)
        if problem:
            raise SystemExit(f"{main_init} is not a main network for {model} with {n_classes} classes: {problem}")
        pair.main.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    pair.warm_start_from_main()  # every mirror tensor but its head: the mirror starts as the ImageNet network
    if half:  # cache exactly what the float16 file computes once loaded back in float32
        with torch.no_grad():
            for tensor in list(pair.parameters()) + list(pair.buffers()):
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
    # channels-last: oneDNN runs the depthwise convolutions about twice as fast on this CPU (measured 0.49-0.64 against
    # 1.26-1.99 s per image for the pair under load); the numbers are the same up to float rounding
    return pair.eval().to(memory_format=torch.channels_last), architecture


@torch.inference_mode()
def pair_features(pair: MirrorPair, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled pre-classifier features of the main network and of the mirror, from one pair forward."""
    final, taps = pair.main.forward_intermediates(images)
    main = pair.main.forward_head(final, pre_logits=True)
    mirror = pair.mirror.net.forward_head(pair.mirror.forward_features(images, taps), pre_logits=True)
    return main, mirror


def interleave(positions: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Positions reordered round-robin over the classes (each class's first image, then each one's second, ...), so
    that any prefix of the cache covers every class about equally: a cache cut short is still a fair sample."""
    rank = np.zeros(len(positions), dtype=np.int64)
    for c in np.unique(classes[positions]):
        members = np.flatnonzero(classes[positions] == c)
        rank[members] = np.arange(len(members))
    return positions[np.lexsort((positions, classes[positions], rank))]


# -- the feature cache -----------------------------------------------------------------------------------------------


def _digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class FeatureCache:
    """Chunk files `<split>-<view>-<k>.npz` (positions, main, mirror) plus `cache.json` describing what made them."""

    def __init__(self, folder: str | Path, description: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "cache.json"
        if manifest.exists():
            found = json.loads(manifest.read_text())
            if found != description:
                differ = sorted(k for k in set(found) | set(description) if found.get(k) != description.get(k))
                raise SystemExit(
                    f"feature cache {self.folder} was made with other settings ({', '.join(differ)}); "
                    "use another --cache folder"
                )
        else:
            atomic_write_bytes(manifest, json.dumps(description, indent=1).encode())

    def path(self, split: str, view: str, k: int) -> Path:
        return self.folder / f"{split}-{view}-{k:04d}.npz"

    def fill(
        self,
        pair: MirrorPair,
        meta: cub.CubMetadata,
        positions: np.ndarray,
        split: str,
        view: str,
        transform: Callable,
        chunk: int,
        batch_size: int,
        workers: int,
    ) -> None:
        """Compute the missing chunks of one split and view; every chunk is written atomically when complete."""
        chunks = [positions[i : i + chunk] for i in range(0, len(positions), chunk)]
        todo = [k for k in range(len(chunks)) if not self.path(split, view, k).exists()]
        if not todo:
            return
        flip = view == "flip"
        dataset = cub.CubImages(
            meta,
            indices=np.concatenate([chunks[k] for k in todo]),
            transform=(lambda im: transform(im).flip(-1)) if flip else transform,
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
        batches = iter(loader)
        started, done = time.time(), 0
        for k in todo:
            mains, mirrors, need = [], [], len(chunks[k])
            while need > 0:
                images, *_ = next(batches)
                assert len(images) <= need, "batch size must divide the chunk size"
                main, mirror = pair_features(pair, images.contiguous(memory_format=torch.channels_last))
                mains.append(main.half().numpy())
                mirrors.append(mirror.half().numpy())
                need -= len(images)
            buffer = io.BytesIO()
            np.savez(buffer, positions=chunks[k], main=np.concatenate(mains), mirror=np.concatenate(mirrors))
            atomic_write_bytes(self.path(split, view, k), buffer.getvalue())
            done += len(chunks[k])
            rate = (time.time() - started) / done
            left = sum(len(chunks[j]) for j in todo) - done
            print(
                f"cache {split}/{view}: chunk {k + 1}/{len(chunks)}, {rate:.3f} s/image, "
                f"{left} images left (~{left * rate / 60:.1f} min)",
                flush=True,
            )

    def load(
        self, positions: np.ndarray, split: str, view: str, chunk: int, partial: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features of `positions` in order; with `partial`, those of the complete chunks before the first missing."""
        mains, mirrors = [], []
        for k, start in enumerate(range(0, len(positions), chunk)):
            path = self.path(split, view, k)
            if not path.exists() and partial and k > 0:
                break
            if not path.exists():
                raise SystemExit(
                    f"feature cache {self.folder}: {path.name} is missing; rerun without --skip-test "
                    "or with the views it lacks to fill it"
                )
            with np.load(path) as data:
                if not np.array_equal(data["positions"], positions[start : start + chunk]):
                    raise SystemExit(f"feature cache {path} holds other images; use another --cache folder")
                mains.append(data["main"].astype(np.float32))
                mirrors.append(data["mirror"].astype(np.float32))
        return np.concatenate(mains), np.concatenate(mirrors)


def cache_description(
    args: argparse.Namespace, preprocessing: dict, train_pos: np.ndarray, test_pos: np.ndarray
) -> dict[str, Any]:
    """What made a feature cache: reusing one made otherwise is refused."""
    description = {
        "format": CACHE_FORMAT,
        "model": args.model,
        "weights_sha256": _digest(args.pretrained_file),
        "preprocessing": preprocessing,
        "rounded_to_float16": bool(args.half),
        "chunk": args.chunk,
        "train_positions_sha256": hashlib.sha256(train_pos.tobytes()).hexdigest()[:16],
        "test_positions_sha256": hashlib.sha256(test_pos.tobytes()).hexdigest()[:16],
    }
    if args.main_init:
        description["main_init_sha256"] = _digest(args.main_init)
    return description


# -- heads on cached features ----------------------------------------------------------------------------------------


def fit_linear(
    x: np.ndarray, y: np.ndarray, loss: str, l2: float, n_out: int, iters: int = 80
) -> tuple[np.ndarray, np.ndarray]:
    """A linear layer fitted by L-BFGS on standardised features, returned in the raw feature scale (W, b).

    loss "softmax": y holds class indices (cross-entropy); "bce": y holds per-output targets in [0, 1].
    The penalty is l2 / 2 * ||W||^2 on the standardised weights (the bias is free).
    """
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    mean, std = xt.mean(0), xt.std(0).clamp(min=1e-4)
    xs = (xt - mean) / std
    if loss == "softmax":
        target = torch.from_numpy(np.asarray(y)).long()
    else:
        target = torch.from_numpy(np.asarray(y, np.float32))
    weight = torch.zeros(n_out, xs.shape[1], requires_grad=True)
    bias = torch.zeros(n_out, requires_grad=True)
    if loss == "bce":
        with torch.no_grad():
            rate = target.mean(0).clamp(1e-4, 1 - 1e-4)
            bias.copy_(torch.log(rate / (1 - rate)))
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1,
        max_iter=iters,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xs @ weight.T + bias
        if loss == "softmax":
            value = F.cross_entropy(logits, target)
        else:
            value = F.binary_cross_entropy_with_logits(logits, target)
        value = value + 0.5 * l2 * (weight * weight).sum()
        value.backward()
        return value

    opt.step(closure)
    with torch.no_grad():
        raw_w = weight / std
        raw_b = bias - raw_w @ mean
    return raw_w.numpy(), raw_b.numpy()


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return x @ w.T + b


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))


def attribute_numbers(probs: np.ndarray, binary: np.ndarray, soft: np.ndarray, threshold: float) -> dict[str, Any]:
    """Mean AUROC, macro-F1, balanced accuracy (against the class-level binary labels), the all-zeros baseline,
    and the expected calibration error against both the binary and the soft labels."""
    report = multilabel_report(binary, probs, threshold)
    return {
        **report,
        "threshold": threshold,
        "ece_binary": reliability(probs, binary)["ece"],
        "ece_soft": reliability(probs, soft)["ece"],
    }


def validate(
    args: argparse.Namespace,
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    fit_pos: np.ndarray,
    val_pos: np.ndarray,
    stacked: Callable,
    views: dict,
    binary_all: np.ndarray,
    soft_all: np.ndarray,
    judge: Explainer,
    classes: np.ndarray,
    main_head: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Every choice on the validation photos: L2 of each head, binary or soft targets, the default threshold.
    With `main_head` (W, b) the main network's own classifier is kept and only evaluated."""
    classes_fit, y_val = np.tile(classes[fit_pos], len(args.views)), classes[val_pos]
    val_binary, val_soft = binary_all[y_val], soft_all[y_val]
    n_classes, n_expl = binary_all.shape
    report: dict[str, Any] = {
        "validation": {
            "images_fit": int(len(fit_pos)),
            "images_val": int(len(val_pos)),
            "views": args.views,
            "main": {},
            "mirror": {},
            "thresholds": {},
        }
    }
    best_main = None
    if main_head is not None:
        probs = softmax(linear(views["plain"][0][val_rows], *main_head))
        top1 = float((probs.argmax(1) == y_val).mean())
        nll = float(-np.log(probs[np.arange(len(y_val)), y_val] + 1e-12).mean())
        report["validation"]["main"]["kept classifier"] = {"top1": top1, "nll": nll}
        print(f"main network's own classifier: validation top-1 {top1:.4f}, NLL {nll:.4f}", flush=True)
        best_main = ((top1, -nll), None, probs)
    for l2 in () if main_head is not None else L2_MAIN:
        w, b = fit_linear(stacked(fit_rows, 0), classes_fit, "softmax", l2, n_classes)
        probs = softmax(linear(views["plain"][0][val_rows], w, b))
        top1 = float((probs.argmax(1) == y_val).mean())
        nll = float(-np.log(probs[np.arange(len(y_val)), y_val] + 1e-12).mean())
        report["validation"]["main"][str(l2)] = {"top1": top1, "nll": nll}
        print(f"main head, l2 {l2:g}: validation top-1 {top1:.4f}, NLL {nll:.4f}", flush=True)
        if best_main is None or (top1, -nll) > best_main[0]:
            best_main = ((top1, -nll), l2, probs)
    _, l2_main, val_probs = best_main

    best: dict[str, Any] = {}
    for kind in ("binary", "soft"):
        table = binary_all if kind == "binary" else soft_all
        for l2 in L2_MIRROR:
            w, b = fit_linear(stacked(fit_rows, 1), table[classes_fit], "bce", l2, n_expl)
            expl = sigmoid(linear(views["plain"][1][val_rows], w, b))
            numbers = attribute_numbers(expl, val_binary, val_soft, 0.5)
            report["validation"]["mirror"][f"{kind} targets, l2 {l2:g}"] = numbers
            print(
                f"mirror head ({kind} targets), l2 {l2:g}: mean AUROC {numbers['mean_auroc']:.4f}, macro-F1 "
                f"{numbers['macro_f1']:.4f}, ECE vs binary {numbers['ece_binary']:.4f}, vs soft "
                f"{numbers['ece_soft']:.4f}",
                flush=True,
            )
            if kind not in best or numbers["mean_auroc"] > best[kind][0]:
                best[kind] = (numbers["mean_auroc"], l2, expl)
        grid = {}
        for t in THRESHOLDS:
            found = verdict_arrays(judge, val_probs, best[kind][2], t, args.top_n)
            wrong = found["predicted"] != y_val
            q = found["questioned"]
            caught, false_alarm = float(q[wrong].mean()) if wrong.any() else 0.0, float(q[~wrong].mean())
            slider = threshold_sensitivity(best[kind][2], judge.groups, t, 0.3)["share_changed"]
            grid[str(t)] = {
                "errors_questioned": caught,
                "correct_questioned": false_alarm,
                "youden_j": caught - false_alarm,
                "changed_at_0.3": slider,
            }
            print(
                f"{kind} targets, threshold {t:.2f}: errors questioned {caught:.3f}, correct questioned "
                f"{false_alarm:.3f}, kept explanations change at 0.3 on {slider:.3f}",
                flush=True,
            )
        report["validation"]["thresholds"][kind] = grid
    # the main network's own features, for comparison: how much do the frozen mirror's features lose?
    w, b = fit_linear(stacked(fit_rows, 0), binary_all[classes_fit], "bce", best["binary"][1], n_expl)
    numbers = attribute_numbers(sigmoid(linear(views["plain"][0][val_rows], w, b)), val_binary, val_soft, 0.5)
    report["validation"]["mirror"]["binary targets, main network's features (comparison)"] = numbers
    print(
        f"attribute head on the main network's features (binary targets): mean AUROC {numbers['mean_auroc']:.4f}, "
        f"macro-F1 {numbers['macro_f1']:.4f}",
        flush=True,
    )

    def best_threshold(kind: str) -> float:
        grid = report["validation"]["thresholds"][kind]
        return float(max(THRESHOLDS, key=lambda t: grid[str(t)]["youden_j"]))

    if args.targets == "auto":
        kind = max(
            ("binary", "soft"), key=lambda k: report["validation"]["thresholds"][k][str(best_threshold(k))]["youden_j"]
        )
    else:
        kind = args.targets
    other = "binary" if kind == "soft" else "soft"
    threshold = args.threshold if args.threshold is not None else best_threshold(kind)
    report["choices"] = {
        "l2_main": l2_main,
        "l2_mirror": best[kind][1],
        "l2_mirror_other": best[other][1],
        "targets": kind,
        "targets_rule": "given" if args.targets != "auto" else "higher validation Youden J of the verdict",
        "threshold": threshold,
        "threshold_rule": "given" if args.threshold is not None else "best validation Youden J of the verdict",
    }
    print(f"chosen: {report['choices']}", flush=True)
    return report


# -- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = cub.read_cub(args.data)
    classes = meta.class_indices
    n_classes, n_expl = meta.num_classes, meta.num_attributes
    binary_all = (meta.class_attributes >= args.class_threshold).astype(np.float32)  # (classes, attributes)
    soft_all = meta.class_attributes_unit.astype(np.float32)

    def limit(positions: np.ndarray) -> np.ndarray:
        if args.limit_per_class <= 0:
            return positions
        return np.sort(
            np.concatenate(
                [positions[classes[positions] == c][: args.limit_per_class] for c in np.unique(classes[positions])]
            )
        )

    train_pos, test_pos = interleave(limit(meta.train_indices), classes), interleave(limit(meta.test_indices), classes)

    pair, architecture = build_frozen_pair(
        args.model, n_classes, n_expl, args.pretrained_file, args.half, args.main_init
    )
    import timm.data

    data_cfg = timm.data.resolve_model_data_config(pair.main)
    preprocessing = reference_preprocessing(
        size=args.img_size, resize=args.resize, mean=data_cfg["mean"], std=data_cfg["std"]
    )
    transform = build_transform(preprocessing, train=False)
    description = cache_description(args, preprocessing, train_pos, test_pos)
    cache = FeatureCache(args.cache, description)
    if args.chunk % args.batch_size:
        raise SystemExit("--chunk must be a multiple of --batch-size")
    jobs = [("train", "plain", train_pos)]
    if not args.skip_test:
        jobs.append(("test", "plain", test_pos))
    jobs += [("train", view, train_pos) for view in args.views[1:]]
    extract_started = time.time()
    for split, view, positions in [] if args.no_extract else jobs:
        cache.fill(pair, meta, positions, split, view, transform, args.chunk, args.batch_size, args.workers)
    extract_seconds = time.time() - extract_started
    if args.extract_only:
        print(f"cache complete in {args.cache}")
        return 0

    # -- validation: L2 strengths, attribute targets, default threshold ----------------------------------------------
    fit_started = time.time()
    views = {v: cache.load(train_pos, "train", v, args.chunk) for v in args.views}
    fit_pos, val_pos = cub.validation_split(meta, args.val_fraction, args.seed)
    fit_pos, val_pos = np.intersect1d(fit_pos, train_pos), np.intersect1d(val_pos, train_pos)
    row = {int(p): i for i, p in enumerate(train_pos)}
    fit_rows = np.array([row[int(p)] for p in fit_pos])
    val_rows = np.array([row[int(p)] for p in val_pos])

    def stacked(rows: np.ndarray, which: int) -> np.ndarray:  # all views of these training images
        return np.concatenate([views[v][which][rows] for v in args.views])

    n_views = len(args.views)
    meta_out = BIRDS.bundle_metadata(
        architecture,
        list(meta.class_names),
        list(meta.class_raw_names),
        list(meta.attribute_raw_names),
        list(meta.attribute_display_names),
        meta.groups,
        soft_all,
        preprocessing,
        0.5,
        args.top_n,
    )
    judge = Explainer(pair, meta_out)
    head_main = pair.main.get_classifier()
    kept_head = (head_main.weight.detach().numpy().copy(), head_main.bias.detach().numpy().copy())
    # the validation run of a fine-tuned main network used another main network (trained without the validation
    # photos): everything else about the cache must match
    asked_cache = {k: v for k, v in description.items() if k != "main_init_sha256"}
    if args.validation_report:
        report = json.loads(Path(args.validation_report).read_text())
        asked = {
            "views": args.views,
            "val_fraction": args.val_fraction,
            "targets": args.targets,
            "top_n": args.top_n,
            "cache": asked_cache,
            "keep_main_head": args.keep_main_head,
        }
        if report.get("asked") != asked:
            raise SystemExit(f"{args.validation_report} was made with other settings; run the validation again")
        print(f"validation choices from {args.validation_report}: {report['choices']}", flush=True)
    else:
        report = validate(
            args,
            fit_rows,
            val_rows,
            fit_pos,
            val_pos,
            stacked,
            views,
            binary_all,
            soft_all,
            judge,
            classes,
            kept_head if args.keep_main_head else None,
        )
        report["asked"] = {
            "views": args.views,
            "val_fraction": args.val_fraction,
            "targets": args.targets,
            "top_n": args.top_n,
            "cache": asked_cache,
            "keep_main_head": args.keep_main_head,
        }
    choices = report["choices"]
    l2_main, l2_mirror, threshold = choices["l2_main"], choices["l2_mirror"], choices["threshold"]
    targets_kind, other = choices["targets"], "binary" if choices["targets"] == "soft" else "soft"
    if args.skip_test:
        (out / "report.json").write_text(json.dumps(report, indent=1))
        print(f"validation done: {out / 'report.json'}")
        return 0

    # -- final heads on all training images, one evaluation on the test split -----------------------------------------
    all_rows = np.arange(len(train_pos))
    y_all = np.tile(classes[train_pos], n_views)
    if args.keep_main_head:
        w_main, b_main = kept_head
    else:
        w_main, b_main = fit_linear(stacked(all_rows, 0), y_all, "softmax", l2_main, n_classes)
    table = soft_all if targets_kind == "soft" else binary_all
    w_mir, b_mir = fit_linear(stacked(all_rows, 1), table[y_all], "bce", l2_mirror, n_expl)
    w_other, b_other = fit_linear(
        stacked(all_rows, 1),
        (binary_all if other == "binary" else soft_all)[y_all],
        "bce",
        choices["l2_mirror_other"],
        n_expl,
    )
    head_mirror = pair.mirror.net.get_classifier()
    with torch.no_grad():
        for head, w, b in ((head_main, w_main, b_main), (head_mirror, w_mir, b_mir)):
            w, b = torch.from_numpy(w), torch.from_numpy(b)
            head.weight.copy_(w.half().float() if args.half else w)
            head.bias.copy_(b.half().float() if args.half else b)
            w_b = (head.weight.numpy().copy(), head.bias.numpy().copy())
            if head is head_main:
                w_main, b_main = w_b
            else:
                w_mir, b_mir = w_b
    fit_seconds = time.time() - fit_started
    test_main, test_mirror = cache.load(test_pos, "test", "plain", args.chunk, partial=args.partial_test)
    if len(test_main) < len(test_pos):
        print(
            f"partial test: {len(test_main)} of {len(test_pos)} test images are cached; evaluating on those", flush=True
        )
    test_pos = test_pos[: len(test_main)]
    probs = softmax(linear(test_main, w_main, b_main))
    expls = sigmoid(linear(test_mirror, w_mir, b_mir))
    labels = classes[test_pos]
    meta_out["defaults"]["threshold"] = threshold
    explainer = Explainer(pair, meta_out)
    results = evaluate_predictions(explainer, probs, expls, labels, binary_all[labels], threshold, args.top_n)
    test_binary, test_soft = binary_all[labels], soft_all[labels]
    curves = {
        "against class >= 50%": reliability(expls, test_binary),
        "against class share": reliability(expls, test_soft),
    }
    plot_reliability(
        curves,
        f"Mirror attribute probabilities, {len(labels):,} test photos ({targets_kind} targets)",
        out / "reliability_test.png",
    )
    results["calibration"] = {name: c for name, c in curves.items()}
    expls_other = sigmoid(linear(test_mirror[: len(test_pos)], w_other, b_other))
    comparison = {}
    for kind, e in ((targets_kind, expls), (other, expls_other)):
        comparison[f"{kind} targets"] = {
            **attribute_numbers(e, test_binary, test_soft, 0.5),
            "at_default_threshold": multilabel_report(test_binary, e, threshold),
            "threshold_slider": threshold_sensitivity(e, judge.groups, threshold, 0.3),
        }
    results["targets_comparison"] = comparison
    plot_reliability(
        {f"{kind} targets": reliability(e, test_binary) for kind, e in ((targets_kind, expls), (other, expls_other))},
        f"Against the class-level 0/1 labels, {len(labels):,} test photos",
        out / "reliability_targets.png",
    )
    results["threshold_slider"] = threshold_sensitivity(expls, explainer.groups, threshold, 0.3)
    results["test_images"] = int(len(test_pos))
    results["test_images_of_split"] = int(len(interleave(limit(meta.test_indices), classes)))
    per_class = np.array(list(results["per_class_accuracy"].values()), dtype=np.float64)
    results["per_class_accuracy_summary"] = {
        "mean": float(np.nanmean(per_class)),
        "min": float(np.nanmin(per_class)),
        "median": float(np.nanmedian(per_class)),
        "max": float(np.nanmax(per_class)),
    }

    # -- the weights file, and a check that it reproduces the cached predictions from the images --------------------
    seconds = time.time() - started
    training = {k: v for k, v in vars(args).items() if k not in ("workers", "threads", "out", "output", "cache")}
    recipe = "frozen ImageNet backbone (BatchNorm in eval), linear heads fitted on cached features"
    how = "frozen (only the two heads trained, on a CPU)"
    if args.main_init:
        from train.train_birds_partial import load_main_training

        training["main_network"] = main_training = load_main_training(args.main_init)
        # a main network says how it was trained (train_birds_full.py); the partial recipe's files predate that
        recipe = main_training.get(
            "file_recipe",
            (
                "ImageNet backbone, its last stages and classifier fine-tuned on cached activations "
                "(train/train_birds_partial.py); the mirror warm-started from it, its head fitted on cached features"
            ),
        )
        how = main_training.get("file_how", "its last two stages fine-tuned on a CPU")
    training.update(
        {
            "recipe": recipe,
            "selected_on": "validation split carved from the training images",
            **report["choices"],
            "train_images": int(len(train_pos)),
            "label_source": "class",
            "extraction_seconds_this_run": round(extract_seconds, 1),
            "head_fit_seconds": round(fit_seconds, 1),
            "seconds_this_run": round(seconds, 1),
        }
    )
    meta_out["training"] = training
    meta_out["metrics"] = results
    top1 = results["accuracy"]
    family = args.model.replace("tf_efficientnet_", "EfficientNet-").replace("lite", "Lite")
    meta_out["description"] = (
        f"{n_classes} species of CUB-200-2011, {family} ImageNet-pretrained, {how}, trained on {len(train_pos):,} "
        f"images; top-1 {100 * top1:.1f}% on {len(test_pos):,} held-out images"
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_bundle(args.output, pair, meta_out, half=args.half)
    check = Explainer.load(args.output)
    rows = np.arange(0, len(test_pos), max(1, len(test_pos) // 32))[:32]
    sample = test_pos[rows]
    check_set = cub.CubImages(meta, indices=sample, transform=transform)
    images = torch.stack([check_set[i][0] for i in range(len(sample))])
    p_file, e_file = check.infer_tensors(images)
    results["weights_file_check"] = {
        "images": int(len(sample)),
        "max_abs_class_prob_diff": float(np.abs(p_file - probs[rows]).max()),
        "max_abs_explanation_prob_diff": float(np.abs(e_file - expls[rows]).max()),
        "top1_agreement": float((p_file.argmax(1) == probs[rows].argmax(1)).mean()),
    }
    save_bundle(args.output, pair, meta_out, half=args.half)
    np.savez_compressed(
        out / "test_predictions.npz", positions=test_pos, class_probs=probs, explanation_probs=expls, labels=labels
    )
    report["test"] = {k: v for k, v in results.items() if k not in ("confusion_matrix", "risk_coverage")}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    summary = {
        "top1": top1,
        "top5": results.get("top5_accuracy"),
        "per_class": results["per_class_accuracy_summary"],
        "attributes": {k: v for k, v in results["explanations"].items() if not isinstance(v, dict)},
        "ece": {k: c["ece"] for k, c in curves.items()},
        "targets_comparison": {
            k: {
                m: v[m]
                for m in (
                    "mean_auroc",
                    "macro_f1",
                    "balanced_accuracy",
                    "all_zeros_accuracy",
                    "per_explanation_accuracy",
                    "ece_binary",
                    "ece_soft",
                )
            }
            for k, v in comparison.items()
        },
        "consistent_share_of_correct": 1 - results["verdict"]["questioned_share_correct"],
        "questioned_share_of_misclassified": results["verdict"]["questioned_share_misclassified"],
        "error_detection_auroc": {k: v["auroc"] for k, v in results["error_detection"].items()},
        "threshold_slider": results["threshold_slider"],
        "weights_file_check": results["weights_file_check"],
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(summary, indent=1, default=float))
    print(f"wrote {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
