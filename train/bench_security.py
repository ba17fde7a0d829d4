"""Resident memory of the served app before, at its peak during, and after 20 large ``data:`` URL bodies.

    .venv/bin/python train/bench_security.py [--bodies 20] [--side 2800] [--app app.py]

Starts ``python app.py`` as a child process on 127.0.0.1 (a free port; nothing leaves the machine; the weights in
``weights/`` or the usual variables) and, by raw HTTP as a hostile client would (no cookies, a new session for every
request), sends ``--bodies`` requests to ``/birds_image`` whose image is a ``data:`` URL of a ``--side`` x ``--side``
noise PNG (2800: 22.4 MB of PNG, 29.9 MB of URL text, under the 25 MB upload limit), one after the other;
then a 140 MB body, which must be refused before it is read. The server's resident memory (VmRSS, sampled every
50 ms) is printed after a warm-up ("before"), at its peak, and 10 s after the last request ("after"). Asserts
nothing; prints one line per body and the summary line that the README quotes.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from webapp.process import PeakSampler, free_port, resident_bytes, start_app

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20


def noise_data_url(side: int, seed: int) -> str:
    """A data: URL of a side x side RGB noise PNG (noise does not compress: the URL is as large as the pixels)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def call(url: str, endpoint: str, body: bytes) -> str:
    """POST a raw body to /call, then read the outcome: "complete", "error: ..." or "http <status>"."""
    import httpx

    posted = httpx.post(
        f"{url}gradio_api/call/{endpoint}", content=body, headers={"content-type": "application/json"}, timeout=300
    )
    if posted.status_code != 200:
        return f"http {posted.status_code}"
    stream = httpx.get(f"{url}gradio_api/call/{endpoint}/{posted.json()['event_id']}", timeout=300).text
    lines = stream.splitlines()
    event = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("event:")), "?")
    data = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("data:")), "null")
    if event != "complete":
        return f"{event}: {data[:120]}"
    result = json.loads(data)[0]
    return f"answered: {result['error']}" if "error" in result else f"classified as {result['predicted_class']}"


def describe(memory: dict[str, int], bodies: int, body_bytes: int) -> str:
    """The summary line: resident memory before, at the peak, after."""
    before, peak, after = memory["before"], memory["peak"], memory["after"]
    return (
        f"{bodies} bodies of {body_bytes / MB:.1f} MB: before {before / MB:.0f} MB, "
        f"peak {peak / MB:.0f} MB (+{(peak - before) / MB:.0f} MB), after {after / MB:.0f} MB "
        f"({'+' if after >= before else '-'}{abs(after - before) / MB:.0f} MB)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, default=ROOT / "app.py")
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--side", type=int, default=2800)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="explainer-bench-security-"))
    port = free_port()
    server = start_app(args.app.resolve(), port, work / "server.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        warm = json.dumps({"data": [noise_data_url(300, 0)]}).encode()
        for _ in range(2):
            print("warm-up:", call(url, "birds_image", warm), flush=True)
        time.sleep(3)
        before = resident_bytes(server.pid)
        sampler = PeakSampler(server.pid)
        body = json.dumps({"data": [noise_data_url(args.side, 1)]}).encode()
        for i in range(args.bodies):
            t0 = time.monotonic()
            outcome = call(url, "birds_image", body)
            print(f"body {i + 1:2d} ({len(body) / MB:.1f} MB): {outcome} in {time.monotonic() - t0:.1f} s", flush=True)
        huge = b'{"data": ["data:image/png;base64,' + b"A" * (140 * MB) + b'"]}'
        print(f"a {len(huge) / MB:.0f} MB body: {call(url, 'birds_image', huge)}", flush=True)
        del huge
        time.sleep(10)
        peak = sampler.stop()
        memory = {"before": before, "peak": peak, "after": resident_bytes(server.pid)}
        print(describe(memory, args.bodies, len(body)), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
