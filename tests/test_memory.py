"""Tests for memory.py: the sampled peak keeps memory that was taken and given back while it ran."""

import mmap
import os
import time
from pathlib import Path

import pytest
import torch

from memory import PeakMemory


def resident():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="no /proc: the peak is the kernel's high-water mark")
def test_peak_memory_keeps_a_buffer_that_is_gone_again():
    memory = PeakMemory(torch.device("cpu"))
    # 200 MiB mapped and written (resident), then unmapped: back to the system whatever malloc keeps.
    buffer = mmap.mmap(-1, 200 * 2**20)
    buffer.write(b"x" * len(buffer))
    time.sleep(0.3)  # a few samples while it is there
    alive = resident()
    buffer.close()
    time.sleep(0.1)
    gone = resident()
    peak = memory.mb() * 2**20
    assert gone < alive - 100 * 2**20  # the buffer was given back ...
    assert peak >= 0.95 * alive  # ... and the peak still holds it
    assert not memory.thread.is_alive()
