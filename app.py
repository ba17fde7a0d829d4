"""The web app: draw or upload a shape, or upload a bird photo, and see what the network predicts, which
human-understandable explanations a second network reads from its activations, and whether the two agree.

Run: ``python app.py`` (then open http://127.0.0.1:7860). Weights come from ``weights/shapes.safetensors`` and
``weights/birds.safetensors``, or from the environment variables ``EXPLAINER_SHAPES_WEIGHTS`` /
``EXPLAINER_BIRDS_WEIGHTS`` (a local path, or a Hugging Face Hub file ``user/repo/file.safetensors``, fetched only
when a variable names one). A task without weights shows how to get them. All behaviour lives in the ``webapp``
package (and what differs between tasks in ``explainer/tasks/``); this file only lays out the page.
"""

from __future__ import annotations

import atexit
import os
import signal
from pathlib import Path

from webapp.files import private_cache_folder, remove_folders
from webapp.memory import bound_malloc

bound_malloc()  # before torch and Gradio start their threads: memory comes back after large images (see the module)
CACHE_FOLDER: Path | None = None
if __name__ == "__main__":
    # Served, everything the app writes (uploads, previews, Gradio's copies) goes to a folder of its own, set before
    # Gradio reads the variable, and removed when the app stops. A stop request (SIGTERM, as a Space or container
    # gets) is handled like Ctrl+C: Gradio closes the server, then the files go.
    CACHE_FOLDER = private_cache_folder(os.environ.get("GRADIO_TEMP_DIR"))
    os.environ["GRADIO_TEMP_DIR"] = str(CACHE_FOLDER)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # and Ctrl+C / SIGINT always stops it: a process started with SIGINT ignored (a background job of a script, a
    # test runner's child) inherits that, and Python then leaves it ignored, so the app could never be interrupted
    signal.signal(signal.SIGINT, signal.default_int_handler)

import gradio as gr  # noqa: E402
import torch  # noqa: E402

import webapp  # noqa: E402
from explainer.tasks import TASKS, Task  # noqa: E402
from webapp.server import ServedBlocks  # noqa: E402
from webapp.words import words  # noqa: E402

ROOT = Path(__file__).resolve().parent


def _hub_download(repo_id: str, filename: str) -> str:
    """Fetch a weights file from the Hugging Face Hub (only called when an env var names a Hub file)."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename)


MODELS = webapp.load_models(os.environ, ROOT / "weights", download=_hub_download)
EXAMPLES = {task.name: webapp.write_examples(task) if MODELS[task.name].available else [] for task in TASKS.values()}


def remove_examples() -> None:
    """Delete the examples' temporary folders."""
    remove_folders(paths[0].parent for paths in EXAMPLES.values() if paths)


# Previews ("what the network sees") go to files of their own inside Gradio's cache, removed with it (delete_cache).
PREVIEW_FOLDER = Path(gr.utils.get_upload_folder()) / "explainer-previews"


def remove_app_files() -> None:
    """Delete the examples, the previews and, served, the app's whole cache folder (uploads included); run when the
    app stops (Ctrl+C, SIGINT, SIGTERM) and at exit."""
    remove_examples()
    remove_folders([PREVIEW_FOLDER, CACHE_FOLDER])


atexit.register(remove_app_files)
CACHE_CLEANUP = (600, 3600)  # every 10 minutes, delete uploads and previews older than an hour

SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
THEME = gr.themes.Default(primary_hue="blue", font=SYSTEM_FONTS, font_mono=MONO_FONTS)  # no web font is fetched
# The upload limit, the request guard and the closed monitoring page come with ServedBlocks (webapp/server.py).
LAUNCH_OPTIONS = {"theme": THEME, "css": webapp.CSS, "head": webapp.HEAD, "footer_links": ["api", "settings"]}
# Gradio's image editor starts with no tool selected, and its "Clear canvas" drops the tool again ("select the draw
# tool to start"): pick the brush when the page loads and after every clear, so that the next stroke draws. Gradio
# marks the chosen tool's button "highlight"; the brush is clicked only while it is not chosen (a second click would
# open its size menu).
KEEP_BRUSH_JS = """
() => {
  const pickBrush = (always, limit) => {
    let tries = 0;
    const timer = setInterval(() => {
      const brush = document.querySelector('#shapes-sketch button[aria-label="Brush"]');
      if (brush && (always || !brush.classList.contains('highlight'))) { brush.click(); }
      if ((brush && always) || ++tries > limit) { clearInterval(timer); }
    }, 100);
  };
  pickBrush(true, 100);
  document.addEventListener('click', (event) => {
    if (event.target.closest && event.target.closest('#shapes-sketch button[aria-label="Clear canvas"]')) {
      pickBrush(false, 20);  // watched for 2 s: the clear lands after this click
    }
  }, true);
}
"""
# The upload box's "Upload file" icon only selects the source (with a photo shown it takes the photo out first) and
# opens no file chooser; make it open one, as a person expects. The click is the user's, so the browser allows it.
UPLOAD_ICON_JS = """
() => {
  document.addEventListener('click', (event) => {
    const icon = event.target.closest && event.target.closest('[id$="-upload"] button[aria-label="Upload file"]');
    if (!icon) { return; }
    const box = icon.closest('[id$="-upload"]');
    let tries = 0;
    const timer = setInterval(() => {
      const input = box.querySelector('input[type=file]');
      if (input) { input.click(); }
      if (input || ++tries > 20) { clearInterval(timer); }
    }, 50);
  }, true);
}
"""
# The fold over the model's charts for a photo that is not a bird: a button opens and closes it in the page (no
# server call). Folded, the charts keep their width and only lose their height, so that Plotly lays them out right.
GUESS_TOGGLE_JS = """
() => {
  const panel = document.getElementById('%s-guess');
  const button = document.getElementById('%s-guess-toggle');
  if (!panel || !button) { return; }
  const folded = panel.classList.toggle('guess-folded');
  const words = button.textContent.trim();
  button.textContent = folded
    ? words.replace(/^Hide (.*)$/, 'Show $1 anyway')
    : words.replace(/^Show (.*) anyway$/, 'Hide $1');
  button.setAttribute('aria-expanded', String(!folded));
}
"""
# After an upload that gave no verdict (a file that cannot be used; the status says why), take the file out of the
# box with the box's own ×: else the browser shows a thin broken-image strip where the box was. The emptied box's
# own event changes nothing else (the handler leaves everything as it is for an empty box), so the message stays.
EMPTY_REJECTED_UPLOAD_JS = """
  const remove = document.querySelector('#%(task)s-upload button[aria-label="Remove Image"]');
  if (status && !status.querySelector('.badge') && remove) { remove.click(); }
"""
# After a classification: a verdict closes every warning toast still showing (a toast must never cover a verdict),
# and on a narrow screen, where the results are under the inputs, the verdict (the controls and the first chart under
# it) is brought into view.
AFTER_RESULT_JS = """
() => {
  const status = document.getElementById('%(task)s-status');%(upload)s
  if (status && status.querySelector('.badge')) {
    document.querySelectorAll('.toast-body .toast-close').forEach((close) => close.click());
  }
  if (window.innerWidth > 768) { return; }
  if (status) { window.scrollTo({top: status.getBoundingClientRect().top + window.scrollY - 12}); }  // badge whole
}
"""
CHART_HINT = "*The verdict, three charts and where the networks look appear here once an image is classified.*"
# A click on a bar of an explanations chart chooses that explanation for the "Where" panel. Gradio's Plot has no select
# event, so the page listens to Plotly's own click (each bar carries its explanation's name, see webapp.charts), keeps
# the name, and clicks the tab's hidden "where-bar" button, whose event sends it (PICKED_BAR_JS) in place of the list's.
BAR_CLICK_JS = """
() => {
  const bind = () => {
    document.querySelectorAll('[id$="-explanations"] .js-plotly-plot').forEach((plot) => {
      if (plot.dataset.whereBound || typeof plot.on !== 'function') { return; }
      plot.dataset.whereBound = '1';
      const task = plot.closest('[id$="-explanations"]').id.replace(/-explanations$/, '');
      plot.on('plotly_click', (event) => {
        const name = event && event.points && event.points[0] && event.points[0].customdata;
        const button = document.getElementById(task + '-where-bar');
        if (typeof name !== 'string' || !button) { return; }
        window.explainerPickedBar = Object.assign(window.explainerPickedBar || {}, {[task]: name});
        button.click();
      });
    });
  };
  new MutationObserver(bind).observe(document.body, {childList: true, subtree: true});
  bind();
}
"""
PICKED_BAR_JS = """
(cache, choice, threshold, topN, present, absent) =>
  [cache, (window.explainerPickedBar || {})['%s'] ?? choice, threshold, topN, present, absent]
"""
# One intra-op thread per network run and two runs at a time, one per core of a 2-vCPU Space: on this project's
# 2-core machine under load, two threads per run made the birds pair 5x slower (median 441 ms against 80 ms) and the
# shapes pair 80x slower (180 ms against 2.3 ms) than one; see train/bench_app.py. Others wait in the queue.
torch.set_num_threads(1)
NETWORK_CONCURRENCY = 2
RENDER_CONCURRENCY = 4  # re-rendering from the cache is cheap numpy + JSON


def _controls(app: webapp.TaskApp) -> tuple[gr.Slider, gr.Slider, gr.Slider, gr.Checkbox]:
    """Threshold, top N and top k sliders, defaulting to the weights' metadata, and the raw-list switch: right under
    the verdict (and, for a photo the model is not for, under what the ImageNet model sees), the two that change the
    verdict side by side on a desktop (one above the other on a phone), so that the verdict stays in view while a
    slider moves."""
    task = app.model.task
    row = {"equal_height": False}
    slider_width = 260  # two side by side in a desktop's results column, one per line on a phone
    with gr.Group(elem_id=f"{task}-controls", elem_classes="controls"):
        with gr.Row(**row):
            threshold, top_n = _verdict_sliders(app, slider_width)
        top_k, show_raw = _chart_controls(app, slider_width)  # one under the other (a checkbox does not wrap in a row)
    return threshold, top_n, top_k, show_raw


def _chart_controls(app: webapp.TaskApp, width: int) -> tuple[gr.Slider, gr.Checkbox]:
    """Bars per chart and the raw-list switch: they change the charts, not the verdict."""
    task = app.model.task
    top_k = gr.Slider(
        1,
        app.top_k_max,
        value=app.default_top_k,
        step=1,
        precision=0,
        label="Bars per chart (top k)",
        min_width=width,
        elem_id=f"{task}-top-k",
    )
    show_raw = gr.Checkbox(
        False,
        label="Show the raw explanation list (before group cleaning)",
        min_width=width,
        elem_id=f"{task}-raw",
    )
    return top_k, show_raw


def _verdict_sliders(app: webapp.TaskApp, width: int) -> tuple[gr.Slider, gr.Slider]:
    """The two sliders that change the verdict."""
    task = app.model.task
    threshold = gr.Slider(
        0,
        1,
        value=app.default_threshold,
        step=0.01,
        label="Explanation threshold",
        info="Explanations at or above it are kept.",
        min_width=width,
        elem_id=f"{task}-threshold",
    )
    top_n = gr.Slider(
        1,
        app.n_classes,
        value=app.default_top_n,
        step=1,
        precision=0,
        label="Top N",
        info="The prediction is consistent if its class is among the N best by explanations.",
        min_width=width,
        elem_id=f"{task}-top-n",
    )
    return threshold, top_n


def _interventions(app: webapp.TaskApp) -> tuple[gr.components.Component, gr.components.Component]:
    """CheckboxGroups for a handful of explanations, searchable multi-select dropdowns for hundreds."""
    choices = app.explanation_choices
    if len(choices) <= 20:
        present = gr.CheckboxGroup(choices, type="index", label="Force present")
        absent = gr.CheckboxGroup(choices, type="index", label="Force absent")
    else:
        present = gr.Dropdown(choices, type="index", multiselect=True, label="Force present", filterable=True)
        absent = gr.Dropdown(choices, type="index", multiselect=True, label="Force absent", filterable=True)
    return present, absent


def _upload(spec: Task) -> gr.Image:
    """The upload box; its name is written inside the empty box, not as a label floating over the image."""
    return gr.Image(
        type="filepath",
        image_mode=None,
        sources=list(words(spec).input_sources),
        label=words(spec).input_label,
        show_label=False,
        placeholder=f"{words(spec).input_label}\nDrop an image here or click to upload",
        elem_id=f"{spec.name}-upload",
    )


def _where_panel(task: str) -> tuple[gr.Accordion, dict[str, gr.components.Component]]:
    """The "Where" panel: the explanation to show, then two pictures side by side (stacked on a phone), each with its
    caption; and the hidden button a click on a bar presses (BAR_CLICK_JS)."""
    with gr.Accordion(
        webapp.heatmaps.PANEL_TITLE, open=True, elem_id=f"{task}-where", elem_classes="where-panel"
    ) as panel:
        choice = gr.Dropdown(
            [],
            label="Explanation to show",
            info="The kept explanations; or click a bar in the explanations chart.",
            allow_custom_value=True,  # the list changes with every result; the handler says when a name is unknown
            elem_id=f"{task}-where-choice",
        )
        pictures = {"type": "filepath", "interactive": False, "show_label": False, "buttons": []}
        with gr.Row(elem_classes="where-pictures"):
            with gr.Column(min_width=220, elem_classes="where-pane"):
                explanation = gr.Image(
                    label="Where the explanation looks",
                    elem_id=f"{task}-where-explanation",
                    elem_classes="where-picture",
                    **pictures,
                )
                explanation_caption = gr.Markdown(
                    label="What the explanation's picture shows",
                    elem_id=f"{task}-where-explanation-caption",
                    elem_classes="where-caption",
                )
            with gr.Column(min_width=220, elem_classes="where-pane"):
                predicted = gr.Image(
                    label="Where the predicted class is seen",
                    elem_id=f"{task}-where-class",
                    elem_classes="where-picture",
                    **pictures,
                )
                class_caption = gr.Markdown(
                    label="What the class's picture shows",
                    elem_id=f"{task}-where-class-caption",
                    elem_classes="where-caption",
                )
        bar = gr.Button("Show the clicked bar's explanation", visible="hidden", elem_id=f"{task}-where-bar")
    return panel, {
        "where_choice": choice,
        "where_explanation": explanation,
        "where_explanation_caption": explanation_caption,
        "where_class": predicted,
        "where_class_caption": class_caption,
        "where_bar": bar,
    }


def _task_tab(model: webapp.TaskModel, examples: list[Path]) -> None:
    """One task's inputs, controls, results and events; or, without weights, how to get them."""
    task = model.task
    spec: Task = model.spec
    if not model.available:
        gr.Markdown(webapp.unavailable_markdown(model), elem_classes="unavailable")
        return
    app = webapp.TaskApp(model, preview_folder=PREVIEW_FOLDER, keep_previous_on_problem=True)
    description = (model.explainer.meta.get("description") or "") if model.explainer is not None else ""
    note = words(spec).model_note(description, model.explainer.meta if model.explainer is not None else None)
    if note:
        gr.Markdown(note, elem_id=f"{task}-model")
    with gr.Accordion(f"The {app.n_classes} {words(spec).class_word} this model knows", open=False):
        gr.Markdown(webapp.class_list_markdown(app.class_names), elem_id=f"{task}-class-list")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=300):
            sketch = None
            if words(spec).drawable:
                with gr.Tabs():
                    with gr.Tab("Draw", id=f"{task}-draw"):
                        # 256 px: shown at 100% on a 390 px wide phone, and the network crops to the drawing anyway
                        sketch = gr.Sketchpad(
                            type="filepath",
                            image_mode="RGB",
                            canvas_size=(256, 256),
                            fixed_canvas=True,
                            brush=gr.Brush(colors=["#000000"], default_size=4, color_mode="fixed"),
                            layers=False,
                            transforms=(),
                            label="Draw one shape",
                            show_label=False,
                            height=380,
                            elem_id=f"{task}-sketch",
                            elem_classes="sketchpad",
                        )
                        sketch_button = gr.Button("Classify drawing", variant="primary", elem_id=f"{task}-classify")
                    with gr.Tab("Upload", id=f"{task}-upload"):
                        upload = _upload(spec)
            else:
                upload = _upload(spec)
            with gr.Group(elem_classes="preview"):
                gr.Markdown("What the network sees:", elem_classes="preview-caption")
                network_input = gr.Image(
                    label="Network input (what the network sees)",
                    show_label=False,
                    type="filepath",
                    interactive=False,
                    height=150,
                    buttons=[],
                    elem_classes="network-input",
                    elem_id=f"{task}-network-input",
                )
            if examples:
                gr.Examples(
                    [[str(p)] for p in examples],
                    inputs=[upload],
                    examples_per_page=len(examples),
                    label="Examples (drawn by the project's generator: filled, then hand-drawn); click one",
                    api_name=f"{task}_load_example",
                    elem_id=f"{task}-examples",
                )
            with gr.Accordion("Switch explanations on or off", open=False):
                gr.Markdown("Force an explanation present or absent and watch the ranking and the verdict change.")
                force_present, force_absent = _interventions(app)
                reset = gr.Button("Clear interventions", size="sm")
        with gr.Column(scale=7, min_width=320, elem_classes="results"):
            status = gr.Markdown(app.prompt, elem_classes="verdict", elem_id=f"{task}-status")
            plots = {"show_label": False, "elem_classes": "result-chart"}
            # For a photo the model is not for (a cat on the birds tab): what the ImageNet model sees, and the model's
            # own charts folded away below; otherwise no such chart, and the fold shows no header.
            scope_plot = gr.Plot(label="What the ImageNet model sees", elem_id=f"{task}-scope", **plots)
            threshold, top_n, top_k, show_raw = _controls(app)
            gr.Markdown(CHART_HINT, elem_classes="chart-hint", elem_id=f"{task}-chart-hint")
            guess_toggle = gr.Button(
                webapp.guess_label(),
                visible=False,
                size="md",
                elem_id=f"{task}-guess-toggle",
                elem_classes="guess-toggle",
            )
            with gr.Column(elem_id=f"{task}-guess", elem_classes=["guess-panel"]) as guess_panel:
                class_plot = gr.Plot(label="Main network: top classes", elem_id=f"{task}-classes", **plots)
                explanation_plot = gr.Plot(
                    label="Explanations",
                    show_label=False,
                    elem_id=f"{task}-explanations",
                    elem_classes=["result-chart", "explanations-chart"],
                )
                where_panel, where = _where_panel(task)
                ranking_plot = gr.Plot(label="Classes ranked by the explanations", elem_id=f"{task}-ranking", **plots)
    with gr.Accordion("Result as JSON", open=False):
        result = gr.JSON(label="Result", elem_id=f"{task}-json")
    with gr.Accordion("About this model", open=False):
        gr.Markdown(webapp.about_markdown(model))
    cache = gr.State(None, time_to_live=3600)

    controls = [threshold, top_n, top_k, show_raw]
    # The handlers' NamedTuples define the output order; the component lists are built from their field names.
    components = {
        "result": result,
        "status": status,
        "network_input": network_input,
        "class_plot": class_plot,
        "explanation_plot": explanation_plot,
        "ranking_plot": ranking_plot,
        "cache": cache,
        "force_present": force_present,
        "force_absent": force_absent,
        "where_panel": where_panel,
        "scope_plot": scope_plot,
        "guess_toggle": guess_toggle,
        "guess_panel": guess_panel,
        **where,
    }
    classify_outputs = [components[name] for name in webapp.ClassifyOutputs._fields]
    render_outputs = [components[name] for name in webapp.RenderOutputs._fields]
    where_outputs = [components[name] for name in webapp.WhereOutputs._fields]
    where_choice = where["where_choice"]
    network = {"concurrency_id": "network", "concurrency_limit": NETWORK_CONCURRENCY}
    if sketch is not None:
        sketch_button.click(
            app.classify_sketch,
            [sketch, *controls],
            classify_outputs,
            api_name=f"{task}_sketch",
            preprocess=False,
            **network,
        ).then(None, js=AFTER_RESULT_JS % {"task": task, "upload": ""})
    # preprocess=False everywhere: images reach the handlers as files, never decoded by Gradio (the library's check
    # reads the header first), and the handlers check the controls themselves, in plain words; which files a visitor
    # may send is decided before (ServedBlocks)
    upload.change(
        app.classify_image, [upload, *controls], classify_outputs, api_name=f"{task}_image", preprocess=False, **network
    ).then(None, js=AFTER_RESULT_JS % {"task": task, "upload": EMPTY_REJECTED_UPLOAD_JS % {"task": task}})
    # A slider's ↺ (reset to its default) sends "change" and "release", never "input": listen to "release" too, or the
    # slider snaps back while the verdict keeps the old value.
    sliders = [threshold, top_n, top_k]
    gr.on(
        [
            *(slider.input for slider in sliders),
            *(slider.release for slider in sliders),
            show_raw.input,
            force_present.input,
            force_absent.input,
        ],
        app.rerender,
        [cache, *controls, force_present, force_absent, where_choice],
        render_outputs,
        api_name=f"{task}_explain",
        show_progress="hidden",
        trigger_mode="always_last",
        concurrency_limit=RENDER_CONCURRENCY,
        preprocess=False,
    )
    reset.click(
        app.clear_interventions,
        [cache, *controls, where_choice],
        [*render_outputs, force_present, force_absent],
        api_name=f"{task}_clear_interventions",
        show_progress="hidden",
        concurrency_limit=RENDER_CONCURRENCY,
        preprocess=False,
    )
    guess_toggle.click(
        None,
        js=GUESS_TOGGLE_JS % (task, task),
        api_visibility="private",
    )
    # Choosing an explanation redraws its picture from the cache: from the list, or by clicking its bar
    where_inputs = [cache, where_choice, threshold, top_n, force_present, force_absent]
    redraw = {"show_progress": "hidden", "concurrency_limit": RENDER_CONCURRENCY, "preprocess": False}
    where_choice.input(
        app.show_where, where_inputs, where_outputs, api_name=f"{task}_where", trigger_mode="always_last", **redraw
    )
    where["where_bar"].click(
        app.show_where, where_inputs, where_outputs, js=PICKED_BAR_JS % task, api_visibility="private", **redraw
    )


with ServedBlocks(title="Explainer: does the explanation back the prediction?", delete_cache=CACHE_CLEANUP) as demo:
    gr.Markdown(
        "## Does the explanation back the prediction?\n"
        "A main CNN classifies the image; a mirror CNN reads its hidden activations and predicts human-readable "
        "explanations; the app ranks the classes by those explanations and questions the prediction when they "
        "disagree.",
        elem_id="intro",
    )
    with gr.Tabs():
        for task in TASKS.values():
            with gr.Tab(words(task).title, id=task.name):
                _task_tab(MODELS[task.name], EXAMPLES[task.name])
    demo.load(None, js=KEEP_BRUSH_JS, api_visibility="private")
    demo.load(None, js=UPLOAD_ICON_JS, api_visibility="private")
    demo.load(None, js=BAR_CLICK_JS, api_visibility="private")
demo.queue(default_concurrency_limit=NETWORK_CONCURRENCY, max_size=256)

if __name__ == "__main__":
    try:
        demo.launch(**LAUNCH_OPTIONS)  # returns once Ctrl+C, SIGINT or SIGTERM has closed the server
    finally:
        demo.close()
        remove_app_files()
