"""Soak the web app with the nastiest allowed input and a crowd, and print the server's resident memory.

    .venv/bin/python train/bench_soak.py [--crowd 100] [--clicks 100] [--nasty-repeats 3] [--mixed 60]
                                         [--max-seconds 900] [--app app.py]

Starts ``python app.py`` as a child process on 127.0.0.1 (a free port; nothing leaves the machine) with the weights
in ``weights/`` (or ``EXPLAINER_SHAPES_WEIGHTS`` / ``EXPLAINER_BIRDS_WEIGHTS`` if set), then, through
``gradio_client`` (one client per simulated visitor, files downloaded as a browser would):

1. warm-up: one shape and one bird photo (memory after it is the idle reference);
2. nasty images, each ``--nasty-repeats`` times to every image endpoint (``/shapes_image``, ``/birds_image``,
   ``/shapes_sketch``), two at a time: a 28000x1400 RGBA strip (the longest allowed, 20:1), a 40000x8 strip, the
   largest allowed RGBA image (7300x5470, 40 megapixels), a 13000x13000 RGBA canvas (169 megapixels), header-only
   bombs of 20000x20000 and 100000x100000 pixels, a non-image and a truncated file;
3. a crowd: ``--crowd`` visitors upload the same triangle to ``/shapes_image`` at the same moment;
4. clicks: ``--clicks`` visitors click the same example at the same moment (the example endpoint, then the upload
   event the click triggers, with the file the server handed back);
5. mixed traffic: ``--mixed`` requests of every kind (shapes, birds, sketches, slider moves, bad files), eight at a
   time.

The server's resident memory (VmRSS of the app process, sampled every 50 ms) is printed at start, after the
warm-up (idle), at its peak during each phase and after the soak (after 10 s of quiet). Targets: peak <= idle +
500 MB, after <= idle + 150 MB, and no failure in the crowd or the clicks. A failure is an exception in the client
(connection closed, unreadable file...) or, for a good image, an answer with an "error". Bounded: every phase has a
deadline inside ``--max-seconds`` and the server is stopped at the end whatever happens. Asserts nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw

from webapp.process import PeakSampler, free_port, resident_bytes, start_app

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20


# -- images -----------------------------------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """An RGBA PNG declaring width x height whose data is a few compressed zero bytes: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 6, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def drawn(width: int, height: int, mode: str = "RGBA") -> Image.Image:
    """A white (opaque) canvas with a black triangle across its middle: a valid, non-blank image of any size."""
    image = Image.new(mode, (width, height), (255, 255, 255, 255) if mode == "RGBA" else "white")
    draw = ImageDraw.Draw(image)
    w, h = width, height
    draw.polygon([(w * 0.2, h * 0.8), (w * 0.5, h * 0.2), (w * 0.8, h * 0.8)], fill="black")
    return image


def make_images(folder: Path) -> dict[str, Path]:
    """The files the soak sends, written once (the large ones compress to a few hundred KB)."""
    files: dict[str, Path] = {}

    def keep(name: str, image: Image.Image | bytes) -> None:
        path = folder / name
        if isinstance(image, bytes):
            path.write_bytes(image)
        else:
            image.save(path, optimize=False, compress_level=9)
        files[name.rsplit(".", 1)[0]] = path

    keep("triangle.png", drawn(256, 256, "L"))
    square = Image.new("L", (300, 300), "white")
    ImageDraw.Draw(square).rectangle((60, 60, 240, 240), outline="black", width=8)
    keep("square.png", square)
    rng = np.random.default_rng(0)
    photo = (rng.random((400, 600, 3)) * 60 + np.linspace(60, 190, 600)[None, :, None]).astype(np.uint8)
    keep("photo.jpg", Image.fromarray(photo))
    keep("strip_20to1_rgba.png", drawn(28000, 1400))
    keep("strip_40000x8.png", drawn(40000, 8, "L"))
    keep("largest_rgba.png", drawn(7300, 5470))
    keep("canvas_13000_rgba.png", drawn(13000, 13000))
    keep("bomb_20000.png", png_header_only(20000, 20000))
    keep("bomb_100000.png", png_header_only(100000, 100000))
    keep("not_an_image.png", b"this is text, not an image\n" * 10)
    buffer = io.BytesIO()
    drawn(300, 300, "L").save(buffer, format="PNG")
    keep("truncated.png", buffer.getvalue()[:200])
    return files


# -- the server -------------------------------------------------------------------------------------------------------


# -- requests ---------------------------------------------------------------------------------------------------------


def client(url: str, download: bool = True) -> Any:
    """One visitor. ``download``: output files (the preview) are fetched, as a browser does."""
    from gradio_client import Client

    return Client(url, verbose=False, download_files=download)


def fetch_preview(answer: Any) -> None:
    """GET the preview image an answer points to and decode it, as the browser does; raises if it is cut short."""
    import httpx

    preview = answer[2] if isinstance(answer, (list, tuple)) and len(answer) > 2 else None
    link = preview.get("url") if isinstance(preview, dict) else None
    if not link:
        return
    response = httpx.get(link, timeout=60)
    response.raise_for_status()
    Image.open(io.BytesIO(response.content)).load()


def is_error(answer: Any) -> str | None:
    """The error text of an answer, or None for a good one."""
    result = answer[0] if isinstance(answer, (list, tuple)) and answer else answer
    if isinstance(result, dict) and "error" in result:
        return str(result["error"])
    return None


def run_many(jobs: list[Callable[[], Any]], workers: int, deadline: float, barrier: bool = False) -> list[Any]:
    """Run the jobs on a thread pool; each result is the answer or the exception. With ``barrier`` they all wait
    for each other before sending, so that the requests arrive together."""
    gate = threading.Barrier(len(jobs)) if barrier else None

    def wrapped(job: Callable[[], Any]) -> Any:
        try:
            if gate is not None:
                gate.wait(timeout=max(1.0, deadline - time.monotonic()))
            return job()
        except Exception as err:  # a failure is counted, never raised
            return err

    with futures.ThreadPoolExecutor(workers) as pool:
        pending = [pool.submit(wrapped, job) for job in jobs]
        out = []
        for item in pending:
            try:
                out.append(item.result(timeout=max(1.0, deadline - time.monotonic())))
            except futures.TimeoutError as err:
                out.append(err)
        return out


def describe(outcome: Any) -> str:
    if isinstance(outcome, Exception):
        return f"{type(outcome).__name__}: {str(outcome).splitlines()[0][:100] if str(outcome) else ''}"
    return is_error(outcome) or "ok"


NASTY = (
    "strip_20to1_rgba",
    "strip_40000x8",
    "largest_rgba",
    "canvas_13000_rgba",
    "bomb_20000",
    "bomb_100000",
    "not_an_image",
    "truncated",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, default=ROOT / "app.py")
    parser.add_argument("--crowd", type=int, default=100)
    parser.add_argument("--clicks", type=int, default=100)
    parser.add_argument("--nasty-repeats", type=int, default=3)
    parser.add_argument("--mixed", type=int, default=60)
    parser.add_argument("--max-seconds", type=float, default=900)
    return parser.parse_args()


class Soak:
    """The server's memory through the soak: each phase's peak and failures, and the rows printed at the end."""

    def __init__(self, pid: int, began: float, max_seconds: float) -> None:
        self.pid, self.began, self.max_seconds = pid, began, max_seconds
        self.sampler = PeakSampler(pid)
        self.rows: list[tuple[str, str]] = []
        self.failures: dict[str, int] = {}
        self.peaks: list[int] = []
        self.start_rss = self.idle = 0

    def deadline(self, share: float) -> float:
        """``share`` of ``--max-seconds`` from now, never past the soak's own end."""
        return min(self.began + self.max_seconds, time.monotonic() + share * self.max_seconds)

    def phase(
        self,
        name: str,
        jobs: list[Callable[[], Any]],
        workers: int,
        share: float,
        expect_ok: bool,
        barrier: bool = False,
    ) -> None:
        """Run one phase's requests, record its memory peak and failures, and print its rows."""
        self.sampler.reset()
        t0 = time.monotonic()
        outcomes = run_many(jobs, workers, self.deadline(share), barrier)
        seconds = time.monotonic() - t0
        kinds: dict[str, int] = {}
        for outcome in outcomes:
            kinds[describe(outcome)[:90]] = kinds.get(describe(outcome)[:90], 0) + 1
        bad = sum(isinstance(o, Exception) or (expect_ok and is_error(o) is not None) for o in outcomes)
        self.failures[name] = bad
        peak = self.sampler.peak()
        self.peaks.append(peak)
        self.rows.append(
            (
                f"{name}: peak",
                f"{peak / MB:8.0f} MB  (+{(peak - self.idle) / MB:.0f} over "
                f"idle) in {seconds:.1f} s; {len(outcomes) - bad}/{len(outcomes)} as "
                f"expected",
            )
        )
        for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1])[:6]:
            self.rows.append(("", f"  {count:4d} x {kind}"))
        for label, value in self.rows[-1 - min(6, len(kinds)) :]:
            print(f"{label:<36}  {value}", flush=True)


def warm_up(soak: Soak, url: str, files: dict[str, Path]) -> None:
    """Memory before any request, then after one shape and one bird photo, twice: the idle reference."""
    from gradio_client import handle_file

    time.sleep(2)
    soak.start_rss = resident_bytes(soak.pid)
    warm = client(url)
    for _ in range(2):
        warm.predict(handle_file(str(files["triangle"])), api_name="/shapes_image")
        warm.predict(handle_file(str(files["photo"])), api_name="/birds_image")
    time.sleep(3)
    soak.idle = resident_bytes(soak.pid)
    soak.rows.append(("start (before any request)", f"{soak.start_rss / MB:8.0f} MB"))
    soak.rows.append(("idle (after warm-up)", f"{soak.idle / MB:8.0f} MB"))


def nasty_jobs(visitor: Any, files: dict[str, Path], repeats: int) -> list[Callable[[], Any]]:
    """Every nasty file ``repeats`` times to each image endpoint."""
    from gradio_client import handle_file

    jobs: list[Callable[[], Any]] = []
    for _ in range(repeats):
        for name in NASTY:
            path = str(files[name])
            jobs.append(lambda p=path: visitor.predict(handle_file(p), api_name="/shapes_image"))
            jobs.append(lambda p=path: visitor.predict(handle_file(p), api_name="/birds_image"))
            jobs.append(
                lambda p=path: visitor.predict(
                    {"background": None, "layers": [], "composite": handle_file(p)}, api_name="/shapes_sketch"
                )
            )
    return jobs


def crowd_phase(soak: Soak, url: str, triangle: str, crowd: int) -> list[Any]:
    """``crowd`` visitors upload the same triangle at the same moment; returns the visitors (the mixed traffic's)."""
    from gradio_client import handle_file

    made = run_many([lambda: client(url) for _ in range(crowd)], 16, soak.deadline(0.1))
    visitors = [c for c in made if not isinstance(c, Exception)]
    soak.phase(
        f"crowd: {len(visitors)} identical uploads",
        [lambda c=c: c.predict(handle_file(triangle), api_name="/shapes_image") for c in visitors],
        workers=max(1, len(visitors)),
        share=0.15,
        expect_ok=True,
        barrier=True,
    )
    return visitors


def click_phase(soak: Soak, url: str, visitor: Any, clicks: int) -> None:
    """``clicks`` visitors click the same example at the same moment."""
    made = run_many([lambda: client(url, download=False) for _ in range(clicks)], 16, soak.deadline(0.1))
    click_clients = [c for c in made if not isinstance(c, Exception)]
    example_fn = next(
        i for i, d in enumerate(visitor.config["dependencies"]) if d.get("api_name") == "shapes_load_example"
    )

    def click(c: Any) -> Any:
        """As the browser does: the example endpoint hands back the cached example file, which is then sent, as
        the server's own file (not uploaded again), to the upload event; then the preview is fetched."""
        update = c.predict(0, fn_index=example_fn)
        value = update.get("value", update) if isinstance(update, dict) else update
        sent = {key: value.get(key) for key in ("path", "url", "orig_name", "size", "mime_type")}
        answer = c.predict(sent, api_name="/shapes_image")
        fetch_preview(answer)
        return answer

    soak.phase(
        f"clicks: {len(click_clients)} on one example",
        [lambda c=c: click(c) for c in click_clients],
        workers=max(1, len(click_clients)),
        share=0.15,
        expect_ok=True,
        barrier=True,
    )


def mixed_jobs(pool: list[Any], files: dict[str, Path], count: int) -> list[Callable[[], Any]]:
    """``count`` requests of every kind in turn, spread over the visitors in ``pool``."""
    from gradio_client import handle_file

    kinds = [
        lambda c: c.predict(handle_file(str(files["square"])), api_name="/shapes_image"),
        lambda c: c.predict(handle_file(str(files["photo"])), api_name="/birds_image"),
        lambda c: c.predict(
            {"background": None, "layers": [], "composite": handle_file(str(files["triangle"]))},
            api_name="/shapes_sketch",
        ),
        lambda c: c.predict(0.3, 2, 4, True, [], [], api_name="/shapes_explain"),
        lambda c: c.predict(handle_file(str(files["largest_rgba"])), api_name="/birds_image"),
        lambda c: c.predict(handle_file(str(files["bomb_20000"])), api_name="/shapes_image"),
    ]
    return [lambda i=i: kinds[i % len(kinds)](pool[i % len(pool)]) for i in range(count)]


def record_after(soak: Soak) -> None:
    """The peak over the whole soak, and the memory after 10 s of quiet, against their targets."""
    time.sleep(10)
    after = resident_bytes(soak.pid)
    peak, idle = max(soak.peaks), soak.idle
    soak.rows.append(
        ("peak over the whole soak", f"{peak / MB:8.0f} MB  (+{(peak - idle) / MB:.0f} over idle; target +500)")
    )
    soak.rows.append(
        (
            "after the soak (10 s quiet)",
            f"{after / MB:8.0f} MB  ({(after - idle) / MB:+.0f} vs idle, "
            f"{(after - soak.start_rss) / MB:+.0f} vs start; target +150)",
        )
    )


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not stopped within 20 s."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(server.pid, signal.SIGKILL)


def print_report(soak: Soak, app: Path, url: str, log: Path) -> None:
    print(f"\nsoak of {app} on {url} ({time.monotonic() - soak.began:.0f} s; server log {log})")
    width = max(len(name) for name, _ in soak.rows)
    for name, value in soak.rows:
        print(f"{name:<{width}}  {value}")
    failures = soak.failures
    print("failures (exceptions, or errors for good images): " + ", ".join(f"{k}: {v}" for k, v in failures.items()))


def main() -> int:
    args = parse_args()
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="explainer-soak-"))
    files = make_images(work)
    port = free_port()
    server = start_app(args.app.resolve(), port, work / "server.log", min(300, args.max_seconds), new_session=True)
    url = f"http://127.0.0.1:{port}/"
    soak = Soak(server.pid, began, args.max_seconds)
    try:
        warm_up(soak, url, files)
        visitor = client(url)
        jobs = nasty_jobs(visitor, files, args.nasty_repeats)
        soak.phase("nasty images", jobs, workers=2, share=0.35, expect_ok=False)
        crowd = crowd_phase(soak, url, str(files["triangle"]), args.crowd)
        click_phase(soak, url, visitor, args.clicks)
        mix = mixed_jobs(crowd[:8] or [visitor], files, args.mixed)
        soak.phase(f"mixed traffic: {len(mix)} requests", mix, workers=8, share=0.2, expect_ok=False)
        record_after(soak)
    finally:
        soak.sampler.stop()
        stop_server(server)
    print_report(soak, args.app, url, work / "server.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
