"""The served app against a hostile client (issue #18): raw HTTP and gradio_client on every endpoint that takes an
image or a drawing, the request limits, the logs, the strict controls, and stopping the app:
`python -m pytest -q tests/test_security.py`."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import app_images
import webapp
from bundles import REPO_ROOT, free_port, make_birds_bundle, make_shapes_bundle, running_app
from webapp import handlers, server
from webapp.files import UploadLedger

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # gr.Warning outside a request is a Python warning
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
    pytest.mark.usefixtures("one_thread"),
]
IMAGE_ENDPOINTS = ["shapes_image", "birds_image", "shapes_sketch"]
META = {"_type": "gradio.FileData"}


@pytest.fixture(scope="module")
def app() -> tuple[Any, str]:
    return running_app()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-images")


def noise_png(folder: Path, name: str | None = None, side: int = 96) -> Path:
    """A photo-like image no other test uploads (its own content, so its own upload path)."""
    name = name or f"noise-{uuid.uuid4().hex[:8]}.png"
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    path = folder / name
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def as_input(endpoint: str, image: Any) -> list[Any]:
    """The endpoint's first value for ``image``: itself, or a drawing whose composite it is."""
    return [{"background": None, "layers": [], "composite": image}] if endpoint == "shapes_sketch" else [image]


def call(url: str, endpoint: str, data: list[Any], session: str | None = None) -> tuple[str, Any]:
    """A raw HTTP call (POST then GET, no cookies): ("complete", outputs) or ("error", message)."""
    body: dict[str, Any] = {"data": data}
    if session is not None:
        body["session_hash"] = session
    posted = httpx.post(f"{url}gradio_api/call/{endpoint}", json=body, timeout=120)
    if posted.status_code != 200:
        return f"http {posted.status_code}", posted.json().get("detail")
    stream = httpx.get(f"{url}gradio_api/call/{endpoint}/{posted.json()['event_id']}", timeout=120).text
    event = data_line = None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data_line = line.split(":", 1)[1].strip()
    value = json.loads(data_line) if data_line else None
    if event == "error":
        return "error", value.get("error") if isinstance(value, dict) else value
    return str(event), value


def upload(url: str, path: Path) -> str:
    """Upload through Gradio's upload route, as the page and gradio_client do; the path it returned."""
    with path.open("rb") as fh:
        answer = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, fh, "image/png")}, timeout=60)
    answer.raise_for_status()
    return answer.json()[0]


# -- what files a visitor may have opened ----------------------------------------------------------------------------


def server_paths(module: Any, images: Path) -> dict[str, str]:
    """Paths a hostile client names: real files, a folder, nothing at all, and forms that are no server path."""
    photo = noise_png(images, "never-uploaded-photo.png")  # stands for a CUB photo that nobody uploaded
    return {
        "a photo on disk": str(photo),
        "missing": "/nonexistent/file.png",
        "a folder": "/root",
        "a secret": "/etc/shadow",
        "the app": str(REPO_ROOT / "app.py"),
        "the weights": str(REPO_ROOT / "weights" / "shapes.safetensors"),
        "an example's source": str(module.EXAMPLES["shapes"][0]),
        "relative": "app.py",
        "traversal": "../../../../etc/passwd",
        "file URL": f"file://{photo}",
        "web URL": "http://127.0.0.1:1/x.png",
        "data URL as a path": "data:image/png;base64," + "A" * 130_000,
    }


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", IMAGE_ENDPOINTS)
def test_server_paths_are_refused_in_one_sentence_over_raw_http(
    app: tuple[Any, str], images: Path, endpoint: str
) -> None:
    module, url = app
    for name, path in server_paths(module, images).items():
        plain = [] if path.startswith("data:") else [path]  # a plain data: URL string is a data: URL, not a path
        for form in ({"path": path, "meta": META}, {"path": path}, *plain):
            outcome = call(url, endpoint, as_input(endpoint, form))
            assert outcome == ("error", server.NOT_UPLOADED), (name, form if isinstance(form, dict) else "str", outcome)


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", IMAGE_ENDPOINTS)
def test_server_paths_are_refused_through_gradio_client(app: tuple[Any, str], images: Path, endpoint: str) -> None:
    from gradio_client.exceptions import AppError

    module, url = app
    client = Client(url, verbose=False, download_files=False)
    paths = server_paths(module, images)
    for name in ("a photo on disk", "missing", "a folder", "the weights", "relative", "file URL"):
        for form in ({"path": paths[name]}, paths[name]):  # without metadata: the client sends it as it is
            with pytest.raises(AppError) as refused:
                client.predict(*as_input(endpoint, form), api_name=f"/{endpoint}")
            assert str(refused.value) == server.NOT_UPLOADED, (name, str(refused.value))


@pytest.mark.slow
def test_another_sessions_upload_is_refused_and_the_uploader_keeps_it(app: tuple[Any, str], images: Path) -> None:
    _, url = app
    path = upload(url, noise_png(images))
    payload = {"path": path, "meta": META}
    assert call(url, "birds_image", [payload], session="visitor")[0] == "complete"
    assert call(url, "birds_image", [payload], session="stranger") == ("error", server.NOT_UPLOADED)
    assert call(url, "shapes_sketch", as_input("shapes_sketch", payload), session="stranger")[0] == "error"
    assert call(url, "birds_image", [payload], session="visitor")[0] == "complete"  # the uploader may send it again
    twice = noise_png(images)
    first, second = upload(url, twice), upload(url, twice)  # two visitors, the same photo: one path, two tickets
    assert first == second
    for session in ("one", "two"):
        assert call(url, "birds_image", [{"path": first, "meta": META}], session=session)[0] == "complete"
    assert call(url, "birds_image", [{"path": first, "meta": META}], session="three")[0] == "error"


@pytest.mark.slow
def test_examples_and_previews_are_sendable_only_by_the_session_they_were_given_to(app: tuple[Any, str]) -> None:
    _, url = app
    status, outputs = call(url, "shapes_load_example", [3], session="clicker")
    assert status == "complete"
    example = {"path": outputs[0]["value"]["path"], "meta": META}
    assert call(url, "shapes_image", [example], session="clicker")[0] == "complete"
    assert call(url, "shapes_image", [example], session="someone-else") == ("error", server.NOT_UPLOADED)
    status, outputs = call(url, "shapes_image", [example], session="clicker")
    preview = {"path": outputs[2]["path"], "meta": META}
    assert call(url, "shapes_image", [preview], session="clicker")[0] == "complete"
    assert call(url, "shapes_image", [preview], session="someone-else") == ("error", server.NOT_UPLOADED)
    heatmaps = [o["path"] for o in outputs if isinstance(o, dict) and str(o.get("path")).endswith(".jpg")]
    assert heatmaps and all(Path(h).parent == Path(outputs[2]["path"]).parent for h in heatmaps)  # previews' folder
    heatmap = {"path": heatmaps[0], "meta": META}  # a "Where" picture, handed out like the preview
    assert call(url, "shapes_image", [heatmap], session="clicker")[0] == "complete"
    assert call(url, "shapes_image", [heatmap], session="someone-else") == ("error", server.NOT_UPLOADED)


@pytest.mark.slow
@pytest.mark.parametrize("index", [-1, 8, 10**30, True, "1", None, 2.0])
def test_example_indices_are_in_range(app: tuple[Any, str], index: Any) -> None:
    status, message = call(app[1], "shapes_load_example", [index])
    assert status == "error" and message.startswith("There is no example ") and len(message) < 120


def test_the_ledger_gives_one_claim_per_upload_and_forgets_after_an_hour() -> None:
    now = [0.0]
    ledger = UploadLedger(record_seconds=3600, clock=lambda: now[0])
    ledger.uploaded(["/cache/a/photo.png", "/cache/a/photo.png", "relative.png"])
    assert ledger.claim("s1", "/cache/a/photo.png") and ledger.claim("s2", "/cache/a//photo.png")
    assert not ledger.claim("s3", "/cache/a/photo.png")  # two uploads, two sessions
    assert ledger.claim("s1", "/cache/a/./photo.png")  # its own, again
    assert not ledger.claim("s1", "relative.png") and not ledger.claim("s1", "")
    assert not ledger.claim(None, "/cache/a/photo.png")
    ledger.handed_out("s3", ["/cache/b/example.png"])
    assert ledger.claim("s3", "/cache/b/example.png") and not ledger.claim("s1", "/cache/b/example.png")
    ledger.uploaded(["/cache/c/late.png"])
    now[0] = 3601 + 60
    ledger.uploaded([])  # any call prunes
    assert len(ledger) == 0 and not ledger.claim("s1", "/cache/a/photo.png")


# -- data: URLs, request bodies, memory ------------------------------------------------------------------------------


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.mark.slow
def test_data_urls_obey_the_upload_limit_before_decoding(app: tuple[Any, str], images: Path) -> None:
    module, url = app
    small = data_url(app_images.triangle_png(images))
    assert call(url, "shapes_image", [{"path": None, "url": small}])[0] == "complete"
    assert call(url, "shapes_image", [small])[0] == "complete"  # a data: URL as a plain string
    over = "data:image/png;base64," + "A" * (server.data_url_chars(server.MAX_UPLOAD_BYTES) + 4)  # not decodable
    assert len(over) < server.max_body_bytes(server.MAX_UPLOAD_BYTES)  # inside the body limit: the check says no
    assert call(url, "birds_image", [{"path": None, "url": over}]) == (
        "error",
        "The image is larger than the 25 MB upload limit.",
    )
    drawing = {"background": None, "layers": [], "composite": {"path": None, "url": small}}
    assert call(url, "shapes_sketch", [drawing]) == ("error", server.NOT_UPLOADED)  # a drawing holds uploads only


@pytest.mark.slow
def test_a_body_over_the_limit_is_refused_unread(app: tuple[Any, str]) -> None:
    _, url = app
    huge = "data:image/png;base64," + "A" * (66 * 2**20)  # the 66 MB body
    answer = httpx.post(f"{url}gradio_api/call/birds_image", json={"data": [huge]}, timeout=120)
    assert answer.status_code == 413 and "too large" in answer.json()["detail"]
    chunked = httpx.post(  # no Content-Length: counted while read
        f"{url}gradio_api/queue/join", content=iter([b"x" * 2**20] * 40), timeout=120
    )
    assert chunked.status_code == 413


@pytest.mark.slow
def test_no_session_keeps_a_raw_input(app: tuple[Any, str], images: Path) -> None:
    module, url = app
    image = data_url(noise_png(images, side=400))
    assert call(url, "shapes_image", [image, "x" * 100_000], session="keeper")[0] == "complete"
    state = module.demo.app.state_holder.session_data["keeper"]
    fn = next(f for f in module.demo.fns.values() if f.api_name == "shapes_image")
    kept = [state.config_values.get(block._id, {}).get("props", {}).get("value") for block in fn.inputs]
    assert kept == [None] * len(kept)
    assert len(json.dumps(state.config_values, default=str)) < 500_000  # the page's layout, not the inputs


# -- logs --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_requests_log_one_short_line_and_no_traceback(
    app: tuple[Any, str], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    _, url = app
    caplog.set_level(logging.INFO, logger="webapp")
    ten_mb = "x" * (10 * 2**20)
    assert call(url, "shapes_image", [None, ten_mb, 1, 2, 3, 4, 5])[0] == "error"  # too many values
    assert call(url, "shapes_image", [{"path": "data:image/png;base64," + "A" * 130_000, "meta": META}])[0] == "error"
    assert call(url, "shapes_explain", [{"not": "a number"}, ten_mb])[0] == "complete"  # the handler's sentence
    assert call(url, "shapes_sketch", [[ten_mb]])[0] == "error"
    lines = [r.getMessage() for r in caplog.records if r.name == "webapp"]
    assert len(lines) == 3 and all(len(line) < 200 for line in lines), lines
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and len(out + err) < 2000


# -- strict and kind ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_readme_optional_values_are_optional_over_raw_http(app: tuple[Any, str], images: Path) -> None:
    _, url = app
    payload = {"path": upload(url, noise_png(images)), "meta": META}
    status, outputs = call(url, "birds_image", [payload], session="raw")
    assert status == "complete" and outputs[0]["threshold"] == 0.8  # the weights' default
    status, outputs = call(url, "birds_explain", [0.5], session="raw")  # the cache is the session's
    assert status == "complete" and outputs[0]["threshold"] == 0.5
    assert call(url, "birds_clear_interventions", [], session="raw")[0] == "complete"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("values", "phrase"),
    [
        ([True], "must be numbers"),
        ([0.5, True], "must be numbers"),
        ([0.5, 1, False], "must be numbers"),
        ([0.5, 1, 4, "yes"], "Show raw must be true or false, not 'yes'"),
        ([0.5, 1, 4, 1], "Show raw must be true or false, not 1"),
        ([0.5, 1e308], "is out of range (1 to 4)"),
        ([0.5, 1, 1e308, False, [10**400]], "out of range (0 to 4)"),
    ],
)
def test_strict_controls_and_short_echoes(app: tuple[Any, str], images: Path, values: list, phrase: str) -> None:
    _, url = app
    client = Client(url, verbose=False, download_files=False)
    client.predict(handle_file(str(app_images.triangle_png(images))), api_name="/shapes_image")
    padded = [*values, *[None] * (6 - len(values))]
    padded[4], padded[5] = padded[4] or [], padded[5] or []
    message = client.predict(*padded, api_name="/shapes_explain")[0]["error"]
    assert phrase in message and len(message) < 200, message
    assert all(len(word) <= handlers.ECHO_CHARS for word in message.split()), message


def test_booleans_are_not_numbers_and_the_raw_switch_is_a_boolean(images: Path, tmp_path: Path) -> None:
    model = webapp.load_task_model("shapes", str(make_shapes_bundle(tmp_path / "shapes.safetensors")), tmp_path)
    app = webapp.TaskApp(model)
    path = str(app_images.triangle_png(images))
    for controls in ({"threshold": True}, {"top_n": False}, {"top_k": np.True_}):
        assert "must be numbers" in app.classify_image(path, **controls).status
    assert "Show raw must be true or false" in app.classify_image(path, show_raw="no").status  # type: ignore[arg-type]
    assert "error" not in app.classify_image(path, show_raw=np.True_).result  # numpy's boolean is a boolean
    assert "error" not in app.classify_image(path, show_raw=None).result
    long = app.classify_image(path, top_n=1e308).status
    assert "is out of range (1 to 4)" in long and len(long) < 200


@pytest.mark.slow
def test_a_rejected_image_leaves_the_previous_result(app: tuple[Any, str], images: Path) -> None:
    _, url = app
    client = Client(url, verbose=False, download_files=False)
    good = client.predict(handle_file(str(app_images.triangle_png(images))), api_name="/shapes_image")[0]
    bad, status, *_ = client.predict(handle_file(str(app_images.non_image(images))), api_name="/shapes_image")
    assert set(bad) == {"error"} and bad["error"] in status
    moved = client.predict(0.5, 1, 4, False, [], [], api_name="/shapes_explain")[0]
    assert moved["class_probabilities"] == good["class_probabilities"]  # not the upload prompt
    empty = client.predict({"background": None, "layers": [], "composite": None}, api_name="/shapes_sketch")[0]
    assert "canvas is empty" in empty["error"]
    assert client.predict(0.5, 1, 4, False, [], [], api_name="/shapes_explain")[0]["predicted_class"]


def test_served_handlers_leave_the_rest_as_it_was(tmp_path: Path, images: Path) -> None:
    model = webapp.load_task_model("shapes", str(make_shapes_bundle(tmp_path / "shapes.safetensors")), tmp_path)
    out = webapp.TaskApp(model, keep_previous_on_problem=True).classify_image(str(app_images.non_image(images)))
    assert "error" in out.result and out.result["error"] in out.status
    assert all(value == {"__type__": "update"} for value in out[2:])  # gr.skip(): preview, charts, cache, lists


# -- previews and monitoring -------------------------------------------------------------------------------------------


def test_preview_names_cannot_be_worked_out_from_the_content(tmp_path: Path) -> None:
    image = Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3))
    path = Path(handlers.write_preview(image, tmp_path))
    content = path.read_bytes()
    assert hashlib.sha256(content).hexdigest()[:32] not in path.name
    assert path == Path(handlers.write_preview(image, tmp_path))  # the same image, the same file, in this process
    other_key = hashlib.sha256(b"another process" + content).hexdigest()[:32]
    assert other_key not in path.name and len(path.stem.split("-")[1]) == 32


@pytest.mark.slow
def test_monitoring_is_closed(app: tuple[Any, str]) -> None:
    _, url = app
    for page in ("monitoring", "monitoring/summary"):
        assert httpx.get(url + page, timeout=30).status_code == 403


# -- stopping --------------------------------------------------------------------------------------------------------


def wait_for(url: str, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}")
        try:
            if httpx.get(url + "config", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the app did not start")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_stopping_removes_every_file_the_app_wrote(tmp_path: Path, images: Path, stop: signal.Signals) -> None:
    cache, temp = tmp_path / "gradio-cache", tmp_path / "temp"
    cache.mkdir()
    temp.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "EXPLAINER_SHAPES_WEIGHTS": str(make_shapes_bundle(tmp_path / "shapes.safetensors")),
        "EXPLAINER_BIRDS_WEIGHTS": str(make_birds_bundle(tmp_path / "birds.safetensors")),
        "GRADIO_TEMP_DIR": str(cache),
        "TMPDIR": str(temp),  # the examples' folder too
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "app.py")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # started as a background job of a script is: SIGINT ignored, which a child inherits; the app must still stop
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, process)
        client = Client(url, verbose=False, download_files=False)
        answer = client.predict(handle_file(str(noise_png(images))), api_name="/birds_image")
        assert "error" not in answer[0] and Path(answer[2]["path"]).is_relative_to(cache)
        example = client.predict(0, api_name="/shapes_load_example")
        assert Path(example["value"]["path"]).is_relative_to(cache)
        assert any(cache.rglob("*.png")) and any(temp.iterdir())
        process.send_signal(stop)
        output = process.communicate(timeout=180)[0].decode(errors="replace")  # generous: a loaded machine is slow
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode in (0, -stop, 128 + stop), output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    assert list(cache.iterdir()) == [], list(cache.rglob("*"))[:10]
    assert [p.name for p in temp.iterdir() if p.name.startswith("explainer")] == [], list(temp.iterdir())


def test_memory_bench_reports_before_peak_after() -> None:
    """The benchmark's arithmetic, without a server: what it prints is what README quotes."""
    from train import bench_security

    line = bench_security.describe({"before": 100 * 2**20, "peak": 400 * 2**20, "after": 120 * 2**20}, 20, 24 * 2**20)
    assert line.startswith("20 bodies of 24.0 MB") and "before 100 MB" in line and "after 120 MB (+20 MB)" in line
