"""The app's handlers, charts and model loading, called directly (no server):
`python -m pytest -q tests/test_app.py`."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import app_images
import webapp
from bundles import birds_like_metadata, make_birds_bundle, make_shapes_bundle
from explainer.tasks import SHAPES
from explainer.verdict import postprocess
from explainer.verdict.predictor import Explainer
from webapp import charts
from webapp.words import WORDS

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # gr.Warning outside a request is a Python warning
    pytest.mark.usefixtures("one_thread"),
]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    make_shapes_bundle(folder / "shapes.safetensors")
    make_birds_bundle(folder / "birds.safetensors", default_top_n=10)  # 5 classes: the app must cap N at 5
    return folder


@pytest.fixture(scope="module")
def models(weights: Path) -> dict[str, webapp.TaskModel]:
    return webapp.load_models({}, weights)


@pytest.fixture(scope="module")
def shapes(models: dict[str, webapp.TaskModel]) -> webapp.TaskApp:
    return webapp.TaskApp(models["shapes"])


@pytest.fixture(scope="module")
def birds(models: dict[str, webapp.TaskModel]) -> webapp.TaskApp:
    return webapp.TaskApp(models["birds"])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


def plot_json(value: object) -> dict:
    """The figure dict a gr.Plot payload carries; also checks that Plotly accepts it."""
    assert value is not None and getattr(value, "type", None) == "plotly"
    figure = json.loads(value.plot)  # type: ignore[attr-defined]
    charts.to_figure(figure)  # raises on any invalid Plotly property
    return figure


def bar_labels(figure: dict) -> list[str]:
    """Every bar's category label, top row first."""
    return list(figure["layout"]["yaxis"]["categoryarray"])


# ----------------------------------------------------------------------------------------------------------------------
# Weights: where they come from, and what happens without them
# ----------------------------------------------------------------------------------------------------------------------


def test_models_load_from_the_weights_folder(models: dict[str, webapp.TaskModel]) -> None:
    assert models["shapes"].available and models["birds"].available
    assert models["shapes"].source.endswith("shapes.safetensors") and models["shapes"].parameters > 0


def test_missing_weights_give_a_message_not_a_crash(tmp_path: Path) -> None:
    models = webapp.load_models({}, tmp_path)
    for task, model in models.items():
        assert not model.available
        assert WORDS[task].env_var in model.problem and str(tmp_path) not in model.problem  # no server path
        text = webapp.unavailable_markdown(model)
        assert WORDS[task].env_var in text and f"train/train_{task}.py" in text
        with pytest.raises(ValueError, match="not available"):
            webapp.TaskApp(model)


def test_env_var_path_wins_over_the_folder(weights: Path, tmp_path: Path) -> None:
    copy = tmp_path / "my-shapes.safetensors"
    copy.write_bytes((weights / "shapes.safetensors").read_bytes())
    model = webapp.load_task_model("shapes", str(copy), tmp_path)
    assert model.available and model.source == str(copy)
    missing = webapp.load_task_model("shapes", str(tmp_path / "nope.safetensors"), weights)
    assert not missing.available and "EXPLAINER_SHAPES_WEIGHTS" in missing.problem and "no such file" in missing.problem
    assert str(tmp_path) not in missing.problem


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("user/repo/shapes.safetensors", ("user/repo", "shapes.safetensors")),
        ("hf://user/repo/sub/dir/birds.safetensors", ("user/repo", "sub/dir/birds.safetensors")),
        ("/abs/path/x.safetensors", None),
        ("./rel/x/y.safetensors", None),
        ("repo/file.safetensors", None),
        ("C:\\weights\\x.safetensors", None),
    ],
)
def test_parse_hub_id(spec: str, expected: tuple[str, str] | None) -> None:
    assert webapp.parse_hub_id(spec) == expected


def test_hub_id_is_fetched_only_through_the_given_downloader(weights: Path, tmp_path: Path) -> None:
    calls = []

    def fake_download(repo_id: str, filename: str) -> str:
        calls.append((repo_id, filename))
        return str(weights / "birds.safetensors")

    model = webapp.load_task_model("birds", "someone/explainer-weights/birds.safetensors", tmp_path, fake_download)
    assert model.available and calls == [("someone/explainer-weights", "birds.safetensors")]
    no_download = webapp.load_task_model("birds", "someone/explainer-weights/birds.safetensors", tmp_path)
    assert not no_download.available and "Hub" in no_download.problem
    assert webapp.load_task_model("birds", None, weights, fake_download).available and len(calls) == 1


def test_hub_download_offline_is_a_message(tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    os.environ["HF_HUB_OFFLINE"] = "1"
    model = webapp.load_task_model(
        "shapes",
        "nobody-xyz/no-such-repo/shapes.safetensors",
        tmp_path,
        lambda repo, name: hf_hub_download(repo_id=repo, filename=name, cache_dir=str(tmp_path / "hub")),
    )
    assert (
        not model.available
        and "shapes.safetensors in nobody-xyz/no-such-repo, which could not be fetched" in model.problem
    )
    assert "Error" not in model.problem and str(tmp_path) not in model.problem  # no exception class, no path


def test_broken_or_mismatched_weights_are_reported(weights: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((weights / "shapes.safetensors").read_bytes()[:500])
    model = webapp.load_task_model("shapes", str(broken), tmp_path)
    assert not model.available and "cannot be used" in model.problem and "EXPLAINER_SHAPES_WEIGHTS" in model.problem
    assert str(tmp_path) not in model.problem
    swapped = webapp.load_task_model("birds", str(weights / "shapes.safetensors"), tmp_path)
    assert not swapped.available and "'imagenet'" in swapped.problem


def test_about_panel_describes_the_model(models: dict[str, webapp.TaskModel]) -> None:
    text = webapp.about_markdown(models["birds"])
    for phrase in (
        "test_resnet",
        "add join",
        "parameters",
        "main_accuracy",
        "explanations / mean_auroc",
        "What the verdict means",
        "case 1",
        "Untrained development pair",
    ):
        assert phrase in text
    assert "shapes CNN (conv widths" in webapp.about_markdown(models["shapes"])  # the family registry's line


def test_controls_default_from_the_metadata(shapes: webapp.TaskApp, birds: webapp.TaskApp) -> None:
    assert (shapes.default_threshold, shapes.default_top_n) == (0.5, 1)
    assert (birds.default_threshold, birds.default_top_n) == (0.8, 5)  # metadata says 10, there are 5 classes
    assert birds.explanation_choices[0] == "bill shape: dagger"


def test_examples_are_generated_and_classifiable(shapes: webapp.TaskApp, tmp_path: Path) -> None:
    paths = webapp.write_examples(SHAPES, tmp_path)
    assert [p.name for p in paths] == [
        f"{c}-{s}.png" for s in ("filled", "outline") for c in ("circle", "triangle", "square", "rectangle")
    ]
    for path in paths:
        assert Image.open(path).size == (64, 64)
        out = shapes.classify_image(str(path))
        assert out.result is not None and "error" not in out.result, out.status


# ----------------------------------------------------------------------------------------------------------------------
# Classifying
# ----------------------------------------------------------------------------------------------------------------------


def test_classify_image_fills_every_output(shapes: webapp.TaskApp, images: Path) -> None:
    out = shapes.classify_image(str(app_images.triangle_png(images)), 0.5, 1, 3, False)
    assert set(out.result) >= {
        "predicted_class",
        "class_probabilities",
        "explanation_probabilities",
        "kept_explanations",
        "explanation_ranking",
        "questioned",
        "case",
        "preferred_class",
    }
    assert 'class="badge' in out.status and out.result["predicted_class"] in out.status
    assert out.network_input.size == (webapp.PREVIEW_SIZE, webapp.PREVIEW_SIZE)
    assert np.asarray(out.network_input).min() < 64  # the triangle's ink reached the network
    classes = plot_json(out.class_plot)
    assert len(bar_labels(classes)) == 3 and bar_labels(classes)[0] == out.result["predicted_class"]
    plot_json(out.explanation_plot)
    plot_json(out.ranking_plot)
    assert out.cache["class_probs"].shape == (4,) and out.cache["explanation_probs"].shape == (5,)
    assert out.force_present == [] and out.force_absent == []


def test_classify_sketch_uses_the_composite(shapes: webapp.TaskApp, images: Path) -> None:
    square = str(app_images.outline_square_png(images))
    from_sketch = shapes.classify_sketch({"background": None, "layers": [square], "composite": square})
    from_file = shapes.classify_image(square)
    assert from_sketch.result == from_file.result
    assert shapes.classify_sketch(square).result == from_file.result  # a plain path is accepted too


@pytest.mark.parametrize("sketch", [None, {"background": None, "layers": [], "composite": None}, {}])
def test_empty_sketch_asks_for_a_drawing(shapes: webapp.TaskApp, sketch: object) -> None:
    out = shapes.classify_sketch(sketch)
    assert "canvas is empty" in out.status and out.result == {"error": out.result["error"]}
    assert out.cache is None and out.class_plot is None


def test_blank_sketch_says_nothing_to_classify(shapes: webapp.TaskApp, images: Path) -> None:
    blank = str(app_images.blank_png(images))
    out = shapes.classify_sketch({"background": blank, "layers": [], "composite": blank})
    assert "nothing to classify" in out.status.lower() and out.cache is None


def test_sketch_of_the_wrong_type_is_refused(shapes: webapp.TaskApp) -> None:
    out = shapes.classify_sketch(42)  # type: ignore[arg-type]
    assert "dictionary" in out.status


def test_no_upload_clears_the_results(shapes: webapp.TaskApp) -> None:
    out = shapes.classify_image(None)
    assert out.result is None and out.cache is None and out.status == shapes.prompt


def test_gradio_file_payloads_are_accepted(birds: webapp.TaskApp, images: Path) -> None:
    import base64

    path = app_images.bird_like_jpeg(images)
    by_path = birds.classify_image({"path": str(path), "orig_name": "bird.jpg"})
    data_url = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()
    by_url = birds.classify_image({"path": None, "url": data_url})
    assert by_path.result == by_url.result and "error" not in by_path.result


@pytest.mark.parametrize("task", ["shapes", "birds"])
@pytest.mark.parametrize("case", sorted(app_images.BAD_INPUTS))
def test_bad_inputs_get_a_plain_message(
    task: str, case: str, shapes: webapp.TaskApp, birds: webapp.TaskApp, images: Path
) -> None:
    app = shapes if task == "shapes" else birds
    builder, phrase = app_images.BAD_INPUTS[case]
    path = builder(images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = app.classify_image(str(path))
    assert out.result is not None and set(out.result) == {"error"}, out.status
    message = out.result["error"]
    assert phrase in message.lower(), message
    assert "Traceback" not in message and str(path) not in message and str(images) not in message
    assert message in out.status and out.cache is None and out.class_plot is None
    assert any(message in str(w.message) for w in caught)  # the gr.Warning toast


@pytest.mark.parametrize("task", ["shapes", "birds"])
@pytest.mark.parametrize("case", sorted(app_images.GOOD_ODD_INPUTS))
def test_odd_but_valid_images_are_classified(
    task: str, case: str, shapes: webapp.TaskApp, birds: webapp.TaskApp, images: Path
) -> None:
    app = shapes if task == "shapes" else birds
    out = app.classify_image(str(app_images.GOOD_ODD_INPUTS[case](images)))
    assert out.result is not None and "error" not in out.result, out.status
    assert out.cache is not None


def test_transparent_and_16_bit_photos_are_not_washed_out(birds: webapp.TaskApp, images: Path) -> None:
    seen = np.asarray(birds.classify_image(str(app_images.grey16_png(images))).network_input, dtype=np.float64)
    assert 20 < seen.mean() < 200  # mid grey, not clipped to white
    seen = np.asarray(birds.classify_image(str(app_images.rgba_png(images))).network_input, dtype=np.float64)
    assert seen.mean() > 128  # the transparent background became white, not black


def test_exif_orientation_is_applied(birds: webapp.TaskApp, images: Path) -> None:
    seen = np.asarray(birds.classify_image(str(app_images.exif_rotated_jpeg(images))).network_input.convert("L"))
    top, bottom = seen[: seen.shape[0] // 3].mean(), seen[-seen.shape[0] // 3 :].mean()
    assert top < 60 and bottom > 200  # viewed upright the top half is black; stored, the left half was


def test_animated_gif_uses_the_first_frame(shapes: webapp.TaskApp, images: Path) -> None:
    out = shapes.classify_image(str(app_images.animated_gif(images)))
    assert "error" not in out.result and np.asarray(out.network_input).min() < 64


def test_unexpected_errors_are_logged_not_shown(
    shapes: webapp.TaskApp, images: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(shapes._explainer, "where_tensor", explode)  # the networks' one pass
    out = shapes.classify_image(str(app_images.triangle_png(images)))
    assert "Something went wrong" in out.status and "secret" not in out.status
    assert "secret internal detail" in caplog.text


def test_bad_controls_are_reported_before_any_network(shapes: webapp.TaskApp, images: Path) -> None:
    path = str(app_images.triangle_png(images))
    assert "Threshold 1.5 is out of range" in shapes.classify_image(path, threshold=1.5).status
    assert "Top N 9 is out of range (1 to 4)" in shapes.classify_image(path, top_n=9).status
    assert "must be numbers" in shapes.classify_image(path, top_k="many").status  # type: ignore[arg-type]
    assert "must be numbers" in shapes.classify_image(path, top_n=float("inf")).status
    assert "Threshold nan is out of range" in shapes.classify_image(path, threshold=float("nan")).status
    huge = "x" * 1_000_000
    message = shapes.classify_image(path, threshold=huge).status  # type: ignore[arg-type]
    assert "must be numbers" in message and len(message) < 300  # a 1 MB value is echoed cut short
    for wrong in ({"a": 1}, [0.5], object()):
        assert "must be numbers" in shapes.classify_image(path, top_n=wrong).status  # type: ignore[arg-type]


def test_wrong_type_controls_and_unknown_names_on_rerender(shapes: webapp.TaskApp) -> None:
    cache = {
        "task": "shapes",
        "class_probs": np.array([0.1, 0.7, 0.1, 0.1], dtype=np.float32),
        "explanation_probs": np.array([0.1, 0.9, 0.3, 0.2, 0.7], dtype=np.float32),
    }
    unknown = shapes.rerender(cache, 0.5, 1, 4, False, ["y" * 10_000], [])
    assert "is not one of this model's 5 explanations" in unknown.status and len(unknown.status) < 300
    assert "type:" not in unknown.status and "no vertices" not in unknown.status  # no list of every name
    text = shapes.rerender(cache, 0.5, 1, 4, False, "four vertices", [])  # type: ignore[arg-type]
    assert "must be a list of explanation names" in text.status
    numbers = shapes.rerender(cache, {"x": 1}, 1, 4, False)  # type: ignore[arg-type]
    assert "must be numbers" in numbers.status


def test_sketch_payloads_go_through_the_same_check(shapes: webapp.TaskApp, images: Path) -> None:
    """The app passes the sketchpad's value un-decoded (file payloads): bombs, strips and non-images get the same
    words as uploads."""
    for case in ("bomb", "strip", "non-image", "truncated", "blank"):
        builder, phrase = app_images.BAD_INPUTS[case]
        path = str(builder(images))
        payload = {"background": None, "layers": [], "composite": {"path": path, "url": None, "orig_name": "x.png"}}
        sketch = shapes.classify_sketch(payload)
        upload = shapes.classify_image({"path": path})
        assert sketch.result == upload.result and phrase in sketch.result["error"].lower(), sketch.result
    good = {"background": None, "layers": [], "composite": {"path": str(app_images.triangle_png(images))}}
    assert "error" not in shapes.classify_sketch(good).result


def test_previews_are_written_once_and_never_rewritten(shapes: webapp.TaskApp, images: Path, tmp_path: Path) -> None:
    app = webapp.TaskApp(shapes.model, preview_folder=tmp_path / "previews")
    out = app.classify_image(str(app_images.triangle_png(images)))
    first, written = out.network_input, sorted((tmp_path / "previews").iterdir())
    inode = Path(first).stat().st_ino
    second = app.classify_image(str(app_images.triangle_png(images))).network_input
    assert first == second and Path(second).stat().st_ino == inode  # same content, same file, not rewritten
    assert Image.open(first).size == (webapp.PREVIEW_SIZE, webapp.PREVIEW_SIZE)
    assert sorted((tmp_path / "previews").iterdir()) == written  # nothing new: no staging file left either
    assert written == sorted(Path(p) for p in (first, out.where_class))  # the preview and the class heatmap


# ----------------------------------------------------------------------------------------------------------------------
# Re-rendering from the cache, and interventions
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def triangle_cache() -> dict:
    """Network outputs that say "triangle" with triangle-like explanations (three vertices, same size edges)."""
    return {
        "task": "shapes",
        "class_probs": np.array([0.05, 0.8, 0.1, 0.05], dtype=np.float32),
        "explanation_probs": np.array([0.1, 0.9, 0.3, 0.2, 0.7], dtype=np.float32),
    }


def test_rerender_never_runs_a_network(
    shapes: webapp.TaskApp, triangle_cache: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network ran")

    monkeypatch.setattr(shapes._explainer, "infer_tensors", forbidden)
    monkeypatch.setattr(shapes._explainer, "preprocess", forbidden)
    out = shapes.rerender(triangle_cache, 0.5, 1, 4, False)
    assert out.result["predicted_class"] == "triangle" and out.result["case"] is None
    assert "Consistent" in out.status


def test_rerender_matches_the_library(shapes: webapp.TaskApp, triangle_cache: dict) -> None:
    out = shapes.rerender(triangle_cache, 0.8, 2, 4, False)
    expected = shapes._explainer.explain(triangle_cache["class_probs"], triangle_cache["explanation_probs"], 0.8, 2)
    assert {k: v for k, v in out.result.items() if k not in ("overrides", "rank")} == expected.to_json()
    assert out.result["kept_explanations"] == ["three vertices"]


def test_a_request_checks_threshold_and_top_n_once(
    shapes: webapp.TaskApp, triangle_cache: dict, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controls are checked where they enter, the handler, once per request: the explanation, its verdict, the
    kept-range line and the charts take the checked values as they are."""
    calls = {"threshold": 0, "top N": 0}

    def counted(name: str, check: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            calls[name] += 1
            return check(*args)

        return wrapper

    monkeypatch.setattr(postprocess, "check_threshold", counted("threshold", postprocess.check_threshold))
    monkeypatch.setattr(postprocess, "check_top_n", counted("top N", postprocess.check_top_n))
    out = shapes.render(triangle_cache["class_probs"], triangle_cache["explanation_probs"], 0.5, 2, 4)
    assert out.result["kept_explanations"] and calls == {"threshold": 1, "top N": 1}
    calls.update({"threshold": 0, "top N": 0})
    out = shapes.classify_image(str(app_images.triangle_png(images)), 0.5, 2)
    assert "error" not in out.result and calls == {"threshold": 1, "top N": 1}


def test_threshold_moves_what_is_kept(shapes: webapp.TaskApp, triangle_cache: dict) -> None:
    low = shapes.rerender(triangle_cache, 0.25, 1, 5, False)
    high = shapes.rerender(triangle_cache, 0.95, 1, 5, False)
    assert low.result["kept_explanations"] == ["three vertices", "all edges have the same size"]
    assert high.result["kept_explanations"] == [] and high.result["case"] == 1 and "Questioned" in high.status
    assert "no kept explanation supports any class" in high.status and "rank 'triangle'" not in high.status
    assert "Consistent: the explanations rank 'triangle' first of 4" in low.status
    line = plot_json(high.explanation_plot)["layout"]["shapes"][0]
    assert line["x0"] == line["x1"] == 0.95


def test_top_n_and_top_k(shapes: webapp.TaskApp, triangle_cache: dict) -> None:
    two = plot_json(shapes.rerender(triangle_cache, 0.5, 1, 2, False).class_plot)
    assert bar_labels(two) == ["triangle", "square"]
    ranking = plot_json(shapes.rerender(triangle_cache, 0.5, 3, 1, False).ranking_plot)
    assert len(bar_labels(ranking)) >= 3  # at least every class inside the top-3 cut is shown


def test_raw_switch_shows_group_losers(shapes: webapp.TaskApp, triangle_cache: dict) -> None:
    cleaned = bar_labels(plot_json(shapes.rerender(triangle_cache, 0.25, 1, 5, False).explanation_plot))
    raw = plot_json(shapes.rerender(triangle_cache, 0.25, 1, 5, True).explanation_plot)
    assert "four vertices" not in cleaned and "no vertices" not in cleaned  # lost to "three vertices" in the group
    assert "four vertices" in bar_labels(raw)
    amber = [t for t in raw["data"] if t["name"] == "removed by group cleaning"]
    assert amber and amber[0]["y"] == ["four vertices"]  # 0.3 >= 0.25 but not the group's best


def test_intervention_changes_ranking_and_verdict(shapes: webapp.TaskApp, triangle_cache: dict) -> None:
    before = shapes.rerender(triangle_cache, 0.5, 1, 4, False)
    assert before.result["case"] is None
    after = shapes.rerender(triangle_cache, 0.5, 1, 4, False, ["four vertices", "all opposite edges are parallel"], [1])
    assert after.result["overrides"] == {
        "four vertices": True,
        "all opposite edges are parallel": True,
        "three vertices": False,
    }
    assert after.result["questioned"] and after.result["preferred_class"] == "square"
    assert "forced present: four vertices" in after.status and "forced absent: three vertices" in after.status
    forced = [t for t in plot_json(after.explanation_plot)["data"] if t["name"] == "forced by you"]
    assert "three vertices (forced off)" in [label.replace("<br>", " ") for label in forced[0]["y"]]
    cleared = shapes.clear_interventions(triangle_cache, 0.5, 1, 4, False)
    assert cleared[0] == before.result and cleared[-2:] == ([], [])


def test_intervention_in_both_lists_counts_as_absent(shapes: webapp.TaskApp, triangle_cache: dict) -> None:
    out = shapes.rerender(triangle_cache, 0.5, 1, 4, False, [1], ["three vertices"])
    assert out.result["overrides"] == {"three vertices": False} and "treated as absent" in out.status


@pytest.mark.parametrize(
    ("controls", "phrase"),
    [
        ({"threshold": -0.1}, "Threshold -0.1 is out of range"),
        ({"top_n": 0}, "Top N 0 is out of range"),
        ({"top_k": 0}, "Top k 0 is out of range"),
        ({"force_present": ["flying"]}, "'flying' is not one of"),
        ({"force_absent": [7]}, "index 7 is out of range"),
    ],
)
def test_bad_rerender_input_is_a_message(
    shapes: webapp.TaskApp, triangle_cache: dict, controls: dict, phrase: str
) -> None:
    out = shapes.rerender(triangle_cache, **controls)
    assert phrase in out.status and out.class_plot is None and "error" in out.result


def test_rerender_without_a_cache_prompts(shapes: webapp.TaskApp, birds: webapp.TaskApp, triangle_cache: dict) -> None:
    assert shapes.rerender(None).status == shapes.prompt
    assert birds.rerender(triangle_cache).status == birds.prompt  # another tab's cache is never used


def test_birds_size_metadata_renders(tmp_path: Path) -> None:
    """200 classes x 312 explanations (the real birds size): charts stay short, the predicted class is shown."""
    meta = birds_like_metadata(200, 312)
    model = webapp.TaskModel("birds", explainer=Explainer(torch.nn.Identity(), meta), source="memory")
    app = webapp.TaskApp(model)
    rng = np.random.default_rng(0)
    cache = {
        "task": "birds",
        "class_probs": rng.dirichlet(np.ones(200)).astype(np.float32),
        "explanation_probs": rng.random(312).astype(np.float32),
    }
    out = app.rerender(cache, 0.8, 10, 5, False)
    assert app.top_k_max == webapp.TOP_K_MAX and len(app.explanation_choices) == 312
    assert len(bar_labels(plot_json(out.class_plot))) == 5
    assert len(bar_labels(plot_json(out.explanation_plot))) <= 5
    ranking = bar_labels(plot_json(out.ranking_plot))
    assert any(label.endswith("◀") for label in ranking) and len(ranking) <= 11


# ----------------------------------------------------------------------------------------------------------------------
# Where the networks look
# ----------------------------------------------------------------------------------------------------------------------


def pixels(picture: object) -> np.ndarray:
    """A "Where" picture (an image, or a file when the app writes files) as an array."""
    assert picture is not None and not isinstance(picture, dict), picture
    return np.asarray(Image.open(picture) if isinstance(picture, (str, Path)) else picture, dtype=np.int16)


def cached_bytes(value: object) -> int:
    """The memory a cached value holds (arrays, bytes, and the containers around them)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, dict):
        return sum(cached_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(cached_bytes(v) for v in value)
    return 8


@pytest.fixture(scope="module")
def bird_photo(birds: webapp.TaskApp, images: Path) -> webapp.ClassifyOutputs:
    """The tiny birds pair on a photo, threshold 0.3: both groups keep an explanation."""
    out = birds.classify_image(str(app_images.bird_like_jpeg(images)), 0.3)
    assert len(out.where_choice["choices"]) >= 2, out.where_choice
    return out


def test_where_panel_for_a_birds_photo(birds: webapp.TaskApp, bird_photo: webapp.ClassifyOutputs) -> None:
    out = bird_photo
    kept = out.result["kept_explanations"]
    assert out.where_choice == {"__type__": "update", "choices": kept, "value": kept[0], "visible": True}
    assert out.where_panel["open"] is True and out.where_panel["label"] == "Where the networks look"
    left, right = pixels(out.where_explanation), pixels(out.where_class)
    assert left.shape == right.shape == (288, 384, 3)  # the 320 x 240 photo at the panel's 384 px, both sides
    assert np.abs(left - right).mean() > 1  # two different maps
    assert f"**Where '{kept[0]}' looks**" in out.where_explanation_caption
    assert "ring marks the peak" in out.where_explanation_caption and "7 × 7 grid" in out.where_explanation_caption
    assert f"**Where '{out.result['predicted_class']}' is seen**" in out.where_class_caption


def test_where_panel_for_a_shapes_drawing(shapes: webapp.TaskApp, images: Path) -> None:
    """The tiny shapes pair reads each explanation on a 1 x 1 grid: its map cannot say where, and the panel says so
    instead of ringing a corner; the class map (5 x 5) is drawn over the drawing."""
    out = shapes.classify_sketch(str(app_images.outline_square_png(images)), 0.0)
    first = out.result["kept_explanations"][0]
    assert out.where_choice["value"] == first and out.where_choice["choices"] == out.result["kept_explanations"]
    assert out.where_explanation is None and "same everywhere (read on a 1 × 1 grid)" in out.where_explanation_caption
    assert f"Where '{first}' looks" in out.where_explanation_caption
    drawing = pixels(out.where_class)
    assert drawing.shape == (384, 384, 3)  # the 512 px drawing, scaled to the panel's size
    assert "5 × 5 grid" in out.where_class_caption and out.result["predicted_class"] in out.where_class_caption


def test_choosing_another_explanation_changes_the_picture(
    birds: webapp.TaskApp, bird_photo: webapp.ClassifyOutputs
) -> None:
    cache, kept = bird_photo.cache, bird_photo.result["kept_explanations"]
    second = birds.show_where(cache, kept[1], 0.3)
    assert second.where_choice["value"] == kept[1] and second.where_choice["choices"] == kept
    assert np.abs(pixels(second.where_explanation) - pixels(bird_photo.where_explanation)).mean() > 1
    assert f"Where '{kept[1]}' looks" in second.where_explanation_caption
    again = birds.show_where(cache, kept[0], 0.3)
    assert np.array_equal(pixels(again.where_explanation), pixels(bird_photo.where_explanation))
    assert birds.show_where(cache, None, 0.3).where_choice["value"] == kept[0]  # no choice: the first kept
    dropped = next(name for name in birds.explanation_choices if name not in kept)
    below = birds.show_where(cache, dropped, 0.3)  # a bar below the threshold was clicked: shown, and said so
    assert below.where_choice["choices"] == [*kept, dropped] and "(not kept" in below.where_explanation_caption
    unknown = birds.show_where(cache, "z" * 500, 0.3)
    assert "is not one of this model's 12 explanations" in unknown.where_explanation_caption
    assert unknown.where_explanation is None and len(unknown.where_explanation_caption) < 200
    assert birds.show_where(None, kept[0]).where_explanation_caption == birds.prompt


def test_nothing_kept_says_so_instead_of_an_empty_map(
    birds: webapp.TaskApp, bird_photo: webapp.ClassifyOutputs
) -> None:
    out = birds.rerender(bird_photo.cache, 1.0, None, None, False, None, None, bird_photo.where_choice["value"])
    assert out.result["kept_explanations"] == [] and out.where_explanation is None
    assert out.where_choice == {"__type__": "update", "choices": [], "value": None, "visible": False}
    assert out.where_explanation_caption.startswith("**No explanation is kept** at threshold 1.00")
    assert birds.show_where(bird_photo.cache, None, 1.0).where_explanation is None


def test_slider_moves_and_choices_never_run_a_network(
    birds: webapp.TaskApp, bird_photo: webapp.ClassifyOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network ran")

    explainer = birds._explainer
    for name in ("where_tensor", "infer_tensors", "preprocess", "framed_preprocess", "read_scope"):
        monkeypatch.setattr(explainer, name, forbidden)
    for name in ("forward", "forward_maps"):
        monkeypatch.setattr(explainer.pair, name, forbidden)
    cache, kept = bird_photo.cache, bird_photo.result["kept_explanations"]
    for threshold in (0.2, 0.3, 0.45, 0.6):
        out = birds.rerender(cache, threshold, 3, 5, False, None, None, kept[0])
        assert "error" not in out.result, out.status
    # the chosen explanation stays kept: its picture is left as it is; the list still follows the kept ones
    same = birds.rerender(cache, 0.3, 3, 5, False, None, None, kept[1])
    assert same.where_explanation == same.where_explanation_caption == {"__type__": "update"}
    assert same.where_choice["value"] == kept[1] and same.where_choice["choices"] == kept
    # switched off, it is no longer kept: the first kept one is drawn
    off = birds.rerender(cache, 0.3, 3, 5, False, None, [kept[1]], kept[1])
    assert off.where_choice["value"] == kept[0] and pixels(off.where_explanation).shape == (288, 384, 3)
    assert "error" not in birds.clear_interventions(cache, 0.3, 3, 5, False, kept[0])[0]
    typed = birds.rerender(cache, 0.3, 3, 5, False, None, None, "whatever a visitor typed into the list")
    assert "error" not in typed.result and typed.where_choice["value"] == kept[0]
    assert pixels(birds.show_where(cache, kept[1], 0.3).where_explanation).shape == (288, 384, 3)


def test_the_cache_keeps_small_maps_and_a_thumbnail_not_the_image(birds: webapp.TaskApp, images: Path) -> None:
    """A 12-megapixel photo: the session keeps a JPEG thumbnail and float16 maps, a few KB, not the photo's 36 MB."""
    rng = np.random.default_rng(5)
    path = images / "large.jpg"
    Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).resize((4000, 3000)).save(path)
    out = birds.classify_image(str(path), 0.3)
    where = out.cache["where"]
    assert where["explanation_maps"].dtype == np.float16 and where["class_map"].shape == (7, 7)
    assert Image.open(io.BytesIO(where["picture"])).size == (384, 288)
    assert cached_bytes(out.cache) < 300_000, cached_bytes(out.cache)


def test_where_pictures_are_written_like_the_preview(shapes: webapp.TaskApp, images: Path, tmp_path: Path) -> None:
    """Served, the pictures are files in the previews' folder under keyed names (the guard hands them to the session
    and the cleanup removes them); choosing the same explanation again gives the same file, not a new one."""
    birds = webapp.TaskApp(
        webapp.load_task_model("birds", str(make_birds_bundle(tmp_path / "b.safetensors")), tmp_path),
        preview_folder=tmp_path / "previews",
    )
    out = birds.classify_image(str(app_images.bird_like_jpeg(images)), 0.3)
    for picture in (out.where_explanation, out.where_class):
        assert Path(picture).parent == tmp_path / "previews" and Path(picture).name.startswith("preview-")
        assert Path(picture).suffix == ".jpg" and len(Path(picture).stem.split("-")[1]) == 32
    first = out.result["kept_explanations"][0]
    assert birds.show_where(out.cache, first, 0.3).where_explanation == out.where_explanation


# ----------------------------------------------------------------------------------------------------------------------
# Charts
# ----------------------------------------------------------------------------------------------------------------------


def test_class_chart_orders_and_highlights() -> None:
    figure = charts.class_chart(["a", "b", "c"], np.array([0.2, 0.5, 0.3]), 2)
    bar = figure["data"][0]
    assert bar["y"] == ["b", "c"] and bar["marker"]["color"][0] == charts.ACCENT and bar["text"] == ["50.0%", "30.0%"]
    assert figure["config"]["displayModeBar"] is False and figure["layout"]["xaxis"]["fixedrange"] is True
    with pytest.raises(ValueError, match="top k 4 is out of range"):
        charts.class_chart(["a", "b", "c"], np.array([0.2, 0.5, 0.3]), 4)


def test_ranking_chart_cut_tie_and_appended_prediction() -> None:
    names = ["a", "b", "c", "d", "e"]
    tie = charts.ranking_chart(names, np.array([1.0, 1.0, 0.5, 0.2, 0.0]), 1, 1, 3)
    assert bar_labels(tie)[:2] == ["=1. b ◀", "=1. a"]  # a tie at the cut is inside, prediction first
    assert tie["layout"]["shapes"][0]["y0"] == 1.5
    far = charts.ranking_chart(names, np.array([0.9, 0.8, 0.7, 0.6, 0.1]), 4, 2, 2)
    assert bar_labels(far) == ["1. a", "2. b", "5. e ◀"]
    main = [t for t in far["data"] if t["name"] == "main prediction"][0]
    assert main["marker"]["color"] == charts.ACCENT and far["layout"]["shapes"][0]["y0"] == 1.5
    weighted = charts.ranking_chart(names, np.array([3.0, 2.0, 1.0, 0.5, 0.0]), 0, 1, 5, normalized=False)
    # weighted scores have no unit a person knows: shown as a share of the best class, raw score in the hover
    assert weighted["data"][0]["text"][0] == "100.0%" and weighted["layout"]["xaxis"]["tickformat"] == ".0%"
    texts = [t for trace in weighted["data"] if trace.get("type") == "bar" for t in trace["text"]]
    assert texts == ["100.0%", "66.7%", "33.3%", "16.7%", "0.0%"]
    assert "of the best (score 2)" in weighted["data"][1]["hovertext"][0] and "% of the best" in str(weighted["layout"])


def test_explanation_chart_keeps_forced_rows_and_unique_labels() -> None:
    figure = charts.explanation_chart(
        ["x", "x", "y", "z"],
        np.array([0.9, 0.8, 0.1, 0.0]),
        np.array([0.9, 0.8, 0.0, 0.0]),
        0.5,
        1,
        None,
        overrides={3: False},
    )
    labels = bar_labels(figure)
    assert labels == ["x", "z (forced off)"]
    assert [t.get("customdata") for t in figure["data"] if t["type"] == "bar"] == [["x"], ["z"]]  # names for clicks
    raw = charts.explanation_chart(
        ["x", "x", "y", "z"], np.array([0.9, 0.8, 0.1, 0.0]), np.array([0.9, 0.8, 0.0, 0.0]), 0.5, 4, None, raw=True
    )
    assert bar_labels(raw)[:2] == ["x", "x (2)"]
    assert charts.short_label("a" * 40).endswith("…") and len(charts.short_label("a" * 40)) == charts.MAX_LABEL_CHARS
    long = "all opposite edges are parallel"
    wrapped = charts.wrap_label(long)
    assert wrapped.replace("<br>", " ") == long
    assert all(len(line) <= charts.WRAP_CHARS for line in wrapped.split("<br>"))
    assert charts.wrap_label("x" * 50, 20) == "x" * 20 + "<br>" + "x" * 20 + "<br>" + "x" * 10  # split, never cut


def test_values_sit_right_of_the_plot_clear_of_the_dashed_lines() -> None:
    """The threshold line is drawn inside the plot (x <= 1 of the axis range); every value is an annotation anchored
    at the plot's right edge, in the margin kept for it, so the line never crosses a value."""
    names = ["no vertices", "three vertices", "four vertices", "all opposite edges are parallel", "same size"]
    figure = charts.explanation_chart(
        names, np.array([0.1, 0.52, 0.3, 0.49, 0.7]), np.array([0, 0.52, 0, 0, 0.7]), 0.5, 5, raw=True
    )
    values = [a for a in figure["layout"]["annotations"] if a.get("xref") == "paper" and a.get("x") == 1]
    assert [a["text"] for a in values] == ["70.0%", "52.0%", "49.0%", "30.0%", "10.0%"]
    assert all(a["xanchor"] == "left" and a["xshift"] > 0 for a in values)
    assert figure["layout"]["margin"]["r"] >= 50 and figure["layout"]["xaxis"]["range"] == [0, 1]
    assert all(trace.get("textposition") in (None, "none") for trace in figure["data"])
    assert any("parallel" in label for label in bar_labels(figure))  # the full name, wrapped
    one_line = charts.explanation_chart(["a"], np.array([0.9]), np.array([0.9]), 0.5, 1)
    assert figure["layout"]["height"] > one_line["layout"]["height"]


# ----------------------------------------------------------------------------------------------------------------------
# The app as a person meets it (issue 21): wording, the kept count, honest ties, marks, the ImageNet view, bad files
# ----------------------------------------------------------------------------------------------------------------------


def test_the_verdict_never_calls_another_class_preferred_beside_consistent(shapes: webapp.TaskApp) -> None:
    """Each case in one sentence: where the explanations rank the class and, only when questioned, which class they
    rank first; ties are called ties."""
    explain = shapes._explainer.explain
    triangle = np.array([0.05, 0.8, 0.1, 0.05])
    # three vertices + same size kept: triangle 1.0, square 1/3 -> consistent, first
    assert explain(triangle, np.array([0.1, 0.9, 0.3, 0.2, 0.7]), 0.5, 1).sentence() == (
        "Consistent: the explanations rank 'triangle' first of 4."
    )
    # four vertices + parallel + same size kept: square 1.0, rectangle 1.0, triangle 0.5 -> 3rd, inside the top 3
    third = explain(triangle, np.array([0.1, 0.2, 0.9, 0.8, 0.7]), 0.5, 3).sentence()
    assert third == "Consistent: the explanations rank 'triangle' 3rd of 4, inside the top 3 they allow."
    questioned = explain(triangle, np.array([0.1, 0.2, 0.9, 0.8, 0.7]), 0.5, 1).sentence()
    assert questioned == (
        "Questioned: the explanations rank 'triangle' 3rd of 4, outside the first place they allow; they rank "
        "'square' first, tied with 'rectangle' (case 3)."
    )
    square = np.array([0.05, 0.05, 0.8, 0.1])  # square (3 of 3) and rectangle (2 of 2) tie at 1.0
    tie = explain(square, np.array([0.1, 0.2, 0.9, 0.8, 0.7]), 0.5, 1).sentence()
    assert (
        tie == "Consistent, with a tie: the explanations rank 'square' first of 4, together with 'rectangle' (case 2)."
    )
    circle = np.array([0.8, 0.1, 0.05, 0.05])
    assert explain(circle, np.array([0.1, 0.9, 0.3, 0.2, 0.7]), 0.5, 1).sentence() == (
        "Questioned: no kept explanation supports 'circle' (case 1); the explanations rank 'triangle' first."
    )


def test_the_status_says_how_many_explanations_are_kept_and_over_which_thresholds(
    shapes: webapp.TaskApp, triangle_cache: dict
) -> None:
    out = shapes.rerender(triangle_cache, 0.5, 1, 5, False)
    assert "**Explanations kept:** 2 of 5 at threshold 0.50" in out.status
    # 0.3 loses its group, so the strongest below is 0.2; the weakest kept is 0.7 in float32, just under 0.70
    assert "any threshold from 0.21 to 0.69 keeps the same 2." in out.status
    assert "explanations prefer" not in out.status and "**Main network:** triangle (80.0%)" in out.status
    none = shapes.rerender(triangle_cache, 0.95, 1, 5, False)
    assert "0 of 5 at threshold 0.95" in none.status and "any threshold from 0.90 to 1.00 keeps none." in none.status
    title = plot_json(out.explanation_plot)["layout"]["title"]["text"]
    assert title == "<b>Explanations: 2 of 5 kept</b>"


def test_the_explanation_chart_keeps_a_third_of_its_rows_for_the_strongest_below_the_threshold() -> None:
    probs = np.linspace(0.95, 0.05, 10)
    kept = np.where(probs >= 0.3, probs, 0.0)  # 7 kept
    figure = charts.explanation_chart([f"e{i}" for i in range(10)], probs, kept, 0.3, 6)
    greyed = [t for t in figure["data"] if t.get("name") == "below threshold"]
    assert bar_labels(figure) == ["e0", "e1", "e2", "e3", "e7", "e8"] and greyed[0]["y"] == ["e7", "e8"]
    assert figure["layout"]["title"]["text"] == "<b>Explanations: 7 of 10 kept, 4 shown</b>"
    everything = charts.explanation_chart([f"e{i}" for i in range(10)], probs, kept, 0.3, 10)
    assert len(bar_labels(everything)) == 10 and "shown" not in everything["layout"]["title"]["text"]


def test_the_ranking_chart_marks_ties_and_gives_no_rank_without_support() -> None:
    names = ["circle", "triangle", "square", "rectangle"]
    nothing = charts.ranking_chart(names, np.zeros(4), 1, 1, 4)
    assert bar_labels(nothing) == ["– triangle ◀", "– circle", "– square", "– rectangle"]
    assert nothing["layout"]["shapes"] == [] and "none is supported" in nothing["layout"]["title"]["text"]
    assert {t["name"] for t in nothing["data"]} == {"main prediction", "no support"}
    tie = charts.ranking_chart(names, np.array([0.0, 0.5, 1.0, 1.0]), 2, 1, 4)
    assert bar_labels(tie) == ["=1. square ◀", "=1. rectangle", "3. triangle", "– circle"]
    assert "first place" in {t["name"] for t in tie["data"]} and "= tied" in tie["layout"]["xaxis"]["title"]["text"]
    assert tie["layout"]["shapes"][0]["y0"] == 1.5  # the cut under the two tied first


def test_the_predictions_mark_stays_on_its_names_line() -> None:
    figure = charts.ranking_chart(["Anna's Hummingbird", "x"], np.array([0.5, 0.9]), 0, 1, 2)
    assert bar_labels(figure)[1] == "2. Anna's Hummingbird ◀"  # 23 characters: a little past the width, one line
    assert charts._with_mark("three vertices", "(forced off)") == "three vertices<br>(forced off)"
    assert charts._with_mark("x" * 22, "◀") == "x" * 22 + " ◀"


def test_the_imagenet_chart_shows_the_bird_share_against_the_share_needed() -> None:
    figure = charts.scope_chart([("Egyptian cat", 0.6, False), ("goldfinch", 0.002, True)], 59, 0.003, 0.08)
    assert bar_labels(figure) == ["Egyptian cat", "goldfinch", "all 59 bird classes<br>together"]
    line = figure["layout"]["shapes"][0]
    assert line["x0"] == line["x1"] == 0.08 and line["y0"] == pytest.approx(1.55) and line["y1"] == pytest.approx(2.45)
    assert "needed: 8%" in [t["name"] for t in figure["data"]]
    charts.to_figure(figure)
    with pytest.raises(ValueError, match="no classes"):
        charts.scope_chart([], 59, 0.0, 0.08)


def test_served_an_emptied_upload_box_leaves_the_message_and_the_result(
    models: dict[str, webapp.TaskModel], images: Path
) -> None:
    """Served: after a file that cannot be used the page empties the upload box; the box's empty value (like its ×)
    changes nothing, so the message and the last result stay. Tests and scripts (not served) clear as before."""
    served = webapp.TaskApp(models["birds"], keep_previous_on_problem=True)
    bad = served.classify_image(str(app_images.truncated_png(images)))
    assert "Cannot use this file" in bad.status and bad.cache == {"__type__": "update"}
    assert all(value == {"__type__": "update"} for value in served.classify_image(None))
    assert webapp.TaskApp(models["birds"]).classify_image(None).status == served.prompt
    good = served.classify_image(str(app_images.bird_like_jpeg(images)))
    assert good.scope_plot is None and good.guess_toggle["visible"] is False
    assert good.guess_panel["elem_classes"] == ["guess-panel"]
