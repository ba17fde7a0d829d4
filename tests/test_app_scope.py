"""The birds tab's scope verdict, model card and species list, through the handlers and through gradio_client, on tiny
fixture bundles whose scope network gives a fixed answer (no network access, nothing from /work/shared)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scope_fixtures import GOLDFINCH, HORSE, add_scope

import webapp
from bundles import free_port, import_app, make_birds_bundle, make_shapes_bundle
from explainer.tasks import BIRDS
from webapp.words import words

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # gr.Warning outside a request is a Python warning
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
    pytest.mark.usefixtures("one_thread"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scope-app")
    plain = make_birds_bundle(folder / "old.safetensors")
    add_scope(plain, HORSE, threshold=0.1, output=folder / "horse.safetensors")
    add_scope(plain, GOLDFINCH, threshold=0.1, output=folder / "goldfinch.safetensors")
    make_shapes_bundle(folder / "shapes.safetensors")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(folder / "photo.png")
    return folder


def tab(folder: Path, name: str, task: str = "birds") -> webapp.TaskApp:
    return webapp.TaskApp(webapp.load_task_model(task, str(folder / f"{name}.safetensors"), folder))


def test_a_photo_that_is_no_bird_is_questioned_in_plain_words(folder: Path) -> None:
    app = tab(folder, "horse")
    out = app.classify_image(str(folder / "photo.png"))
    assert out.result["in_scope"] is False and out.result["questioned"] is True
    assert out.result["looks_like"] == "sorrel" and 0 <= out.result["scope_score"] < 0.1
    assert "Questioned · not a bird" in out.status
    assert "Questioned: this does not look like a bird: the ImageNet model sees a sorrel" in out.status
    assert "below the 10% needed" in out.status and "case None" not in out.status
    assert out.status.count("does not look like a bird") == 1  # said once, not twice
    assert out.cache["scope"]["score"] == pytest.approx(out.result["scope_score"])
    # moving a slider re-renders from the cache: the scope verdict stays, no network runs
    moved = app.rerender(out.cache, 0.3, 2, 5, False)
    assert moved.result["in_scope"] is False and moved.result["threshold"] == 0.3
    assert "does not look like a bird" in moved.status
    forced = app.rerender(out.cache, 0.3, 2, 5, False, [0], [])  # an intervention cannot make a horse a bird
    assert forced.result["in_scope"] is False and forced.result["questioned"] is True
    # the "Where" panel is folded: a bird model's heatmaps over a horse are not shown unasked
    assert out.where_panel == {
        "__type__": "update",
        "open": False,
        "label": "Where the networks look (folded: this is not a bird)",
    }
    assert out.where_class is not None  # there, one click away


def test_a_photo_that_is_no_bird_shows_what_imagenet_sees_and_folds_the_bird_charts(folder: Path) -> None:
    """What the ImageNet model sees is the answer (a chart of its classes and the bird share against the share
    needed); the bird model's guess is folded away behind a button and kept out of the status."""
    out = tab(folder, "horse").classify_image(str(folder / "photo.png"))
    figure = json.loads(out.scope_plot.plot)
    labels = figure["layout"]["yaxis"]["categoryarray"]
    assert labels[0] == "sorrel" and labels[-1].replace("<br>", " ") == "all 59 bird classes together"
    assert figure["layout"]["shapes"][0]["x0"] == 0.1  # the share needed
    assert out.guess_toggle == {"__type__": "update", "visible": True, "value": "Show the bird model's guess anyway"}
    assert out.guess_panel["elem_classes"] == ["guess-panel", "guess-folded"]
    assert "**Main network:**" not in out.status and "Explanations kept" not in out.status
    assert "Show the bird model's guess anyway" in out.status and out.class_plot is not None  # one click away
    gated = tab(folder, "goldfinch").classify_image(str(folder / "photo.png"))
    assert gated.scope_plot is None and gated.guess_toggle["visible"] is False and "goldfinch" not in gated.status


def test_a_bird_keeps_the_pairs_verdict_and_says_what_imagenet_sees(folder: Path) -> None:
    gated, old = tab(folder, "goldfinch"), tab(folder, "old")
    out = gated.classify_image(str(folder / "photo.png"))
    plain = old.classify_image(str(folder / "photo.png"))
    assert out.result["in_scope"] is True and out.result["scope_score"] > 0.99
    assert out.result["questioned"] == plain.result["questioned"]  # same pair, same verdict
    assert "**Is it a bird?** Yes: the ImageNet model puts 100.0% on its bird classes" in out.status
    assert plain.result["in_scope"] is True and plain.result["scope_score"] == 1.0
    assert "Not checked: this weights file has no scope network" in plain.status
    assert out.where_panel["open"] is True and plain.where_panel["open"] is True
    assert np.array_equal(np.asarray(out.where_class), np.asarray(plain.where_class))  # the gate adds no map


def test_shapes_say_whether_the_drawing_is_one_of_the_four(folder: Path) -> None:
    import app_images

    app = tab(folder, "shapes", "shapes")
    out = app.classify_image(str(app_images.triangle_png(folder)))
    assert out.result["scope_method"] == "explanations" and 0.0 <= out.result["scope_score"] <= 1.0
    assert "**One of the classes this model knows?**" in out.status
    assert ("Yes" in out.status) == out.result["in_scope"]


def test_the_ranking_is_shown_as_a_share_of_the_best_class(folder: Path) -> None:
    out = tab(folder, "horse").classify_image(str(folder / "photo.png"))
    figure = json.loads(out.ranking_plot.plot)
    texts = [t for trace in figure["data"] if trace.get("type") == "bar" for t in trace["text"]]
    assert texts[0] == "100.0%" or max(out.result["explanation_ranking"], key=lambda r: r[1])[1] == 0
    assert all(t.endswith("%") for t in texts) and "% of the best class" in figure["layout"]["xaxis"]["title"]["text"]


def test_the_model_is_named_from_its_metadata() -> None:
    meta = {
        "class_names": [f"species {i}" for i in range(200)],
        "architecture": {"model_name": "tf_efficientnet_lite0"},
        "metrics": {"accuracy": 0.81234, "top5_accuracy": 0.951, "test_images": 5794},
        "scope": {},
    }
    note = words(BIRDS).model_note("ignored", meta)
    assert "**200 bird species**" in note and "EfficientNet-Lite0" in note and "`tf_efficientnet_lite0`" in note
    assert "top-1 **81.2%** (top-5 95.1%) on 5,794 held-out CUB photos" in note
    assert "checks that the photo shows a bird" in note
    # the gate is named from its own description: a Lite2 pair may carry a Lite0 gate
    lite2 = words(BIRDS).model_note(
        "",
        {
            **meta,
            "architecture": {"model_name": "tf_efficientnet_lite2"},
            "scope": {"architecture": {"model_name": "tf_efficientnet_lite0"}},
        },
    )
    assert "backbone EfficientNet-Lite2" in lite2 and "an ImageNet classifier (EfficientNet-Lite0), checks" in lite2
    bare = words(BIRDS).model_note("", {**meta, "metrics": {}, "scope": None})
    assert "no measured accuracy recorded" in bare and "no bird check" in bare


def test_the_species_list_names_every_class_once() -> None:
    names = [f"Species <{i}>" for i in range(13)]
    table = webapp.class_list_markdown(names, columns=4)
    assert all(f"{i + 1}. Species &lt;{i}&gt;" in table for i in range(13))
    assert table.count("<tr>") == 4 and "<script" not in table


# -- through the server ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(folder: Path) -> Any:
    module = import_app(
        {
            "EXPLAINER_SHAPES_WEIGHTS": str(folder / "shapes.safetensors"),
            "EXPLAINER_BIRDS_WEIGHTS": str(folder / "horse.safetensors"),
        },
        "app_scope",
    )
    port = free_port()
    module.demo.launch(
        **module.LAUNCH_OPTIONS, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    yield f"http://127.0.0.1:{port}/"
    module.demo.close()


@pytest.mark.slow
def test_the_api_and_page_carry_the_scope(server: str, folder: Path) -> None:
    import urllib.request

    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=False)
    result, status, *_ = client.predict(handle_file(str(folder / "photo.png")), api_name="/birds_image")
    assert result["in_scope"] is False and result["looks_like"] == "sorrel" and result["questioned"] is True
    assert "does not look like a bird" in status
    moved, moved_status, *_ = client.predict(0.5, 1, 3, False, [], [], api_name="/birds_explain")
    assert moved["in_scope"] is False and "does not look like a bird" in moved_status
    with urllib.request.urlopen(server + "config", timeout=30) as response:  # the page's layout, as the browser gets it
        page = response.read().decode()
    assert "The 5 species this model knows" in page and "Bird species 005" in page
    assert "**5 bird species**" in page and "checks that the photo shows a bird" in page
