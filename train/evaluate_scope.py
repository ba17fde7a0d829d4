"""Measure the "is this a bird?" scope gate: CUB photos in scope, non-bird photos out of scope.

Pick the threshold on the official CUB TRAINING photos only (the largest multiple of 0.01 that keeps at least 99.5% of
them in scope), from the ImageNet weights file alone, no birds bundle needed:

    python train/evaluate_scope.py --pretrained-file .local/lite0.pth --data ../shared/data/cub-200 \
        --pick-threshold --out runs/scope-pick

Evaluate a weights file's gate (its own threshold) on the 5,794 official CUB test photos and on scikit-image's
photo-like sample images (none of which is a bird); the same run re-checks the float16 copy against float32 when
``--pretrained-file`` is also given:

    python train/evaluate_scope.py --weights weights/birds.safetensors --data ../shared/data/cub-200 \
        --pretrained-file .local/lite0.pth --out runs/eval-scope

Scoring 11,788 photos with Lite0 takes an hour on this busy 2-core machine. ``--features DIR`` instead reads the pooled
features a frozen-backbone training run cached (the frozen recipe's ``--cache DIR``, removed with that recipe in
favour of train/train_birds.py: the same Lite0, the same
preprocessing, weights rounded to float16) and applies the ImageNet classifier to them: exactly what a gate sharing
that pair's trunk computes (``scope.trunk = "main"``), in seconds. ``--check-features N`` runs the whole network on N
of those photos and reports the largest score difference.

Shapes have no scope network: ``in_scope`` is the pair's own "none of the four" judgement (some kept explanation
supports a class). Its shares on simulated mouse drawings (in scope) and on the ten out-of-distribution kinds of
``explainer.shapes.ood`` (out of scope), with the seed of ``train/evaluate_drawings.py``:

    python train/evaluate_scope.py --shapes-weights weights/shapes.safetensors --out runs/eval-scope-shapes

Writes ``report.md`` and ``results.json`` (every image's score, top ImageNet class and verdict) into ``--out`` and
prints a JSON summary. Scores are cached in ``--out`` (``scores-<split>.npz``) so that a rerun skips the network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from explainer.birds import cub
from explainer.inputs.transforms import load_rgb
from explainer.pair.scope import ScopeGate, ScopeReading, imagenet_gate_from_file, plain_name
from explainer.verdict.predictor import Explainer

KEEP_SHARE = 0.995  # the threshold keeps at least this share of CUB training photos in scope
# scikit-image samples that are photographs (or photo-like scans) of something that is not a bird. Left out:
# drawings and synthetic patterns (colorwheel, logo, checkerboard, binary_blobs, shepp_logan_phantom) and lfw_subset
# (25 px crops), reported apart as "other"; samples that need a download (eagle, brain, ...) are unavailable offline.
SKIMAGE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "stereo_motorcycle_left",
    "stereo_motorcycle_right",
    "text",
)
SKIMAGE_OTHER = ("binary_blobs", "checkerboard", "colorwheel", "logo", "shepp_logan_phantom")


def skimage_image(name: str) -> Image.Image:
    """One scikit-image sample as a PIL image (booleans and floats to 8 bits; the stereo pair split in two)."""
    import skimage.data

    if name.startswith("stereo_motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        array = left if name.endswith("left") else right
    else:
        array = getattr(skimage.data, name)()
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind == "f":
        array = np.clip(array * 255.0 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


class _Photos(Dataset):
    def __init__(self, paths: list[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_rgb(self.paths[index]))


class Scorer:
    """Scope readings for images: the gate alone, or, for a gate on the main trunk, through the pair (as served)."""

    def __init__(self, gate: ScopeGate, explainer: Explainer | None = None) -> None:
        self.gate, self.explainer = gate, explainer if gate.uses_main_trunk else None
        if gate.uses_main_trunk and explainer is None:
            raise ValueError("a gate on the main trunk is read through its pair: give the Explainer")

    def transform(self, image: Image.Image) -> torch.Tensor:
        return self.explainer.preprocess(image) if self.explainer is not None else self.gate.preprocess(image)

    def read(self, batch: torch.Tensor) -> list[ScopeReading]:
        if self.explainer is not None:
            return self.explainer.infer_tensors_with_scope(batch)[2] or []
        return self.gate.read_tensors(batch)


def score_paths(scorer: Scorer, paths: list[Path], batch_size: int, workers: int) -> dict[str, np.ndarray]:
    """Scope score, top class and top non-bird class of every photo."""
    loader = DataLoader(_Photos(paths, scorer.transform), batch_size=batch_size, num_workers=workers)
    scores, tops, others = [], [], []
    start = time.time()
    for batch in loader:
        for reading in scorer.read(batch):
            scores.append(reading.score)
            tops.append(reading.top_class)
            others.append(reading.top_other)
        done = len(scores)
        if done % (batch_size * 20) == 0 or done == len(paths):
            print(f"  {done}/{len(paths)} photos, {done / (time.time() - start):.1f}/s", flush=True)
    return {"score": np.asarray(scores), "top": np.asarray(tops), "top_other": np.asarray(others)}


def cached_scores(
    out: Path, split: str, gate: Scorer, paths: list[Path], args: argparse.Namespace, tag: str
) -> dict[str, np.ndarray]:
    cache = out / f"scores-{split}-{tag}.npz"
    if cache.is_file():
        loaded = dict(np.load(cache))
        if len(loaded["score"]) == len(paths):
            print(f"{split}: {len(paths)} cached scores from {cache}", flush=True)
            return loaded
    print(f"{split}: scoring {len(paths)} photos", flush=True)
    scores = score_paths(gate, paths, args.batch_size, args.workers)
    np.savez(cache, **scores)
    return scores


def feature_scores(
    folder: Path, split: str, gate: ScopeGate, meta: cub.CubMetadata, partial: bool = False
) -> tuple[list[Path], dict]:
    """Scores from cached pooled features (see the module docstring); the photos in the cache's order.

    ``partial`` accepts the chunks written so far (the frozen run orders photos round-robin over the classes, so a
    prefix covers every class about equally); the report says how many photos were scored."""
    description = json.loads((folder / "cache.json").read_text())
    wanted = {k: v for k, v in gate.preprocessing.items() if k != "train_variant"}
    found = {k: v for k, v in description["preprocessing"].items() if k != "train_variant"}
    model = gate.description["architecture"]["model_name"]
    if description["model"] != model or found != wanted:
        raise SystemExit(
            f"{folder} holds {description['model']} features with preprocessing {found}; the gate is "
            f"{model} with {wanted}"
        )
    positions, features = [], []
    for k, path in enumerate(sorted(folder.glob(f"{split}-plain-*.npz"))):
        if path.name != f"{split}-plain-{k:04d}.npz":
            break  # a gap: only the chunks before it
        with np.load(path) as data:
            positions.append(data["positions"])
            features.append(data["main"].astype(np.float32))
    expected = len(meta.train_indices if split == "train" else meta.test_indices)
    if not positions or (sum(len(p) for p in positions) != expected and not partial):
        raise SystemExit(
            f"{folder}: the {split} features are not complete yet "
            f"({sum(len(p) for p in positions)} of {expected} photos)"
        )
    head = gate.network.get_classifier()
    weight, bias = head.weight.detach(), head.bias.detach()
    if description.get("rounded_to_float16"):
        weight, bias = weight.half().float(), bias.half().float()
    with torch.inference_mode():
        logits = torch.from_numpy(np.concatenate(features)) @ weight.T + bias
    readings = gate.read_logits(logits)
    order = np.concatenate(positions)
    return [meta.image_path(int(i)) for i in order], {
        "score": np.array([r.score for r in readings]),
        "top": np.array([r.top_class for r in readings]),
        "top_other": np.array([r.top_other for r in readings]),
        "positions": order,
    }


def shapes_scope(weights: str, per_class: int, per_kind: int, seed: int = 12345) -> dict[str, Any]:
    """In-scope share of simulated drawings and out-of-scope share of each out-of-distribution kind (shapes)."""
    from explainer.shapes.ood import generate_ood
    from explainer.shapes.strokes import simulate_dataset

    explainer = Explainer.load(weights)

    def in_scope(images: list[np.ndarray]) -> tuple[np.ndarray, int]:
        inputs, kept = explainer.preprocess_accepted(images)
        probs, expls = explainer.infer_inputs(inputs, batch_size=256)
        flags = [explainer.explain(p, e).scope.in_scope for p, e in zip(probs, expls, strict=True)]
        return np.array(flags), int((~kept).sum())

    drawings, _, _ = simulate_dataset(per_class, seed=seed)
    drawn, drawn_blank = in_scope(list(drawings))
    ood_images, kinds = generate_ood(per_kind, seed=seed)
    kinds_array = np.array(kinds)
    per_kind = {}
    for kind in dict.fromkeys(kinds):
        flags, blank = in_scope([im for im, k in zip(ood_images, kinds_array, strict=False) if k == kind])
        per_kind[kind] = {
            "n": int(np.sum(kinds_array == kind)),
            "blank": blank,
            "out_of_scope": float(np.mean(~flags)) if flags.size else None,
        }
    total = sum(v["out_of_scope"] * (v["n"] - v["blank"]) for v in per_kind.values() if v["out_of_scope"] is not None)
    counted = sum(v["n"] - v["blank"] for v in per_kind.values())
    return {
        "weights": weights,
        "seed": seed,
        "drawings": {"n": int(len(drawings)), "blank": drawn_blank, "in_scope": float(np.mean(drawn))},
        "ood": {"n": int(len(ood_images)), "out_of_scope": total / counted, "per_kind": per_kind},
    }


def pick_threshold(train_scores: np.ndarray, keep: float = KEEP_SHARE) -> float:
    """The largest multiple of 0.01 that keeps at least ``keep`` of the training photos in scope."""
    candidates = [t / 100 for t in range(100, -1, -1)]
    return next(t for t in candidates if np.mean(train_scores >= t - 1e-12) >= keep)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="a birds weights file with a scope network (its threshold is used)")
    p.add_argument("--pretrained-file", help="the ImageNet weights file the gate is built from (e.g. .local/lite0.pth)")
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--data", help="folder holding CUB_200_2011/ (or that folder itself)")
    p.add_argument("--shapes-weights", help="measure a shapes file's own scope judgement instead (see above)")
    p.add_argument("--drawings-per-class", type=int, default=500)
    p.add_argument("--ood-per-kind", type=int, default=100)
    p.add_argument("--pick-threshold", action="store_true", help="score the training photos and print the threshold")
    p.add_argument("--threshold", type=float, default=None, help="evaluate at this threshold instead of the file's")
    p.add_argument("--limit", type=int, default=0, help="at most this many CUB photos per split (smoke runs)")
    p.add_argument("--noise", type=int, default=100, help="uniform-noise images to report apart (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--features", default=None, help="score cached pooled features instead of the photos (see above)")
    p.add_argument("--check-features", type=int, default=0, help="with --features: compare N photos to the network")
    p.add_argument("--partial-features", action="store_true", help="with --features: use the chunks written so far")
    p.add_argument("--out", required=True)
    return p


def check_bird_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The birds gate's runs need the photos and a gate to read them with (exits with the parser's message)."""
    if not args.data:
        p.error("--data is needed for the birds gate")
    if not args.weights and not args.pretrained_file:
        p.error("give --weights (a file with a scope network) or --pretrained-file (ImageNet weights)")
    if args.features and not args.pretrained_file:
        p.error("--features needs --pretrained-file (the ImageNet classifier applied to the features)")


class Gates(NamedTuple):
    """The gate under evaluation and its scorer, and the float32 ImageNet gate built from ``--pretrained-file``
    (None without it): the reference the stored gate is checked against, and what ``--features`` are scored with."""

    gate: ScopeGate
    scorer: Scorer
    reference: ScopeGate | None
    reference_scorer: Scorer | None


def load_gates(p: argparse.ArgumentParser, args: argparse.Namespace) -> Gates:
    """The weights file's gate (read through its pair), or else the ImageNet file's, and the reference."""
    reference = None
    if args.pretrained_file:
        reference = imagenet_gate_from_file(args.pretrained_file, threshold=0.5, model_name=args.model)
    explainer = None
    if args.weights:
        explainer = Explainer.load(args.weights)
        gate = explainer.scope
        if gate is None:
            p.error(f"{args.weights} has no scope network: attach one with train/attach_scope.py")
    else:
        gate = reference
    assert gate is not None
    return Gates(gate, Scorer(gate, explainer), reference, Scorer(reference) if reference is not None else None)


def split_scores(
    args: argparse.Namespace,
    out: Path,
    meta: cub.CubMetadata,
    gates: Gates,
    split: str,
    network: Scorer,
    tag: str,
    results: dict[str, Any],
) -> tuple[list[Path], dict]:
    """The scores of one CUB split by ``network`` (cached in ``out`` under ``tag``), or from ``--features``, which
    also records their source and, with ``--check-features``, how far they are from the network's in ``results``."""
    if args.features:
        assert gates.reference is not None
        paths, scores = feature_scores(Path(args.features), split, gates.reference, meta, args.partial_features)
        results[f"{split}_source"] = f"pooled features cached in {args.features}"
        if args.check_features:
            rows = np.linspace(0, len(paths) - 1, args.check_features).astype(int)
            assert gates.reference_scorer is not None
            direct = score_paths(gates.reference_scorer, [paths[i] for i in rows], args.batch_size, args.workers)
            results[f"{split}_features_check"] = {
                "photos": len(rows),
                "max_abs_score_difference": float(np.abs(direct["score"] - scores["score"][rows]).max()),
                "same_top_class": float(np.mean(direct["top"] == scores["top"][rows])),
            }
            print(json.dumps(results[f"{split}_features_check"]), flush=True)
        return paths, scores
    indices = meta.train_indices if split == "train" else meta.test_indices
    chosen = indices[: args.limit] if args.limit else indices
    paths = [meta.image_path(int(i)) for i in chosen]
    return paths, cached_scores(out, split, network, paths, args, tag)


def picked_threshold(train_paths: list[Path], train: dict) -> dict[str, Any]:
    """The threshold picked on the training photos' scores, with the rule and how the photos score."""
    threshold = pick_threshold(train["score"])
    return {
        "threshold": threshold,
        "rule": f"largest multiple of 0.01 keeping >= {100 * KEEP_SHARE:g}% of CUB training photos in scope",
        "train_photos": len(train_paths),
        "train_in_scope": float(np.mean(train["score"] >= threshold)),
        "train_score_quantiles": {q: float(np.quantile(train["score"], q)) for q in (0.001, 0.005, 0.01, 0.05, 0.5)},
    }


def cub_test_summary(
    test_paths: list[Path], test: dict, threshold: float, gate: ScopeGate, meta: cub.CubMetadata
) -> dict[str, Any]:
    """How many official test photos are in scope, the score quantiles, and the first 30 that are not."""
    in_scope = test["score"] >= threshold
    missed = np.flatnonzero(~in_scope)
    return {
        "photos": len(test_paths),
        "in_scope": int(in_scope.sum()),
        "share_in_scope": float(in_scope.mean()),
        "score_quantiles": {q: float(np.quantile(test["score"], q)) for q in (0.001, 0.01, 0.05, 0.5)},
        "out_of_scope_examples": [
            {
                "image": str(test_paths[i].relative_to(meta.images_dir)),
                "score": float(test["score"][i]),
                "looks_like": plain_name(gate.class_names[int(test["top_other"][i])]),
            }
            for i in missed[:30]
        ],
    }


def measure_skimage(scorer: Scorer, gate: ScopeGate, threshold: float) -> dict[str, Any]:
    """Every scikit-image sample's score and verdict (printed one a line); the shares count the photos only."""
    rows = []
    for group, names in (("photo", SKIMAGE_PHOTOS), ("other", SKIMAGE_OTHER)):
        for name in names:
            image = skimage_image(name)
            reading = scorer.read(scorer.transform(image)[None])[0]
            rows.append(
                {
                    "sample": name,
                    "kind": group,
                    "size": list(image.size),
                    "score": reading.score,
                    "in_scope": bool(reading.score >= threshold),
                    "top_class": plain_name(gate.class_names[reading.top_class]),
                    "looks_like": plain_name(gate.class_names[reading.top_other]),
                }
            )
    photos = [row for row in rows if row["kind"] == "photo"]
    for row in rows:
        print(
            f"  {row['sample']:24s} {row['kind']:5s} score {row['score']:.4f} "
            f"{'IN ' if row['in_scope'] else 'out'} looks like {row['looks_like']}",
            flush=True,
        )
    return {
        "photos": len(photos),
        "out_of_scope": sum(not row["in_scope"] for row in photos),
        "share_out_of_scope": float(np.mean([not row["in_scope"] for row in photos])),
        "max_score": max(row["score"] for row in photos),
        "rows": rows,
    }


def measure_noise(scorer: Scorer, count: int, seed: int, batch_size: int, threshold: float) -> dict[str, Any]:
    """Not photos: uniform noise over 0..255, 300x400 px, as evaluate_birds feeds the pair."""
    rng = np.random.default_rng(seed)
    noise = [Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)) for _ in range(count)]
    readings = [
        r
        for start in range(0, len(noise), batch_size)
        for r in scorer.read(torch.stack([scorer.transform(im) for im in noise[start : start + batch_size]]))
    ]
    scores = np.array([r.score for r in readings])
    return {
        "images": len(noise),
        "share_out_of_scope": float(np.mean(scores < threshold)),
        "max_score": float(scores.max()),
        "median_score": float(np.median(scores)),
    }


def write_results(out: Path, results: dict[str, Any]) -> None:
    """``results.json`` and ``report.md`` into ``out``, and a one-line summary on stdout."""
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(out / "report.md", results)
    summary = {k: v for k, v in results.items() if k not in ("skimage", "cub_test")}
    if "cub_test" in results:
        summary["cub_test_in_scope"] = results["cub_test"]["share_in_scope"]
        summary["skimage_out_of_scope"] = results["skimage"]["share_out_of_scope"]
    print(json.dumps(summary), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.shapes_weights:
        torch.set_num_threads(args.threads)
        out.mkdir(parents=True, exist_ok=True)
        shapes = shapes_scope(args.shapes_weights, args.drawings_per_class, args.ood_per_kind)
        (out / "results.json").write_text(json.dumps(shapes, indent=1))
        print(json.dumps(shapes, indent=1))
        return 0
    check_bird_args(p, args)
    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    gates = load_gates(p, args)
    gate, scorer = gates.gate, gates.scorer
    meta = cub.read_cub(args.data, image_level_attributes=False)
    results: dict[str, Any] = {"model": gate.description["architecture"], "weights": args.weights}

    if args.pick_threshold:
        network, tag = gates.reference_scorer or scorer, "reference" if gates.reference else "file"
        train_paths, train = split_scores(args, out, meta, gates, "train", network, tag, results)
        results["picked_threshold"] = picked_threshold(train_paths, train)
        print(json.dumps(results["picked_threshold"]), flush=True)
    if args.threshold is not None:
        threshold = args.threshold
    elif args.weights:
        threshold = gate.threshold
    else:
        threshold = results.get("picked_threshold", {}).get("threshold", gate.threshold)
    results["threshold"] = threshold

    if not args.pick_threshold or args.weights:
        tag = "file" if args.weights else "reference"
        test_paths, test = split_scores(args, out, meta, gates, "test", scorer, tag, results)
        results["cub_test"] = cub_test_summary(test_paths, test, threshold, gate, meta)
        if gates.reference_scorer is not None and args.weights and not args.features:  # the stored gate vs float32
            ref = cached_scores(out, "test", gates.reference_scorer, test_paths, args, "reference")
            results["stored_vs_float32"] = {
                "max_abs_score_difference": float(np.abs(ref["score"] - test["score"]).max()),
                "verdicts_agree": float(np.mean((ref["score"] >= threshold) == (test["score"] >= threshold))),
            }
        results["skimage"] = measure_skimage(scorer, gate, threshold)
        if args.noise:
            results["noise"] = measure_noise(scorer, args.noise, args.seed, args.batch_size, threshold)
            print(json.dumps(results["noise"]), flush=True)
    write_results(out, results)
    return 0


def write_report(path: Path, results: dict[str, Any]) -> None:
    lines = ["# Scope gate: is this a bird?", "", f"Threshold: {results['threshold']:g}", ""]
    if "picked_threshold" in results:
        pick = results["picked_threshold"]
        lines += [
            f"Picked on {pick['train_photos']} CUB training photos: {pick['threshold']:g} ({pick['rule']}); "
            f"{100 * pick['train_in_scope']:.2f}% of them in scope.",
            "",
        ]
    if "cub_test" in results:
        test, sk = results["cub_test"], results["skimage"]
        lines += [
            f"- CUB official test photos in scope: **{test['in_scope']} of {test['photos']} "
            f"({100 * test['share_in_scope']:.2f}%)**",
            f"- scikit-image photos (no bird) out of scope: **{sk['out_of_scope']} of {sk['photos']} "
            f"({100 * sk['share_out_of_scope']:.1f}%)**, highest score {sk['max_score']:.4f}",
            "",
            "| sample | kind | score | verdict | top ImageNet class | best non-bird class |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['sample']} | {r['kind']} | {r['score']:.4f} | {'in' if r['in_scope'] else 'out'} | "
            f"{r['top_class']} | {r['looks_like']} |"
            for r in sk["rows"]
        ]
        if test["out_of_scope_examples"]:
            lines += ["", "CUB test photos out of scope (first 30):", ""]
            lines += [
                f"- {e['image']}: {e['score']:.3f}, looks like {e['looks_like']}" for e in test["out_of_scope_examples"]
            ]
    if "noise" in results:
        n = results["noise"]
        lines += [
            "",
            f"Uniform noise (not photos, reported apart): {100 * n['share_out_of_scope']:.0f}% of "
            f"{n['images']} images out of scope (median score {n['median_score']:.3f}, highest "
            f"{n['max_score']:.3f}).",
        ]
    if "stored_vs_float32" in results:
        s = results["stored_vs_float32"]
        lines += [
            "",
            f"Stored gate against float32: max score difference {s['max_abs_score_difference']:.2g}, "
            f"verdicts agree on {100 * s['verdicts_agree']:.2f}% of the test photos.",
        ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
