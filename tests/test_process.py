"""webapp.process: the helpers the benchmarks and served-app tests use to watch the app's process."""

from __future__ import annotations

import mmap
import os
import socket

from webapp.process import PeakSampler, free_port, resident_bytes


def test_resident_memory_of_this_process_and_of_a_missing_one():
    assert resident_bytes() > 10 * 2**20 and resident_bytes(os.getpid()) > 0
    assert resident_bytes(2**31 - 1) == 0  # no such process: 0, not an error


def test_the_peak_sampler_sees_memory_grow_and_reset_forgets_it():
    sampler = PeakSampler(os.getpid())
    start = sampler.peak()
    block = mmap.mmap(-1, 64 * 2**20)  # fresh pages from the system, whatever the allocator keeps
    for offset in range(0, len(block), 4096):
        block[offset] = 1  # touched: resident
    assert sampler.peak() >= start + 48 * 2**20
    block.close()
    sampler.reset()
    assert sampler.stop() < start + 48 * 2**20


def test_a_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
