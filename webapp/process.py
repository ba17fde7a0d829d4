"""The app as a separate process, for the benchmarks and tests that serve it: start ``app.py`` on a free local port
and wait until it listens; read a process's resident memory (Linux ``/proc``) and sample its peak in a thread."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(app: Path, port: int, log: Path, timeout: float = 300, new_session: bool = False) -> subprocess.Popen:
    """Run ``app`` (the app's entry point) on 127.0.0.1:``port``, offline and without analytics, its output in
    ``log``; returns once it accepts connections. Raises RuntimeError naming the log when it exits or does not listen
    within ``timeout`` seconds. ``new_session``: its own process group (a benchmark can signal it and its children)."""
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    process = subprocess.Popen(
        [sys.executable, str(app)],
        cwd=app.parent,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the app did not listen on port {port} within {timeout:.0f} s; see {log}")


def resident_bytes(pid: int | None = None) -> int:
    """Resident memory (VmRSS) of a process, this one by default; 0 when it cannot be read (gone, not Linux)."""
    try:
        for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakSampler:
    """The resident memory of one process, sampled every 50 ms in a thread: ``peak()`` since the start or the last
    ``reset()``; ``stop()`` ends the sampling and returns the peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self._peak, self._stop = pid, resident_bytes(pid), threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, resident_bytes(self.pid))
            time.sleep(0.05)

    def reset(self) -> None:
        self._peak = resident_bytes(self.pid)

    def peak(self) -> int:
        return max(self._peak, resident_bytes(self.pid))

    def stop(self) -> int:
        self._stop.set()
        return self.peak()
