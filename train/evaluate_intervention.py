"""Test-time intervention, the concept-bottleneck models' hallmark: a person corrects the k least certain attribute
groups of a photo to its species' true values; how often does the explanation ranking then put the right species
first? k = 0 .. all 28 groups, on the official test photos, beside the main network's own top-1.

    python train/evaluate_intervention.py --weights weights/birds.safetensors --data ../shared/data/cub-200 \\
        --predictions runs/birds-mirror-shipped/test_predictions.npz --out runs/intervention

A group's certainty is the largest probability among its values; the least certain groups are corrected first.
A corrected group takes the species' values (the class matrix >= 50%: 1 for those values, 0 for the rest). The
ranking is the app's (threshold, one value per group, the weighted class ranking). Needs the optional evaluation
packages (``pip install -e .[eval]``) for the plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from explainer.birds import cub
from explainer.verdict import postprocess
from explainer.verdict.predictor import Explainer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True, help="CUB folder")
    p.add_argument("--predictions", required=True, help="test_predictions.npz written by train/train_birds.py")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def intervene(
    expls: np.ndarray, truth: np.ndarray, groups: list[list[int]], k: int
) -> np.ndarray:  # fmt: skip
    """Explanation probabilities with each photo's k least certain groups replaced by the true values."""
    certainty = np.stack([expls[:, g].max(axis=1) for g in groups], axis=1)  # (N, groups)
    order = np.argsort(certainty, axis=1, kind="stable")[:, :k]
    corrected = expls.copy()
    for n, chosen in enumerate(order):
        for g in chosen:
            corrected[n, groups[g]] = truth[n, groups[g]]
    return corrected


def curve(explainer: Explainer, expls: np.ndarray, truth: np.ndarray, labels: np.ndarray) -> list[float]:
    """Top-1 of the explanation ranking for k = 0 .. number of groups."""
    result = []
    for k in range(len(explainer.groups) + 1):
        corrected = intervene(expls, truth, explainer.groups, k)
        kept = postprocess.kept_explanations(corrected, explainer.default_threshold, explainer.groups)
        scores = postprocess.rank_scores(kept, explainer.class_explanations, explainer.ranking)
        result.append(float((scores.argmax(axis=1) == labels).mean()))
    return result


def plot(points: list[float], main_top1: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.6), dpi=110)
    axes.plot(range(len(points)), [100 * p for p in points], marker="o", markersize=3, label="explanation ranking")
    axes.axhline(100 * main_top1, color="grey", linestyle="--", label=f"main network ({100 * main_top1:.1f}%)")
    axes.set_xlabel("attribute groups corrected by a person (least certain first)")
    axes.set_ylabel("top-1 on the test photos (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    explainer = Explainer.load(args.weights)
    meta = cub.read_cub(args.data, image_level_attributes=False)
    with np.load(args.predictions) as saved:
        positions, probs, expls = saved["positions"], saved["class_probs"], saved["explanation_probs"]
    labels = meta.class_indices[positions]
    truth = (meta.class_attributes >= 50.0).astype(np.float64)[labels]
    points = curve(explainer, expls, truth, labels)
    main_top1 = float((probs.argmax(axis=1) == labels).mean())
    report = {"photos": int(len(labels)), "main_top1": main_top1, "ranking_top1_by_k": points}
    (out / "intervention.json").write_text(json.dumps(report, indent=2))
    plot(points, main_top1, out / "intervention.png")
    shown = {f"k{k}": points[k] for k in (0, 1, 3, 5, 10) if k < len(points)}
    print(json.dumps({"main_top1": main_top1, **shown, "all": points[-1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
