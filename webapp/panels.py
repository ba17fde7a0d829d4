"""The app's text panels and their CSS: the verdict badge, "About this model", a tab without weights, the fold that
holds the model's charts, and the example images written at startup."""

from __future__ import annotations

import html
import logging
import tempfile
from pathlib import Path
from typing import Any, Mapping

from PIL import Image

from explainer.pair.models import describe_architecture
from explainer.tasks import Task
from webapp.weights import TaskModel
from webapp.words import words

LOG = logging.getLogger("webapp")

# The page's CSS: the badges are written by webapp.handlers.TaskApp's status, the pixelated previews and the "Where"
# panel by app.py.
CSS = """
.gradio-container {max-width: 1180px !important; margin: 0 auto !important;}
#intro p {margin: 0.2em 0;}
.badge {display: inline-block; padding: 0.2em 0.7em; border-radius: 999px; font-weight: 600; font-size: 1.1em;}
.badge-consistent {background: #dcfce7; color: #166534;}
.badge-questioned {background: #fef3c7; color: #92400e;}
.network-input img {image-rendering: pixelated;}
.gallery-item img, .example-image img {image-rendering: pixelated;}
.preview-caption p {margin: 0; padding: 2px 8px; font-size: 0.9em; color: var(--body-text-color);}
/* No empty chart boxes before the first result: a chart block shows only once it holds a plot, and the hint only
   while none does. */
.result-chart:not(:has(.js-plotly-plot)) {display: none !important;}
.results:has(.js-plotly-plot) .chart-hint {display: none !important;}
.chart-hint p {color: var(--body-text-color-subdued); font-style: italic;}
/* The sketchpad's tools sit in a row under the canvas, in a strip of their own, never on it. */
.sketchpad .pixi-target, .sketchpad .pixi-target-crop {bottom: 40px !important; height: auto !important;}
.sketchpad .toolbar-wrap {top: auto !important; bottom: 4px !important; left: 50% !important;
  transform: translateX(-50%) !important; flex-direction: row !important; height: auto !important;}
.sketchpad .toolbar-wrap {display: flex !important; gap: 6px !important; width: auto !important;}
.sketchpad .toolbar-wrap .half-container {flex-direction: row !important; position: static !important;
  transform: none !important; margin: 0 !important; display: flex !important; gap: 4px !important;}
/* The "Where" panel shows with the charts, a picture only once there is one; the explanations' bars are clickable. */
.results:not(:has(.js-plotly-plot)) .where-panel {display: none !important;}
.where-picture:not(:has(img)) {display: none !important;}
.where-caption p {margin: 0.15em 0; font-size: 0.9em;}
.explanations-chart .nsewdrag {cursor: pointer !important;}
/* The preview of what the network saw shows once there is one. */
.preview:not(:has(.network-input img)) {display: none !important;}
/* The controls sit right under the verdict, so that both are in view while a slider moves. */
.controls {margin-top: 2px;}
/* A photo that is not a bird: the model's charts are folded away behind a button. Folded, they keep their width and
   lose only their height, so that Plotly lays them out at the right width (display: none would give it none); the
   controls, which only change those charts, fold with them. */
.guess-folded {height: 0 !important; min-height: 0 !important; overflow: hidden !important;
  visibility: hidden !important; margin: 0 !important; padding: 0 !important; flex: none !important;}
.results:has(.guess-folded) .controls {display: none !important;}
@media (max-width: 640px) {
  .gradio-container {padding-left: 6px !important; padding-right: 6px !important;}
}
"""
# Rules for parts of the page outside Gradio's container (the footer, the toasts), which the ``css`` above cannot
# reach (Gradio scopes it to the container): given to ``launch(head=...)``.
HEAD = """<style>
@media (max-width: 640px) {
  /* Gradio hides "Use via API" on a phone but leaves its dot: "· Settings". */
  footer .divider {display: none !important;}
  /* A warning toast on a phone goes to the bottom: the page scrolls the verdict (or the message) to the top. */
  .toast-wrap {top: auto !important; bottom: 12px !important;}
}
</style>"""


def guess_label(subject: str = "bird") -> str:
    """The button that opens the fold over the model's charts, for an image that is not ``subject``."""
    return f"Show the {subject} model's guess anyway"


def guess_updates(not_the_subject: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fold's button and panel: for an image that is not ``not_the_subject`` (e.g. "bird") the button shows and
    the panel is folded (the classes ``guess-panel guess-folded``); otherwise no button and the charts in view."""
    if not_the_subject:
        button = {"__type__": "update", "visible": True, "value": guess_label(not_the_subject)}
        return button, {"__type__": "update", "elem_classes": ["guess-panel", "guess-folded"]}
    return {"__type__": "update", "visible": False}, {"__type__": "update", "elem_classes": ["guess-panel"]}


def write_examples(task: Task, folder: str | Path | None = None) -> list[Path]:
    """The task's example images as PNG files in ``folder`` (a new temporary folder by default), written at startup
    so that no image is committed to the repository."""
    examples = task.example_images()
    if not examples:
        return []
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="explainer-examples-"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in examples:
        path = folder / f"{name}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


VERDICT_HELP = (
    "**What the verdict means.** The explanation network predicts which human-understandable properties the image "
    "has. Properties above the threshold are kept (within a group such as *number of vertices* only the most "
    "probable one). Every class is then scored by how many of its known properties were kept, giving a second "
    "ranking of the classes. If the main network's class is among the top N of that ranking the prediction is "
    "**consistent**; otherwise it is **questioned**: *case 1* - no kept property supports it at all; *case 3* - it "
    "has some support but N or more classes fit the properties better. *Case 2* (a tie inside the top N) counts as "
    "consistent. A questioned prediction is not necessarily wrong: it means the two networks disagree, which is "
    "worth a closer look."
)


MAX_LISTED_ENTRIES = 12  # a nested dict with more entries (per-class accuracies...) is summarised in one line
MAX_INLINE_ENTRIES = 4  # a small dict of plain values inside a nested one is written on one line


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _scalar_lines(mapping: Mapping[str, Any], prefix: str = "", depth: int = 0) -> list[str]:
    """Flatten a metrics/training dict to "- key: value" lines: one level of nesting; long nested dicts of numbers
    become "n values (min, mean, max)" and lists "list of n values", so that the panel stays short."""
    lines = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            numbers = [v for v in value.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            plain = all(isinstance(v, (int, float, str, bool)) or v is None for v in value.values())
            if depth == 0 and len(value) <= MAX_LISTED_ENTRIES:
                lines += _scalar_lines(value, f"{name} / ", depth + 1)
            elif plain and len(value) <= MAX_INLINE_ENTRIES:
                lines.append(f"- {name}: " + ", ".join(f"{k} {_format_value(v)}" for k, v in value.items()))
            elif numbers and len(numbers) == len(value):
                lines.append(
                    f"- {name}: {len(numbers)} values (min {min(numbers):.3g}, mean "
                    f"{sum(numbers) / len(numbers):.3g}, max {max(numbers):.3g})"
                )
            else:
                lines.append(f"- {name}: {len(value)} entries")
        elif isinstance(value, (int, float, str, bool)) or value is None:
            lines.append(f"- {name}: {_format_value(value)}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"- {name}: list of {len(value)} values")
    return lines


def _details(summary: str, lines: list[str]) -> str:
    """A collapsed HTML section, so that long settings do not push the verdict help out of sight."""
    return f"<details><summary><b>{summary}</b></summary>\n\n" + "\n".join(lines) + "\n\n</details>"


def about_markdown(model: TaskModel) -> str:
    """The "About this model" panel: architecture, data, metrics, description and what the verdict means."""
    if not model.available:
        return unavailable_markdown(model)
    explainer = model.explainer
    assert explainer is not None
    meta = explainer.meta
    description = f" - {meta['description']}" if meta.get("description") else ""
    parts = [f"**Weights:** `{Path(model.source).name}`{description}"]
    parts.append(
        f"**Architecture:** {describe_architecture(meta.get('architecture', {}))}; "
        f"{model.parameters:,} parameters in total."
    )
    parts.append(
        f"**Classes:** {len(explainer.class_names)}; **explanations:** {len(explainer.explanation_names)} in "
        f"{len(explainer.groups)} exclusive group(s); **class ranking:** {explainer.ranking}; **defaults:** threshold "
        f"{explainer.default_threshold:g}, top N {explainer.default_top_n}."
    )
    parts.append(VERDICT_HELP)
    metrics = meta.get("metrics")
    if isinstance(metrics, Mapping) and metrics:
        parts.append(_details("Measured metrics", _scalar_lines(metrics)))
    training = meta.get("training")
    if isinstance(training, Mapping) and training:
        parts.append(_details("Training data and settings", _scalar_lines(training)))
    return "\n\n".join(parts)


def class_list_markdown(class_names: list[str], columns: int = 4) -> str:
    """Every class the model knows, numbered, in a few columns (an HTML table: Markdown lists would be 200 lines)."""
    rows = -(-len(class_names) // columns)
    cells = [
        [f"{i + 1}. {class_names[i]}" if i < len(class_names) else "" for i in range(r, r + rows * columns, rows)]
        for r in range(rows)
    ]
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f'<table class="class-list">{body}</table>'


def unavailable_markdown(model: TaskModel) -> str:
    """Plain words for a tab without weights: what is missing and the two ways to get it."""
    task = model.task
    return (
        f"### No {task} model is installed\n\n"
        f"This tab needs a weights file, and none could be loaded: {model.problem}.\n\n"
        f"To get one, either\n"
        f"- train it: `{words(model.spec).train_command}` (the script's docstring gives the recipe of the shipped "
        f"model), "
        f"then restart the app; or\n"
        f"- set `{words(model.spec).env_var}` to a local `.safetensors` file or to a Hugging Face Hub file "
        f"`user/repo/{task}.safetensors`, then restart the app."
    )
