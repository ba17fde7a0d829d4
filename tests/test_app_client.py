"""The app launched in-process and driven through gradio_client, as an API user would:
`python -m pytest -q tests/test_app_client.py`."""

from __future__ import annotations

import io
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file
from PIL import Image

import app_images
from bundles import import_app, running_app
from webapp.process import resident_bytes

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),  # pandas 3 deprecations inside Gradio's queue
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.slow,
]
ENDPOINTS = {
    "/shapes_sketch",
    "/shapes_image",
    "/shapes_explain",
    "/shapes_clear_interventions",
    "/shapes_where",
    "/birds_image",
    "/birds_explain",
    "/birds_clear_interventions",
    "/birds_where",
}


@pytest.fixture(scope="module")
def server() -> tuple[Any, str]:
    return running_app()


@pytest.fixture(scope="module")
def client(server: tuple[Any, str]) -> Client:
    return Client(server[1], verbose=False, download_files=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-images")


def test_every_action_has_an_api_name(client: Client) -> None:
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert ENDPOINTS <= named


def test_upload_then_sliders_then_intervention(client: Client, images: Path) -> None:
    result, status, *_ = client.predict(handle_file(str(app_images.triangle_png(images))), api_name="/shapes_image")
    assert result["predicted_class"] in result["class_probabilities"] and result["threshold"] == 0.5
    assert result["predicted_class"] in status
    moved = client.predict(0.95, 2, 3, True, [], [], api_name="/shapes_explain")[0]  # same session: cached outputs
    assert moved["class_probabilities"] == result["class_probabilities"]  # no network rerun, same probabilities
    assert moved["threshold"] == 0.95 and moved["top_n"] == 2
    forced = client.predict(
        0.5, 1, 4, False, ["four vertices"], ["no vertices", "three vertices"], api_name="/shapes_explain"
    )[0]
    assert forced["overrides"] == {"four vertices": True, "no vertices": False, "three vertices": False}
    assert forced["explanation_probabilities"]["four vertices"] == 1.0
    cleared = client.predict(0.5, 1, 4, False, api_name="/shapes_clear_interventions")
    assert cleared[0]["overrides"] == {} and list(cleared[-2:]) == [[], []]


def test_sketch_dictionary(client: Client, images: Path) -> None:
    square = handle_file(str(app_images.outline_square_png(images)))
    result, status, *_ = client.predict(
        {"background": None, "layers": [], "composite": square}, api_name="/shapes_sketch"
    )
    assert "error" not in result and "badge" in status
    empty = client.predict({"background": None, "layers": [], "composite": None}, api_name="/shapes_sketch")
    assert "canvas is empty" in empty[0]["error"]


def test_birds_photo(client: Client, images: Path) -> None:
    result, status, *_ = client.predict(
        handle_file(str(app_images.bird_like_jpeg(images))), 0.5, 3, 5, False, api_name="/birds_image"
    )
    assert result["top_n"] == 3 and len(result["class_probabilities"]) == 5
    assert client.predict(0.5, 1, 5, False, ["bill shape: hooked"], [], api_name="/birds_explain")[0]["overrides"] == {
        "bill shape: hooked": True
    }


def test_where_panel_through_the_api(client: Client, images: Path) -> None:
    """An upload answers with both pictures and their captions; /birds_where draws another explanation from the
    session's cache; a slider move that keeps nothing says so."""
    import httpx

    answer = client.predict(handle_file(str(app_images.bird_like_jpeg(images))), 0.3, api_name="/birds_image")
    result, (choice, left, left_caption, right, right_caption) = answer[0], answer[-5:]
    kept = result["kept_explanations"]
    assert len(kept) >= 2 and choice["value"] == kept[0] and [c[0] for c in choice["choices"]] == kept
    assert (
        f"Where '{kept[0]}' looks" in left_caption and f"Where '{result['predicted_class']}' is seen" in right_caption
    )
    for picture in (left, right):
        assert picture["path"].endswith(".jpg")
        assert Image.open(io.BytesIO(httpx.get(picture["url"], timeout=60).content)).size == (384, 288)
    chosen, picture, caption = client.predict(kept[1], 0.3, api_name="/birds_where")
    assert chosen["value"] == kept[1] and picture["path"] not in (left["path"], right["path"])
    assert f"Where '{kept[1]}' looks" in caption
    moved = client.predict(1.0, 1, 5, False, [], [], kept[1], api_name="/birds_explain")
    assert moved[-2] is None and moved[-1].startswith("**No explanation is kept**")
    unknown = client.predict("not a bird part", 0.3, api_name="/birds_where")[-1]
    assert "is not one of this model's" in unknown and len(unknown) < 200


@pytest.mark.parametrize("case", sorted(app_images.BAD_INPUTS))
def test_bad_files_through_the_api(client: Client, images: Path, case: str) -> None:
    builder, phrase = app_images.BAD_INPUTS[case]
    result, status, *_ = client.predict(handle_file(str(builder(images))), api_name="/shapes_image")
    assert set(result) == {"error"} and phrase in result["error"].lower() and result["error"] in status


def test_out_of_range_controls(client: Client, images: Path) -> None:
    result = client.predict(handle_file(str(app_images.triangle_png(images))), 1.5, api_name="/shapes_image")[0]
    assert "Threshold 1.5 is out of range" in result["error"]
    ok = client.predict(handle_file(str(app_images.triangle_png(images))), api_name="/shapes_image")[0]
    assert "predicted_class" in ok  # and the server keeps serving
    moved = client.predict(1.5, 1, 4, False, [], [], api_name="/shapes_explain")[0]  # the handler's words, not
    assert "Threshold 1.5 is out of range (0 to 1)" in moved["error"]  # Gradio's generic error


def test_wrong_types_and_unknown_names_get_a_short_sentence(client: Client, images: Path) -> None:
    client.predict(handle_file(str(app_images.triangle_png(images))), api_name="/shapes_image")
    words = client.predict("high", {"n": 1}, 4, False, [], [], api_name="/shapes_explain")[0]["error"]
    assert "must be numbers" in words and len(words) < 200
    unknown = client.predict(0.5, 1, 4, False, ["z" * 1_000_000], [], api_name="/shapes_explain")[0]["error"]
    assert "is not one of this model's 5 explanations" in unknown and len(unknown) < 200 and "type:" not in unknown
    bird = Client(client.src, verbose=False, download_files=False)
    bird.predict(handle_file(str(app_images.bird_like_jpeg(images))), api_name="/birds_image")
    many = bird.predict(0.5, 1, 4, False, ["not a bird part"], [], api_name="/birds_explain")[0]["error"]
    assert "is not one of this model's" in many and len(many) < 200  # not the list of every name


@pytest.mark.parametrize("case", ["bomb", "strip", "non-image", "truncated"])
def test_sketchpad_gets_the_upload_words(client: Client, images: Path, case: str) -> None:
    builder, phrase = app_images.BAD_INPUTS[case]
    sketch = {"background": None, "layers": [], "composite": handle_file(str(builder(images)))}
    result, status, *_ = client.predict(sketch, api_name="/shapes_sketch")
    assert set(result) == {"error"} and phrase in result["error"].lower() and result["error"] in status


def test_a_crowd_on_one_image_and_one_example_all_succeed(server: tuple[Any, str], images: Path) -> None:
    """20 visitors upload the same file at the same moment, then 20 click the same example; every answer and
    every preview download must arrive whole (the full 100 + 100 figure is in train/bench_soak.py)."""
    import threading

    import httpx

    url, count = server[1], 20
    triangle = str(app_images.triangle_png(images))
    visitors = [Client(url, verbose=False, download_files=False) for _ in range(count)]
    example_fn = next(
        i for i, d in enumerate(visitors[0].config["dependencies"]) if d.get("api_name") == "shapes_load_example"
    )
    gate = threading.Barrier(count)

    def fetch(answer: Any) -> None:
        response = httpx.get(answer[2]["url"], timeout=60)
        response.raise_for_status()
        Image.open(io.BytesIO(response.content)).load()  # the whole preview arrived

    def upload(visitor: Client) -> Any:
        gate.wait(timeout=60)
        answer = visitor.predict(handle_file(triangle), api_name="/shapes_image")
        fetch(answer)
        return answer[0]

    def click(visitor: Client) -> Any:
        gate.wait(timeout=60)
        value = visitor.predict(0, fn_index=example_fn)["value"]
        sent = {key: value.get(key) for key in ("path", "url", "orig_name", "size", "mime_type")}
        answer = visitor.predict(sent, api_name="/shapes_image")
        fetch(answer)
        return answer[0]

    for action in (upload, click):
        with ThreadPoolExecutor(count) as pool:
            outcomes = list(pool.map(lambda v: _outcome(action, v), visitors))  # noqa: B023
        failed = [o for o in outcomes if not (isinstance(o, dict) and "predicted_class" in o)]
        assert not failed, f"{action.__name__}: {len(failed)} of {count} failed, e.g. {failed[0]!r}"[:500]


def _outcome(action: Any, visitor: Client) -> Any:
    try:
        return action(visitor)
    except Exception as err:  # counted as a failure by the caller
        return err


def test_fifty_concurrent_requests_succeed_with_bounded_memory(server: tuple[Any, str], images: Path) -> None:
    files = [app_images.triangle_png(images), app_images.outline_square_png(images), app_images.greyscale_png(images)]
    client = Client(server[1], verbose=False, download_files=False, max_workers=50)
    client.predict(handle_file(str(files[0])), api_name="/shapes_image")  # warm up
    before = resident_bytes()
    assert before > 0, "resident memory unreadable (/proc)"
    jobs = [client.submit(handle_file(str(files[i % len(files)])), api_name="/shapes_image") for i in range(50)]
    results = [job.result(timeout=240)[0] for job in jobs]
    assert all("predicted_class" in r for r in results), [r for r in results if "predicted_class" not in r][:2]
    grown = resident_bytes() - before
    assert grown < 300 * 2**20, f"memory grew by {grown / 2**20:.0f} MiB over 50 requests"


def test_housekeeping_cache_cleaning_and_examples_folder(server: tuple[Any, str]) -> None:
    module = server[0]
    assert module.demo.delete_cache == module.CACHE_CLEANUP and module.CACHE_CLEANUP[1] <= 24 * 3600
    assert module.NETWORK_CONCURRENCY == 2  # what the README says: two network runs at a time
    folder = Path(tempfile.mkdtemp(prefix="explainer-examples-test-"))
    (folder / "circle.png").write_bytes(b"x")
    saved = module.EXAMPLES
    module.EXAMPLES = {"shapes": [folder / "circle.png"], "birds": []}
    try:
        module.remove_examples()
    finally:
        module.EXAMPLES = saved
    assert not folder.exists()


def test_app_without_weights_starts_and_says_how_to_get_them(tmp_path: Path) -> None:
    module = import_app(
        {
            "EXPLAINER_SHAPES_WEIGHTS": str(tmp_path / "none.safetensors"),
            "EXPLAINER_BIRDS_WEIGHTS": "nobody-xyz/nothing/birds.safetensors",
        },
        "app_without_weights",
    )
    assert not module.MODELS["shapes"].available and not module.MODELS["birds"].available
    config = json.dumps(module.demo.get_config_file())
    assert "No shapes model is installed" in config and "No birds model is installed" in config
    assert "EXPLAINER_BIRDS_WEIGHTS" in config and "train/train_birds.py" in config
