"""Keeping the server's memory where it started: glibc settings and a trim after each network run.

Decoding a 40-megapixel image takes up to 160 MB for a moment. With glibc's defaults that memory often stays with the
process after the request: every thread may get its own heap ("arena"), and after a large block is freed glibc raises
its threshold for giving large blocks their own mapping, so later large blocks land in heaps that are rarely handed
back. Measured on this app before these settings (``train/bench_soak.py``): +3.9 GB still resident after the soak.

:func:`bound_malloc` fixes both once at startup (two arenas, and a fixed 1 MB threshold above which a block gets its
own mapping, returned to the system when freed); :func:`release_memory` asks glibc to return free heap pages after
each network run. Both do nothing where glibc is absent (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

LOG = logging.getLogger("webapp")

_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's malloc.h
_M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 1 << 20


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018  (glibc only)
        libc.malloc_trim  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def bound_malloc(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Limit glibc to ``arenas`` heaps and give every block of ``mmap_threshold`` bytes or more its own mapping.
    Call once, early (before threads start). True when the settings were applied."""
    if _LIBC is None:
        return False
    applied = bool(_LIBC.mallopt(_M_ARENA_MAX, arenas)) and bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    if not applied:
        LOG.warning("could not apply the memory settings (mallopt refused them)")
    return applied


def release_memory() -> None:
    """Return free heap memory to the system (glibc's malloc_trim); cheap, safe to call after every request."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
