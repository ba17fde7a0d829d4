"""What the Gradio app does, without its layout: classify, re-render from the cache, report problems in plain words.

``app.py`` only lays out components and wires them to :class:`TaskApp` methods, so that every behaviour here can be
tested by calling the methods directly. Rules the handlers keep:

- The networks run once per image (:meth:`TaskApp.classify_image`, :meth:`TaskApp.classify_sketch`); their
  probabilities go into a cache (the app keeps it in a ``gr.State``). Moving a slider or switching an explanation on
  or off only re-runs the post-processing and the charts (:meth:`TaskApp.rerender`), never a network.
- Bad input never raises: the user gets a plain-words status (and a short-lived ``gr.Warning`` toast, which the page
  closes as soon as a verdict arrives, see ``app.py``); anything unexpected is logged with its traceback on the server
  and reported as an internal error, and the server keeps serving.
- The status says one thing at a time: the badge, the main network's class, the verdict sentence
  (:meth:`Explanation.sentence`: where the explanations rank the class, never "consistent" beside another class
  called preferred), how many explanations the threshold keeps and over which range of thresholds that stays so, and
  whether the image is in scope. A photo that is not what the model is for (a cat on the birds tab) gets what the
  ImageNet model sees and why the model stopped; the model's own charts are folded away ("Show the bird model's
  guess anyway").
- Every image, uploads, examples and sketchpad drawings alike, reaches the handlers un-decoded and goes through the
  library's one check, :func:`explainer.inputs.imagecheck.check_image` (header read first: bombs, tiny, strip-like and
  blank images are refused in plain words, and memory is bounded before any resize); what differs between tasks
  (image checks, preview, prompt) is asked of the task (:mod:`explainer.tasks`).
- The preview is written to a file of its own, named by its content keyed with a secret of this process (a name
  cannot be worked out from an image) and put in place by an atomic rename, so that a crowd receiving the same
  preview never reads a file while another request rewrites it.
- The "Where" panel (:mod:`webapp.heatmaps`): the heatmaps come from the same pass as the probabilities and are
  cached with them, small, so choosing an explanation (:meth:`TaskApp.show_where`) or moving a slider redraws a
  picture without a network; a slider move that keeps the chosen explanation redraws nothing. Its pictures are
  written like the preview. A photo that is not what the model is for gets the panel folded.
- Controls are strict: a boolean is not a number, the raw switch is a boolean; echoed values are cut short
  (:data:`ECHO_CHARS`).
- The handlers trust the paths they are given; what a visitor may send is decided before them
  (:mod:`webapp.server`). Served, a rejected image leaves the previous result in place
  (``keep_previous_on_problem``): the message replaces the verdict, and the cached outputs, charts and preview stay,
  so a slider moved next still redraws the last good image. The page then empties the upload box (``app.py``), so that
  it is ready for the next file; an emptied box (or the user's ×) leaves everything else as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import logging
import math
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image

from explainer.inputs.imagecheck import ImageError, check_image
from explainer.pair.scope import ScopeReading, plain_name
from explainer.tasks import ImageCheckError
from explainer.verdict.postprocess import Controls
from explainer.verdict.predictor import Explainer, Explanation
from webapp import charts, heatmaps, panels
from webapp.memory import release_memory
from webapp.weights import TaskModel
from webapp.words import words

LOG = logging.getLogger("webapp")

TOP_K_MAX = 30  # most bars one chart shows
PREVIEW_SIZE = 192  # the "what the network sees" thumbnail, in pixels
ECHO_CHARS = 60  # a value echoed back in a message is cut to this many characters
PREVIEW_KEY = secrets.token_bytes(32)  # keys preview names: known content does not give a preview's name
WARNING_SECONDS = 5  # a warning toast repeats the status's words; it goes soon (and when a verdict arrives)


class ClassifyOutputs(NamedTuple):
    """What classifying an image updates, in the order ``app.py`` lists its output components."""

    result: dict[str, Any] | None  # Explanation.to_json() (the API's main answer)
    status: str  # Markdown: the verdict, or a plain-words problem
    network_input: Image.Image | str | None  # what the network was given (a file path when previews go to files)
    class_plot: Any
    explanation_plot: Any
    ranking_plot: Any
    cache: dict[str, Any] | None  # the cached network outputs (gr.State)
    force_present: list[int]  # interventions are reset for a new image
    force_absent: list[int]
    scope_plot: Any  # what the ImageNet model sees, for a photo that is not what the model is for; else None
    guess_toggle: Any  # the button that opens the model's folded charts: shown only for such a photo
    guess_panel: Any  # the model's own charts: in view, or folded for such a photo (an update of its classes)
    where_panel: Any  # the "Where" panel: open, or folded for an image the model is not for (an update)
    where_choice: Any  # the kept explanations to choose from and the chosen one (an update of the list)
    where_explanation: Image.Image | str | None  # the image under the chosen explanation's heatmap
    where_explanation_caption: str  # its title and what it shows, or why there is no picture
    where_class: Image.Image | str | None  # the image under the predicted class's heatmap
    where_class_caption: str


class RenderOutputs(NamedTuple):
    """What moving a control updates."""

    result: dict[str, Any] | None
    status: str
    class_plot: Any
    explanation_plot: Any
    ranking_plot: Any
    where_choice: Any
    where_explanation: Image.Image | str | None  # gr.skip() while the chosen explanation stays kept
    where_explanation_caption: str


class WhereOutputs(NamedTuple):
    """What choosing an explanation for the "Where" panel updates."""

    where_choice: Any
    where_explanation: Image.Image | str | None
    where_explanation_caption: str


class UserInputError(ValueError):
    """A problem with what the user sent, shown to them as is."""


def plot_value(figure: charts.Figure) -> Any:
    """A chart dict as gr.Plot's payload, serialised with ``json.dumps`` (fast: no plotly validation)."""
    from gradio.components.plot import PlotData

    return PlotData(type="plotly", plot=json.dumps(figure))


def _skip() -> dict[str, Any]:
    """Gradio's "leave this output as it is" (``gr.skip()``), without importing Gradio."""
    return {"__type__": "update"}


_NO_WHERE = WhereOutputs({"__type__": "update", "choices": [], "value": None, "visible": False}, None, "")


def _warn(message: str) -> None:
    """A toast in the browser; outside a Gradio request (tests, scripts) Gradio turns it into a Python warning."""
    try:
        import gradio as gr

        gr.Warning(message, duration=WARNING_SECONDS)
    except Exception:  # the message is in the status anyway
        LOG.debug("could not show a warning toast", exc_info=True)


def echo(value: Any) -> str:
    """A value as the user sent it, cut short: a 1 MB string must not come back in full."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


def _sentence(err: Exception) -> str:
    """A library error ("top N 9 is out of range (1 to 4)") as a sentence, every word cut to :data:`ECHO_CHARS`: the
    library names the value it was given, which may be 300 digits long."""
    words = [w if len(w) <= ECHO_CHARS else w[: ECHO_CHARS - 3] + "..." for w in str(err).split(" ")]
    text = " ".join(words)
    return f"{text[:1].upper()}{text[1:]}"


def _image_problem(err: Exception) -> str:
    """The check's plain words as one sentence (they never hold a path or a library's name)."""
    text = str(err).rstrip(".")
    return f"Cannot use this file: {text}." if text else "Cannot use this file: it cannot be read as an image."


def _upload_source(image: Any) -> str | bytes | None:
    """A file path, or the bytes of a "data:" URL, from what an image input sends; None when there is nothing.
    Raises UserInputError for a value that is no image payload at all."""
    if isinstance(image, Mapping):
        path, url = image.get("path"), image.get("url")
        if isinstance(path, str) and path:
            return path
        if isinstance(url, str) and url.startswith("data:") and "," in url:
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except (binascii.Error, ValueError):
                return b""  # the check then says it is not an image
        if path is None and url is None:
            return None
    elif isinstance(image, str):
        return image if image.strip() else None
    elif image is None:
        return None
    raise UserInputError(f"The image must be a file (a path or an uploaded file), not {echo(image)}.")


def write_preview(image: Image.Image, folder: Path, jpeg: bool = False) -> str:
    """Save ``image`` as PNG (or, for a photo-like picture, JPEG: a tenth of the bytes and of the time) under a name
    made from its content and this process's key, and return the path. A new file is written under a temporary name
    and renamed into place, so a reader of an existing preview never sees it rewritten."""
    buffer = io.BytesIO()
    if jpeg:
        image.save(buffer, format="JPEG", quality=heatmaps.JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG")
    data = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".jpg" if jpeg else ".png"
    path = folder / f"preview-{hmac.new(PREVIEW_KEY, data, hashlib.sha256).hexdigest()[:32]}{suffix}"
    if not path.exists():
        fd, staging = tempfile.mkstemp(dir=folder, prefix=".preview-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
    return str(path)


@dataclass
class TaskApp:
    """The handlers of one task's tab, bound to its loaded model."""

    model: TaskModel
    preview_size: int = PREVIEW_SIZE
    preview_folder: Path | None = None  # where previews are written as files (the app: inside Gradio's cache)
    keep_previous_on_problem: bool = False  # served: a rejected image leaves the last result (see the module)
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
        return self._explainer.default_threshold  # checked (0 to 1) when the file was loaded

    @property
    def default_top_n(self) -> int:
        return self._explainer.default_top_n  # settled by the library: at most the class count

    @property
    def top_k_max(self) -> int:
        return max(1, min(max(self.n_classes, self.n_explanations), TOP_K_MAX))

    @property
    def default_top_k(self) -> int:
        return min(max(5, self.default_top_n), self.top_k_max)

    @property
    def class_names(self) -> list[str]:
        return list(self._explainer.class_names)

    @property
    def explanation_choices(self) -> list[str]:
        """The intervention controls' choices: display names, so that API callers send names, not indices."""
        return list(self._explainer.display_names)

    def _controls(self, threshold: Any, top_n: Any, top_k: Any, show_raw: Any) -> tuple[Controls, int, bool]:
        """The controls' values, this tab's defaults filled in, checked once for the whole request: threshold and top
        N by the library's one rule (:meth:`Explainer.resolve_controls`), top k (bars per chart) and the raw switch,
        app-only, here. What follows (explanation, charts, status) takes the checked values as they are."""
        numbers = (threshold, top_n, top_k)
        try:
            if any(isinstance(value, (bool, np.bool_)) for value in numbers):
                raise TypeError("a boolean is not a number")
            threshold_value = float(self.default_threshold if threshold is None else threshold)
            top_n_value = int(round(float(self.default_top_n if top_n is None else top_n)))
            top_k_value = int(round(float(self.default_top_k if top_k is None else top_k)))
        except (TypeError, ValueError, OverflowError) as err:
            raise UserInputError(
                f"Threshold, top N and top k must be numbers (got {echo(threshold)}, {echo(top_n)}, {echo(top_k)})."
            ) from err
        if show_raw is not None and not isinstance(show_raw, (bool, np.bool_)):
            raise UserInputError(f"Show raw must be true or false, not {echo(show_raw)}.")
        try:
            controls = self._explainer.resolve_controls(threshold_value, top_n_value)
        except ValueError as err:  # "threshold 1.5 is out of range (0 to 1)" -> a sentence
            raise UserInputError(f"{_sentence(err)}.") from err
        if top_k_value < 1:
            raise UserInputError(f"Top k {echo(top_k_value)} is out of range (at least 1).")
        return controls, top_k_value, bool(show_raw)

    def _overrides(self, present: Sequence[Any] | None, absent: Sequence[Any] | None) -> tuple[dict[int, bool], str]:
        """Intervention lists (indices or display names) -> {index: on}; an explanation in both is forced absent."""
        names = self._explainer.display_names
        as_index = self._explanation_index
        for label, chosen in (("Force present", present), ("Force absent", absent)):
            if chosen is not None and not isinstance(chosen, (list, tuple)):
                raise UserInputError(f"{label} must be a list of explanation names, not {echo(chosen)}.")
        overrides = {as_index(i): True for i in (present or [])}
        both = [as_index(i) for i in (absent or []) if as_index(i) in overrides]
        overrides.update({as_index(i): False for i in (absent or [])})
        note = ""
        if both:
            note = "Forced both present and absent, so treated as absent: " + ", ".join(names[i] for i in both) + "."
        return overrides, note

    def _explanation_index(self, item: Any) -> int:
        """An explanation named by its display name or index -> its index (raises UserInputError)."""
        names = self._explainer.display_names
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            index = int(item)
        elif isinstance(item, str) and item in names:
            index = names.index(item)
        else:
            raise UserInputError(
                f"Explanation {echo(item)} is not one of this model's {len(names)} explanations; "
                "pick names from the list."
            )
        if not 0 <= index < len(names):
            raise UserInputError(f"Explanation index {echo(index)} is out of range (0 to {len(names) - 1}).")
        return index

    # -- rendering ---------------------------------------------------------------------------------------------------

    def _scope_line(self, explanation: Explanation) -> str:
        """Whether the image is something this model was made for, in plain words ("" when the verdict's sentence
        already says that it is not)."""
        if explanation.scope.not_the_subject():
            return ""  # the badge and the sentence say it: "this does not look like a bird: the ImageNet model sees..."
        question, answer = explanation.scope.status(explanation.threshold)
        return f"**{question}** {answer}"

    def _status(self, explanation: Explanation, note: str) -> str:
        verdict = explanation.verdict
        pred = explanation.predicted_class
        prob = float(explanation.class_probs[verdict.predicted_class])
        not_the_subject = explanation.scope.not_the_subject()
        if not_the_subject:
            head = f'<span class="badge badge-questioned">⚠ Questioned · not {not_the_subject}</span>'
        elif verdict.questioned:
            head = f'<span class="badge badge-questioned">⚠ Questioned · case {verdict.case}</span>'
        elif verdict.case == 2:
            head = '<span class="badge badge-consistent">✔ Consistent · case 2 (tie)</span>'
        else:
            head = '<span class="badge badge-consistent">✔ Consistent</span>'
        if not_the_subject:  # what the ImageNet model sees is the answer; the model's guess waits behind a fold
            fold = panels.guess_label(explanation.scope.subject or "bird")
            lines = [head, explanation.sentence(), f"*Its charts are folded below: **{fold}**.*"]
        else:
            lines = [head, f"**Main network:** {pred} ({100 * prob:.1f}%)", explanation.sentence()]
            lines.append(self._kept_line(explanation))
            scope_line = self._scope_line(explanation)
            if scope_line:
                lines.append(scope_line)
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

    def _kept_line(self, explanation: Explanation) -> str:
        """How many explanations the threshold keeps, and over which slider settings that stays so: on a confident
        image nothing changes between, say, 0.01 and 0.99, and the page should say so rather than look broken."""
        threshold = explanation.threshold
        kept = len(explanation.kept_indices)
        line = (
            f"**Explanations kept:** {kept} of {len(explanation.explanation_names)} at threshold {threshold:.2f} "
            "(the greyed bars are below it)"
        )
        low, high = explanation.kept_threshold_range
        start = 0.0 if low is None else math.floor(low * 100) / 100 + 0.01  # the first slider step above ``low``
        end = 1.0 if high is None else math.floor(high * 100) / 100
        same = f"the same {kept}" if kept else "none"
        if round(start, 2) < round(end, 2):
            line += f"; any threshold from {start:.2f} to {end:.2f} keeps {same}"
        elif round(start, 2) == round(end, 2) == round(threshold, 2):
            line += f"; no other threshold keeps {'exactly these' if kept else 'none'}"
        return line + "."

    def _scope_view(self, explanation: Explanation, reading: ScopeReading | None) -> Any:
        """What the ImageNet model sees, as a chart, for a photo that is not what the model is for; else None."""
        gate = self._explainer.scope
        if not explanation.scope.not_the_subject() or gate is None or reading is None or not reading.top_classes:
            return None
        subjects = {int(i) for i in gate.in_scope_classes}
        top = [(plain_name(gate.class_names[i]), p, i in subjects) for i, p in reading.top_classes]
        return plot_value(charts.scope_chart(top, len(subjects), reading.score, gate.threshold, gate.subject))

    def render(
        self,
        class_probs: np.ndarray,
        explanation_probs: np.ndarray,
        threshold: Any = None,
        top_n: Any = None,
        top_k: Any = None,
        show_raw: bool | None = False,
        force_present: Sequence[Any] | None = None,
        force_absent: Sequence[Any] | None = None,
        scope: ScopeReading | None = None,
        where: Mapping[str, Any] | None = None,
        where_choice: Any = None,
    ) -> RenderOutputs:
        """Post-process cached probabilities, draw the three charts and, given the cached maps (``where``, see
        :mod:`webapp.heatmaps`), the chosen explanation's picture (no network). Raises UserInputError."""
        controls, top_k_value, raw = self._controls(threshold, top_n, top_k, show_raw)
        overrides, note = self._overrides(force_present, force_absent)
        return self._render(
            class_probs, explanation_probs, controls, top_k_value, raw, overrides, note, scope, where, where_choice
        )[0]

    def _render(
        self,
        class_probs: np.ndarray,
        explanation_probs: np.ndarray,
        controls: Controls,
        top_k: int,
        raw: bool,
        overrides: dict[int, bool],
        note: str,
        scope: ScopeReading | None,
        where: Mapping[str, Any] | None,
        where_choice: Any,
    ) -> tuple[RenderOutputs, Explanation]:
        """:meth:`render` for controls and interventions already checked (:meth:`_controls`, :meth:`_overrides`)."""
        exp = self._explainer
        explanation = exp.explain_with(class_probs, explanation_probs, controls, overrides, scope)
        result = explanation.to_json()
        result["overrides"] = {exp.display_names[i]: on for i, on in overrides.items()}
        result["rank"] = explanation.verdict.rank
        class_fig = charts.class_chart(exp.class_names, explanation.class_probs, min(top_k, self.n_classes))
        expl_fig = charts.explanation_chart(
            exp.display_names,
            explanation.explanation_probs,
            explanation.kept_scores,
            controls.threshold,
            min(top_k, self.n_explanations),
            explanation.cleaned_scores,
            raw=raw,
            overrides=overrides,
        )
        rank_fig = charts.ranking_chart(
            exp.class_names,
            explanation.ranking_scores,
            explanation.verdict.predicted_class,
            controls.top_n,
            min(top_k, self.n_classes),
            normalized=exp.ranking == "normalized",
        )
        rendered = RenderOutputs(
            result,
            self._status(explanation, note),
            plot_value(class_fig),
            plot_value(expl_fig),
            plot_value(rank_fig),
            *self._where_view(where, explanation, where_choice, chosen=False),
        )
        return rendered, explanation

    def _where_view(
        self, where: Mapping[str, Any] | None, explanation: Explanation, choice: Any, chosen: bool
    ) -> WhereOutputs:
        """The list of kept explanations and the picture of the chosen one.

        ``chosen``: the user picked ``choice`` (a display name or an index): it is shown, kept or not. Otherwise
        (a new image, a slider moved) ``choice`` is what the list showed: it stays while it is kept, and its picture
        is left as it is (``gr.skip()``); else the first kept explanation is shown. Only a user's choice must be a
        known name: the list's value may be anything a visitor typed into it before."""
        if not where:  # outputs cached without maps: no panel
            return _NO_WHERE
        names = self._explainer.display_names
        kept = explanation.kept_indices
        if chosen:
            index = self._explanation_index(choice)
        else:
            index = names.index(choice) if isinstance(choice, str) and choice in names else None
        unchanged = not chosen and index is not None and index in kept
        if not chosen and not unchanged:
            index = kept[0] if kept else None
        listed = [names[i] for i in kept] + ([names[index]] if index is not None and index not in kept else [])
        value = None if index is None else names[index]
        update = {"__type__": "update", "choices": listed, "value": value, "visible": bool(listed)}
        if index is None:
            return WhereOutputs(update, None, heatmaps.nothing_kept(explanation.threshold))
        if unchanged:
            return WhereOutputs(update, _skip(), _skip())
        grid = where["explanation_maps"][index]
        caption = heatmaps.explanation_caption(names[index], grid, kept=index in kept)
        return WhereOutputs(update, self._picture(where, grid), caption)

    def _picture(self, where: Mapping[str, Any], grid: np.ndarray) -> Image.Image | str | None:
        """One heatmap picture: a file like the preview's when the app serves files, else the image; None for a flat
        map (its caption says why)."""
        if heatmaps.is_flat(grid):
            return None
        picture = heatmaps.picture(where, grid)
        return picture if self.preview_folder is None else write_preview(picture, self.preview_folder, jpeg=True)

    def _classify(self, image: Image.Image, threshold: Any, top_n: Any, top_k: Any, show_raw: Any) -> ClassifyOutputs:
        controls, top_k_value, raw = self._controls(threshold, top_n, top_k, show_raw)  # before any network runs
        try:
            image = self._explainer.check_image(image)
        except ImageCheckError as err:
            raise UserInputError(str(err)) from err
        exp = self._explainer
        try:
            tensor, frame = exp.framed_preprocess(image)
        except (ImageError, UserInputError):
            raise
        except ValueError as err:  # NothingToClassify (blank drawing) and other bad-input errors say why
            raise UserInputError(_sentence(err)) from err
        class_probs, explanation_probs, where = exp.where_tensor(tensor, frame)  # one pass: probabilities and maps
        reading = exp.read_scope(tensor, exp.scope_input(image, tensor))
        predicted = int(np.argmax(class_probs))
        cache = {
            "task": self.model.task,
            "class_probs": class_probs.astype(np.float32),
            "explanation_probs": explanation_probs.astype(np.float32),
            "scope": None if reading is None else asdict(reading),
            "where": heatmaps.pack(where, predicted, image),
        }
        rendered, explanation = self._render(
            cache["class_probs"],
            cache["explanation_probs"],
            controls,
            top_k_value,
            raw,
            overrides={},  # a new image starts with no intervention
            note="",
            scope=reading,
            where=cache["where"],
            where_choice=None,
        )
        class_map = cache["where"]["class_map"]
        preview: Image.Image | str = self._explainer.preview(tensor, self.preview_size)
        if self.preview_folder is not None:
            preview = write_preview(preview, self.preview_folder, jpeg=preview.mode == "RGB")  # a photo: JPEG
        return ClassifyOutputs(
            rendered.result,
            rendered.status,
            preview,
            rendered.class_plot,
            rendered.explanation_plot,
            rendered.ranking_plot,
            cache,
            [],
            [],
            self._scope_view(explanation, reading),
            *panels.guess_updates(
                (explanation.scope.subject or "bird") if explanation.scope.not_the_subject() else None
            ),
            heatmaps.panel_update(explanation.scope.not_the_subject()),
            rendered.where_choice,
            rendered.where_explanation,
            rendered.where_explanation_caption,
            self._picture(cache["where"], class_map),
            heatmaps.class_caption(exp.class_names[predicted], class_map),
        )

    def _problem(self, message: str) -> ClassifyOutputs:
        """The message as the status; served, everything else stays (the page then takes a file that cannot be used
        out of the upload box, see ``app.py``)."""
        _warn(message)
        if self.keep_previous_on_problem:
            kept = ClassifyOutputs(*(_skip() for _ in ClassifyOutputs._fields))
            return kept._replace(result={"error": message}, status=f"**{message}**")
        return self._cleared({"error": message}, f"**{message}**")

    def _cleared(self, result: dict[str, Any] | None, status: str) -> ClassifyOutputs:
        """No result: every chart, picture and list empty, the cache dropped."""
        panel = heatmaps.panel_update(None)
        return ClassifyOutputs(
            result,
            status,
            None,
            None,
            None,
            None,
            None,
            [],
            [],
            None,
            *panels.guess_updates(None),
            panel,
            *_NO_WHERE,
            None,
            "",
        )

    def _guarded(self, work: Callable[[], ClassifyOutputs], what: str) -> ClassifyOutputs:
        try:
            return work()
        except (ImageError, UserInputError) as err:
            return self._problem(str(err))
        except MemoryError:
            LOG.exception("%s ran out of memory", what)
            message = "This image needs more memory than the server has free; try a smaller one."
            return self._problem(message)
        except Exception:  # never show a stack trace; the server log has it
            LOG.exception("%s failed", what)
            message = f"Something went wrong while {what}; the server log has the details. Try another image."
            return self._problem(message)
        finally:
            release_memory()  # give the decode buffers back to the system, so idle memory returns to where it was

    def classify_image(
        self,
        image: str | Mapping[str, Any] | None,
        threshold: float | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        show_raw: bool = False,
    ) -> ClassifyOutputs:
        """Classify and explain an uploaded image: a file path, or Gradio's un-preprocessed file payload (a dict with
        "path", or a "data:" URL). ``None`` clears the results, or, served, leaves them as they are: the box is
        emptied after a file that cannot be used, and its × only takes the file out of the box.

        The app passes the payload un-preprocessed so that Gradio never decodes the file itself: a decompression bomb
        or a non-image reaches :func:`check_image` and gets a plain-words answer instead of a generic error.
        """

        def work() -> ClassifyOutputs:
            source = _upload_source(image)
            if source is None:
                if self.keep_previous_on_problem:  # served: the box was emptied (a bad file, the ×): keep the rest
                    return ClassifyOutputs(*(_skip() for _ in ClassifyOutputs._fields))
                return self._cleared(None, self.prompt)
            return self._classify(self._open(source), threshold, top_n, top_k, show_raw)

        return self._guarded(work, "classifying the image")

    @staticmethod
    def _open(source: str | bytes) -> Image.Image:
        try:
            return check_image(source)
        except ImageError as err:
            raise UserInputError(_image_problem(err)) from err

    def classify_sketch(
        self,
        sketch: Mapping[str, Any] | str | None,
        threshold: float | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        show_raw: bool = False,
    ) -> ClassifyOutputs:
        """Classify a drawing: the sketchpad's value ``{"background", "layers", "composite"}``, each a file path or,
        as the app passes it un-preprocessed, a file payload (so that Gradio never decodes a huge drawing first)."""

        def work() -> ClassifyOutputs:
            if isinstance(sketch, Mapping):
                source = _upload_source(sketch.get("composite")) or _upload_source(sketch.get("background"))
            elif isinstance(sketch, str) or sketch is None:  # a plain image path is accepted too
                source = _upload_source(sketch)
            else:
                raise UserInputError(
                    "The drawing must be the sketchpad's value: a dictionary with 'background', 'layers' and "
                    "'composite' images."
                )
            if not source:
                raise UserInputError("The canvas is empty: draw a shape (a circle, triangle, square or rectangle).")
            return self._classify(self._open(source), threshold, top_n, top_k, show_raw)

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
        where_choice: str | None = None,
    ) -> RenderOutputs:
        """Redraw everything from the cached network outputs after a control moved (no network runs).
        ``where_choice``: the explanation the "Where" panel shows; it stays while it is kept."""
        if not self._usable(cache):
            return RenderOutputs(None, self.prompt, None, None, None, *_NO_WHERE)
        assert cache is not None
        try:
            reading = ScopeReading(**cache["scope"]) if cache.get("scope") else None
            return self.render(
                cache["class_probs"],
                cache["explanation_probs"],
                threshold,
                top_n,
                top_k,
                show_raw,
                force_present,
                force_absent,
                reading,
                cache.get("where"),
                where_choice,
            )
        except UserInputError as err:
            _warn(str(err))
            return RenderOutputs({"error": str(err)}, f"**{err}**", None, None, None, *_NO_WHERE)
        except Exception:
            LOG.exception("re-rendering failed")
            message = "Something went wrong while updating the charts; the server log has the details."
            _warn(message)
            return RenderOutputs({"error": message}, f"**{message}**", None, None, None, *_NO_WHERE)

    def _usable(self, cache: Mapping[str, Any] | None) -> bool:
        """Whether ``cache`` holds this tab's network outputs (another tab's are never used)."""
        return bool(cache) and cache.get("task") == self.model.task  # type: ignore[union-attr]

    def show_where(
        self,
        cache: Mapping[str, Any] | None,
        choice: str | None = None,
        threshold: float | None = None,
        top_n: int | None = None,
        force_present: Sequence[Any] | None = None,
        force_absent: Sequence[Any] | None = None,
    ) -> WhereOutputs:
        """The "Where" panel for the explanation the user chose (its display name; None: the first kept one), from
        the cache (no network runs). Threshold, top N and the interventions say which explanations are kept."""
        if not self._usable(cache) or not cache.get("where"):  # type: ignore[union-attr]
            return WhereOutputs(*_NO_WHERE[:2], self.prompt)
        assert cache is not None
        try:
            controls, _, _ = self._controls(threshold, top_n, None, False)
            overrides, _ = self._overrides(force_present, force_absent)
            reading = ScopeReading(**cache["scope"]) if cache.get("scope") else None
            explanation = self._explainer.explain_with(
                cache["class_probs"], cache["explanation_probs"], controls, overrides, reading
            )
            return self._where_view(cache["where"], explanation, choice, chosen=choice is not None and choice != "")
        except UserInputError as err:
            _warn(str(err))
            return WhereOutputs(_skip(), None, f"**{err}**")
        except Exception:
            LOG.exception("drawing a heatmap failed")
            message = "Something went wrong while drawing the heatmap; the server log has the details."
            _warn(message)
            return WhereOutputs(_skip(), None, f"**{message}**")

    def clear_interventions(
        self,
        cache: Mapping[str, Any] | None,
        threshold: float | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        show_raw: bool = False,
        where_choice: str | None = None,
    ) -> tuple[Any, ...]:
        """Drop every forced explanation: the re-rendered outputs, then two empty intervention lists."""
        return (*self.rerender(cache, threshold, top_n, top_k, show_raw, None, None, where_choice), [], [])

    @property
    def prompt(self) -> str:
        return words(self.model.spec).prompt
