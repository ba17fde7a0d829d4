"""Evaluate a shapes model on simulated hand drawings and on out-of-distribution images (none of the four shapes).

    python train/evaluate_drawings.py --weights weights/shapes.safetensors --out runs/eval-drawings

Drawings come from ``explainer.shapes.strokes`` (pointer events rasterised like a browser canvas: a code path
independent of the training renderer); out-of-distribution images from ``explainer.shapes.ood`` (uniform noise,
scribbles, stars, hearts, pentagons, hexagons, crescents, arrows, letters, photo-like images). Neither is used for
training. Reports main and vertex-count explanation accuracy on the drawings, the share of out-of-distribution images
questioned per kind, the share of correct in-distribution predictions questioned, and AUROC of "is this out of
distribution?" for the explanation verdict's margin against max-softmax.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from explainer.evaluation import metrics
from explainer.evaluation.reports import error_scores, evaluate_predictions, verdict_arrays, write_report
from explainer.shapes.ood import generate_ood
from explainer.shapes.strokes import simulate_dataset
from explainer.tasks import SHAPES
from explainer.verdict.predictor import Explainer

VERTEX_GROUP = slice(0, 3)


def _infer(explainer: Explainer, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities for the images the normaliser accepts, and the mask of those it accepted."""
    inputs, kept = explainer.preprocess_accepted(images)
    return (*explainer.infer_inputs(inputs, batch_size=256), kept)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--drawings-per-class", type=int, default=500)
    p.add_argument("--ood-per-kind", type=int, default=100)
    p.add_argument("--seed", type=int, default=12345, help="a seed no training run uses")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--top-n", type=int, default=None)
    p.add_argument("--out", required=True)
    return p


def measure_ood(
    explainer: Explainer, args: argparse.Namespace, probs: np.ndarray, expls: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """The out-of-distribution images: how many are refused as blank or questioned, per kind and in all, against
    the drawings (``probs``, ``expls``, ``labels``: the classified ones), and how well each score tells them apart."""
    ood_images, kinds = generate_ood(args.ood_per_kind, seed=args.seed)
    o_probs, o_expls, o_kept = _infer(explainer, ood_images)
    kinds = np.array(kinds)
    o_kinds = kinds[o_kept]
    o_found = verdict_arrays(explainer, o_probs, o_expls, *_defaults(explainer, args))
    per_kind = {
        kind: {
            "n": int(np.sum(kinds == kind)),
            "rejected_as_blank": int(np.sum((kinds == kind) & ~o_kept)),
            "questioned": float(np.mean(o_found["questioned"][o_kinds == kind])) if np.any(o_kinds == kind) else None,
        }
        for kind in dict.fromkeys(kinds.tolist())
    }
    i_found = verdict_arrays(explainer, probs, expls, *_defaults(explainer, args))
    correct = i_found["predicted"] == labels
    is_ood = np.concatenate([np.zeros(len(probs), bool), np.ones(len(o_probs), bool)])
    i_scores, o_scores = error_scores(probs, i_found["margin"]), error_scores(o_probs, o_found["margin"])
    detection = {
        name: metrics.error_detection(is_ood, np.concatenate([i_scores[name], o_scores[name]])) for name in i_scores
    }
    return {
        "n": int(len(ood_images)),
        "rejected_as_blank": int(np.sum(~o_kept)),
        "questioned_share": float(np.mean(o_found["questioned"])),
        "questioned_or_rejected_share": float((o_found["questioned"].sum() + np.sum(~o_kept)) / len(ood_images)),
        "in_distribution_correct_questioned_share": float(np.mean(i_found["questioned"][correct])),
        "per_kind": per_kind,
        "detection_ood_vs_drawings": detection,
    }


def summary_of(drawings: dict[str, Any], blank: int, ood: dict[str, Any], path: Path) -> dict[str, Any]:
    """The figures printed at the end."""
    return {
        "drawings_main_accuracy": drawings["accuracy"],
        "drawings_vertex_count_accuracy": drawings["vertex_count_accuracy"],
        "drawings_explanation_exact_match": drawings["explanations"]["exact_match"],
        "drawings_blank": blank,
        "ood_questioned_share": ood["questioned_share"],
        "ood_questioned_or_rejected_share": ood["questioned_or_rejected_share"],
        "in_distribution_correct_questioned_share": ood["in_distribution_correct_questioned_share"],
        "ood_auroc": {k: v["auroc"] for k, v in ood["detection_ood_vs_drawings"].items()},
        "ood_per_kind_questioned": {k: v["questioned"] for k, v in ood["per_kind"].items()},
        "report": str(path),
    }


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    explainer = Explainer.load(args.weights)
    if explainer.task_spec is not SHAPES:
        p.error(f"{args.weights} is a {explainer.task!r} model, not a shapes model")

    started = time.perf_counter()
    images, labels, expl_targets = simulate_dataset(args.drawings_per_class, seed=args.seed)
    probs, expls, kept = _infer(explainer, images)
    labels, expl_targets = labels[kept], expl_targets[kept]
    drawings = evaluate_predictions(explainer, probs, expls, labels, expl_targets, args.threshold, args.top_n)
    vertex_acc = float(np.mean(expls[:, VERTEX_GROUP].argmax(1) == expl_targets[:, VERTEX_GROUP].argmax(1)))
    drawings["vertex_count_accuracy"] = vertex_acc
    ood_summary = measure_ood(explainer, args, probs, expls, labels)
    seconds = time.perf_counter() - started

    results = {
        "title": f"Hand-drawn and out-of-distribution evaluation: {Path(args.weights).name}",
        "model": {"description": explainer.meta.get("description", ""), "seed": args.seed},
        "evaluations": {f"simulated drawings ({len(labels)})": drawings},
        "ood": {},
        "notes": [
            f"vertex-count explanation accuracy on the drawings: {100 * vertex_acc:.2f}%",
            f"{np.sum(~kept)} drawings were reported as blank (not classified)",
            f"out of distribution: {json.dumps(ood_summary)}",
            f"{seconds:.1f} s in all",
        ],
    }
    path = write_report(results, args.out)
    (Path(args.out) / "ood.json").write_text(json.dumps(ood_summary, indent=1))
    print(json.dumps(summary_of(drawings, int(np.sum(~kept)), ood_summary, path), indent=1))
    return 0


def _defaults(explainer: Explainer, args: argparse.Namespace) -> tuple[float, int]:
    return (
        explainer.default_threshold if args.threshold is None else args.threshold,
        explainer.default_top_n if args.top_n is None else args.top_n,
    )


if __name__ == "__main__":
    sys.exit(main())
