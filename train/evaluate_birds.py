"""Evaluate a birds weights file on the held-out CUB images and on uniform noise; write a Markdown report.

    python train/evaluate_birds.py --weights weights/birds.safetensors --data ../shared/data/cub-200 \
        --out runs/eval-birds

Running both networks over the 5,794 test photos takes minutes on a CPU: ``--predictions
runs/birds/test_predictions.npz`` reuses the probabilities that `train_birds.py` computed for the test photos when it
wrote the file (the same networks; that run checks a sample of them against the file) instead of running the networks
again; the noise images still go through the weights file.

The reference's analysis (top-5 main predictions; explanations post-processed with the model's threshold and group
cleaning; explanation ranking with top N; share of correct predictions consistent and of misclassified ones
questioned; share of random images questioned) plus mean per-attribute AUROC, macro-F1 and balanced accuracy beside
the all-zeros baseline, and questioning as error detection (AUROC, FPR at 95% TPR, risk-coverage) against max-softmax;
the calibration of the explanation probabilities (reliability diagram `reliability.png` and expected calibration error,
against the class-level 0/1 labels and against the class's share of photos showing the attribute), per-class accuracy,
and how many photos keep different explanations when the threshold moves from the default to 0.3.
Random images are real uniform noise over 0..255 per channel (the reference fed nearly black np.random.rand/255).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from explainer.birds import cub
from explainer.evaluation.calibration import plot_reliability, reliability, threshold_sensitivity
from explainer.evaluation.reports import evaluate_predictions, questioned_share, write_report
from explainer.inputs.transforms import build_transform
from explainer.tasks import BIRDS
from explainer.verdict.predictor import Explainer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True, help="folder holding CUB_200_2011/ (or that folder itself)")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--labels", choices=("image", "class"), default=None, help="default: what the model trained on")
    p.add_argument("--class-threshold", type=float, default=50.0)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--top-n", type=int, default=None)
    p.add_argument("--noise", type=int, default=1000, help="uniform-noise images to question (0: skip)")
    p.add_argument("--limit", type=int, default=0, help="evaluate at most this many images (smoke runs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predictions", help="reuse test-photo probabilities saved by train_birds.py (.npz)")
    p.add_argument("--slider-threshold", type=float, default=0.3, help="threshold compared with the default")
    p.add_argument("--out", required=True)
    return p


def model_classes(
    p: argparse.ArgumentParser, args: argparse.Namespace, explainer: Explainer, meta: cub.CubMetadata
) -> dict:
    """CUB class index -> the model's class index (exits when the data lacks one of the model's classes)."""
    raw_names = explainer.meta.get("class_raw_names") or list(meta.class_raw_names)
    to_model = {meta.class_raw_names.index(name): i for i, name in enumerate(raw_names) if name in meta.class_raw_names}
    if len(to_model) != len(raw_names):
        missing = [n for n in raw_names if n not in meta.class_raw_names]
        p.error(f"{args.data}: classes.txt lacks the model's classes {missing[:3]}")
    return to_model


def photo_positions(args: argparse.Namespace, meta: cub.CubMetadata, to_model: dict) -> np.ndarray:
    """The split's photos of the model's classes; with ``--limit``, a seeded random subset in file order."""
    positions = meta.test_indices if args.split == "test" else meta.train_indices
    positions = np.array([i for i in positions if meta.images[i].class_index in to_model], dtype=np.int64)
    if args.limit:
        positions = np.random.default_rng(args.seed).permutation(positions)[: args.limit]
        positions.sort()
    return positions


def predict_photos(
    p: argparse.ArgumentParser,
    args: argparse.Namespace,
    explainer: Explainer,
    meta: cub.CubMetadata,
    targets: cub.ExplanationTargets,
    positions: np.ndarray,
    to_model: dict,
) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray, float]:
    """Class and explanation probabilities of the photos (run, or read from ``--predictions``), the model's class of
    each, the photos covered and the seconds it took."""
    dataset = cub.CubImages(
        meta, indices=positions, transform=build_transform(explainer.preprocessing, False), targets=targets
    )  # checks that every photo's file is there
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    started = time.perf_counter()
    if args.predictions:
        probs, expls, positions = _saved_predictions(args.predictions, positions, p)
        labels = [to_model[int(meta.images[i].class_index)] for i in positions]
    else:
        probs, expls, labels = [], [], []
        for images, label, *_ in loader:
            p_, e_ = explainer.infer_tensors(images)
            probs.append(p_)
            expls.append(e_)
            labels.extend(to_model[int(c)] for c in label)
        probs, expls = np.concatenate(probs), np.concatenate(expls)
    return probs, expls, labels, positions, time.perf_counter() - started


def calibration(
    expls: np.ndarray, targets: cub.ExplanationTargets, meta: cub.CubMetadata, positions: np.ndarray
) -> dict[str, Any]:
    """Reliability of the explanation probabilities against the class-level 0/1 labels and the class shares."""
    soft = meta.class_attributes_unit[meta.class_indices[positions]]
    return {
        "against class >= 50%": reliability(expls, targets.labels[positions]),
        "against class share": reliability(expls, soft),
    }


def report_notes(
    args: argparse.Namespace, per_class: np.ndarray, curves: dict, threshold: float, slider: dict, photos: int
) -> list[str]:
    notes = [
        f"per-class accuracy: mean {per_class.mean():.4f}, median {np.median(per_class):.4f}, "
        f"min {per_class.min():.4f}, max {per_class.max():.4f} ({len(per_class)} classes)",
        f"expected calibration error of the explanation probabilities: {curves['against class >= 50%']['ece']:.4f} "
        f"against the class-level 0/1 labels, {curves['against class share']['ece']:.4f} against the class's share "
        "of photos showing the attribute (reliability.png)",
        f"threshold {threshold} -> {args.slider_threshold}: the kept explanations change on {slider['n_changed']} of "
        f"{slider['n']} photos ({100 * slider['share_changed']:.1f}%); kept per photo {slider['mean_kept_base']:.2f}"
        f" -> {slider['mean_kept_other']:.2f}",
    ]
    if args.predictions:
        notes.append(
            f"class and explanation probabilities of the {photos} photos read from "
            f"{Path(args.predictions).name} (computed by the training run from its feature cache)"
        )
    return notes


def noise_questioned(args: argparse.Namespace, explainer: Explainer) -> dict[str, Any]:
    """How many of ``--noise`` uniform-noise images (0..255, the model's input size) the explanations question."""
    rng = np.random.default_rng(args.seed)
    size = int(explainer.preprocessing["resize"])
    noise = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(args.noise)]
    n_probs, n_expls = explainer.infer(noise, batch_size=args.batch_size)
    return questioned_share(explainer, n_probs, n_expls, args.threshold, args.top_n)


def summary(result: dict, per_class: np.ndarray, curves: dict, report: dict, path: Path) -> dict[str, Any]:
    """The figures printed at the end."""
    return {
        "top1": result["accuracy"],
        "top5": result.get("top5_accuracy"),
        **{f"explanations_{k}": v for k, v in result.get("explanations", {}).items() if not isinstance(v, dict)},
        "consistent_share_of_correct": 1 - result["verdict"]["questioned_share_correct"],
        "questioned_share_of_misclassified": result["verdict"]["questioned_share_misclassified"],
        "error_detection": result["error_detection"],
        "per_class_accuracy": {
            "mean": float(per_class.mean()),
            "min": float(per_class.min()),
            "median": float(np.median(per_class)),
            "max": float(per_class.max()),
        },
        "ece": {k: c["ece"] for k, c in curves.items()},
        "threshold_slider": result["threshold_slider"],
        "noise_questioned": {k: v["share"] for k, v in report["ood"].items()},
        "report": str(path),
    }


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    explainer = Explainer.load(args.weights, args.device)
    if explainer.task_spec is not BIRDS:
        p.error(f"{args.weights} is a {explainer.task!r} model, not a birds model")
    meta = cub.read_cub(args.data)
    if meta.notice:
        print(f"notice: {meta.notice}", flush=True)
    to_model = model_classes(p, args, explainer, meta)
    labels_mode = args.labels or explainer.meta.get("training", {}).get("label_source", "image")
    targets = cub.explanation_targets(meta, labels_mode, args.class_threshold)
    positions = photo_positions(args, meta, to_model)
    probs, expls, labels, positions, seconds = predict_photos(p, args, explainer, meta, targets, positions, to_model)

    result = evaluate_predictions(
        explainer,
        probs,
        expls,
        np.array(labels),
        targets.labels[positions],
        args.threshold,
        args.top_n,
        targets.mask[positions] if targets.mask is not None else None,
    )
    curves = calibration(expls, targets, meta, positions)
    result["calibration"] = curves
    plot_reliability(
        curves, f"Explanation probabilities, {len(positions):,} {args.split} photos", Path(args.out) / "reliability.png"
    )
    threshold = explainer.default_threshold if args.threshold is None else args.threshold
    result["threshold_slider"] = threshold_sensitivity(expls, explainer.groups, threshold, args.slider_threshold)
    per_class = np.array([v for v in result["per_class_accuracy"].values() if v == v], dtype=np.float64)
    notes = report_notes(args, per_class, curves, threshold, result["threshold_slider"], len(positions))

    report: dict = {
        "title": f"Birds evaluation: {Path(args.weights).name} on {args.split} images",
        "model": {
            "description": explainer.meta.get("description", ""),
            "architecture": json.dumps(explainer.meta["architecture"]),
            "explanation labels": f"{targets.source}-level"
            + (f" (class matrix >= {args.class_threshold}%)" if targets.source == "class" else ""),
        },
        "evaluations": {f"CUB {args.split} ({len(positions)} images)": result},
        "ood": {},
        "timing": {"cub images/s on " + args.device: round(len(positions) / seconds, 1)},
        "notes": [n for n in [meta.notice] if n] + notes,
    }
    if args.noise:
        report["ood"][f"uniform noise 0..255 ({args.noise} images)"] = noise_questioned(args, explainer)
    path = write_report(report, args.out)
    print(json.dumps(summary(result, per_class, curves, report, path), indent=1))
    return 0


def _saved_predictions(
    path: str, positions: np.ndarray, parser: argparse.ArgumentParser
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities saved for these photos, in the order of `positions` (photos missing from the file are left
    out, and the report says how many photos it covers)."""
    try:
        with np.load(path) as saved:
            saved_positions, probs, expls = saved["positions"], saved["class_probs"], saved["explanation_probs"]
    except (OSError, KeyError, ValueError):
        parser.error(f"{path} is not a predictions file written by train_birds.py")
    row = {int(q): i for i, q in enumerate(saved_positions)}
    kept = np.array([q for q in positions if int(q) in row], dtype=np.int64)
    if not len(kept):
        parser.error(f"{path} holds none of the photos to evaluate")
    rows = np.array([row[int(q)] for q in kept])
    return probs[rows], expls[rows], kept


if __name__ == "__main__":
    sys.exit(main())
