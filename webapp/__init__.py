"""The web app's code, outside the library: weights loading, handlers, text panels and charts (with their CSS).

``app.py`` (the Spaces entry point) lays out the page and wires it to :class:`webapp.handlers.TaskApp` (the "Where"
panel's pictures: :mod:`webapp.heatmaps`). This package imports :mod:`explainer`; the library never imports it.
Gradio is imported only where a value must be a Gradio one; :mod:`webapp.server` (what a visitor may send, checked
before the handlers) is the one module built on Gradio, so ``app.py`` imports it on its own, after Gradio's settings
are made (:mod:`webapp.files`, :mod:`webapp.memory`).
"""

from __future__ import annotations

from webapp.handlers import (
    PREVIEW_SIZE,
    TOP_K_MAX,
    ClassifyOutputs,
    RenderOutputs,
    TaskApp,
    UserInputError,
    WhereOutputs,
    plot_value,
)
from webapp.panels import (
    CSS,
    HEAD,
    about_markdown,
    class_list_markdown,
    describe_architecture,
    guess_label,
    guess_updates,
    unavailable_markdown,
    write_examples,
)
from webapp.weights import TaskModel, WeightsUnavailable, load_models, load_task_model, parse_hub_id, resolve_weights

__all__ = [
    "CSS",
    "HEAD",
    "PREVIEW_SIZE",
    "TOP_K_MAX",
    "ClassifyOutputs",
    "RenderOutputs",
    "TaskApp",
    "TaskModel",
    "UserInputError",
    "WeightsUnavailable",
    "WhereOutputs",
    "about_markdown",
    "class_list_markdown",
    "describe_architecture",
    "guess_label",
    "guess_updates",
    "load_models",
    "load_task_model",
    "parse_hub_id",
    "plot_value",
    "resolve_weights",
    "unavailable_markdown",
    "write_examples",
]
