"""Fine-tune a shapes pair towards what people draw: generated shapes, drawn sketches and half of Quick, Draw!.

Data: generated shapes, drawn sketches (``explainer.shapes.sketches``) and the trainable half of the Quick, Draw!
one-stroke drawings; the mirror also learns none-of-the-four from geometry.

    .venv/bin/python train/finetune_shapes_sketches.py --init weights/shapes.safetensors \
        --quickdraw ../shared/data/drawn-shapes/quickdraw_onestroke.ndjson.gz --out runs/shapes-sketches \
        --output runs/shapes-sketches/shapes.safetensors --base-per-class 800 --sketches-per-class 1200 \
        --sketch-outliers 3500 --outliers 1500 --noise 600 --quickdraw-renders 4 --epochs 5 --mirror-epochs 7

(the shipped file's first step, started from the pair trained by train/train_shapes.py; 43.5 minutes on a shared
2-core CPU), then its second, mirror-only step (77 s):

    .venv/bin/python train/finetune_shapes_sketches.py --init runs/shapes-sketches/shapes.safetensors \
        --quickdraw ../shared/data/drawn-shapes/quickdraw_onestroke.ndjson.gz --out runs/shapes-mirror \
        --output runs/shapes-mirror/shapes.safetensors --seed 8 --base-per-class 800 --filled-per-class 1000 \
        --tall-boxes --sketches-per-class 1200 --sketch-outliers 3500 --outliers 1500 --noise 600 \
        --quickdraw-renders 4 --epochs 0 --mirror-epochs 3 --mirror-lr 2e-4

Two steps as the shipped recipe, both starting from --init: the main network on filled + hand-drawn shapes
(``explainer.shapes.generate_shapes``, a seed the shipped training did not use), drawn sketches and Quick, Draw!
circles, squares and triangles; then, with the main network frozen, the mirror on the same images plus images labelled
with no explanation (sketched none-of-the-four drawings, ``generate_outliers``, uniform noise, the Quick, Draw! lines,
squiggles, zigzags and stars) and the in-between quadrilaterals (long / short side 1.10 to 1.25: four vertices,
parallel, same size; the main network never sees them). Nadam, cosine learning rate, augmentation, the weights of
the best validation epoch kept (validation: held-out generated shapes, sketches and sketched outliers; no real
drawing outside the trainable half is ever used). Only ``quickdraw_onestroke`` may be trained on (CC BY 4.0, Google;
``explainer.shapes.drawn.is_training_drawing`` picks its training half); the other collections are for evaluation.
Resumable: rerun with the same --out after a kill.
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
from explainer.pair.bundle import load_bundle, save_bundle
from explainer.pair.models import MirrorPair, PartMirror, ShapesMirror, part_mirror_spec
from explainer.shapes import generate_outliers, generate_shapes, grounding
from explainer.shapes.drawn import is_training_drawing, read_drawings
from explainer.shapes.normalize import NothingToClassify
from explainer.shapes.sketches import (
    DRAWN_SAME_SIZE_MAX,
    SQUARE_MAX_RATIO,
    generate_sketch_outliers,
    generate_sketches,
    paint_sketch,
)
from explainer.shapes.training import (
    augment_batch,
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
from explainer.shapes.uploads import render_paper_photo
from explainer.training.loop import PhaseResult, run_phase, seed_everything
from explainer.verdict.predictor import Explainer

SHAPE_LABELS = ("circle", "triangle", "square", "rectangle")
PARTS_NOTE = (
    "Then the mirror's head was replaced by a read-out that shows where it reads: 'three vertices' and 'four "
    "vertices' are read at the drawing's corners, the other explanations along its ink (16 x 16 maps; corners found "
    "in the ink of each training image), so each explanation's heatmap is exactly where its score comes from."
)
VAL_SHARE = 0.15


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", type=Path, required=True, help="the shapes weights file to start from")
    p.add_argument("--quickdraw", type=Path, default=None, help="quickdraw_onestroke.ndjson.gz (its training half)")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics.jsonl (resumable)")
    p.add_argument("--output", type=Path, required=True, help="weights file to write (.safetensors)")
    p.add_argument("--seed", type=int, default=7, help="a seed the shipped training did not use (it used 0)")
    p.add_argument("--base-per-class", type=int, default=1000, help="generate_shapes images per class (mixed)")
    p.add_argument(
        "--filled-per-class",
        type=int,
        default=0,
        help="more generate_shapes images per class, filled only (the base training's own kind, so that "
        "fine-tuning on drawings does not forget small filled shapes)",
    )
    p.add_argument(
        "--tall-boxes",
        action="store_true",
        help="sketched boxes and open boxes as often tall as wide (otherwise wide when upright)",
    )
    p.add_argument("--sketches-per-class", type=int, default=1500)
    p.add_argument("--sketch-outliers", type=int, default=4400)
    p.add_argument("--outliers", type=int, default=2000, help="generate_outliers images (mixed)")
    p.add_argument("--noise", type=int, default=800)
    p.add_argument("--quickdraw-renders", type=int, default=6, help="renderings of each trainable drawing")
    p.add_argument(
        "--photo-renders",
        type=int,
        default=0,
        help="also, phone photos on paper of each trainable drawing (explainer.shapes.uploads.render_paper_photo)",
    )
    p.add_argument("--epochs", type=int, default=6, help="main network epochs (0: keep the main network of --init)")
    p.add_argument("--mirror-epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--mirror-lr", type=float, default=5e-4)
    p.add_argument(
        "--mirror-kind",
        choices=("keep", "parts"),
        default="keep",
        help="keep: train the mirror of --init; parts: a new part mirror that reads the vertex counts at the "
        "drawing's corners and the rest along its ink (explainer.shapes.grounding), so its heatmaps show where",
    )
    p.add_argument("--mirror-width", type=int, default=48, help="part mirror: channels of its feature map")
    p.add_argument("--mirror-depth", type=int, default=2, help="part mirror: 3x3 convolutions at its map's resolution")
    p.add_argument(
        "--mirror-body",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="part mirror: keep the --init mirror's blocks (warm) under the read-out (default), or read the main "
        "network's stages directly",
    )
    p.add_argument("--region-weight", type=float, default=1.0, help="part mirror: weight of the where-loss")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bn-momentum", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.init.is_file():
        p.error(f"--init {args.init}: no such weights file")
    if args.quickdraw is not None and not args.quickdraw.is_file():
        p.error(f"--quickdraw {args.quickdraw}: no such file")
    return args


def max_area_triangle(points: np.ndarray, samples: int = 48) -> np.ndarray:
    """The three of (evenly picked) ``points`` that span the largest triangle: a drawn triangle's corners."""
    picked = points[np.linspace(0, len(points) - 1, min(samples, len(points))).astype(int)]
    n = len(picked)
    idx = np.array([(a, b, c) for a in range(n) for b in range(a + 1, n) for c in range(b + 1, n)])
    if idx.size == 0:
        return picked[:3]
    a, b, c = picked[idx[:, 0]], picked[idx[:, 1]], picked[idx[:, 2]]
    area = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])
    return picked[idx[int(np.argmax(area))]]


def quickdraw_labels(label: str, strokes: Sequence[np.ndarray]) -> tuple[int | None, np.ndarray | None]:
    """(class taught to the main network or None, explanation labels or None) of a trainable Quick, Draw! shape,
    from its geometry by the same rules as the sketches: a "square" whose box is longer than 1.25:1 is a rectangle,
    between 1.10 and 1.25 it teaches the mirror only; a triangle's "same size" from its largest inscribed corners
    (<= 1.10 yes, >= 1.25 no, in between the mirror is not taught)."""
    points = np.vstack(strokes)
    explanation = np.zeros(5, dtype=np.float32)
    if label == "circle":
        explanation[0] = 1
        return 0, explanation
    if label == "triangle":
        corners = max_area_triangle(points)
        edges = np.linalg.norm(np.roll(corners, -1, axis=0) - corners, axis=1)
        ratio = edges.max() / max(edges.min(), 1e-9)
        explanation[1] = 1
        if ratio <= 1.10:
            explanation[4] = 1
            return 1, explanation
        return 1, (explanation if ratio >= 1.25 else None)
    if label == "square":
        span = points.max(axis=0) - points.min(axis=0)
        ratio = span.max() / max(span.min(), 1e-9)
        explanation[2], explanation[3] = 1, 1
        explanation[4] = float(ratio <= DRAWN_SAME_SIZE_MAX)
        if ratio <= SQUARE_MAX_RATIO:
            return 2, explanation
        return (None, explanation) if ratio <= DRAWN_SAME_SIZE_MAX else (3, explanation)
    return None, None


def base_shapes(args: argparse.Namespace) -> Any:
    """The generated shapes: mixed styles, and ``--filled-per-class`` more filled ones."""
    base = generate_shapes(args.base_per_class, seed=args.seed, size=64, style="mixed")
    if args.filled_per_class > 0:
        filled = generate_shapes(args.filled_per_class, seed=60_000 + args.seed, size=64, style="filled")
        base = type(base)(
            np.concatenate([base.images, filled.images]),
            np.concatenate([base.labels, filled.labels]),
            np.concatenate([base.explanations, filled.explanations]),
        )
    return base


def quickdraw_images(args: argparse.Namespace) -> dict[str, list]:
    """Renderings of the trainable Quick, Draw! drawings, sorted by what they teach (see :func:`quickdraw_labels`):
    ``main_x``/``main_y``/``main_e`` the main network (explanations NaN where the mirror is not taught),
    ``mirror_x``/``mirror_e`` the mirror only, ``zero`` no explanation (none of the four shapes)."""
    found: dict[str, list] = {k: [] for k in ("main_x", "main_y", "main_e", "mirror_x", "mirror_e", "zero")}
    if args.quickdraw is None:
        return found
    for d_index, drawing in enumerate(d for d in read_drawings(args.quickdraw) if is_training_drawing(d)):
        cls, explanation = quickdraw_labels(drawing.label, drawing.strokes)
        for r in range(args.quickdraw_renders + args.photo_renders):
            rng = np.random.default_rng([args.seed, 7, d_index, r])
            if r < args.quickdraw_renders:
                image = paint_sketch(list(drawing.strokes), rng)
            else:  # a phone photo of it on paper (plain, ruled or squared), as people upload drawings
                paper = ("plain", "ruled", "squared")[int(rng.integers(3))]
                image = render_paper_photo(list(drawing.strokes), rng, "paper", paper)
                try:
                    to_tensor([image], True)
                except NothingToClassify:  # a pencil too faint to tell from the paper: the app refuses it too
                    continue
            if drawing.label not in SHAPE_LABELS:
                found["zero"].append(image)
            elif cls is not None:  # without explanation labels the main network learns the class, the mirror nothing
                found["main_x"].append(image)
                found["main_y"].append(cls)
                found["main_e"].append(explanation if explanation is not None else np.full(5, np.nan, np.float32))
            elif explanation is not None:
                found["mirror_x"].append(image)
                found["mirror_e"].append(explanation)
    return found


def build_data(args: argparse.Namespace) -> dict[str, Any]:
    """Preprocessed tensors: main train/val (images, classes, explanations) and mirror-only extras."""
    started = time.perf_counter()
    base = base_shapes(args)
    s_images, s_labels, s_expl, teach = generate_sketches(
        args.sketches_per_class, seed=args.seed, tall_boxes=args.tall_boxes
    )
    x_base, x_sketch = to_tensor(base.images, True), to_tensor(s_images, True)
    rng = np.random.default_rng(args.seed)
    val_base = rng.random(len(base.labels)) < VAL_SHARE
    val_sketch = rng.random(len(s_labels)) < VAL_SHARE
    o_images, _ = generate_sketch_outliers(args.sketch_outliers, seed=args.seed, tall_boxes=args.tall_boxes)
    x_out = to_tensor(o_images, True)
    val_out = rng.random(len(o_images)) < VAL_SHARE
    old_out, _ = generate_outliers(args.outliers, seed=41_000 + args.seed, size=64, style="mixed")
    noise = to_tensor(training_noise_images(args.noise, seed=11_000 + args.seed), True)
    qd = quickdraw_images(args)

    def tensors(images: list) -> list[torch.Tensor]:
        return [to_tensor(images, True)] if images else []

    def stacked(rows: list) -> list[torch.Tensor]:
        return [torch.from_numpy(np.stack(rows))] if rows else []

    train_sketch, val_sketch_taught = ~val_sketch & teach, val_sketch & teach
    x_main = torch.cat([x_base[~val_base], x_sketch[train_sketch], *tensors(qd["main_x"])])
    y_main = torch.cat(
        [torch.from_numpy(base.labels[~val_base]), torch.from_numpy(s_labels[train_sketch])]
        + ([torch.tensor(qd["main_y"], dtype=torch.int64)] if qd["main_y"] else [])
    )
    e_main = torch.cat(
        [torch.from_numpy(base.explanations[~val_base]), torch.from_numpy(s_expl[train_sketch]), *stacked(qd["main_e"])]
    )
    known = ~torch.isnan(e_main).any(dim=1)  # quickdraw triangles of unsure proportions teach the class only
    x_zero = torch.cat([x_out[~val_out], to_tensor(old_out, True), noise, *tensors(qd["zero"])])
    extra_x = [x_sketch[~val_sketch & ~teach], *tensors(qd["mirror_x"])]
    extra_e = [torch.from_numpy(s_expl[~val_sketch & ~teach]), *stacked(qd["mirror_e"])]
    x_mirror = torch.cat([x_main[known], *extra_x, x_zero])
    e_mirror = torch.cat([e_main[known], *extra_e, torch.zeros(len(x_zero), 5)])
    x_val = torch.cat([x_base[val_base], x_sketch[val_sketch_taught]])
    y_val = torch.cat([torch.from_numpy(base.labels[val_base]), torch.from_numpy(s_labels[val_sketch_taught])])
    e_val = torch.cat([torch.from_numpy(base.explanations[val_base]), torch.from_numpy(s_expl[val_sketch_taught])])
    x_val_mirror = torch.cat([x_val, x_sketch[val_sketch & ~teach], x_out[val_out]])
    e_val_mirror = torch.cat([e_val, torch.from_numpy(s_expl[val_sketch & ~teach]), torch.zeros(int(val_out.sum()), 5)])
    counts = {
        "main_train": len(y_main),
        "quickdraw_main": len(qd["main_y"]),
        "quickdraw_mirror_only": len(qd["mirror_x"]),
        "quickdraw_none_of_the_four": len(qd["zero"]),
        "mirror_train": len(e_mirror),
        "mirror_zero": len(x_zero),
        "in_between_quadrilaterals": int((~val_sketch & ~teach).sum()),
        "val": len(y_val),
        "val_mirror": len(e_val_mirror),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print("data:", json.dumps(counts), flush=True)
    return {
        "x_main": x_main,
        "y_main": y_main,
        "x_mirror": x_mirror,
        "e_mirror": e_mirror,
        "x_val": x_val,
        "y_val": y_val,
        "e_val": e_val,
        "x_val_mirror": x_val_mirror,
        "e_val_mirror": e_val_mirror,
        "counts": counts,
        "raw_val": base.images[val_base][:50],
    }


def config(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"out", "output", "threads", "no_progress"}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items()) if k not in skip}


DRAWINGS_NOTE = (
    "Then fine-tuned on shapes drawn as people draw them (explainer.shapes.sketches: overshooting, rounded and"
    " open corners, gaps, several strokes, slant, tremor, thin to thick pens, 28 px bitmaps) and on half of "
    "the Quick, Draw! one-stroke drawings (CC BY 4.0, Google); the mirror also saw sketched drawings that are "
    "none of the four shapes (open shapes, arrows, lines, zigzags, spirals, crossings, stars, many-cornered "
    "and curved-with-corner outlines). A drawn quadrilateral keeps 'all edges have the same size' up to "
    "long/short side 1.25."
)


def load_pair(args: argparse.Namespace) -> tuple[MirrorPair, dict[str, Any]]:
    """The pair of ``--init``, its batch norms set to ``--bn-momentum``."""
    pair, meta = load_bundle(args.init)
    for module in pair.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = args.bn_momentum
    return pair, meta


def train_main(pair: MirrorPair, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Step one: the main network on the shapes, sketches and Quick, Draw! classes (none with ``--epochs 0``)."""
    main_net = pair.main
    pair.set_coupling("joint")
    optimizer = nadam(list(main_net.parameters()), args.lr)
    per_epoch = steps_per_epoch(len(data["y_main"]), args.batch_size)

    def main_step(batch: tuple[int, list[torch.Tensor]]) -> tuple[torch.Tensor, int, dict[str, float]]:
        iteration, (x, y) = batch
        set_lr(optimizer, scheduled_lr("cosine", args.lr, args.epochs, per_epoch, iteration))
        logits = main_net(x)
        return F.cross_entropy(logits, y), x.shape[0], {"accuracy": float((logits.argmax(1) == y).sum())}

    def main_eval() -> dict[str, float]:
        logits = predict_logits(main_net, data["x_val"], torch.device("cpu"))
        return {"val_accuracy": float((logits.argmax(1) == data["y_val"]).float().mean())}

    if args.epochs <= 0:
        return {"best_epoch": 0, "best_score": None, "note": "--epochs 0: the main network of --init"}
    result = run_phase(
        "main",
        args.out,
        main_net,
        optimizer,
        None,
        batches([data["x_main"], data["y_main"]], args.batch_size, args.seed, True),
        main_step,
        main_eval,
        args.epochs,
        "val_accuracy",
        config=config(args),
        progress=not args.no_progress,
    )
    return {"best_epoch": result.best_epoch, "best_score": result.best_score}


def use_part_mirror(pair: MirrorPair, meta: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Put a new part mirror in place of the pair's (the old one's blocks under it with ``--mirror-body``); returns
    the metadata with its architecture."""
    old = pair.mirror
    body = old if isinstance(old, ShapesMirror) and args.mirror_body else None
    pair.mirror = grounding.shapes_part_mirror(
        pair.main.feature_info, len(grounding.ROUTES), args.mirror_width, args.mirror_depth, body
    )
    mirror = {"n_explanations": len(grounding.ROUTES), **part_mirror_spec(pair.mirror)}
    return {**meta, "architecture": {**meta["architecture"], "mirror": mirror}}


def train_mirror(pair: MirrorPair, data: dict[str, Any], args: argparse.Namespace, grounded: bool) -> PhaseResult:
    """Step two: the mirror on the frozen main network; a ``grounded`` (part) mirror also learns where to read
    (its where-loss on the drawings' corners and ink), and is validated on pointing at the corners too."""
    mirror_opt = nadam(list(pair.mirror.parameters()), args.mirror_lr)
    mirror_per_epoch = steps_per_epoch(len(data["e_mirror"]), args.batch_size)

    def mirror_step(batch: tuple[int, list[torch.Tensor]]) -> tuple[torch.Tensor, int, dict[str, float]]:
        iteration, (x, e, *corners) = batch
        set_lr(mirror_opt, scheduled_lr("cosine", args.mirror_lr, args.mirror_epochs, mirror_per_epoch, iteration))
        if not corners:
            _, expl_logits = pair(x)
            return F.binary_cross_entropy_with_logits(expl_logits, e), x.shape[0], {}
        pixels = torch.Generator().manual_seed(args.seed * 100_003 + iteration + 50_000)
        x, theta = augment_batch(x, pixels, return_theta=True)  # the corners move with the pixels
        expl_logits, region_logits, _ = pair.mirror.forward_maps(x, pair.forward_main(x)[1])
        targets, known = grounding.region_targets(
            x, grounding.move_points(corners[0], theta, x.shape[-2:]), region_logits.shape[-2:]
        )
        where = -(targets * torch.log_softmax(region_logits.flatten(2), dim=-1)).sum(-1)
        where_loss = (where * known).sum() / known.sum().clamp(min=1)
        expl_loss = F.binary_cross_entropy_with_logits(expl_logits, e)
        return (
            expl_loss + args.region_weight * where_loss,
            x.shape[0],
            {"where_loss": float(where_loss.detach()) * len(x)},
        )

    def mirror_eval() -> dict[str, float]:
        if not grounded:
            _, expl_logits = predict_logits(pair, data["x_val_mirror"], torch.device("cpu"))
            return explanation_scores(expl_logits, data["e_val_mirror"])
        logits, maps = [], []
        pair.eval()
        with torch.no_grad():
            for x in data["x_val_mirror"].split(256):
                _, expl, _, expl_maps = pair.forward_maps(x)
                logits.append(expl)
                maps.append(expl_maps)
        hits, counted = grounding.corner_hits(torch.cat(maps), data["c_val_mirror"])
        scores = explanation_scores(torch.cat(logits), data["e_val_mirror"])
        return {**scores, "val_corner_pointing": hits / max(counted, 1)}

    tensors = [data["x_mirror"], data["e_mirror"]] + ([data["c_mirror"]] if grounded else [])
    return run_phase(
        "mirror",
        args.out,
        pair,
        mirror_opt,
        None,
        batches(tensors, args.batch_size, args.seed + 1, not grounded),
        mirror_step,
        mirror_eval,
        args.mirror_epochs,
        "val_exact_match",
        config=config(args),
        progress=not args.no_progress,
    )


def measure(explainer: Explainer, data: dict[str, Any], seed: int) -> dict[str, Any]:
    """The fine-tuned pair on the validation images, on 1,000 noise images (questioned share) and its latency."""
    class_probs, expl_probs = explainer.infer_tensors(data["x_val"])
    validation = reports.evaluate_predictions(
        explainer, class_probs, expl_probs, data["y_val"].numpy(), data["e_val"].numpy()
    )
    noise_probs, noise_expl = explainer.infer(list(uniform_noise_images(1000, seed=20_000 + seed)))
    noise = reports.questioned_share(explainer, noise_probs, noise_expl)
    latency = reports.measure_latency(explainer, list(data["raw_val"]), repeats=200)
    return {"validation": validation, "noise": noise, "latency": latency}


def record_step(meta: dict[str, Any], finetune: dict[str, Any], measured: dict[str, Any], grounded: bool) -> dict:
    """The metadata with this step appended to the training record, its figures as the file's metrics (the starting
    pair's kept apart) and the description saying what the fine-tuning taught."""
    validation, noise = measured["validation"], measured["noise"]
    meta = dict(meta)
    earlier = meta["training"].get("finetune")  # fine-tuning an already fine-tuned file keeps every step's record
    steps = (earlier if isinstance(earlier, list) else [earlier]) if earlier else []
    meta["training"] = {**meta["training"], "finetune": [*steps, finetune] if steps else finetune}
    metrics = dict(meta.get("metrics", {}))
    if "validation" in metrics:  # the starting pair's figures: kept, but never shown as this file's own
        metrics["base_pair_validation"] = metrics.pop("validation")
    meta["metrics"] = {
        **metrics,
        "finetune_validation": {
            "n": validation["n"],
            "main_accuracy": validation["accuracy"],
            "explanation_exact_match": validation["explanations"]["exact_match"],
            "questioned_share_correct": validation["verdict"]["questioned_share_correct"],
        },
        "uniform_noise": {k: noise[k] for k in ("n", "share", "cases", "predicted_counts")},
        "latency": measured["latency"],
    }
    if DRAWINGS_NOTE not in meta["description"]:
        meta["description"] = meta["description"] + " " + DRAWINGS_NOTE
    if grounded and PARTS_NOTE not in meta["description"]:
        meta["description"] = meta["description"] + " " + PARTS_NOTE
    return meta


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    started = time.time()
    pair, meta = load_pair(args)
    data = build_data(args)
    main_phase = train_main(pair, data, args)

    pair.set_coupling("frozen")
    grounded = args.mirror_kind == "parts" or isinstance(pair.mirror, PartMirror)  # trained with its where-loss
    if args.mirror_kind == "parts":
        meta = use_part_mirror(pair, meta, args)
    if grounded:
        data["c_mirror"] = grounding.find_corners(data["x_mirror"], data["e_mirror"])
        data["c_val_mirror"] = grounding.find_corners(data["x_val_mirror"], data["e_val_mirror"])
    mirror_result = train_mirror(pair, data, args, grounded)
    pair = pair.eval()

    measured = measure(Explainer(pair, meta, "cpu"), data, args.seed)
    finetune = {
        **config(args),
        "script": "train/finetune_shapes_sketches.py",
        "data": data["counts"],
        "phases": {
            "main": main_phase,
            "mirror": {"best_epoch": mirror_result.best_epoch, "best_score": mirror_result.best_score},
        },
        "wall_seconds_last_session": round(time.time() - started, 1),
        "torch": torch.__version__,
    }
    save_bundle(args.output, pair, record_step(meta, finetune, measured, grounded))
    validation = measured["validation"]
    report = {
        "validation_main_accuracy": validation["accuracy"],
        "validation_exact_match": validation["explanations"]["exact_match"],
        "validation_correct_questioned": validation["verdict"]["questioned_share_correct"],
        "noise_questioned": measured["noise"]["share"],
        "latency": measured["latency"],
        "phases": finetune["phases"],
        "output": str(args.output),
        "wall_seconds": finetune["wall_seconds_last_session"],
    }
    print(json.dumps(report, indent=1), flush=True)
    return report


if __name__ == "__main__":
    main()
