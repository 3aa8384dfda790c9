"""ComfyUI's VIDEO type in the pack (standalone side): Save Video returns one, and the playlist takes a
VIDEO as well as a path (inside ComfyUI, core CreateVideo -> channel runs in tests/test_comfyui_real.py)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.broadcast.nodes import FFConcatPlaylist, RTMPChannel, SaveVideo
from comfyui_webtv.nodes.broadcast.playlist import read_ffconcat

FRAMES = torch.linspace(0, 1, 8).view(8, 1, 1, 1).expand(8, 32, 48, 3).contiguous()


class ForeignVideo:
    """A VIDEO as another pack or core's VideoFromComponents gives it: no file under our output folder."""

    def __init__(self, source: str):
        self.source, self.saved = source, []

    def get_stream_source(self):
        raise AssertionError("core's VideoFromComponents encodes the whole video in memory to answer this")

    def save_to(self, path, **_):
        self.saved.append(path)
        shutil.copyfile(self.source, path)


def test_save_video_returns_a_video_of_its_file(output_dir):
    out = SaveVideo().save(FRAMES, 8.0, "WebTV/clip", 30)
    path, video = out["result"]
    assert SaveVideo.RETURN_TYPES == ("STRING", "VIDEO")
    assert video.get_stream_source() == path and os.path.getsize(path) > 0


def test_playlist_takes_a_video_as_well_as_a_path(output_dir, tmp_path):
    path, video = SaveVideo().save(FRAMES, 8.0, "WebTV/clip", 30)["result"]
    listed = FFConcatPlaylist().write("", "WebTV/a.ffconcat", "replace", "absolute", clip=video)["result"][0]
    assert [e.path for e in read_ffconcat(listed)] == [os.path.realpath(path)]  # our file, used as it is

    outside = tmp_path / "elsewhere.mp4"
    shutil.copyfile(path, outside)
    foreign = ForeignVideo(str(outside))
    listed = FFConcatPlaylist().write("", "WebTV/b.ffconcat", "replace", "absolute", clip=foreign)["result"][0]
    (entry,) = read_ffconcat(listed)
    assert os.path.basename(entry.path) == "video_00001_.mp4" and entry.path.startswith(os.path.realpath(output_dir))
    assert len(foreign.saved) == 1 and not os.path.exists(foreign.saved[0])  # written beside, then renamed
    assert [f for f in os.listdir(os.path.dirname(entry.path)) if f.startswith(".")] == []

    with pytest.raises(ValueError, match="clip: expected a clip path or a VIDEO"):
        FFConcatPlaylist().write("", "WebTV/c.ffconcat", "replace", "absolute", clip=object())


def test_channel_refuses_a_bad_name_before_writing_anything(output_dir):
    video = host.VideoFile("/nonexistent.mp4")
    with pytest.raises(ValueError, match="channel: '../x' is not a valid name"):
        RTMPChannel().start(video, "../x", "", True, "clips", 64, 48, 8.0, 300, 64, "48000", 2.0, "veryfast")
    assert not os.listdir(output_dir) or os.listdir(output_dir) == ["WebTV"] and not os.listdir(os.path.join(output_dir, "WebTV"))
