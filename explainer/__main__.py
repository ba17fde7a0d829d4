"""Classify images with a trained pair (a main network and its mirror) and say, for each, whether the explanations
the mirror predicts back the main network's answer or question it.

``python -m explainer predict --weights weights/birds.safetensors [--threshold T] [--top-n N] [--all-probabilities]
IMAGE...``

Prints one JSON object per line per image, in the order given: the predicted class and its probability, the five most
probable classes, the kept explanations, the top N of the explanation ranking, whether the prediction is questioned
and the verdict in words; ``--all-probabilities`` adds every class's and every explanation's probability and the whole
ranking (:meth:`explainer.verdict.predictor.Explanation.to_json`). Every image goes through the app's image check
(:func:`explainer.inputs.imagecheck.check_image`: readable, not a bomb, at least 8 px a side, at most 20:1, not blank);
a file that fails it, or that runs out of memory, prints ``{"image": ..., "error": "..."}`` and the others go on;
the exit status is 1 if any image failed. Output is always valid JSON (never a bare NaN).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Sequence

from explainer.inputs.imagecheck import check_image
from explainer.pair.bundle import BundleError
from explainer.verdict.predictor import Explainer

TOP_CLASSES = 5  # the most probable classes each line lists with their probabilities
DESCRIPTION = """\
Classify images with a trained pair (a main network and its mirror) and say,
for each, whether the explanations the mirror predicts back the prediction or
question it."""
EPILOG = """\
example:
  python -m explainer predict --weights weights/birds.safetensors photo.jpg

One JSON line per image: predicted_class, predicted_probability, top_classes
(the five most probable, with their probabilities), kept_explanations,
explanation_ranking (the top N classes by explanations), questioned, case,
preferred_class, verdict (in words), threshold, top_n and the scope fields.
--all-probabilities adds class_probabilities and explanation_probabilities
and gives the whole ranking. --where adds "where": for each kept explanation
and for the predicted class, the peak of its heatmap as [x, y] pixels of the
image file; --where-dir DIR also writes the heatmaps over the image as PNGs.

Exit status: 0 every image classified, 1 some image failed (its line says
why), 2 a bad weights file or option."""


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m explainer", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser(
        "predict",
        help="classify images and say whether the explanations back each prediction (JSON lines)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    pred.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, WebP, ...)")
    pred.add_argument("--weights", required=True, help="a .safetensors file written by explainer")
    pred.add_argument("--threshold", type=float, default=None, help="explanation threshold (default: the model's)")
    pred.add_argument("--top-n", type=int, default=None, help="top N classes by explanations (default: the model's)")
    pred.add_argument(
        "--all-probabilities",
        action="store_true",
        help="also print every class's and every explanation's probability and the whole ranking (about 32 KB a line "
        "for the birds)",
    )
    pred.add_argument(
        "--where",
        action="store_true",
        help="add \"where\": the peak of each kept explanation's heatmap and of the predicted class's, as [x, y] "
        "pixels of the image file (x right, y down from the top-left corner)",
    )
    pred.add_argument(
        "--where-dir",
        metavar="DIR",
        help="also write the heatmaps over each image as PNG files into DIR (implies --where)",
    )
    pred.add_argument("--batch-size", type=int, default=64, help="images per pass of the networks (default 64)")
    pred.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    return parser


def predict(args: argparse.Namespace) -> int:
    try:
        explainer = Explainer.load(args.weights, args.device)
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        controls = explainer.resolve_controls(args.threshold, args.top_n)  # checked once, for every image
    except ValueError as err:  # names the value and the valid range
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    paths: Sequence[str] = args.images
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        results: list[dict | None] = [None] * len(chunk)
        tensors, scope_tensors, where, images = [], [], [], []
        for i, path in enumerate(chunk):
            try:
                image = check_image(path)
                tensors.append(explainer.preprocess(image))
                scope_tensors.append(explainer.scope_input(image, tensors[-1]))
                where.append(i)
                images.append(image)
            except ValueError as err:  # ImageError, NothingToClassify and other bad-input errors
                results[i] = {"image": path, "error": str(err)}
            except MemoryError:  # one file must not end the batch
                results[i] = {"image": path, "error": "the image is too large to process with the memory available"}
        if tensors:
            probs, expls, readings = explainer.run_inputs(tensors, scope_tensors)
            for n, (i, p, e) in enumerate(zip(where, probs, expls, strict=False)):
                reading = readings[n] if readings is not None else None
                explanation = explainer.explain_with(p, e, controls, scope=reading)
                row = explanation.summary_json(TOP_CLASSES)
                results[i] = {"image": chunk[i], **row, **(explanation.to_json() if args.all_probabilities else {})}
                if args.where or args.where_dir:
                    results[i]["where"] = _where(explainer, images[n], chunk[i], explanation, args.where_dir, start + i)
        for result in results:
            assert result is not None
            line, is_error = _json_line(result)
            failed += is_error
            print(line, flush=True)
    return 1 if failed else 0


def _where(explainer: Explainer, image, path: str, explanation, folder: str | None, number: int) -> dict:
    """The peaks of the kept explanations' and the predicted class's heatmaps; with ``folder``, their overlays as
    ``<number>-<image name>-<explanation>.png`` (written whole or not at all)."""
    from pathlib import Path

    from explainer.pair.bundle import atomic_write_bytes
    from explainer.verdict.where import overlay

    _, _, maps = explainer.where(image)
    kept, predicted = explanation.kept_indices, explanation.verdict.predicted_class
    peaks = maps.peaks_json(explainer.display_names, kept, predicted)
    if folder:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        stem = _slug(Path(path).stem)
        pictures = [("class", maps.for_class(predicted))]
        pictures += [(explainer.display_names[k], maps.for_explanation(k)) for k in kept]
        for name, heatmap in pictures:
            buffer = io.BytesIO()
            overlay(image, heatmap).save(buffer, format="PNG")
            atomic_write_bytes(out / f"{number:04d}-{stem}-{_slug(name)}.png", buffer.getvalue())
    return peaks


def _slug(text: str) -> str:
    """A file-name-safe version of a name: letters, digits and single hyphens, at most 60 characters."""
    kept = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in kept.split("-") if part)[:60] or "x"


def _json_line(result: dict) -> tuple[str, bool]:
    """(line, is_error) in strict JSON: a non-finite number, which Python would print as a bare NaN, turns the row
    into an error row."""
    try:
        return json.dumps(result, allow_nan=False), "error" in result
    except ValueError:
        message = "the networks gave non-finite numbers for this image (the weights may be damaged)"
        return json.dumps({"image": result.get("image"), "error": message}), True


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return predict(args)


if __name__ == "__main__":
    sys.exit(main())
