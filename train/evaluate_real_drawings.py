"""Evaluate a shapes model on real drawings made by people, stored as strokes, rendered like the app's sketchpad.

    .venv/bin/python train/evaluate_real_drawings.py --weights weights/shapes.safetensors \
        --data ../shared/data/drawn-shapes --out runs/real-drawings

Every drawing of every ``*.ndjson.gz`` collection in --data is rendered twice, black on white and white on black, on
a 512 px canvas at a random size (15-90% of the canvas), position and pen width (0.75% to 3.5% of the drawing's size,
log-uniform), deterministic for --seed (``explainer.shapes.drawn.render_strokes``). Reported per collection and label:
- circle / triangle / square / rectangle: *right* (a drawn square called rectangle, or the reverse, counts as right,
  as do the classes a collection lists as ``acceptable``), *right but questioned*, *vertex explanation kept* (the
  kept vertex-count explanation is the drawing's: no / three / four vertices);
- ``oval``, ``ellipse``, ``diamond``: ambiguous against the four classes, in a separate table (what is predicted,
  how often questioned), counted neither right nor wrong;
- everything else is *none of the four*: the share questioned (a drawing refused as blank counts as questioned).
Totals over all collections exclude the ambiguous labels. With --holdout-training-drawings, the drawings that
``explainer.shapes.drawn.is_training_drawing`` assigns to training (half of the trainable collection) are left out, so a
model trained on them is measured only on the other half. Writes ``report.json``, ``report.md`` and one PNG contact
sheet per kind of failure (``failures-*.png``, the 64 px network input with what was predicted) into --out.
Rendered images of the drawings stay in --out (runs/ is git-ignored): the drawings are third-party data.

The same drawings as people upload them (small bitmaps with and without anti-aliasing, hairline to marker pens, a
dark app, any angle, photos of paper; ``explainer.shapes.uploads.CONDITIONS``), one report folder per condition and a
table of them all in ``conditions.md``; --split validation keeps the part settings are chosen on
(``explainer.shapes.uploads.is_validation_drawing``, 30% of each collection), --split test the rest:

    .venv/bin/python train/evaluate_real_drawings.py --weights weights/shapes.safetensors \
        --data ../shared/data/drawn-shapes --out runs/uploads-test --holdout-training-drawings \
        --conditions all --split test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from explainer.evaluation.reports import verdict_arrays
from explainer.shapes.drawn import (
    BACKGROUNDS,
    DrawingFormatError,
    StrokeDrawing,
    is_training_drawing,
    read_drawings,
    render_strokes,
)
from explainer.shapes.uploads import CONDITIONS, UploadCondition, condition_names, is_validation_drawing
from explainer.verdict.predictor import Explainer

SHAPES = ("circle", "triangle", "square", "rectangle")
AMBIGUOUS = ("oval", "ellipse", "diamond")
VERTEX_OF = {"circle": 0, "triangle": 1, "square": 2, "rectangle": 2}  # index of the expected vertex explanation
FAILURE_KINDS = ("wrong", "right_questioned", "vertex_lost", "none_not_questioned")
SHEET_CELLS = 120


def accepted(drawing: StrokeDrawing) -> set[str]:
    """The classes that count as right for a drawing of one of the four shapes."""
    right = {drawing.label} | {a for a in drawing.acceptable if a in SHAPES}
    if right & {"square", "rectangle"}:
        right |= {"square", "rectangle"}
    return right


def _render_all(
    drawings: list[StrokeDrawing], seed: int, canvas: int, condition: UploadCondition | None = None
) -> tuple[list[np.ndarray], list[tuple]]:
    """Every drawing once per background: as the sketchpad paints it, or as the upload condition renders it."""
    images, items = [], []
    salt = [] if condition is None else [zlib.crc32(condition.name.encode("utf-8"))]
    for index, drawing in enumerate(drawings):
        for b, background in enumerate(BACKGROUNDS if condition is None else condition.backgrounds):
            rng = np.random.default_rng([seed, index, b, *salt])
            if condition is not None:
                images.append(condition.render(drawing.strokes, rng, background))
                items.append((index, background, None))
                continue
            pen = float(np.exp(rng.uniform(np.log(0.0075), np.log(0.035))))
            images.append(render_strokes(drawing.strokes, rng, canvas=canvas, pen_fraction=pen, background=background))
            items.append((index, background, pen))
    return images, items


def _infer(explainer: Explainer, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities of every image, the mask of those the normaliser accepted, and the network inputs (for the
    contact sheets); a drawing refused as blank is run as a white input, whose verdict is not used."""
    import torch

    accepted, kept = explainer.preprocess_accepted(images)
    side = int(explainer.preprocessing.get("size", 64))
    blank = torch.ones(1, side, side)
    found = iter(accepted)
    inputs = [next(found) if keep else blank for keep in kept]
    probs, expls = explainer.infer_inputs(inputs, batch_size=512)
    return probs, expls, kept, torch.stack(inputs).numpy()[:, 0]


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def evaluate(
    explainer: Explainer,
    drawings: list[StrokeDrawing],
    seed: int,
    canvas: int,
    threshold: float | None = None,
    top_n: int | None = None,
    condition: UploadCondition | None = None,
) -> dict[str, Any]:
    """Render (as the sketchpad, or as an upload condition), run and score every drawing; returns per-row records and
    the network inputs for contact sheets."""
    images, items = _render_all(drawings, seed, canvas, condition)
    probs, expls, kept, inputs = _infer(explainer, images)
    threshold = explainer.default_threshold if threshold is None else threshold
    top_n = explainer.default_top_n if top_n is None else top_n
    found = verdict_arrays(explainer, probs, expls, threshold, top_n)
    from explainer.verdict.postprocess import kept_explanations

    kept_scores = kept_explanations(expls, threshold, explainer.groups)
    names = explainer.class_names
    rows = []
    for row, (index, background, pen) in enumerate(items):
        drawing = drawings[index]
        predicted = names[int(found["predicted"][row])]
        questioned = bool(found["questioned"][row]) or not kept[row]
        vertex = [k for k in range(3) if kept_scores[row, k] > 0]
        record = {
            "collection": drawing.collection,
            "label": drawing.label,
            "id": drawing.id,
            "background": background,
            "pen": pen,
            "predicted": predicted if kept[row] else "(blank)",
            "questioned": questioned,
            "case": int(found["case"][row]),
            "kept": [explainer.explanation_names[k] for k in np.flatnonzero(kept_scores[row] > 0)],
        }
        if drawing.label in SHAPES:
            record["group"] = "shape"
            record["right"] = bool(kept[row]) and predicted in accepted(drawing)
            record["vertex_kept"] = bool(kept[row]) and vertex == [VERTEX_OF[drawing.label]]
        elif drawing.label in AMBIGUOUS:
            record["group"] = "ambiguous"
        else:
            record["group"] = "none"
        rows.append(record)
    return {"rows": rows, "inputs": inputs}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per collection and label, per collection, and totals (ambiguous labels apart)."""

    def shape_stats(subset: list[dict[str, Any]]) -> dict[str, Any]:
        right = [r for r in subset if r["right"]]
        return {
            "n": len(subset),
            "right": _pct(len(right), len(subset)),
            "right_questioned": _pct(sum(r["questioned"] for r in right), len(right)),
            "vertex_kept": _pct(sum(r["vertex_kept"] for r in subset), len(subset)),
        }

    def none_stats(subset: list[dict[str, Any]]) -> dict[str, Any]:
        return {"n": len(subset), "questioned": _pct(sum(r["questioned"] for r in subset), len(subset))}

    def ambiguous_stats(subset: list[dict[str, Any]]) -> dict[str, Any]:
        counts: dict[str, int] = defaultdict(int)
        for r in subset:
            counts[r["predicted"]] += 1
        return {
            "n": len(subset),
            "questioned": _pct(sum(r["questioned"] for r in subset), len(subset)),
            "predicted": {k: _pct(v, len(subset)) for k, v in sorted(counts.items())},
        }

    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_key[(r["collection"], r["label"])].append(r)
    per_label = {"shape": [], "none": [], "ambiguous": []}
    for (collection, label), subset in sorted(by_key.items()):
        group = subset[0]["group"]
        stats = {"shape": shape_stats, "none": none_stats, "ambiguous": ambiguous_stats}[group](subset)
        per_label[group].append({"collection": collection, "label": label, **stats})
    collections = sorted({r["collection"] for r in rows})
    per_collection = {}
    for collection in collections:
        mine = [r for r in rows if r["collection"] == collection]
        per_collection[collection] = {
            "shapes": shape_stats([r for r in mine if r["group"] == "shape"]),
            "none_of_the_four": none_stats([r for r in mine if r["group"] == "none"]),
        }
    totals = {
        "shapes": shape_stats([r for r in rows if r["group"] == "shape"]),
        "none_of_the_four": none_stats([r for r in rows if r["group"] == "none"]),
    }
    for background in sorted({r["background"] for r in rows}, key=lambda b: (b not in BACKGROUNDS, b)):
        mine = [r for r in rows if r["background"] == background]
        totals[f"shapes_{background}"] = shape_stats([r for r in mine if r["group"] == "shape"])
        totals[f"none_{background}"] = none_stats([r for r in mine if r["group"] == "none"])
    for name, low, high in (("thin", 0.0, 0.015), ("medium", 0.015, 0.025), ("thick", 0.025, 1.0)):
        mine = [r for r in rows if r["pen"] is not None and low <= r["pen"] < high]
        if not mine:
            continue
        totals[f"shapes_pen_{name}"] = shape_stats([r for r in mine if r["group"] == "shape"])
        totals[f"none_pen_{name}"] = none_stats([r for r in mine if r["group"] == "none"])
    return {"totals": totals, "per_collection": per_collection, "per_label": per_label}


def failures(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Row indices of each kind of failure."""
    kinds: dict[str, list[int]] = {kind: [] for kind in FAILURE_KINDS}
    for i, r in enumerate(rows):
        if r["group"] == "shape":
            if not r["right"]:
                kinds["wrong"].append(i)
            elif r["questioned"]:
                kinds["right_questioned"].append(i)
            if not r["vertex_kept"]:
                kinds["vertex_lost"].append(i)
        elif r["group"] == "none" and not r["questioned"]:
            kinds["none_not_questioned"].append(i)
    return kinds


def contact_sheet(inputs: np.ndarray, rows: list[dict[str, Any]], indices: list[int], path: Path, seed: int) -> int:
    """A PNG grid of up to SHEET_CELLS failures (a random, seeded sample): the network's 64 px input, and under it
    collection initial, label -> predicted, and the verdict case."""
    from PIL import Image, ImageDraw

    if not indices:
        return 0
    pick = sorted(np.random.default_rng(seed).permutation(indices)[:SHEET_CELLS].tolist())
    cell_w, cell_h, columns = 132, 100, 12
    sheet = Image.new("L", (columns * cell_w, -(-len(pick) // columns) * cell_h), 255)
    pen = ImageDraw.Draw(sheet)
    for n, i in enumerate(pick):
        x, y = (n % columns) * cell_w, (n // columns) * cell_h
        tile = Image.fromarray(np.clip(inputs[i] * 255.0, 0, 255).astype(np.uint8)).resize((64, 64))
        sheet.paste(tile, (x + (cell_w - 64) // 2, y + 2))
        r = rows[i]
        verdict = "?" if r["questioned"] else "ok"
        pen.text((x + 2, y + 68), f"{r['collection'][:6]} {r['label'][:10]}", fill=0)
        pen.text((x + 2, y + 82), f"->{r['predicted'][:9]} {verdict} c{r['case']}", fill=0)
    sheet.save(path)
    return len(pick)


def markdown(summary: dict[str, Any], title: str, command: str) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}%"

    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        "",
        "## Totals (ambiguous labels excluded)",
        "",
        "| set | n | right | right but questioned | vertex explanation kept | none of the four questioned |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    t = summary["totals"]
    for name in ["all"] + list(summary["per_collection"]):
        block = (
            {"shapes": t["shapes"], "none_of_the_four": t["none_of_the_four"]}
            if name == "all"
            else summary["per_collection"][name]
        )
        s, o = block["shapes"], block["none_of_the_four"]
        lines.append(
            f"| {name} | {s['n']} + {o['n']} | {fmt(s['right'])} | {fmt(s['right_questioned'])} | "
            f"{fmt(s['vertex_kept'])} | {fmt(o['questioned'])} |"
        )
    for key in [k for k in t if k not in ("shapes", "none_of_the_four") and k.startswith("shapes_")]:
        s, o = t[key], t["none_" + key[len("shapes_") :]]
        lines.append(
            f"| {key[len('shapes_') :]} | {s['n']} + {o['n']} | {fmt(s['right'])} | "
            f"{fmt(s['right_questioned'])} | {fmt(s['vertex_kept'])} | {fmt(o['questioned'])} |"
        )
    lines += [
        "",
        "## The four shapes, per collection and label",
        "",
        "| collection | label | n | right | right but questioned | vertex explanation kept |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["per_label"]["shape"]:
        lines.append(
            f"| {r['collection']} | {r['label']} | {r['n']} | {fmt(r['right'])} | "
            f"{fmt(r['right_questioned'])} | {fmt(r['vertex_kept'])} |"
        )
    lines += ["", "## None of the four", "", "| collection | label | n | questioned |", "| --- | --- | --- | --- |"]
    for r in summary["per_label"]["none"]:
        lines.append(f"| {r['collection']} | {r['label']} | {r['n']} | {fmt(r['questioned'])} |")
    lines += [
        "",
        "## Ambiguous (not counted)",
        "",
        "| collection | label | n | questioned | predicted |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in summary["per_label"]["ambiguous"]:
        predicted = ", ".join(f"{k} {v:.0f}%" for k, v in r["predicted"].items())
        lines.append(f"| {r['collection']} | {r['label']} | {r['n']} | {fmt(r['questioned'])} | {predicted} |")
    return "\n".join(lines) + "\n"


def _write_reports(
    out: Path, result: dict[str, Any], seed: int, title: str, command: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """report.json, rows.jsonl, report.md and the failure contact sheets of one run into ``out``; returns the
    summary."""
    rows = result["rows"]
    summary = summarise(rows)
    out.mkdir(parents=True, exist_ok=True)
    kinds = failures(rows)
    sheets = {
        kind: contact_sheet(result["inputs"], rows, indices, out / f"failures-{kind}.png", seed)
        for kind, indices in kinds.items()
    }
    report = {
        **extra,
        "n_images": len(rows),
        "failures": {k: len(v) for k, v in kinds.items()},
        "contact_sheets": sheets,
        **summary,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (out / "report.md").write_text(markdown(summary, title, command))
    return {**summary, "failures": report["failures"]}


def conditions_markdown(results: dict[str, dict[str, Any]], descriptions: dict[str, str], command: str) -> str:
    """One line per upload condition: the totals of its report."""

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}%"

    lines = [
        "# Real drawings as uploads, per condition",
        "",
        f"Command: `{command}`",
        "",
        "| condition | what it imitates | images | right | right but questioned | vertex explanation kept | "
        "none of the four questioned |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, summary in results.items():
        s, o = summary["totals"]["shapes"], summary["totals"]["none_of_the_four"]
        lines.append(
            f"| {name} | {descriptions[name]} | {s['n']} + {o['n']} | {fmt(s['right'])} | "
            f"{fmt(s['right_questioned'])} | {fmt(s['vertex_kept'])} | {fmt(o['questioned'])} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True, help="a folder of *.ndjson.gz stroke collections, or such files")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--canvas", type=int, default=512)
    p.add_argument(
        "--holdout-training-drawings",
        action="store_true",
        help="leave out the drawings explainer.shapes.drawn.is_training_drawing assigns to training",
    )
    p.add_argument(
        "--conditions",
        default=None,
        help="render as uploads instead of as the sketchpad: 'all' or comma-separated names or prefixes of "
        f"explainer.shapes.uploads.CONDITIONS ({', '.join(CONDITIONS)}); one report folder each under --out",
    )
    p.add_argument(
        "--split",
        choices=("all", "validation", "test"),
        default="all",
        help="keep only the drawings explainer.shapes.uploads.is_validation_drawing puts in the validation part, or "
        "only the others",
    )
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--top-n", type=int, default=None)
    return p


def load_drawings(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[StrokeDrawing]:
    """The drawings of every collection in ``--data``, less the training half (``--holdout-training-drawings``) and
    the other split's part (``--split``); exits with the parser's message when there are none or one is malformed."""
    data = Path(args.data)
    paths = sorted(data.glob("*.ndjson.gz")) if data.is_dir() else [data]
    if not paths or not all(path.is_file() for path in paths):
        p.error(f"no stroke collections (*.ndjson.gz) found at {args.data}")
    try:
        drawings = [d for path in paths for d in read_drawings(path)]
    except DrawingFormatError as err:
        p.error(str(err))
    if args.holdout_training_drawings:
        drawings = [d for d in drawings if not is_training_drawing(d)]
    if args.split != "all":
        validation = args.split == "validation"
        drawings = [d for d in drawings if is_validation_drawing(d.collection, d.id) == validation]
    return drawings


def run_sketchpad(
    args: argparse.Namespace,
    explainer: Explainer,
    drawings: list[StrokeDrawing],
    out: Path,
    command: str,
    extra: dict[str, Any],
) -> None:
    """The drawings as the sketchpad renders them: one report folder, its totals printed."""
    started = time.perf_counter()
    result = evaluate(explainer, drawings, args.seed, args.canvas, args.threshold, args.top_n)
    extra = {**extra, "canvas": args.canvas, "seconds": round(time.perf_counter() - started, 1)}
    title = f"Real drawings: {Path(args.weights).name}"
    summary = _write_reports(out, result, args.seed, title, command, extra)
    printed = {k: summary[k] for k in ("totals", "per_collection", "failures")}
    print(json.dumps({**printed, "seconds": extra["seconds"], "report": str(out / "report.md")}, indent=1))


def run_conditions(
    args: argparse.Namespace,
    explainer: Explainer,
    drawings: list[StrokeDrawing],
    names: list[str],
    out: Path,
    command: str,
    extra: dict[str, Any],
) -> None:
    """The drawings as uploads, one report folder per condition (its totals printed) and ``conditions.md``."""
    results = {}
    for name in names:
        started = time.perf_counter()
        condition = CONDITIONS[name]
        result = evaluate(explainer, drawings, args.seed, args.canvas, args.threshold, args.top_n, condition)
        title = f"Real drawings uploaded as {name} ({condition.description}): {Path(args.weights).name}"
        seconds = round(time.perf_counter() - started, 1)
        condition_extra = {**extra, "condition": name, "description": condition.description, "seconds": seconds}
        results[name] = _write_reports(out / name, result, args.seed, title, command, condition_extra)
        totals = results[name]["totals"]
        print(
            json.dumps(
                {"condition": name, "shapes": totals["shapes"], "none": totals["none_of_the_four"], "seconds": seconds}
            )
        )
    descriptions = {name: CONDITIONS[name].description for name in names}
    (out / "conditions.md").write_text(conditions_markdown(results, descriptions, command))
    print(f"report: {out / 'conditions.md'}")


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    try:
        names = condition_names(args.conditions) if args.conditions is not None else []
    except ValueError as err:
        p.error(str(err))
    drawings = load_drawings(p, args)
    explainer = Explainer.load(args.weights)
    if explainer.task != "shapes":
        p.error(f"{args.weights} is a {explainer.task!r} model, not a shapes model")
    command = "python train/evaluate_real_drawings.py " + " ".join(sys.argv[1:] if argv is None else argv)
    extra = {
        "weights": str(args.weights),
        "seed": args.seed,
        "holdout_training_drawings": args.holdout_training_drawings,
        "split": args.split,
        "n_drawings": len(drawings),
    }
    if names:
        run_conditions(args, explainer, drawings, names, Path(args.out), command, extra)
    else:
        run_sketchpad(args, explainer, drawings, Path(args.out), command, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
