"""What the served app takes from a visitor before any handler runs, and what it keeps afterwards.

The handlers (:mod:`webapp.handlers`) trust the paths they are given: tests and scripts call them with their own
files. A visitor is a stranger, so :class:`ServedBlocks` (the app's ``gr.Blocks``) checks every request first:

- an image or a drawing names a file this session uploaded or was handed by the app (:mod:`webapp.files`), or is a
  ``data:`` URL no larger than the upload limit (measured on its text, before decoding); anything else is refused
  with one sentence that never says whether the path exists;
- the number of values: missing trailing ones are filled with the handlers' defaults (the README calls them
  optional), extra ones are refused; an example index is one of the examples;
- a refusal reaches the client as its own sentence (``gr.Error``) and the log as one short line, with no value the
  client sent and no traceback: the client's mistake is not the server's error;
- after the event, the session's copy of the inputs is dropped (Gradio keeps the last values for links to a page's
  state, which this app does not offer), so no session holds a large upload's text;
- :class:`RequestGuard` refuses a request body larger than the largest allowed ``data:`` URL before it is read, and
  records what the upload route wrote.

It relies on ``gr.Blocks.process_api`` and ``preprocess_data`` (Gradio is pinned; ``tests/test_security.py`` drives
every rule through HTTP, so an upgrade that moves them fails there).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from typing import Any, Iterator, NoReturn

import gradio as gr
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webapp.files import UploadLedger
from webapp.handlers import echo

LOG = logging.getLogger("webapp")

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # one image, uploaded or sent as a data: URL
BODY_SLACK_BYTES = 64 * 1024  # the rest of a request around its largest data: URL
UPLOAD_ROUTE = "/gradio_api/upload"
MAX_UPLOAD_ANSWER_BYTES = 1024 * 1024  # the upload route's answer is a list of paths; a larger one is not read

NOT_UPLOADED = (
    "Only an image uploaded in this session can be used: upload the file, then send the path the upload returned."
)
NOT_A_DRAWING = (
    "A drawing is the sketchpad's value: a dictionary with 'background', 'layers' and 'composite' images, each an "
    "uploaded file."
)
UNREADABLE = "These values cannot be used by this action; the API page lists what it takes."


def data_url_chars(max_bytes: int) -> int:
    """The length of the base64 text that decodes to ``max_bytes``: the longest data: URL payload allowed."""
    return 4 * -(-max_bytes // 3)


def max_body_bytes(max_upload_bytes: int) -> int:
    """The largest request body accepted outside the upload route: one largest data: URL and some room around it."""
    return data_url_chars(max_upload_bytes) + BODY_SLACK_BYTES


def _megabytes(size: int) -> str:
    return f"{size / 2**20:g} MB"


def file_paths(value: Any) -> Iterator[str]:
    """Every file path in an event's output (file payloads are dictionaries with a "path")."""
    if isinstance(value, Mapping):
        path = value.get("path")
        if isinstance(path, str):
            yield path
        for item in value.values():
            if isinstance(item, (Mapping, list, tuple)):
                yield from file_paths(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from file_paths(item)


class RequestGuard:
    """ASGI middleware: refuses a POST body over ``max_body`` bytes (outside the upload route, which Gradio limits
    to the upload size itself) before the app reads it, and records the paths the upload route answers with."""

    def __init__(self, app: ASGIApp, ledger: UploadLedger, max_body: int) -> None:
        self.app = app
        self.ledger = ledger
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
        elif scope.get("path", "").rstrip("/").endswith(UPLOAD_ROUTE):
            await self.app(scope, receive, self._recording(send))
        else:
            await self._limited(scope, receive, send)

    def _recording(self, send: Send) -> Send:
        """``send``, reading the upload route's answer on the way: a JSON list of the paths it wrote."""
        answer: dict[str, Any] = {"ok": False, "body": bytearray()}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["ok"] = message["status"] == 200
            elif message["type"] == "http.response.body" and answer["ok"]:
                answer["body"] += message.get("body", b"")
                if len(answer["body"]) > MAX_UPLOAD_ANSWER_BYTES:
                    answer["ok"] = False
                elif not message.get("more_body", False):
                    self._record(bytes(answer["body"]))
            await send(message)

        return recording_send

    def _record(self, body: bytes) -> None:
        try:
            paths = json.loads(body)
        except ValueError:
            return
        if isinstance(paths, list):
            self.ledger.uploaded(p for p in paths if isinstance(p, str))

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body:
                await self._too_large(scope, send)
            else:
                await self.app(scope, receive, send)
            return
        # no length given (a chunked body): read it here, up to the limit, then hand it on whole
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        LOG.warning("refused a request to %s: its body is over %d bytes", scope.get("path", "?")[:80], self.max_body)
        text = f"The request is too large: an image may be at most {_megabytes(self.max_body - BODY_SLACK_BYTES)}"
        body = json.dumps({"detail": f"{text} of data: URL text; upload larger files instead."}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


_PROCESS_API = inspect.signature(gr.Blocks.process_api)


class ServedBlocks(gr.Blocks):
    """The app's ``gr.Blocks``: every event's inputs are admitted (see the module) before Gradio touches them."""

    def __init__(self, *args: Any, max_upload_bytes: int = MAX_UPLOAD_BYTES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_upload_bytes = max_upload_bytes
        self.ledger = UploadLedger()

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        """Gradio's launch with the upload limit, the request guard, and no public monitoring page (its summary
        tells anyone the app's traffic and timings; the server log is the operator's view)."""
        kwargs["max_file_size"] = self.max_upload_bytes
        kwargs["enable_monitoring"] = False
        app_kwargs = dict(kwargs.get("app_kwargs") or {})
        guard = Middleware(RequestGuard, ledger=self.ledger, max_body=max_body_bytes(self.max_upload_bytes))
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), guard]
        kwargs["app_kwargs"] = app_kwargs
        return super().launch(*args, **kwargs)

    async def process_api(self, block_fn: Any, inputs: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        call = _PROCESS_API.bind(self, block_fn, inputs, *args, **kwargs)
        fn = self.fns[block_fn] if isinstance(block_fn, int) else block_fn
        session = call.arguments.get("session_hash")
        if call.arguments.get("iterator") is None and not fn.batch and isinstance(inputs, list):
            call.arguments["inputs"] = self._admit(fn, inputs, session)
        output = await super().process_api(*call.args[1:], **call.kwargs)
        self._forget_inputs(fn, call.arguments.get("state"))
        self.ledger.handed_out(session, file_paths(output.get("data")))
        return output

    async def preprocess_data(self, block_fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().preprocess_data(block_fn, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as err:  # a value of the wrong shape for its component: the client's mistake
            _refuse(block_fn, f"a value could not be read ({type(err).__name__})", UNREADABLE)

    # -- admission ---------------------------------------------------------------------------------------------------

    def _admit(self, fn: Any, inputs: list[Any], session: str | None) -> list[Any]:
        """The event's inputs, checked, one per input component; refuses (raises gr.Error) what may not pass."""
        blocks = list(fn.inputs)
        if len(inputs) > len(blocks):
            _refuse(fn, "too many values", f"This action takes {len(blocks)} values; {len(inputs)} were sent.")
        if len(inputs) < len(blocks):  # an API caller leaves out session state and may leave out trailing values
            given = iter(inputs)
            inputs = [None if getattr(b, "skip_api", False) else next(given, None) for b in blocks]
        admitted = list(inputs)
        for i, block in enumerate(blocks):
            if isinstance(block, gr.ImageEditor):
                admitted[i] = self._admit_drawing(fn, inputs[i], session)
            elif isinstance(block, gr.Image):
                admitted[i] = self._admit_image(fn, inputs[i], session)
            elif isinstance(block, gr.Dataset):
                self._check_example(fn, block, inputs[i])
        return admitted

    def _admit_image(self, fn: Any, value: Any, session: str | None, data_url: bool = True) -> Any:
        """An uploaded path as a file payload, a data: URL within the limit (where ``data_url``), or nothing; other
        types pass on to the handler, which says what it wanted."""
        if isinstance(value, str):
            value = {"path": None, "url": value} if value.startswith("data:") else {"path": value or None}
        if not isinstance(value, Mapping):
            return value
        path, url = value.get("path"), value.get("url")
        if path is None and url is None:
            return None
        if isinstance(path, str) and path:
            if not self.ledger.claim(session, path):
                _refuse(fn, "an image that this session did not upload", NOT_UPLOADED)
            return {"path": path, "meta": {"_type": "gradio.FileData"}}
        if data_url and isinstance(url, str) and url.startswith("data:"):
            text = url.partition(",")[2]
            if len(text) > data_url_chars(self.max_upload_bytes):
                _refuse(
                    fn,
                    "a data: URL over the upload limit",
                    f"The image is larger than the {_megabytes(self.max_upload_bytes)} upload limit.",
                )
            return {"path": None, "url": url}
        _refuse(fn, "an image that is neither an upload nor an allowed data: URL", NOT_UPLOADED)

    def _admit_drawing(self, fn: Any, value: Any, session: str | None) -> Any:
        """The sketchpad's value, every image in it an upload of this session (Gradio's drawing payload holds files
        only)."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            _refuse(fn, "a drawing that is not the sketchpad's value", NOT_A_DRAWING)
        layers = value.get("layers")
        layers = [
            self._admit_image(fn, x, session, data_url=False) for x in (layers if isinstance(layers, list) else [])
        ]
        return {
            "background": self._admit_image(fn, value.get("background"), session, data_url=False),
            "layers": [layer for layer in layers if layer is not None],
            "composite": self._admit_image(fn, value.get("composite"), session, data_url=False),
        }

    @staticmethod
    def _check_example(fn: Any, dataset: gr.Dataset, index: Any) -> None:
        count = len(dataset.raw_samples)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            _refuse(fn, "an example index out of range", f"There is no example {echo(index)}: pick 0 to {count - 1}.")

    @staticmethod
    def _forget_inputs(fn: Any, state: Any) -> None:
        """Drop the session's copy of this event's input values (see the module)."""
        values = getattr(state, "config_values", None)
        if not isinstance(values, dict):
            return
        for block in fn.inputs:
            props = (values.get(block._id) or {}).get("props")
            if not block.stateful and isinstance(props, dict) and "value" in props:
                props["value"] = None


def _endpoint(fn: Any) -> str:
    name = getattr(fn, "api_name", None)
    return f"/{name}" if name else f"event {getattr(fn, '_id', '?')}"


def _refuse(fn: Any, reason: str, message: str) -> NoReturn:
    """Log one short line (what was refused, never what was sent) and answer the client with ``message``."""
    LOG.warning("refused a request to %s: %s", _endpoint(fn), reason)
    raise gr.Error(message, print_exception=False)
