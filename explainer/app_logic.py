"""What the Gradio app does, without its layout: find and load the weights, classify, re-render from the cache.

``app.py`` only lays out components and wires them to :class:`TaskApp` methods, so that every behaviour here can be
tested by calling the methods directly. Rules the handlers keep:

- The networks run once per image (:meth:`TaskApp.classify_image`, :meth:`TaskApp.classify_sketch`); their
  probabilities go into a cache (the app keeps it in a ``gr.State``). Moving a slider or switching an explanation on
  or off only re-runs the post-processing and the charts (:meth:`TaskApp.rerender`), never a network.
- Bad input never raises: the user gets a plain-words status (and a ``gr.Warning`` toast); anything unexpected is
  logged with its traceback on the server and reported as an internal error, and the server keeps serving.
- User files are opened by :func:`explainer.imageio.open_image` (decompression-bomb guard, EXIF, first GIF frame).

Like the rest of the library this module reads no environment variable and touches no network by itself: the app
passes the environment mapping and, for Hugging Face Hub ids, a download function.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from . import charts
from .bundle import BundleError
from .imageio import ImageError, open_image
from .predictor import Explainer, Explanation

LOG = logging.getLogger("explainer.app")

TASKS = ("shapes", "birds")
ENV_VARS = {"shapes": "EXPLAINER_SHAPES_WEIGHTS", "birds": "EXPLAINER_BIRDS_WEIGHTS"}
TASK_TITLES = {"shapes": "Shapes", "birds": "Birds"}
PREPROCESSING_KINDS = {"shapes": "shapes", "birds": "imagenet"}
TRAIN_COMMANDS = {
    "shapes": "python train/train_shapes.py --out runs/shapes --output weights/shapes.safetensors",
    "birds": "python train/train_birds.py --data PATH/TO/CUB_200_2011 --out runs/birds "
    "--output weights/birds.safetensors",
}
MIN_IMAGE_SIDE = 8  # smaller images carry no shape or bird to classify
FLAT_IMAGE_RANGE = 3  # an image whose pixel values span less than this (of 255) is a single flat colour
TOP_K_MAX = 30  # most bars one chart shows
PREVIEW_SIZE = 192  # the "what the network sees" thumbnail, in pixels

Downloader = Callable[[str, str], str]  # (repo_id, filename) -> local path, e.g. huggingface_hub.hf_hub_download


class WeightsUnavailable(RuntimeError):
    """No usable weights for a task; the message says why and how to get them."""


# ----------------------------------------------------------------------------------------------------------------------
# Finding and loading the weights
# ----------------------------------------------------------------------------------------------------------------------


def parse_hub_id(spec: str) -> tuple[str, str] | None:
    """``user/repo/path/file.safetensors`` (optionally prefixed ``hf://``) -> (``user/repo``, ``path/file...``)."""
    text = spec.strip()
    if text.startswith("hf://"):
        text = text[len("hf://") :]
    elif text.startswith(("/", ".", "~")) or "\\" in text or ":" in text:
        return None
    parts = text.split("/")
    if len(parts) < 3 or any(not p for p in parts):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def resolve_weights(spec: str | None, default_path: Path, env_name: str, download: Downloader | None = None) -> Path:
    """The weights file for one task: ``spec`` (a path or a Hub id) if given, else ``default_path``.

    A Hub id is fetched only when ``spec`` names one and the path does not exist locally. Raises
    :class:`WeightsUnavailable` with a message naming the variable and what was tried.
    """
    if spec is None or not spec.strip():
        if default_path.is_file():
            return default_path
        raise WeightsUnavailable(f"no weights file at {default_path} and {env_name} is not set")
    spec = spec.strip()
    local = Path(spec).expanduser()
    if local.is_file():
        return local
    hub = parse_hub_id(spec)
    if hub is None:
        raise WeightsUnavailable(f"{env_name}={spec!r}: no such file (nor a Hub id like user/repo/file.safetensors)")
    if download is None:
        raise WeightsUnavailable(f"{env_name}={spec!r} names a Hugging Face Hub file, but no downloader is available")
    repo_id, filename = hub
    try:
        return Path(download(repo_id, filename))
    except Exception as err:  # offline, unknown repo, no such file, network errors: all mean "not available"
        raise WeightsUnavailable(
            f"{env_name}={spec!r}: could not fetch {filename} from the Hub repo {repo_id} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no details'})"
        ) from err


@dataclass
class TaskModel:
    """One task's model, or why there is none. ``source`` says where the weights came from."""

    task: str
    explainer: Explainer | None = None
    source: str = ""
    problem: str | None = None
    parameters: int = 0

    @property
    def available(self) -> bool:
        return self.explainer is not None


def load_task_model(
    task: str, spec: str | None, weights_dir: Path, download: Downloader | None = None, device: str = "cpu"
) -> TaskModel:
    """Load one task's weights (never raises for missing or bad weights: the problem is kept for the UI)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    env_name = ENV_VARS[task]
    try:
        path = resolve_weights(spec, Path(weights_dir) / f"{task}.safetensors", env_name, download)
    except WeightsUnavailable as err:
        return TaskModel(task, problem=str(err))
    try:
        explainer = Explainer.load(path, device)
    except BundleError as err:
        return TaskModel(task, source=str(path), problem=f"the weights file cannot be used: {err}")
    except Exception as err:  # e.g. an architecture this timm cannot build
        LOG.exception("loading %s weights from %s failed", task, path)
        return TaskModel(task, source=str(path), problem=f"loading {path} failed ({type(err).__name__}: {err})")
    kind = explainer.preprocessing.get("kind")
    if kind != PREPROCESSING_KINDS[task]:
        return TaskModel(
            task,
            source=str(path),
            problem=f"{path} is a model for {explainer.task!r} images (preprocessing {kind!r}); the {task} tab "
            f"needs preprocessing {PREPROCESSING_KINDS[task]!r}",
        )
    parameters = sum(p.numel() for p in explainer.pair.parameters())
    return TaskModel(task, explainer=explainer, source=str(path), parameters=parameters)


def load_models(
    env: Mapping[str, str], weights_dir: Path, download: Downloader | None = None, device: str = "cpu"
) -> dict[str, TaskModel]:
    """Every task's model, from ``env`` (the app passes ``os.environ``) or ``weights_dir``. Call once at startup."""
    return {task: load_task_model(task, env.get(ENV_VARS[task]), weights_dir, download, device) for task in TASKS}


# ----------------------------------------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------------------------------------


def write_shape_examples(folder: str | Path | None = None, seed: int = 7) -> list[Path]:
    """One PNG per class and style ("filled", then hand-drawn "outline"), drawn by the project's generator.

    Written at startup into ``folder`` (a new temporary folder by default) in a few milliseconds, so that no image
    is committed to the repository. A style the generator fails on is logged and left out.
    """
    from .shapes import CLASS_NAMES, generate_shapes

    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="explainer-examples-"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for style in ("filled", "outline"):
        try:
            shape_set = generate_shapes(n_per_class=1, seed=seed, style=style)
        except Exception:  # examples are a convenience: the app must start without them
            LOG.exception("could not draw the %s example shapes", style)
            continue
        for class_index, class_name in enumerate(CLASS_NAMES):
            row = int(np.flatnonzero(shape_set.labels == class_index)[0])
            path = folder / f"{class_name}-{style}.png"
            Image.fromarray(shape_set.images[row], mode="L").save(path)
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# Text panels
# ----------------------------------------------------------------------------------------------------------------------

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
                lines.append(f"- {name}: {len(numbers)} values (min {min(numbers):.3g}, mean "
                             f"{sum(numbers) / len(numbers):.3g}, max {max(numbers):.3g})")
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


def describe_architecture(architecture: Mapping[str, Any]) -> str:
    """One line a person can read, e.g. "timm resnet50 main network + mirror (add join)"."""
    family = architecture.get("family")
    if family == "timm":
        return (
            f"timm `{architecture.get('model_name')}` main network + a mirror of the same architecture that reads its "
            f"stage activations ({architecture.get('join', 'add')} join)"
        )
    if family == "shapes":
        main, mirror = architecture.get("main", {}), architecture.get("mirror", {})
        return (
            f"the reference shapes CNN (conv widths {main.get('widths')}) + explanation network reading its block "
            f"outputs (widths {mirror.get('widths')}, {mirror.get('join', 'concat')} join)"
        )
    return json.dumps(architecture)


def about_markdown(model: TaskModel) -> str:
    """The "About this model" panel: architecture, data, metrics, description and what the verdict means."""
    if not model.available:
        return unavailable_markdown(model)
    explainer = model.explainer
    assert explainer is not None
    meta = explainer.meta
    description = f" - {meta['description']}" if meta.get("description") else ""
    parts = [f"**Weights:** `{Path(model.source).name}`{description}"]
    parts.append(f"**Architecture:** {describe_architecture(meta.get('architecture', {}))}; "
                 f"{model.parameters:,} parameters in total.")
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


def unavailable_markdown(model: TaskModel) -> str:
    """Plain words for a tab without weights: what is missing and the two ways to get it."""
    task = model.task
    return (
        f"### No {task} model is installed\n\n"
        f"This tab needs a weights file, and none could be loaded: {model.problem}.\n\n"
        f"To get one, either\n"
        f"- train it: `{TRAIN_COMMANDS[task]}` (the script's docstring gives the recipe of the shipped model), "
        f"then restart the app; or\n"
        f"- set `{ENV_VARS[task]}` to a local `.safetensors` file or to a Hugging Face Hub file "
        f"`user/repo/{task}.safetensors`, then restart the app."
    )


# ----------------------------------------------------------------------------------------------------------------------
# Handlers
# ----------------------------------------------------------------------------------------------------------------------


class ClassifyOutputs(NamedTuple):
    """What classifying an image updates, in the order ``app.py`` lists its output components."""

    result: dict[str, Any] | None  # Explanation.to_json() (the API's main answer)
    status: str  # Markdown: the verdict, or a plain-words problem
    network_input: Image.Image | None  # what the network was given
    class_plot: Any
    explanation_plot: Any
    ranking_plot: Any
    cache: dict[str, Any] | None  # the cached network outputs (gr.State)
    force_present: list[int]  # interventions are reset for a new image
    force_absent: list[int]


class RenderOutputs(NamedTuple):
    """What moving a control updates."""

    result: dict[str, Any] | None
    status: str
    class_plot: Any
    explanation_plot: Any
    ranking_plot: Any


class UserInputError(ValueError):
    """A problem with what the user sent, shown to them as is."""


def plot_value(figure: charts.Figure) -> Any:
    """A chart dict as gr.Plot's payload, serialised with ``json.dumps`` (fast: no plotly validation)."""
    from gradio.components.plot import PlotData

    return PlotData(type="plotly", plot=json.dumps(figure))


def _warn(message: str) -> None:
    """A toast in the browser; outside a Gradio request (tests, scripts) Gradio turns it into a Python warning."""
    try:
        import gradio as gr

        gr.Warning(message)
    except Exception:  # the message is in the status anyway
        LOG.debug("could not show a warning toast", exc_info=True)


def _image_problem(err: Exception, path: str | None) -> str:
    """ImageError messages start with the (temporary, meaningless) file path: replace it with plain words."""
    text = str(err)
    if path and text.startswith(f"{path}: "):
        text = text[len(path) + 2 :]
    elif text.startswith("image: "):
        text = text[len("image: ") :]
    text = text.rstrip(".")
    return f"Cannot use this file: {text}." if text else "Cannot use this file: it cannot be read as an image."


def _upload_source(image: str | Mapping[str, Any] | None) -> str | bytes | None:
    """A file path, or the bytes of a "data:" URL, from what an image input sends; None when there is nothing."""
    if isinstance(image, Mapping):
        path, url = image.get("path"), image.get("url")
        if path:
            return str(path)
        if isinstance(url, str) and url.startswith("data:") and "," in url:
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except (binascii.Error, ValueError):
                return b""  # open_image then says it is not an image
        return None
    if isinstance(image, str) and image.strip():
        return image
    return None


@dataclass
class TaskApp:
    """The handlers of one task's tab, bound to its loaded model."""

    model: TaskModel
    preview_size: int = PREVIEW_SIZE
    _explainer: Explainer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.model.explainer is None:
            raise ValueError(f"the {self.model.task} model is not available: {self.model.problem}")
        self._explainer = self.model.explainer

    # -- controls ----------------------------------------------------------------------------------------------------

    @property
    def n_classes(self) -> int:
        return len(self._explainer.class_names)

    @property
    def n_explanations(self) -> int:
        return len(self._explainer.explanation_names)

    @property
    def default_threshold(self) -> float:
        return min(max(self._explainer.default_threshold, 0.0), 1.0)

    @property
    def default_top_n(self) -> int:
        return min(max(self._explainer.default_top_n, 1), self.n_classes)

    @property
    def top_k_max(self) -> int:
        return max(1, min(max(self.n_classes, self.n_explanations), TOP_K_MAX))

    @property
    def default_top_k(self) -> int:
        return min(max(5, self.default_top_n), self.top_k_max)

    @property
    def explanation_choices(self) -> list[str]:
        """The intervention controls' choices: display names, so that API callers send names, not indices."""
        return list(self._explainer.display_names)

    def _controls(self, threshold: Any, top_n: Any, top_k: Any) -> tuple[float, int, int]:
        try:
            threshold_value = float(self.default_threshold if threshold is None else threshold)
            top_n_value = int(round(float(self.default_top_n if top_n is None else top_n)))
            top_k_value = int(round(float(self.default_top_k if top_k is None else top_k)))
        except (TypeError, ValueError, OverflowError) as err:
            raise UserInputError(f"Controls must be numbers (threshold {threshold!r}, top N {top_n!r}, "
                                 f"top k {top_k!r}).") from err
        if not 0.0 <= threshold_value <= 1.0:
            raise UserInputError(f"Threshold {threshold_value:g} is out of range (0 to 1).")
        if not 1 <= top_n_value <= self.n_classes:
            raise UserInputError(f"Top N {top_n_value} is out of range (1 to {self.n_classes}).")
        if top_k_value < 1:
            raise UserInputError(f"Top k {top_k_value} is out of range (at least 1).")
        return threshold_value, top_n_value, top_k_value

    def _overrides(self, present: Sequence[Any] | None, absent: Sequence[Any] | None) -> tuple[dict[int, bool], str]:
        """Intervention lists (indices or display names) -> {index: on}; an explanation in both is forced absent."""
        names = self._explainer.display_names

        def as_index(item: Any) -> int:
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                index = int(item)
            elif isinstance(item, str) and item in names:
                index = names.index(item)
            else:
                raise UserInputError(f"Explanation {item!r} is not one of this model's {len(names)} explanations.")
            if not 0 <= index < len(names):
                raise UserInputError(f"Explanation index {index} is out of range (0 to {len(names) - 1}).")
            return index

        overrides = {as_index(i): True for i in (present or [])}
        both = [as_index(i) for i in (absent or []) if as_index(i) in overrides]
        overrides.update({as_index(i): False for i in (absent or [])})
        note = ""
        if both:
            note = "Forced both present and absent, so treated as absent: " + ", ".join(names[i] for i in both) + "."
        return overrides, note

    # -- rendering ---------------------------------------------------------------------------------------------------

    def _status(self, explanation: Explanation, note: str) -> str:
        verdict = explanation.verdict
        pred = explanation.predicted_class
        prob = float(explanation.class_probs[verdict.predicted_class])
        if verdict.questioned:
            head = f'<span class="badge badge-questioned">⚠ Questioned · case {verdict.case}</span>'
        elif verdict.case == 2:
            head = '<span class="badge badge-consistent">✔ Consistent · case 2 (tie)</span>'
        else:
            head = '<span class="badge badge-consistent">✔ Consistent</span>'
        if np.any(np.asarray(explanation.ranking_scores) > 0):
            preference = (
                f"**explanations prefer:** {explanation.preferred_class} · "
                f"**rank of {pred} by explanations:** {verdict.rank} of {len(explanation.class_names)}"
            )
        else:  # every class scores 0: a "rank 1" of a four-way tie at zero would read as support
            preference = "**explanations prefer:** no class (none is supported)"
        lines = [head, f"**Main network:** {pred} ({100 * prob:.1f}%) · {preference}", explanation.sentence()]
        forced_on = [self._explainer.display_names[i] for i, on in explanation.overrides.items() if on]
        forced_off = [self._explainer.display_names[i] for i, on in explanation.overrides.items() if not on]
        if forced_on or forced_off:
            parts = []
            if forced_on:
                parts.append("forced present: " + ", ".join(forced_on))
            if forced_off:
                parts.append("forced absent: " + ", ".join(forced_off))
            lines.append("*Your intervention - " + "; ".join(parts) + ".*")
        if note:
            lines.append(f"*{note}*")
        return "\n\n".join(lines)

    def render(
        self,
        class_probs: np.ndarray,
        explanation_probs: np.ndarray,
        threshold: Any = None,
        top_n: Any = None,
        top_k: Any = None,
        show_raw: bool = False,
        force_present: Sequence[Any] | None = None,
        force_absent: Sequence[Any] | None = None,
    ) -> RenderOutputs:
        """Post-process cached probabilities and draw the three charts (no network). Raises UserInputError."""
        threshold_value, top_n_value, top_k_value = self._controls(threshold, top_n, top_k)
        overrides, note = self._overrides(force_present, force_absent)
        exp = self._explainer
        explanation = exp.explain(class_probs, explanation_probs, threshold_value, top_n_value, overrides)
        result = explanation.to_json()
        result["overrides"] = {exp.display_names[i]: on for i, on in overrides.items()}
        result["rank"] = explanation.verdict.rank
        class_fig = charts.class_chart(exp.class_names, explanation.class_probs, min(top_k_value, self.n_classes))
        expl_fig = charts.explanation_chart(
            exp.display_names,
            explanation.explanation_probs,
            explanation.kept_scores,
            threshold_value,
            min(top_k_value, self.n_explanations),
            exp.groups,
            raw=bool(show_raw),
            overrides=overrides,
        )
        rank_fig = charts.ranking_chart(
            exp.class_names,
            explanation.ranking_scores,
            explanation.verdict.predicted_class,
            top_n_value,
            min(top_k_value, self.n_classes),
            normalized=exp.ranking == "normalized",
        )
        return RenderOutputs(
            result,
            self._status(explanation, note),
            plot_value(class_fig),
            plot_value(expl_fig),
            plot_value(rank_fig),
        )

    def _preview(self, tensor: torch.Tensor) -> Image.Image:
        """The preprocessed tensor as a picture: the cropped 64 px shape, or the normalised bird crop undone."""
        array = tensor.detach().float().cpu().numpy()
        if array.shape[0] == 1:
            grey = np.clip(array[0] * 255.0, 0, 255).astype(np.uint8)
            return Image.fromarray(grey, mode="L").resize((self.preview_size, self.preview_size), Image.NEAREST)
        mean = np.asarray(self._explainer.preprocessing.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)[:, None, None]
        std = np.asarray(self._explainer.preprocessing.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)[:, None, None]
        rgb = np.clip((array * std + mean) * 255.0, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        return Image.fromarray(rgb, mode="RGB").resize((self.preview_size, self.preview_size), Image.BILINEAR)

    def _model_image(self, image: Image.Image) -> Image.Image:
        """Checks that apply before any network: size, and for photos a flat colour; photos are flattened to RGB."""
        width, height = image.size
        if min(width, height) < MIN_IMAGE_SIDE:
            raise UserInputError(
                f"The image is only {width}x{height} pixels; use one at least {MIN_IMAGE_SIDE} pixels on each side."
            )
        if self._explainer.preprocessing.get("kind") == "imagenet":
            from .transforms import to_rgb  # alpha onto white, 16-bit scaled

            image = to_rgb(image)
            small = np.asarray(image.resize((32, 32), Image.BILINEAR), dtype=np.int16).reshape(-1, 3)
            if int(np.ptp(small, axis=0).max()) < FLAT_IMAGE_RANGE:  # every channel is (almost) constant
                raise UserInputError("The image is a single flat colour: there is nothing in it to classify.")
        return image

    def _classify(self, image: Image.Image, threshold: Any, top_n: Any, top_k: Any, show_raw: bool) -> ClassifyOutputs:
        controls = self._controls(threshold, top_n, top_k)  # fail on bad controls before running a network
        image = self._model_image(image)
        try:
            tensor = self._explainer.preprocess(image)
        except (ImageError, UserInputError):
            raise
        except ValueError as err:  # NothingToClassify (blank drawing) and other bad-input errors say why
            text = str(err)
            raise UserInputError(text[:1].upper() + text[1:]) from err
        class_probs, explanation_probs = self._explainer.infer_tensors(tensor[None])
        cache = {
            "task": self.model.task,
            "class_probs": class_probs[0].astype(np.float32),
            "explanation_probs": explanation_probs[0].astype(np.float32),
        }
        rendered = self.render(cache["class_probs"], cache["explanation_probs"], *controls, show_raw)
        return ClassifyOutputs(
            rendered.result,
            rendered.status,
            self._preview(tensor),
            rendered.class_plot,
            rendered.explanation_plot,
            rendered.ranking_plot,
            cache,
            [],
            [],
        )

    def _problem(self, message: str) -> ClassifyOutputs:
        _warn(message)
        return ClassifyOutputs({"error": message}, f"**{message}**", None, None, None, None, None, [], [])

    def _guarded(self, work: Callable[[], ClassifyOutputs], what: str) -> ClassifyOutputs:
        try:
            return work()
        except (ImageError, UserInputError) as err:
            return self._problem(str(err))
        except Exception:  # never show a stack trace; the server log has it
            LOG.exception("%s failed", what)
            return self._problem(f"Something went wrong while {what}; the server log has the details. "
                                 "Try another image.")

    def classify_image(
        self,
        image: str | Mapping[str, Any] | None,
        threshold: float | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        show_raw: bool = False,
    ) -> ClassifyOutputs:
        """Classify and explain an uploaded image: a file path, or Gradio's un-preprocessed file payload (a dict with
        "path", or a "data:" URL). ``None`` clears the results.

        The app passes the payload un-preprocessed so that Gradio never decodes the file itself: a decompression bomb
        or a non-image reaches :func:`open_image` and gets a plain-words answer instead of a generic error.
        """
        source = _upload_source(image)
        if source is None:
            return ClassifyOutputs(None, self.prompt, None, None, None, None, None, [], [])

        def work() -> ClassifyOutputs:
            try:
                opened = open_image(source)
            except ImageError as err:
                raise UserInputError(_image_problem(err, source if isinstance(source, str) else None)) from err
            return self._classify(opened, threshold, top_n, top_k, show_raw)

        return self._guarded(work, "classifying the image")

    def classify_sketch(
        self,
        sketch: Mapping[str, Any] | str | None,
        threshold: float | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        show_raw: bool = False,
    ) -> ClassifyOutputs:
        """Classify a drawing: the sketchpad's value ``{"background", "layers", "composite"}`` with file paths."""

        def work() -> ClassifyOutputs:
            if isinstance(sketch, str):  # a plain image path is accepted too
                path: str | None = sketch
            elif isinstance(sketch, Mapping):
                path = sketch.get("composite") or sketch.get("background")
            elif sketch is None:
                path = None
            else:
                raise UserInputError(
                    "The drawing must be the sketchpad's value: a dictionary with 'background', 'layers' and "
                    "'composite' images."
                )
            if not path:
                raise UserInputError("The canvas is empty: draw a shape (a circle, triangle, square or rectangle).")
            try:
                opened = open_image(str(path))
            except ImageError as err:
                raise UserInputError(_image_problem(err, str(path))) from err
            return self._classify(opened, threshold, top_n, top_k, show_raw)

        return self._guarded(work, "classifying the drawing")

    def rerender(
        self,
        cache: Mapping[str, Any] | None,
        threshold: float | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        show_raw: bool = False,
        force_present: Sequence[Any] | None = None,
        force_absent: Sequence[Any] | None = None,
    ) -> RenderOutputs:
        """Redraw everything from the cached network outputs after a control moved (no network runs)."""
        if not cache or cache.get("task") != self.model.task:
            return RenderOutputs(None, self.prompt, None, None, None)
        try:
            return self.render(cache["class_probs"], cache["explanation_probs"], threshold, top_n, top_k, show_raw,
                               force_present, force_absent)
        except UserInputError as err:
            _warn(str(err))
            return RenderOutputs({"error": str(err)}, f"**{err}**", None, None, None)
        except Exception:
            LOG.exception("re-rendering failed")
            message = "Something went wrong while updating the charts; the server log has the details."
            _warn(message)
            return RenderOutputs({"error": message}, f"**{message}**", None, None, None)

    def clear_interventions(
        self,
        cache: Mapping[str, Any] | None,
        threshold: float | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        show_raw: bool = False,
    ) -> tuple[Any, ...]:
        """Drop every forced explanation: the re-rendered outputs, then two empty intervention lists."""
        return (*self.rerender(cache, threshold, top_n, top_k, show_raw), [], [])

    @property
    def prompt(self) -> str:
        if self.model.task == "shapes":
            return "*Draw a shape and press **Classify drawing**, upload an image, or click an example.*"
        return "*Upload a photo of a bird (or use the webcam or paste from the clipboard).*"

