"""Evaluate a shapes weights file: main accuracy, explanations, questioned shares, error detection, uniform noise.

On the validation split the model was trained with (regenerated from the seed, style and split stored in the file):

    .venv/bin/python train/evaluate_shapes.py --weights weights/shapes.safetensors --data generated \
        --out runs/eval-shapes-validation

On a folder laid out like the reference's data set, ``<folder>/{circles,triangles,squares,rectangles}/<i>_EX0_EX3.png``
(explanation labels from the file names, EX0..EX4 = the five explanations in order), for example the thesis's own:

    .venv/bin/python train/evaluate_shapes.py --weights weights/shapes.safetensors \
        --data /work/shared/data/thesis-shapes --out runs/eval-shapes-thesis

Both add 1,000 uniform-noise images (every pixel uniform over the full 0..255 range) and report the share questioned.
Writes ``<out>/report.md``, ``results.json`` and PNG plots, and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from explainer.evaluation import reports
from explainer.inputs.imagecheck import ImageError, check_image
from explainer.shapes import generate_shapes, split_stratified
from explainer.tasks import SHAPES
from explainer.verdict.predictor import Explainer

_FILE_NAME = re.compile(r"^(?P<index>[^_]+)((?:_EX\d+)*)\.png$", re.IGNORECASE)
_EXPLANATION_TAG = re.compile(r"_EX(\d+)", re.IGNORECASE)
FRESH_SEED = 777_777  # no training run uses it
NOISE_SEED = 20_260_101  # not the training script's noise seeds (10_000 + seed, 20_000 + seed)
BLOB_SEED = 20_260_102


def uniform_noise(count: int, seed: int = NOISE_SEED) -> np.ndarray:
    """uint8 (count, 64, 64): every pixel uniform over the full 0..255 range."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, 64, 64), dtype=np.uint8)


def smooth_noise(count: int, seed: int = BLOB_SEED) -> np.ndarray:
    """uint8 (count, 64, 64) blobs: 8x8 uniform noise over 0..255, enlarged bilinearly. Never used in training, so it
    shows whether questioning noise generalises beyond the pixel noise a mirror may have been shown."""
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, size=(count, 8, 8), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((64, 64), Image.Resampling.BILINEAR)) for s in small])


def parse_explanations(file_name: str, n_explanations: int) -> np.ndarray:
    """``12_EX2_EX3.png`` -> [0, 0, 1, 1, 0]; an index out of range or a name of another form raises ValueError."""
    match = _FILE_NAME.match(file_name)
    if not match:
        raise ValueError(f"file name {file_name!r} is not of the form <index>[_EX<k>...].png")
    targets = np.zeros(n_explanations, dtype=np.float32)
    for tag in _EXPLANATION_TAG.findall(file_name):
        k = int(tag)
        if not 0 <= k < n_explanations:
            raise ValueError(f"file name {file_name!r} names EX{k}; valid are EX0 to EX{n_explanations - 1}")
        targets[k] = 1.0
    return targets


def class_folders(root: Path, class_names: Sequence[str]) -> dict[int, Path]:
    """Class index -> folder, matching ``circle`` to ``circle/`` or ``circles/``."""
    found = {}
    for index, name in enumerate(class_names):
        for candidate in (root / name, root / f"{name}s"):
            if candidate.is_dir():
                found[index] = candidate
                break
        else:
            raise ValueError(f"{root}: no folder {name!r} or {name + 's'!r} for class {name!r}")
    return found


def load_folder(
    root: Path, explainer: Explainer, limit: int | None = None
) -> tuple[list[Any], np.ndarray, np.ndarray, list[str]]:
    """Images (PIL), labels, explanation targets and paths of a reference-style folder, sorted by class then name."""
    images, labels, targets, paths = [], [], [], []
    for index, folder in class_folders(root, explainer.class_names).items():
        files = sorted(folder.glob("*.png"), key=lambda p: (len(p.name), p.name))
        if limit is not None:
            files = files[:limit]
        if not files:
            raise ValueError(f"{folder}: no .png images")
        for path in files:
            targets.append(parse_explanations(path.name, len(explainer.explanation_names)))
            try:
                images.append(check_image(path))  # the app's and the CLI's check: a bad file is named, not decoded
            except ImageError as err:
                raise ValueError(f"{path}: {err}") from err
            labels.append(index)
            paths.append(str(path))
    return images, np.array(labels, dtype=np.int64), np.stack(targets), paths


def load_generated(explainer: Explainer) -> tuple[list[Any], np.ndarray, np.ndarray, dict[str, Any]]:
    """The validation split exactly as the training script made it, from the weights file's training config."""
    data = (explainer.meta.get("training") or {}).get("data")
    if not data:
        raise ValueError("the weights file has no training data description (training.data); evaluate on a folder")
    shapes = generate_shapes(
        int(data["n_per_class"]), seed=int(data["seed"]), size=int(data["size"]), style=data["style"]
    )
    _, val_idx = split_stratified(shapes.labels, float(data["val_fraction"]), seed=int(data["split_seed"]))
    images = [shapes.images[i] for i in val_idx]
    return images, shapes.labels[val_idx], shapes.explanations[val_idx], data


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument(
        "--data",
        required=True,
        help="'generated' (the training validation split), 'fresh:STYLE' (1,500 new images per class of STYLE "
        "from a seed no training run uses) or a folder",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for report.md, results.json and plots")
    p.add_argument("--threshold", type=float, default=None, help="explanation threshold (default: the model's)")
    p.add_argument("--top-n", type=int, default=None, help="top N classes by explanations (default: the model's)")
    p.add_argument("--noise-images", type=int, default=1000, help="uniform-noise images (0 to skip)")
    p.add_argument("--smooth-noise-images", type=int, default=1000, help="smooth-noise (blob) images (0 to skip)")
    p.add_argument("--limit", type=int, default=None, help="folder: at most this many images per class")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--latency", action="store_true", help="also time batch-1 inference (ms per image)")
    return p.parse_args(argv)


def load_set(args: argparse.Namespace, explainer: Explainer) -> tuple[list, np.ndarray, np.ndarray, str, list[str]]:
    """The images ``--data`` names, their classes and explanation labels, the set's name and a note on where it
    comes from."""
    if args.data.startswith("fresh:"):
        style = args.data.split(":", 1)[1]
        shapes = generate_shapes(1500, seed=FRESH_SEED, style=style)
        made = f"generate_shapes(1500, seed={FRESH_SEED}, style={style!r})"
        note = f"{len(shapes.labels)} images from {made}, never trained on."
        set_name = f"fresh generated ({style}, seed {FRESH_SEED})"
        return list(shapes.images), shapes.labels, shapes.explanations, set_name, [note]
    if args.data == "generated":
        images, labels, targets, described = load_generated(explainer)
        note = (
            f"Validation split regenerated with generate_shapes(n_per_class={described['n_per_class']}, "
            f"seed={described['seed']}, style={described['style']!r}) and split_stratified("
            f"val_fraction={described['val_fraction']}, seed={described['split_seed']})."
        )
        return images, labels, targets, f"generated validation ({described['style']}, seed {described['seed']})", [note]
    root = Path(args.data)
    if not root.is_dir():
        raise SystemExit(f"error: --data {args.data!r} is neither 'generated' nor a folder")
    images, labels, targets, _ = load_folder(root, explainer, args.limit)
    note = f"Images from {root} (explanation labels parsed from the file names), never used for training."
    return images, labels, targets, f"folder {root.name}", [note]


def question_noise(args: argparse.Namespace, explainer: Explainer, report: dict[str, Any], notes: list[str]) -> None:
    """How many uniform-noise and smooth-noise images the explanations question, into ``report["ood"]``, each set
    described in ``notes``."""
    noise_sets = (
        (
            "uniform noise",
            args.noise_images,
            uniform_noise,
            f"Uniform noise: {args.noise_images} 64x64 greyscale images, every pixel drawn uniformly from the full "
            f"0..255 range (seed {NOISE_SEED}), preprocessed like any input "
            f"(crop_to_content={explainer.preprocessing.get('crop_to_content')}).",
        ),
        (
            "smooth noise",
            args.smooth_noise_images,
            smooth_noise,
            f"Smooth noise: {args.smooth_noise_images} images of 8x8 uniform 0..255 noise enlarged bilinearly to 64x64 "
            f"(seed {BLOB_SEED}); no model was trained on anything like it.",
        ),
    )
    for name, count, make, note in noise_sets:
        if count > 0:
            probs, expl = explainer.infer(list(make(count)), batch_size=256)
            report["ood"][name] = reports.questioned_share(explainer, probs, expl, args.threshold, args.top_n)
            notes.append(note)


def summary_of(report: dict[str, Any], result: dict[str, Any], set_name: str, path: Path) -> dict[str, Any]:
    """The figures printed at the end (and returned)."""
    expl = result["explanations"]
    summary = {
        "report": str(path),
        "set": set_name,
        "n": result["n"],
        "main_accuracy": result["accuracy"],
        "explanation_binary_accuracy": expl["per_explanation_accuracy"],
        "explanation_exact_match": expl["exact_match"],
        "misclassified": result["n_misclassified"],
        "questioned_share_correct": result["verdict"]["questioned_share_correct"],
        "questioned_share_misclassified": result["verdict"]["questioned_share_misclassified"],
        "error_detection_auroc": {k: v["auroc"] for k, v in result["error_detection"].items()},
        "confusion_matrix": result["confusion_matrix"],
    }
    if "uniform noise" in report["ood"]:
        summary["uniform_noise_questioned"] = report["ood"]["uniform noise"]["share"]
    if "smooth noise" in report["ood"]:
        summary["smooth_noise_questioned"] = report["ood"]["smooth noise"]["share"]
    if "timing" in report:
        summary["timing"] = report["timing"]
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    explainer = Explainer.load(args.weights)
    if explainer.task_spec is not SHAPES:
        raise SystemExit(f"error: {args.weights} is a {explainer.task!r} model, not a shapes model")
    started = time.perf_counter()
    images, labels, targets, set_name, notes = load_set(args, explainer)
    class_probs, expl_probs = explainer.infer(images, batch_size=256)
    result = reports.evaluate_predictions(
        explainer, class_probs, expl_probs, labels, targets, args.threshold, args.top_n
    )
    report: dict[str, Any] = {
        "title": f"Shapes evaluation: {args.weights.name} on {set_name}",
        "model": {
            "weights": str(args.weights),
            "description": explainer.meta.get("description", ""),
            "preprocessing": explainer.preprocessing,
            "class explanations (prior rows)": explainer.class_explanations.round(3).tolist(),
        },
        "evaluations": {set_name: result},
        "ood": {},
        "notes": notes,
    }
    question_noise(args, explainer, report, notes)
    if args.latency:
        report["timing"] = reports.measure_latency(explainer, images[:50])
    notes.append(f"Inference and evaluation took {time.perf_counter() - started:.1f} s ({args.threads} threads).")
    path = reports.write_report(report, args.out)
    summary = summary_of(report, result, set_name, path)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
