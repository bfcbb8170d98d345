"""
The peak memory of a run while it trains, for its summary (summary.json's peak_memory_mb).

On a GPU, torch keeps the high-water mark of its allocator itself. On the CPU, the resident memory
of the process is sampled every 50 ms by a thread: the kernel's own high-water mark (ru_maxrss)
never goes down, so it would charge every run of `train.py all` with the largest run before it.
"""

import os
import resource
import threading

import torch


class PeakMemory:
    """Started when a run starts; mb() stops it and gives the peak, in MiB."""

    def __init__(self, device):
        self.device, self.peak, self.stop = device, 0, threading.Event()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self.stop.is_set():
            try:
                with open("/proc/self/statm") as f:
                    self.peak = max(self.peak, int(f.read().split()[1]) * page)
            except OSError:  # no /proc (macOS): fall back to the high-water mark
                self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.stop.wait(0.05)

    def mb(self):
        self.stop.set()
        self.thread.join()
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return self.peak / 2**20
