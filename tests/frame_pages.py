"""How much of a disk-backed frame store the process holds, as the kernel counts it (/proc/self/smaps)."""

from __future__ import annotations

import torch


def mapped_rss(frames: torch.Tensor) -> int:
    """Resident bytes of the mapping that holds ``frames``."""
    address, inside = frames.data_ptr(), False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and head == "Rss:":
                return int(line.split()[1]) * 1024
    raise AssertionError("no mapping holds the frames")
