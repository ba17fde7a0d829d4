"""Evaluate a birds weights file on the held-out CUB images and on uniform noise; write a Markdown report.

    python train/evaluate_birds.py --weights weights/birds.safetensors --data ../shared/data/cub-subset \
        --out runs/eval-birds

The reference's analysis (top-5 main predictions; explanations post-processed with the model's threshold and group
cleaning; explanation ranking with top N; share of correct predictions consistent and of misclassified ones
questioned; share of random images questioned) plus mean per-attribute AUROC, macro-F1 and balanced accuracy beside
the all-zeros baseline, and questioning as error detection (AUROC, FPR at 95% TPR, risk-coverage) against max-softmax.
Random images are real uniform noise over 0..255 per channel (the reference fed nearly black np.random.rand/255).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from explainer import cub
from explainer.evaluation import evaluate_predictions, questioned_share, write_report
from explainer.predictor import Explainer
from explainer.tasks import BIRDS
from explainer.transforms import build_transform


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    explainer = Explainer.load(args.weights, args.device)
    if explainer.task_spec is not BIRDS:
        p.error(f"{args.weights} is a {explainer.task!r} model, not a birds model")
    meta = cub.read_cub(args.data)
    if meta.notice:
        print(f"notice: {meta.notice}", flush=True)
    raw_names = explainer.meta.get("class_raw_names") or list(meta.class_raw_names)
    to_model = {meta.class_raw_names.index(name): i for i, name in enumerate(raw_names) if name in meta.class_raw_names}
    if len(to_model) != len(raw_names):
        missing = [n for n in raw_names if n not in meta.class_raw_names]
        p.error(f"{args.data}: classes.txt lacks the model's classes {missing[:3]}")
    labels_mode = args.labels or explainer.meta.get("training", {}).get("label_source", "image")
    targets = cub.explanation_targets(meta, labels_mode, args.class_threshold)
    positions = meta.test_indices if args.split == "test" else meta.train_indices
    positions = np.array([i for i in positions if meta.images[i].class_index in to_model], dtype=np.int64)
    if args.limit:
        positions = np.random.default_rng(args.seed).permutation(positions)[: args.limit]
        positions.sort()
    dataset = cub.CubImages(meta, indices=positions, transform=build_transform(explainer.preprocessing, False),
                            targets=targets)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    started = time.perf_counter()
    probs, expls, labels = [], [], []
    for images, label, *_ in loader:
        p_, e_ = explainer.infer_tensors(images)
        probs.append(p_)
        expls.append(e_)
        labels.extend(to_model[int(c)] for c in label)
    probs, expls = np.concatenate(probs), np.concatenate(expls)
    seconds = time.perf_counter() - started
    result = evaluate_predictions(explainer, probs, expls, np.array(labels), targets.labels[positions],
                                  args.threshold, args.top_n,
                                  targets.mask[positions] if targets.mask is not None else None)
    report: dict = {
        "title": f"Birds evaluation: {Path(args.weights).name} on {args.split} images",
        "model": {
            "description": explainer.meta.get("description", ""),
            "architecture": json.dumps(explainer.meta["architecture"]),
            "explanation labels": f"{targets.source}-level" + (f" (class matrix >= {args.class_threshold}%)"
                                                                if targets.source == "class" else ""),
        },
        "evaluations": {f"CUB {args.split} ({len(positions)} images)": result},
        "ood": {},
        "timing": {"cub images/s on " + args.device: round(len(positions) / seconds, 1)},
        "notes": [n for n in [meta.notice] if n],
    }
    if args.noise:
        rng = np.random.default_rng(args.seed)
        size = int(explainer.preprocessing["resize"])
        noise = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(args.noise)]
        n_probs, n_expls = explainer.infer(noise, batch_size=args.batch_size)
        report["ood"][f"uniform noise 0..255 ({args.noise} images)"] = questioned_share(
            explainer, n_probs, n_expls, args.threshold, args.top_n
        )
    path = write_report(report, args.out)
    summary = {
        "top1": result["accuracy"],
        "top5": result.get("top5_accuracy"),
        **{f"explanations_{k}": v for k, v in result.get("explanations", {}).items() if not isinstance(v, dict)},
        "consistent_share_of_correct": 1 - result["verdict"]["questioned_share_correct"],
        "questioned_share_of_misclassified": result["verdict"]["questioned_share_misclassified"],
        "error_detection": result["error_detection"],
        "noise_questioned": {k: v["share"] for k, v in report["ood"].items()},
        "report": str(path),
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
