"""ffconcat playlists: what we write is what ffmpeg's concat demuxer reads, even for hostile file names."""

from __future__ import annotations

import os

import pytest

from comfyui_webtv.nodes.broadcast.nodes import FFConcatPlaylist
from comfyui_webtv.nodes.broadcast.playlist import Entry, inside_output, quote, read_ffconcat, resolve_clips, write_ffconcat
from comfyui_webtv.nodes.common.ffmpeg import run_ffmpeg

from .rtmp_server import make_clip

NASTY = ["it's a clip.mp4", "back\\slash.mp4", "#hash.mp4", "proto:col.mp4", "spaces  and\ttab.mp4", "ünïcode ✓.mp4"]


def concat_frames(playlist: str) -> int:
    """Frames ffmpeg's concat demuxer reads through the playlist."""
    out = run_ffmpeg(["-f", "concat", "-safe", "0", "-i", playlist, "-map", "0:v", "-f", "framemd5", "-"]).stdout.decode()
    return sum(1 for line in out.splitlines() if line and not line.startswith("#"))


@pytest.fixture
def nasty_clips(output_dir):
    folder = os.path.join(output_dir, "WebTV", "sub dir")
    os.makedirs(folder)
    first = make_clip(os.path.join(folder, NASTY[0]), "red", 0.25, tone=None)
    paths = [first]
    for name in NASTY[1:]:
        path = os.path.join(folder, name)
        os.link(first, path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("relative", [True, False])
def test_ffmpeg_reads_every_hostile_name(nasty_clips, output_dir, relative):
    playlist = os.path.join(output_dir, "WebTV", "list.ffconcat")
    write_ffconcat(playlist, [Entry(p, 0.25) for p in nasty_clips], relative=relative)
    text = open(playlist, encoding="utf-8").read()
    assert text.startswith("ffconcat version 1.0\n") and text.count("duration 0.250000") == len(NASTY)
    assert ("/" + "WebTV" in text) != relative  # absolute paths only when asked
    assert concat_frames(playlist) == 6 * len(NASTY)
    assert [e.path for e in read_ffconcat(playlist)] == nasty_clips
    assert sorted(os.listdir(os.path.dirname(playlist))) == ["list.ffconcat", "sub dir"]  # no temporary left


def test_line_breaks_are_refused_not_injected(output_dir):
    evil = os.path.join(output_dir, "x.mp4'\nfile '/etc/passwd")
    with pytest.raises(ValueError, match="line break"):
        quote(evil)
    playlist = os.path.join(output_dir, "keep.ffconcat")
    write_ffconcat(playlist, [])
    before = open(playlist).read()
    with pytest.raises(ValueError, match="line break"):
        write_ffconcat(playlist, [Entry(evil)])
    assert open(playlist).read() == before
    assert os.listdir(output_dir) == ["keep.ffconcat"]  # no half-written temporary left behind


def test_paths_stay_inside_the_output_folder(output_dir, tmp_path):
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(b"")
    os.symlink(outside, os.path.join(output_dir, "link.mp4"))
    for path in ("../elsewhere.mp4", str(outside), "link.mp4"):
        with pytest.raises(ValueError, match="outside the output folder"):
            inside_output(path, "clips")
    with pytest.raises(ValueError, match="filename: '../list.ffconcat' is outside"):
        FFConcatPlaylist().write("*.mp4", "../list.ffconcat", "replace", "relative")


def test_node_globs_appends_and_records_durations(output_dir):
    folder = os.path.join(output_dir, "WebTV")
    os.makedirs(folder)
    make_clip(os.path.join(folder, "clip_2.mp4"), "blue", 0.5, tone=None)
    make_clip(os.path.join(folder, "clip_1.mp4"), "red", 0.25, tone=None)
    node = FFConcatPlaylist()
    path, count = node.write("WebTV/clip_*.mp4", "WebTV/ch.ffconcat", "replace", "relative")["result"]
    assert count == 2 and [os.path.basename(e.path) for e in read_ffconcat(path)] == ["clip_1.mp4", "clip_2.mp4"]
    assert [e.duration for e in read_ffconcat(path)] == [0.25, 0.5]
    make_clip(os.path.join(folder, "new.mp4"), "lime", 0.25, tone=None)
    path, count = node.write("WebTV/clip_1.mp4", "WebTV/ch.ffconcat", "append", "relative", clip=os.path.join(folder, "new.mp4"))["result"]
    assert count == 3 and os.path.basename(read_ffconcat(path)[-1].path) == "new.mp4"
    assert concat_frames(path) == 6 + 12 + 6
    with pytest.raises(ValueError, match="matches no file"):
        resolve_clips(["WebTV/none_*.mp4"])
    with pytest.raises(ValueError, match="does not exist"):
        resolve_clips(["WebTV/missing.mp4"])
    with pytest.raises(ValueError, match="not an ffconcat file"):
        read_ffconcat(os.path.join(folder, "clip_1.mp4"))
