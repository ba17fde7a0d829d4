"""Does each explanation's heatmap point at what it names? Pointing tables and contact sheets, for both tasks.

Birds: on the photos of the validation split of the official training photos (the only photos with part locations
here; the same split the recipe holds out, ``--val-fraction 0.2 --seed 0``), each kept explanation whose attribute
group names a body part counts a hit when its heatmap's peak lies within 0.15 x sqrt(bird box area) of a visible
annotated point of that part; beside it the same count for the predicted class's heatmap (the baseline):

    python train/evaluate_where.py --weights weights/birds.safetensors --data ../shared/data/cub-200 \\
        --out runs/where-birds

Shapes: outlined triangles, squares and rectangles drawn here with known corners (any rotation, pens of 1 to 8 px, on
canvases of 200 to 500 px), and circles: a vertex explanation counts a hit when its peak lies within 12% of the
shape's size of a corner; "no vertices" when it lies within 12% of the size of the circle's outline:

    python train/evaluate_where.py --weights weights/shapes.safetensors --out runs/where-shapes \
        --drawings ../shared/data/drawn-shapes

With ``--drawings``, the same count on real drawings by people (every collection, the Quick, Draw! half that
training used left out), rendered as the sketchpad paints them; their corners are not annotated, so the reference
is the drawing's own: the triangle or quadrilateral of largest area on the extreme points of its ink
(``explainer.shapes.grounding.drawn_corners``, what a person drew as corners of a convex shape), and for circles the
ink's mean radius around its centre.

Both write ``pointing.json``, ``report.md`` and contact sheets of hits and misses (explanation heatmap beside the
class heatmap) into ``--out``; the sheets of CUB photos stay there (never commit them).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from explainer.birds import cub
from explainer.inputs.transforms import EvalView
from explainer.pair.bundle import atomic_write_bytes
from explainer.verdict.predictor import Explainer
from explainer.verdict.where import Heatmap, collect_maps, overlay, pointing_by_group

SHAPE_VERTEX_EXPLANATION = {"circle": 0, "triangle": 1, "square": 2, "rectangle": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--data", help="CUB folder (birds)")
    p.add_argument("--out", required=True)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, help="explanations kept at this threshold (default: the file's)")
    p.add_argument("--shapes-per-kind", type=int, default=100)
    p.add_argument("--drawings", type=Path, help="shapes: a folder of *.ndjson.gz stroke collections (real drawings)")
    p.add_argument("--drawings-per-label", type=int, default=200, help="at most this many of each label per collection")
    p.add_argument("--sheet", type=int, default=12, help="examples on each contact sheet")
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


def save_png(image: Image.Image, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def sheet(pairs: list[tuple[Image.Image, Image.Image, str]], width: int = 256, columns: int = 2) -> Image.Image:
    """(explanation overlay, class overlay) side by side with a caption above, in ``columns`` columns."""
    from PIL import ImageFont

    font = ImageFont.load_default()
    rows = []
    for left, right, caption in pairs:
        scale = width / max(left.size)
        size = (round(left.width * scale), round(left.height * scale))
        row = Image.new("RGB", (2 * width + 8, size[1] + 16), "white")
        row.paste(left.resize(size), (0, 16))
        row.paste(right.resize(size), (width + 8, 16))
        ImageDraw.Draw(row).text((2, 2), caption[:90], fill="black", font=font)
        rows.append(row)
    lines = [rows[i : i + columns] for i in range(0, len(rows), columns)]
    step = 2 * width + 24
    canvas = Image.new(
        "RGB",
        (step * min(columns, max(len(rows), 1)), sum(max(r.height for r in line) for line in lines) or 1),
        "white",
    )
    y = 0
    for line in lines:
        for column, row in enumerate(line):
            canvas.paste(row, (column * step, y))
        y += max(r.height for r in line)
    return canvas


def birds(args: argparse.Namespace, explainer: Explainer, out: Path) -> dict:
    meta = cub.read_cub(args.data, image_level_attributes=False)
    _, validation = cub.validation_split(meta, args.val_fraction, args.seed)
    points, boxes = cub.read_part_locations(args.data, meta), cub.read_stored_boxes(args.data, meta)
    preprocessing = explainer.preprocessing
    dataset = cub.CubPartImages(meta, validation, points, boxes, EvalView(preprocessing))
    batches = torch.utils.data.DataLoader(
        dataset, batch_size=32 if preprocessing["crop"] else 1, num_workers=args.workers
    )
    rows = collect_maps(explainer.pair, batches)
    threshold = explainer.default_threshold if args.threshold is None else args.threshold
    routes = [list(r) for r in cub.group_regions(explainer.explanation_names)]
    report = pointing_by_group(rows, threshold, routes, list(cub.PART_REGION), explainer.explanation_names)
    report["photos"] = int(len(validation))
    report["top1"] = float((rows.stacked()[0].argmax(1) == rows.stacked()[2]).mean())
    _birds_sheets(args, explainer, meta, validation, points, boxes, routes, out)
    return report


def _birds_sheets(args, explainer, meta, validation, points, boxes, routes, out: Path) -> None:
    """Hits and misses: for photos in a fixed order, the first kept part explanation of each."""
    from explainer.inputs.transforms import load_rgb

    rng = np.random.default_rng(args.seed)
    good, bad = [], []
    for position in rng.permutation(validation):
        if len(good) >= args.sheet and len(bad) >= args.sheet:
            break
        image = load_rgb(meta.images_dir / meta.images[position].relative_path)
        probs, expls, where = explainer.where(image)
        result = explainer.explain(probs, expls, threshold=args.threshold)
        tied = [i for i in result.kept_indices if routes[i]]
        if not tied:
            continue
        index = tied[int(rng.integers(len(tied)))]
        heat = where.for_explanation(index)
        x, y = heat.peak()
        near = [p for p in range(15) if points[position, p, 2] > 0 and cub.PART_REGION[p] in routes[index]]
        if not near:
            continue
        distance = min(math.hypot(points[position, p, 0] - x, points[position, p, 1] - y) for p in near)
        hit = distance <= 0.15 * math.sqrt(boxes[position, 2] * boxes[position, 3])
        caption = f"{explainer.display_names[index]} | class: {result.predicted_class}"
        entry = (
            overlay(image, heat, 384),
            overlay(image, where.for_class(result.verdict.predicted_class), 384),
            caption,
        )
        (good if hit else bad).append(entry)
    save_png(sheet(good[: args.sheet]), out / "hits.png")
    save_png(sheet(bad[: args.sheet]), out / "misses.png")


def draw_shape(kind: str, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray | None, tuple | None, float]:
    """An outlined shape with its corners (or a circle's centre and radius) and its size in pixels."""
    width, height = int(rng.integers(200, 500)), int(rng.integers(200, 500))
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    cx, cy = width / 2 + rng.uniform(-30, 30), height / 2 + rng.uniform(-30, 30)
    r, turn, pen = min(width, height) * rng.uniform(0.25, 0.42), rng.uniform(0, 2 * math.pi), int(rng.integers(1, 9))
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=0, width=pen)
        return image, None, (cx, cy, r), 2 * r
    if kind == "triangle":
        angles = turn + np.array([0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
        corners = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    else:
        w, h = r, r * (1 if kind == "square" else rng.uniform(0.4, 0.7))
        c, s = math.cos(turn), math.sin(turn)
        corners = [(cx + c * x - s * y, cy + s * x + c * y) for x, y in [(-w, -h), (w, -h), (w, h), (-w, h)]]
    draw.polygon(corners, outline=0, width=pen)
    array = np.array(corners)
    return image, array, None, float(max(np.ptp(array[:, 0]), np.ptp(array[:, 1])))


def shapes(args: argparse.Namespace, explainer: Explainer, out: Path) -> dict:
    rng = np.random.default_rng(args.seed)
    counts: dict[str, list[int]] = {}
    good, bad = [], []
    kinds = [k for k in SHAPE_VERTEX_EXPLANATION for _ in range(args.shapes_per_kind)]
    for kind in [kinds[i] for i in rng.permutation(len(kinds))]:  # mixed, so that the sheets show every kind
        image, corners, circle, size = draw_shape(kind, rng)
        hit, entry = _point(explainer, args, image, kind, corners, circle, size)
        counts.setdefault(kind, [0, 0])
        counts[kind][0] += hit
        counts[kind][1] += 1
        (good if hit else bad).append(entry)
    save_png(sheet(good[: args.sheet]), out / "hits.png")
    save_png(sheet(bad[: args.sheet]), out / "misses.png")
    report = _shape_rates(counts)
    report["radius"] = "12% of the shape's size"
    if args.drawings:
        report["real_drawings"] = real_drawings(args, explainer, out)
    return report


def _shape_rates(counts: dict[str, list[int]]) -> dict:
    vertex = [counts.get(k, [0, 0]) for k in ("triangle", "square", "rectangle")]
    circle = counts.get("circle", [0, 0])
    return {
        "vertex_explanations": sum(h for h, _ in vertex) / max(sum(n for _, n in vertex), 1),
        "no_vertices_on_the_curve": circle[0] / max(circle[1], 1),
        "by_kind": {k: {"hits": h, "shapes": n} for k, (h, n) in counts.items()},
    }


def _point(explainer, args, image, kind, corners, circle, size) -> tuple[bool, tuple]:
    """Does the shape's vertex explanation peak on a corner (or, for a circle, on the curve)? And its sheet row."""
    probs, expls, where = explainer.where(image)
    index = SHAPE_VERTEX_EXPLANATION[kind]
    x, y = Heatmap(where.explanation_maps[index], where.frame).peak()
    if corners is not None:
        hit = bool(np.hypot(corners[:, 0] - x, corners[:, 1] - y).min() <= 0.12 * size)
    else:
        cx, cy, r = circle
        hit = abs(math.hypot(x - cx, y - cy) - r) <= 0.12 * size
    result = explainer.explain(probs, expls, threshold=args.threshold)
    entry = (overlay(image, where.for_explanation(index), 384),
             overlay(image, where.for_class(result.verdict.predicted_class), 384),
             f"{kind}: {explainer.display_names[index]} | class: {result.predicted_class}")  # fmt: skip
    return hit, entry


def real_drawings(args: argparse.Namespace, explainer: Explainer, out: Path) -> dict:
    """The pointing count on drawings by people, per collection; sheets ``real-hits.png``, ``real-misses.png``."""
    from explainer.shapes.drawn import is_training_drawing, read_drawings, render_strokes
    from explainer.shapes.grounding import drawn_corners

    rows: dict[str, dict[str, list[int]]] = {}
    good, bad = [], []
    for path in sorted(Path(args.drawings).glob("*.ndjson.gz")):
        taken: dict[str, int] = {}
        for index, drawing in enumerate(read_drawings(path)):
            kind = drawing.label
            if kind not in SHAPE_VERTEX_EXPLANATION or is_training_drawing(drawing):
                continue
            if taken.get(kind, 0) >= args.drawings_per_label:
                continue
            taken[kind] = taken.get(kind, 0) + 1
            rng = np.random.default_rng([args.seed, index, len(path.name)])
            image = render_strokes(drawing.strokes, rng, canvas=512, background="white")
            ink = image < 128
            if kind == "circle":
                ys, xs = np.nonzero(ink)
                cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
                r = float(np.hypot(xs + 0.5 - cx, ys + 0.5 - cy).mean())
                corners, circle = None, (cx, cy, r)
                size = float(max(np.ptp(xs), np.ptp(ys)))
            else:
                corners = drawn_corners(ink, 3 if kind == "triangle" else 4)
                circle, size = None, float(np.ptp(corners, axis=0).max())
            hit, entry = _point(explainer, args, Image.fromarray(image), kind, corners, circle, size)
            counts = rows.setdefault(path.name.split(".")[0], {})
            counts.setdefault(kind, [0, 0])
            counts[kind][0] += hit
            counts[kind][1] += 1
            (good if hit else bad).append(entry)
    rng = np.random.default_rng(args.seed)
    for name, entries in (("real-hits.png", good), ("real-misses.png", bad)):
        picked = [entries[i] for i in sorted(rng.permutation(len(entries))[: args.sheet])]
        save_png(sheet(picked), out / name)
    total: dict[str, list[int]] = {}
    for counts in rows.values():
        for kind, (h, n) in counts.items():
            total.setdefault(kind, [0, 0])
            total[kind][0] += h
            total[kind][1] += n
    return {"all": _shape_rates(total), **{name: _shape_rates(counts) for name, counts in rows.items()}}


def write_report(report: dict, task: str, out: Path) -> None:
    lines = [f"# Where the explanations look ({task})", ""]
    if task == "birds":
        lines += [f"{report['photos']} validation photos, threshold {report['threshold']}; a hit: the peak within "
                  f"{report['radius']} x sqrt(box area) of a visible point of the named part.", ""]  # fmt: skip
        lines += ["| attribute group | explanation heatmap | class heatmap | counted |", "| --- | --- | --- | --- |"]
        for name, row in sorted(report["by_group"].items()):
            lines.append(f"| {name.replace('_', ' ')} | {100 * row['mirror'] / row['counted']:.1f}% | "
                         f"{100 * row['class_map'] / row['counted']:.1f}% | {row['counted']} |")  # fmt: skip
        lines.append(f"| **all part-tied** | **{100 * report['mirror']:.1f}%** | {100 * report['class_map']:.1f}% | "
                     f"{report['counted']} |")  # fmt: skip
    else:
        lines += ["| shapes | hits |", "| --- | --- |"]
        lines += [f"| {k} | {v['hits']} of {v['shapes']} |" for k, v in report["by_kind"].items()]
        if "real_drawings" in report:
            lines += ["", "Real drawings (corners: the drawing's own, see the script's docstring):", ""]
            lines += [
                "| collection | vertex explanations on a corner | no vertices on the curve |",
                "| --- | --- | --- |",
            ]
            for name, row in report["real_drawings"].items():
                lines.append(f"| {name} | {100 * row['vertex_explanations']:.1f}% | "
                             f"{100 * row['no_vertices_on_the_curve']:.1f}% |")  # fmt: skip
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    explainer = Explainer.load(args.weights)
    if explainer.task == "birds":
        if not args.data:
            sys.exit("error: birds need --data (a CUB folder with part locations)")
        report = birds(args, explainer, out)
    else:
        report = shapes(args, explainer, out)
    (out / "pointing.json").write_text(json.dumps(report, indent=2))
    write_report(report, explainer.task, out)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
