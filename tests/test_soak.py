"""A shortened soak (benchmarks/soak.py, 2 minutes): a channel on air while clips arrive and retention
deletes old ones; the stream pulled from nginx stays continuous and nothing queued is ever deleted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rtmp_server import RTMP_MODULE, INSTALL

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.mark.slow
def test_short_soak(tmp_path):
    if not os.path.exists(RTMP_MODULE):
        pytest.fail(f"the nginx RTMP module is not installed: {INSTALL}", pytrace=False)
    proc = subprocess.run([sys.executable, "soak.py", "--minutes", "2", "--warmup", "20", "--every", "3",
                           "--retention-hours", str(30 / 3600)], cwd=BENCHMARKS, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["deleted_while_queued"] == 0
    assert result["clips_appended"] >= 10 and result["clips_aired"] >= result["clips_appended"] // 2
    assert result["clips_deleted"] >= 1  # retention ran: 30 s of age on a 2-minute run
    assert result["frames_pulled"] > 24 * 30 and result["puller_restarts"] == 0
    # The stream's own timestamps: continuous whatever the load (late frames are made up by the feeder's clock).
    assert result["max_gap_frames"] <= 1.5
    # Descriptors and threads come back to where they were (a decoder or output may be between clips: small slack).
    assert result["fd_growth"] <= 3 and result["thread_growth"] <= 2
    assert result["ffmpeg_processes_start_end"][1] <= result["ffmpeg_processes_start_end"][0] + 1
