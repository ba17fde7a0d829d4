"""Which files a visitor may have the server open, and the folder the served app keeps its files in.

A visitor's image reaches a handler as a path, and a path can name any file on the server. The served app opens only
a file that the visitor's session uploaded, or one that the app itself handed to that session (an example, a
preview); every other path is refused by comparing strings, without touching the disk, so that the refusal never
tells whether a path exists. This module keeps that record; :mod:`webapp.server` applies it to every request.

Gradio's upload route does not say which session uploads (the request carries none), so an upload is a ticket: the
route's answer, the paths it wrote, is recorded, and the first event that sends one of those paths claims it for its
session, which may then send it again. Twenty visitors uploading the same photo get twenty tickets for one path (the
name is a hash of the content); a path that nobody uploaded, or whose upload another session has claimed, has none.
Records older than the cache's own lifetime are dropped: the files are gone by then too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

RECORD_SECONDS = 3600.0  # as long as the cache keeps uploads and previews (app.py's CACHE_CLEANUP)
PRUNE_EVERY_SECONDS = 60.0


def _key(path: str) -> str | None:
    """The form a path is recorded and compared in: absolute and normalised, or None for anything else."""
    if not isinstance(path, str) or not path or "\0" in path or not os.path.isabs(path):
        return None
    return os.path.normpath(path)


class UploadLedger:
    """Uploads not yet claimed, and what each session may send back. Thread-safe; memory is bounded by the record
    lifetime (one entry per upload or handed-out file of the last hour)."""

    def __init__(self, record_seconds: float = RECORD_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.record_seconds = record_seconds
        self._clock = clock
        self._tickets: dict[str, list[float]] = defaultdict(list)  # path -> times of its unclaimed uploads
        self._sessions: dict[str, dict[str, float]] = defaultdict(dict)  # session -> path -> last time it was used
        self._lock = threading.Lock()
        self._pruned = self._clock()

    def uploaded(self, paths: Iterable[str]) -> None:
        """The upload route wrote these files: one ticket each."""
        now = self._clock()
        with self._lock:
            for path in paths:
                key = _key(path)
                if key is not None:
                    self._tickets[key].append(now)
            self._prune(now)

    def handed_out(self, session: str | None, paths: Iterable[str]) -> None:
        """The app sent these files to ``session`` (an example it loaded, a preview): it may send them back."""
        if session is None:
            return
        now = self._clock()
        with self._lock:
            owned = self._sessions[session]
            for path in paths:
                key = _key(path)
                if key is not None:
                    owned[key] = now

    def claim(self, session: str | None, path: str) -> bool:
        """Whether ``session`` may have ``path`` opened: it claimed or was handed the path before, or an unclaimed
        upload of it is left (which it now claims). Decided from the records alone."""
        key = _key(path)
        if key is None:
            return False
        now = self._clock()
        session = session if session is not None else f"anonymous-{uuid.uuid4().hex}"  # claims nothing for later
        with self._lock:
            self._prune(now)
            owned = self._sessions.get(session)
            if owned is not None and key in owned:
                owned[key] = now
                return True
            tickets = self._tickets.get(key)
            if not tickets:
                return False
            tickets.pop(0)
            if not tickets:
                del self._tickets[key]
            self._sessions[session][key] = now
            return True

    def __len__(self) -> int:
        """Records held (tickets plus session entries): what the bound on memory is about."""
        with self._lock:
            return sum(len(t) for t in self._tickets.values()) + sum(len(s) for s in self._sessions.values())

    def _prune(self, now: float) -> None:
        """Drop records older than the record lifetime (called with the lock held, at most once a minute)."""
        if now - self._pruned < min(PRUNE_EVERY_SECONDS, self.record_seconds):
            return
        self._pruned = now
        oldest = now - self.record_seconds
        for key in list(self._tickets):
            kept = [t for t in self._tickets[key] if t >= oldest]
            if kept:
                self._tickets[key] = kept
            else:
                del self._tickets[key]
        for session in list(self._sessions):
            owned = {k: t for k, t in self._sessions[session].items() if t >= oldest}
            if owned:
                self._sessions[session] = owned
            else:
                del self._sessions[session]


def private_cache_folder(base: str | None) -> Path:
    """A new folder of this process's own inside ``base`` (Gradio's cache folder setting, or the system's temporary
    folder when unset), readable by this user only: everything the served app writes goes there (uploads, previews,
    examples), so that stopping the app can remove all of it without touching anyone else's files."""
    parent = Path(base) if base else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="explainer-", dir=parent))


def remove_folders(folders: Iterable[Path | str | None]) -> None:
    """Delete each folder and everything in it; a missing folder is fine (stopping twice removes nothing twice)."""
    for folder in folders:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
