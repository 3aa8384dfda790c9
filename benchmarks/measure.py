"""Measurement helpers shared by the benchmarks: this process's memory figures from /proc, peak memory of a block."""

from __future__ import annotations

import threading
import time

import torch


def proc_status(field: str) -> int:
    """A memory field of /proc/self/status (``RssAnon``, ``VmHWM``, ...) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakMemory:
    """Peak memory during the block (``peak``) and its rise above the level at entry (``growth``), in bytes.

    On CUDA: allocated device memory. Else: the /proc/self/status ``field`` (RssAnon by default; VmRSS for
    what top shows, file-backed pages included), sampled every 2 ms by a thread.
    """

    def __init__(self, device: torch.device, field: str = "RssAnon"):
        self.cuda = device.type == "cuda"
        self.field = field
        self.peak = 0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = proc_status(self.field)
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, proc_status(self.field))
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.peak, proc_status(self.field))
        self.growth = self.peak - self.base
