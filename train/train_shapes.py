"""Train the shapes pair (main CNN + mirror CNN) on the project's generated shapes and write a weights file.

Two-step training like the reference: first the main network alone (categorical cross-entropy), then the main network
frozen and the mirror trained on its activations (binary cross-entropy with logits). Both steps: Nadam lr 1e-3 with
Keras's time decay ``lr / (1 + decay * iterations)``, ``decay = lr / epochs`` (or ``--schedule cosine``), batch 64,
the weights of the best validation epoch kept (main: accuracy; mirror: exact match, or Keras's binary accuracy with
``--mirror-select binary_accuracy``). ``--joint`` trains both in one phase instead (loss CE + w * BCE).

The reference-faithful pair (the reference's exact networks, raw 64x64 frames, filled shapes; the reference ran 250
epochs, the shipped file 60 because an epoch takes 10-20 s on 2 busy CPU cores):

    .venv/bin/python train/train_shapes.py --arch reference --style filled --epochs 60 \
        --out runs/shapes-reference-60 --output weights/shapes-reference.safetensors

The shipped pair (four conv blocks 8-16-32-64, crop-to-content input, filled + hand-drawn looking shapes,
augmentation, cosine learning rate; the mirror also shown noise images and outliers, none of the four shapes,
labelled "no explanation"; 77 s on one H100; without ``--device cuda`` it runs on the CPU, far slower: a main epoch
took 20 to 34 s on this project's 2-core machine):

    .venv/bin/python train/train_shapes.py --arch wide --main-widths 8,16,32,64 --style mixed --crop-to-content \
        --augment --warm-start-mirror --mirror-noise-fraction 0.1 --mirror-outlier-fraction 0.5 --schedule cosine \
        --epochs 40 --mirror-epochs 30 --device cuda --out runs/shapes --output weights/shapes.safetensors

A killed run resumes from its last completed epoch when rerun with the same options and ``--out``; per-epoch metrics
go to ``<out>/metrics.jsonl``. The data (3,000 images per class by default) is regenerated from the seed each run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explainer.evaluation import reports
from explainer.pair.bundle import FORMAT_VERSION, save_bundle
from explainer.pair.models import MirrorPair, build_pair, keras_parameter_count, reference_shapes_architecture
from explainer.shapes import (
    CLASS_NAMES,
    EXPLANATION_NAMES,
    STYLES,
    class_explanation_prior,
    generate_outliers,
    generate_shapes,
    split_stratified,
)
from explainer.shapes.training import (
    CROP_MARGIN,
    EVAL_BATCH,
    IMAGE_SIZE,
    batches,
    explanation_scores,
    nadam,
    predict_logits,
    scheduled_lr,
    set_lr,
    steps_per_epoch,
    to_tensor,
    training_noise_images,
    uniform_noise_images,
)
from explainer.tasks import SHAPES
from explainer.training.loop import run_phase, seed_everything
from explainer.verdict.predictor import Explainer

OUTLIER_SEED = 40_000  # + --seed: outliers never share a seed with the shapes or the noise


# ----------------------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------------------


def _widths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"widths {text!r} must be comma-separated integers, e.g. 16,32,64") from err
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"widths {text!r} must be positive integers, e.g. 16,32,64")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl (resumable)")
    p.add_argument("--output", type=Path, required=True, help="weights file to write (.safetensors)")
    data = p.add_argument_group("data")
    data.add_argument("--n-per-class", type=int, default=3000)
    data.add_argument("--seed", type=int, default=0, help="seeds the generator, the split, init and batch order")
    data.add_argument("--style", choices=STYLES, default="filled")
    data.add_argument("--val-fraction", type=float, default=0.5, help="stratified validation share (reference 50/50)")
    data.add_argument(
        "--crop-to-content",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="crop to the drawn shape before resizing (default: off for --arch reference, on otherwise)",
    )
    data.add_argument("--augment", action="store_true", help="random rotation/scale/shift and pixel noise")
    data.add_argument(
        "--mirror-noise-fraction",
        type=float,
        default=0.0,
        help="add this share (of the training set) of uniform-noise images (64 to 512 px, grey or RGB), labelled "
        "with no explanation, to the mirror's training data only (the main network never sees them)",
    )
    data.add_argument(
        "--mirror-outlier-fraction",
        type=float,
        default=0.0,
        help="add this share (of the training set) of outliers from explainer.shapes.generate_outliers (5- to "
        "7-sided polygons, stars, concave polygons, open zigzags, drawn by the same renderer as the four shapes), "
        "labelled with no explanation, to the mirror's training data only: the mirror learns to stay silent on "
        "drawings that are none of the four shapes, so the verdict questions them. explainer.shapes.ood, which the "
        "evaluation uses, is a separate code path and is never seen",
    )
    arch = p.add_argument_group("architecture")
    arch.add_argument("--arch", choices=("reference", "wide"), default="reference")
    arch.add_argument("--main-widths", type=_widths, default=None, help="wide: main block widths (default 16,32,64)")
    arch.add_argument(
        "--mirror-widths",
        type=_widths,
        default=None,
        help="wide: mirror widths (default: main's shifted by one, 32,64,64)",
    )
    arch.add_argument("--kernel", type=int, default=3, help="wide: kernel size (padding keeps resolutions)")
    arch.add_argument("--join", choices=("concat", "add"), default="concat", help="wide: how the mirror joins")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=250, help="epochs of each phase (reference 250)")
    train.add_argument("--mirror-epochs", type=int, default=None, help="epochs of the mirror phase (default --epochs)")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument(
        "--schedule",
        choices=("keras", "cosine"),
        default="keras",
        help="keras: the reference's lr / (1 + (lr / epochs) * iteration); cosine: from lr down to 0 over the phase",
    )
    train.add_argument(
        "--mirror-select",
        choices=("exact_match", "binary_accuracy"),
        default="exact_match",
        help="validation score that picks the best mirror epoch (the reference used Keras's binary accuracy)",
    )
    train.add_argument("--warm-start-mirror", action="store_true", help="copy main block weights into the mirror")
    train.add_argument("--joint", action="store_true", help="one phase, both networks, loss CE + w * BCE")
    train.add_argument("--joint-weight", type=float, default=1.0, help="w of --joint")
    train.add_argument(
        "--bn-momentum",
        type=float,
        default=0.01,
        help="BatchNorm running-statistics momentum, PyTorch convention (default 0.01 = Keras's 0.99); short runs "
        "need a larger one (0.1) or the statistics used for validation lag far behind the weights",
    )
    run = p.add_argument_group("running")
    run.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    run.add_argument("--device", default="cpu")
    run.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    run.add_argument(
        "--main-from",
        type=Path,
        default=None,
        help="reuse the finished main phase of another run folder with the same main options (train another mirror)",
    )
    run.add_argument("--noise-eval", type=int, default=1000, help="uniform-noise images for the final check (0: none)")
    run.add_argument("--latency-repeats", type=int, default=200, help="batch-1 CPU timing calls (0: no timing)")
    args = p.parse_args(argv)
    if args.crop_to_content is None:
        args.crop_to_content = args.arch != "reference"
    if args.mirror_epochs is None:
        args.mirror_epochs = args.epochs
    for name in ("n_per_class", "epochs", "mirror_epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0.0 < args.val_fraction < 1.0:
        p.error(f"--val-fraction must be strictly between 0 and 1, got {args.val_fraction}")
    for name in ("mirror_noise_fraction", "mirror_outlier_fraction"):
        if not 0.0 <= getattr(args, name) <= 10.0:
            p.error(f"--{name.replace('_', '-')} must be between 0 and 10, got {getattr(args, name)}")
    if args.arch == "reference" and (args.main_widths or args.mirror_widths):
        p.error("--main-widths/--mirror-widths apply to --arch wide only")
    if args.kernel < 1 or args.kernel % 2 == 0:
        p.error(f"--kernel must be an odd positive integer (padding kernel // 2 keeps resolutions), got {args.kernel}")
    if args.joint and args.main_from is not None:
        p.error("--main-from reuses a main phase; --joint has none")
    for name in ("mirror_noise_fraction", "mirror_outlier_fraction"):
        if args.joint and getattr(args, name) > 0:
            p.error(
                f"--{name.replace('_', '-')} needs the two-step training (the main network must never see those images)"
            )
    return args


def architecture_for(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON architecture stored in the weights file."""
    if args.arch == "reference":
        return reference_shapes_architecture()
    main_widths = args.main_widths or [16, 32, 64]
    # mirror block i reads main block i's output and runs beside main block i + 1: give it that block's width
    mirror_widths = args.mirror_widths or list(main_widths[1:]) + [main_widths[-1]]
    pad = args.kernel // 2
    return {
        "family": "shapes",
        "main": {
            "n_classes": len(CLASS_NAMES),
            "widths": main_widths,
            "kernel": args.kernel,
            "padding": pad,
            "in_chans": 1,
            "image_size": IMAGE_SIZE,
        },
        "mirror": {
            "n_explanations": len(EXPLANATION_NAMES),
            "widths": mirror_widths,
            "kernel": args.kernel,
            "padding": pad,
            "join": args.join,
        },
    }


RUN_ONLY = {"out", "output", "threads", "device", "no_progress", "noise_eval", "latency_repeats", "main_from"}
MIRROR_ONLY = {
    "mirror_widths",
    "join",
    "mirror_epochs",
    "mirror_select",
    "warm_start_mirror",
    "mirror_noise_fraction",
    "mirror_outlier_fraction",
}


def run_config(args: argparse.Namespace, phase: str = "mirror") -> dict[str, Any]:
    """The options that change a phase's result (its checkpoints must match them to resume). The main phase ignores
    the mirror's options, so that another mirror can be trained on the same main network (``--main-from``)."""
    skip = RUN_ONLY | (MIRROR_ONLY if phase == "main" else set())
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items()) if k not in skip}


def reuse_main(source: Path, out: Path) -> None:
    """Start ``out`` from the finished main phase of run folder ``source``: its checkpoints and its log lines."""
    last = source / "main.last.pt"
    if not last.exists() or not (source / "main.best.pt").exists():
        raise SystemExit(f"error: --main-from {source}: no finished main phase there (main.last.pt, main.best.pt)")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("main.last.pt", "main.best.pt"):
        (out / name).write_bytes((source / name).read_bytes())
    lines = [line for line in (source / "metrics.jsonl").read_text().splitlines() if '"phase": "main"' in line]
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def load_data(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Generated images preprocessed once; training and validation tensors live on ``device`` (this data is tiny)."""
    shapes = generate_shapes(args.n_per_class, seed=args.seed, size=IMAGE_SIZE, style=args.style)
    train_idx, val_idx = split_stratified(shapes.labels, args.val_fraction, seed=args.seed)
    images = to_tensor(shapes.images, args.crop_to_content)
    labels = torch.from_numpy(shapes.labels)
    expl = torch.from_numpy(shapes.explanations)
    prior = class_explanation_prior(shapes.labels[train_idx], shapes.explanations[train_idx], len(CLASS_NAMES))
    data = {
        "x_train": images[train_idx].to(device),
        "y_train": labels[train_idx].to(device),
        "e_train": expl[train_idx].to(device),
        "x_val": images[val_idx].to(device),
        "y_val": labels[val_idx].to(device),
        "e_val": expl[val_idx].to(device),
        "raw_val": shapes.images[val_idx],
        "prior": prior,
    }
    mirror_only = []  # images the mirror learns to stay silent on; the main network never sees them
    if args.mirror_noise_fraction > 0:
        count = int(round(args.mirror_noise_fraction * len(train_idx)))
        mirror_only.append(to_tensor(training_noise_images(count, seed=10_000 + args.seed), args.crop_to_content))
        data["mirror_noise_images"] = count
    if args.mirror_outlier_fraction > 0:
        count = int(round(args.mirror_outlier_fraction * len(train_idx)))
        outliers, _ = generate_outliers(count, seed=OUTLIER_SEED + args.seed, size=IMAGE_SIZE, style=args.style)
        mirror_only.append(to_tensor(outliers, args.crop_to_content))
        data["mirror_outlier_images"] = count
    if mirror_only:
        data["x_noise"] = torch.cat(mirror_only).to(device)
    return data


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def train_main(args: argparse.Namespace, pair: MirrorPair, data: dict[str, Any], device: torch.device) -> Any:
    main = pair.main
    optimizer = nadam(list(main.parameters()), args.lr)
    per_epoch = steps_per_epoch(len(data["y_train"]), args.batch_size)

    def step(batch: tuple[int, list[torch.Tensor]]) -> tuple[torch.Tensor, int, dict[str, float]]:
        iteration, (x, y) = batch
        set_lr(optimizer, scheduled_lr(args.schedule, args.lr, args.epochs, per_epoch, iteration))
        logits = main(x)
        return F.cross_entropy(logits, y), x.shape[0], {"accuracy": float((logits.argmax(1) == y).sum())}

    def evaluate() -> dict[str, float]:
        logits = predict_logits(main, data["x_val"], device)
        y = data["y_val"]
        return {
            "val_loss": float(F.cross_entropy(logits, y)),
            "val_accuracy": float((logits.argmax(1) == y).float().mean()),
        }

    return run_phase(
        "main",
        args.out,
        main,
        optimizer,
        None,
        batches([data["x_train"], data["y_train"]], args.batch_size, args.seed, args.augment),
        step,
        evaluate,
        args.epochs,
        "val_accuracy",
        config=run_config(args, "main"),
        progress=not args.no_progress,
    )


def mirror_training_set(data: dict[str, Any]) -> list[torch.Tensor]:
    x, e = data["x_train"], data["e_train"]
    if "x_noise" in data:
        noise = data["x_noise"]
        x = torch.cat([x, noise])
        e = torch.cat([e, torch.zeros(noise.shape[0], e.shape[1], device=e.device)])
    return [x, e]


def train_mirror(args: argparse.Namespace, pair: MirrorPair, data: dict[str, Any], device: torch.device) -> Any:
    pair.set_coupling("frozen")
    optimizer = nadam(list(pair.mirror.parameters()), args.lr)
    training_set = mirror_training_set(data)
    per_epoch = steps_per_epoch(len(training_set[0]), args.batch_size)

    def step(batch: tuple[int, list[torch.Tensor]]) -> tuple[torch.Tensor, int, dict[str, float]]:
        iteration, (x, e) = batch
        set_lr(optimizer, scheduled_lr(args.schedule, args.lr, args.mirror_epochs, per_epoch, iteration))
        _, expl_logits = pair(x)
        return F.binary_cross_entropy_with_logits(expl_logits, e), x.shape[0], {}

    def evaluate() -> dict[str, float]:
        _, expl_logits = predict_logits(pair, data["x_val"], device)
        return explanation_scores(expl_logits, data["e_val"])

    return run_phase(
        "mirror",
        args.out,
        pair,
        optimizer,
        None,
        batches(training_set, args.batch_size, args.seed + 1, args.augment),
        step,
        evaluate,
        args.mirror_epochs,
        f"val_{args.mirror_select}",
        config=run_config(args),
        progress=not args.no_progress,
    )


def train_joint(args: argparse.Namespace, pair: MirrorPair, data: dict[str, Any], device: torch.device) -> Any:
    pair.set_coupling("joint")
    optimizer = nadam(list(pair.parameters()), args.lr)
    per_epoch = steps_per_epoch(len(data["y_train"]), args.batch_size)

    def step(batch: tuple[int, list[torch.Tensor]]) -> tuple[torch.Tensor, int, dict[str, float]]:
        iteration, (x, y, e) = batch
        set_lr(optimizer, scheduled_lr(args.schedule, args.lr, args.epochs, per_epoch, iteration))
        logits, expl_logits = pair(x)
        loss = F.cross_entropy(logits, y) + args.joint_weight * F.binary_cross_entropy_with_logits(expl_logits, e)
        return loss, x.shape[0], {}

    def evaluate() -> dict[str, float]:
        logits, expl_logits = predict_logits(pair, data["x_val"], device)
        scores = explanation_scores(expl_logits, data["e_val"])
        accuracy = float((logits.argmax(1) == data["y_val"]).float().mean())
        return {"val_accuracy": accuracy, **scores, "val_joint_score": (accuracy + scores["val_exact_match"]) / 2}

    result = run_phase(
        "joint",
        args.out,
        pair,
        optimizer,
        None,
        batches([data["x_train"], data["y_train"], data["e_train"]], args.batch_size, args.seed, args.augment),
        step,
        evaluate,
        args.epochs,
        "val_joint_score",
        config=run_config(args),
        progress=not args.no_progress,
    )
    pair.set_coupling("frozen")
    return result


def infer_batched(explainer: Explainer, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Cached probabilities of preprocessed images, in batches that keep memory small."""
    parts = [explainer.infer_tensors(x[i : i + EVAL_BATCH]) for i in range(0, x.shape[0], EVAL_BATCH)]
    return np.concatenate([p for p, _ in parts]), np.concatenate([e for _, e in parts])


def phase_log(out: Path) -> dict[str, dict[str, Any]]:
    """Per phase: epochs logged, seconds summed over all (resumed) sessions, seconds per epoch."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary: dict[str, dict[str, Any]] = {}
    for phase in sorted({r["phase"] for r in rows}):
        mine = [r for r in rows if r["phase"] == phase]
        seconds = sum(r["seconds"] for r in mine)
        summary[phase] = {
            "epochs": len(mine),
            "seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / max(len(mine), 1), 3),
        }
    return summary


# ----------------------------------------------------------------------------------------------------------------------
# Bundle
# ----------------------------------------------------------------------------------------------------------------------


def describe(args: argparse.Namespace, arch: dict[str, Any]) -> str:
    look = {"filled": "black filled shapes", "outline": "hand-drawn looking outlines", "mixed": "filled and hand-drawn"}
    main, mirror = arch["main"], arch["mirror"]
    text = (
        f"Classifies a 64x64 greyscale drawing as circle, triangle, square or rectangle (main CNN, widths "
        f"{main['widths']}, kernel {main['kernel']}), and predicts five yes/no explanations (vertices, parallel "
        f"edges, equal edges) from the main CNN's block activations with a mirror CNN (widths {mirror['widths']}, "
        f"join {mirror['join']}). Trained on {args.n_per_class} generated images per class "
        f"({look[args.style]}; half for validation), "
    )
    text += "both networks together." if args.joint else "main network first, then the mirror with the main frozen."
    text += " Input is cropped to the drawing first." if args.crop_to_content else " Input is the raw frame, resized."
    if args.mirror_noise_fraction > 0:
        text += " The mirror also saw uniform-noise images labelled with no explanation."
    if args.mirror_outlier_fraction > 0:
        text += (
            " The mirror also saw drawings that are none of the four shapes (many-sided polygons, stars, concave "
            "polygons, open zigzags) labelled with no explanation, so that it stays silent on such inputs."
        )
    return text


def summary_metrics(result: dict[str, Any]) -> dict[str, Any]:
    expl = result["explanations"]
    verdict = result["verdict"]
    return {
        "n": result["n"],
        "main_accuracy": result["accuracy"],
        "explanation_binary_accuracy": expl["per_explanation_accuracy"],
        "explanation_exact_match": expl["exact_match"],
        "explanation_macro_f1": expl["macro_f1"],
        "explanation_per_explanation": expl["per_explanation"],
        "misclassified": result["n_misclassified"],
        "questioned_share_correct": verdict["questioned_share_correct"],
        "questioned_share_misclassified": verdict["questioned_share_misclassified"],
        "cases_all": verdict["cases_all"],
        "error_detection_auroc": {k: v["auroc"] for k, v in result["error_detection"].items()},
        "confusion_matrix": result["confusion_matrix"],
    }


def build(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Any], MirrorPair]:
    """The architecture the options ask for and a fresh pair of it on ``device``."""
    arch = architecture_for(args)
    pair = build_pair(arch, coupling="joint")
    for module in pair.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = args.bn_momentum
    return arch, pair.to(device)


def train(
    args: argparse.Namespace, pair: MirrorPair, data: dict[str, Any], device: torch.device
) -> tuple[dict[str, Any], list[str]]:
    """Both networks in one phase (``--joint``), or the main network, then the mirror on it frozen (warm-started
    from the main network with ``--warm-start-mirror``). Returns each phase's result and the warm-started layers."""
    if args.joint:
        return {"joint": train_joint(args, pair, data, device)}, []
    results: dict[str, Any] = {}
    warm: list[str] = []
    if args.main_from is not None and not (args.out / "main.last.pt").exists():
        reuse_main(args.main_from, args.out)
    results["main"] = train_main(args, pair, data, device)
    pair.set_coupling("frozen")
    if args.warm_start_mirror and not (args.out / "mirror.last.pt").exists():
        warm = pair.warm_start_from_main()
    results["mirror"] = train_mirror(args, pair, data, device)
    return results, warm


def measure(
    args: argparse.Namespace, pair: MirrorPair, meta: dict[str, Any], data: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    """The trained pair on the validation images, on uniform noise (questioned share) and its latency on 2 CPU
    threads; the pair ends on the CPU."""
    explainer = Explainer(pair, {**meta, "format_version": FORMAT_VERSION}, device)
    class_probs, expl_probs = infer_batched(explainer, data["x_val"])
    validation = reports.evaluate_predictions(
        explainer, class_probs, expl_probs, data["y_val"].cpu().numpy(), data["e_val"].cpu().numpy()
    )
    noise_result: dict[str, Any] = {"n": 0, "share": None, "cases": {}, "predicted_counts": {}}
    if args.noise_eval > 0:
        noise = uniform_noise_images(args.noise_eval, seed=20_000 + args.seed)  # never the training noise's seed
        noise_probs, noise_expl = explainer.infer(list(noise))
        noise_result = reports.questioned_share(explainer, noise_probs, noise_expl)
    pair.cpu()
    latency: dict[str, Any] = {}
    if args.latency_repeats > 0:
        torch.set_num_threads(2)  # the budget is stated for 2 CPU threads, whatever --threads trained with
        cpu_explainer = Explainer(pair, {**meta, "format_version": FORMAT_VERSION}, "cpu")
        latency = reports.measure_latency(cpu_explainer, list(data["raw_val"][:50]), repeats=args.latency_repeats)
    return {"validation": validation, "noise": noise_result, "latency": latency}


def training_record(
    args: argparse.Namespace,
    pair: MirrorPair,
    data: dict[str, Any],
    results: dict[str, Any],
    warm: list[str],
    data_seconds: float,
    started: float,
) -> dict[str, Any]:
    """What the weights file says about its training: options, data, optimizer, selection, phases, timing."""
    log = phase_log(args.out)
    return {
        **run_config(args),
        "data": {
            "generator": "explainer.shapes.generate_shapes",
            "n_per_class": args.n_per_class,
            "seed": args.seed,
            "style": args.style,
            "size": IMAGE_SIZE,
            "split": "explainer.shapes.split_stratified",
            "val_fraction": args.val_fraction,
            "split_seed": args.seed,
            "mirror_noise_images": data.get("mirror_noise_images", 0),
            "mirror_noise_seed": 10_000 + args.seed if args.mirror_noise_fraction > 0 else None,
            "mirror_outlier_images": data.get("mirror_outlier_images", 0),
            "mirror_outlier_seed": OUTLIER_SEED + args.seed if args.mirror_outlier_fraction > 0 else None,
        },
        "optimizer": "Nadam (Keras settings: eps 1e-7, momentum decay 0.004), per-batch learning rate "
        + ("lr / (1 + (lr / epochs) * iteration)" if args.schedule == "keras" else "0.5 lr (1 + cos(pi t / T))"),
        "selection": {
            "main": "best validation accuracy",
            "mirror": f"best validation {args.mirror_select}",
            "joint": "best mean of validation accuracy and explanation exact match",
        },
        "phases": {
            name: {"best_epoch": r.best_epoch, "best_score": r.best_score, **log.get(name, {})}
            for name, r in results.items()
        },
        "warm_start": warm,
        "main_from": str(args.main_from) if args.main_from is not None else None,
        "parameters_keras": {"main": keras_parameter_count(pair.main), "mirror": keras_parameter_count(pair.mirror)},
        "data_seconds": round(data_seconds, 1),
        "wall_seconds_last_session": round(time.time() - started, 1),
        "torch": torch.__version__,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    started = time.time()
    seed_everything(args.seed)
    arch, pair = build(args, device)
    generated = time.perf_counter()
    data = load_data(args, device)
    data_seconds = time.perf_counter() - generated
    print(
        f"data: {len(data['y_train'])} training, {len(data['y_val'])} validation images ({data_seconds:.1f} s); "
        f"main {keras_parameter_count(pair.main)} / mirror {keras_parameter_count(pair.mirror)} parameters "
        "(Keras count)",
        flush=True,
    )
    results, warm = train(args, pair, data, device)
    pair = pair.eval()

    meta: dict[str, Any] = SHAPES.bundle_metadata(
        arch, data["prior"], preprocessing={"crop_to_content": bool(args.crop_to_content), "margin": CROP_MARGIN}
    )
    measured = measure(args, pair, meta, data, device)
    training = training_record(args, pair, data, results, warm, data_seconds, started)
    validation = summary_metrics(measured["validation"])
    noise_result = measured["noise"]
    meta.update(
        {
            "training": training,
            "metrics": {
                "validation": validation,
                "uniform_noise": {k: noise_result[k] for k in ("n", "share", "cases", "predicted_counts")},
                "latency": measured["latency"],
            },
            "description": describe(args, arch),
        }
    )
    save_bundle(args.output, pair, meta)
    report = {
        "validation": summary_metrics(measured["validation"]),
        "uniform_noise_questioned": noise_result["share"],
        "latency": measured["latency"],
        "phases": training["phases"],
        "output": str(args.output),
    }
    print(json.dumps(report, indent=1), flush=True)
    return report


if __name__ == "__main__":
    main()
