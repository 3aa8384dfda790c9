"""A station that runs for days: the slate of an empty channel, retention, and `run --forever` on tiny models."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import time
from fractions import Fraction

import numpy as np
import pytest

from comfyui_webtv.cli import main
from comfyui_webtv.nodes.broadcast import channel as channels
from comfyui_webtv.nodes.broadcast import slate, state
from comfyui_webtv.nodes.broadcast.normalize import ChannelFormat, probe
from comfyui_webtv.nodes.broadcast.playlist import Entry, read_ffconcat, write_ffconcat
from comfyui_webtv.nodes.broadcast.retention import Retainer, Retention
from comfyui_webtv.nodes.common.ffmpeg import ffmpeg_exe, run_ffmpeg
from comfyui_webtv.nodes.prompts import backends
from test_prompts import ChatServer

FMT = ChannelFormat(320, 180, Fraction(24))
DARK_BLUE_LUMA = 16 + (65.481 * 16 + 128.553 * 24 + 24.966 * 48) / 255  # BT.601 limited range of RGB (16, 24, 48)


def _luma(frame: bytes, fmt: ChannelFormat = FMT) -> np.ndarray:
    return np.frombuffer(frame[: fmt.width * fmt.height], np.uint8).reshape(fmt.height, fmt.width)


def _clip(path: str, colour: str = "red", seconds: float = 1.0) -> str:
    run_ffmpeg(["-y", "-f", "lavfi", "-i", f"color=c={colour}:s=64x36:r=24:d={seconds}", "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p", path])
    return path


# ---------------------------------------------------------------- the slate


def test_slate_shows_text_on_a_coloured_ground_and_depends_on_the_name():
    frame = slate.slate_frame(FMT, "ai_webtv")
    luma = _luma(frame)
    assert len(frame) == FMT.frame_bytes
    assert abs(float(np.median(luma)) - DARK_BLUE_LUMA) < 3  # the ground: dark blue, not black (16)
    assert (luma > 150).sum() > 200  # white text
    assert slate.slate_frame(FMT, "other_channel") != frame  # the channel's own name is drawn


def test_slate_without_drawtext_uses_pillows_font(monkeypatch):
    def no_font(*args):
        raise RuntimeError("Cannot find a valid font")

    monkeypatch.setattr(slate, "_drawtext", no_font)
    slate.slate_frame.cache_clear()
    try:
        luma = _luma(slate.slate_frame(FMT, "fallback"))
    finally:
        slate.slate_frame.cache_clear()
    assert abs(float(np.median(luma)) - DARK_BLUE_LUMA) < 3 and (luma > 150).sum() > 50


def test_an_empty_channel_airs_the_slate_not_black(output_dir):
    """A channel started with no clip: its stream (the preview's HLS, decoded by ffmpeg) shows the slate."""
    channel = channels.start(channels.ChannelSettings(name="starting", preview=True, fmt=FMT), [])
    try:
        end, media = time.monotonic() + 90, b""
        while time.monotonic() < end and not media:
            init, segments = glob.glob(os.path.join(channel.hls_dir, "init_*.mp4")), sorted(glob.glob(os.path.join(channel.hls_dir, "seg_*.m4s")))
            if init and len(segments) >= 2:  # the first segment is complete once a second exists
                try:
                    with open(init[0], "rb") as a, open(segments[-2], "rb") as b:
                        media = a.read() + b.read()
                except FileNotFoundError:
                    pass  # rotated away meanwhile
            time.sleep(0.5)
        assert media, f"no HLS segment: {channel.status()}"
        assert channel.status()["current_clip"]["slate"] is True
        frame = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", "pipe:0", "-frames:v", "1", "-f", "rawvideo",
                                "-pix_fmt", "yuv420p", "pipe:1"], input=media, capture_output=True, check=True).stdout
        luma = _luma(frame)
        assert abs(float(np.median(luma)) - DARK_BLUE_LUMA) < 4 and (luma > 150).sum() > 100
    finally:
        channels.stop_all()


# ---------------------------------------------------------------- retention


@pytest.fixture
def rotation(output_dir):
    """Six clips c0..c5 (c0 oldest) in an unstarted channel's rotation and a playlist; c1 on air."""
    folder = os.path.join(output_dir, "WebTV", "ret")
    os.makedirs(folder)
    paths = [_clip(os.path.join(folder, f"c{i}.mp4"), colour) for i, colour in enumerate(["red", "green", "blue", "white", "gray", "navy"])]
    now = time.time()
    for i, path in enumerate(paths):
        os.utime(path, (now - 3600 * (6 - i), now - 3600 * (6 - i)))  # c0 six hours old ... c5 one hour old
    playlist = os.path.join(folder, "channel.ffconcat")
    write_ffconcat(playlist, [Entry(p, probe(p).duration) for p in paths])
    settings = channels.ChannelSettings(name="ret", outputs=("rtmp://127.0.0.1:9/live/ret",), preview=False, fmt=FMT)
    channel = channels.Channel(settings, [probe(p) for p in paths])
    channel._cursor = 1  # c1 on air, c2 queued next
    return channel, paths, playlist, now


def _after(channel, paths, playlist, deleted):
    kept = [p for p in paths if p not in deleted]
    assert channel.rotation()[0] == kept and [e.path for e in read_ffconcat(playlist)] == kept
    assert [os.path.exists(p) for p in paths] == [p not in deleted for p in paths]
    assert channel.rotation()[0][channel.rotation()[1]] == paths[1]  # the clip on air stays on air


def test_retention_by_age_spares_the_clip_on_air_the_next_and_those_not_yet_aired(rotation):
    channel, paths, playlist, now = rotation
    retainer = Retainer(channel, Retention(max_age_hours=2.5), playlist)
    retainer.aired = set(paths[:4]) | {paths[5]}  # c4 never aired: queued
    deleted = retainer.prune(now)
    assert deleted == [paths[0], paths[3]]  # c0 (6 h), c3 (3 h); c1 on air, c2 next, c4 queued; c5 is young
    _after(channel, paths, playlist, deleted)
    assert retainer.prune(now) == []


def test_retention_by_quota_deletes_oldest_first_until_under(rotation):
    channel, paths, playlist, now = rotation
    sizes = [os.path.getsize(p) for p in paths]
    retainer = Retainer(channel, Retention(max_mb=(sum(sizes) - sizes[0] - sizes[3] / 2) / 1e6), playlist)
    retainer.aired = set(paths)
    deleted = retainer.prune(now)
    assert deleted == [paths[0], paths[3]]  # c0 is not enough; c3 is the next oldest not on air or next
    _after(channel, paths, playlist, deleted)


def test_retention_never_deletes_queued_clips_even_over_quota(rotation):
    channel, paths, playlist, now = rotation
    retainer = Retainer(channel, Retention(max_mb=1e-6), playlist)
    assert retainer.prune(now) == [] and all(os.path.exists(p) for p in paths)  # nothing has aired yet


def test_retention_options_are_checked():
    with pytest.raises(ValueError, match="retention_hours"):
        Retention(max_age_hours=float("nan"))
    with pytest.raises(ValueError, match="retention_mb"):
        Retention(max_mb=-1)


# ---------------------------------------------------------------- run --forever


def _shots(subject: str) -> str:
    return json.dumps({"subject": subject, "camera": "35mm film", "lighting": "grey dawn", "shots": [
        {"prompt": f"{subject} under a storm, 35mm film, grey dawn", "motion": "the camera pans left"}]})


@pytest.mark.slow
def test_forever_writes_new_episodes_on_air_and_retention_bounds_them(tiny_models_dir, tmp_path, monkeypatch, capsys):
    """Three episodes of one shot: each in its own folder, the writer (an endpoint on 127.0.0.1) told what
    aired before; the clips join the running channel; retention deletes only clips that aired, and the
    playlist never names a deleted file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(backends.KEY_ENV, "sk-test")
    subjects = ["a lighthouse keeper", "a fishing boat", "a storm petrel"]
    with ChatServer([_shots(s) for s in subjects]) as server:
        code = main(["run", "--forever", "--episodes", "3", "--shots", "1", "--on-air", "10", "--tiny-dir", tiny_models_dir,
                     "--llm", "openai_compatible", "--llm-url", server.url, "--llm-model", "m", "--retention-mb", "0.000001"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    summary = json.loads(captured.out.strip().splitlines()[-1])
    episodes = summary["episodes"]
    assert [e["episode"] for e in episodes] == [1, 2, 3]
    run_dir = tmp_path / "output" / "WebTV" / "station" / summary["run"]
    for number, (episode, subject) in enumerate(zip(episodes, subjects), 1):
        assert subject in episode["shots"][0] and episode["writer"] == "openai_compatible"
        assert [os.path.dirname(c) for c in episode["clips"]] == [str(run_dir / f"ep{number:04d}")]
    asked = [r["body"]["messages"][1]["content"] for r in server.requests]
    assert len(asked) == 3 and "Already on air" not in asked[0]
    assert episodes[0]["shots"][0] in asked[1] and all(e["shots"][0] in asked[2] for e in episodes[:2])

    clips, deleted = summary["clips"], summary["deleted"]
    assert deleted and set(deleted) < set(clips)  # the two protected clips stay
    playlist = [e.path for e in read_ffconcat(summary["playlist"])]
    assert playlist == [c for c in clips if c not in deleted]
    assert not any(os.path.exists(c) for c in deleted) and all(os.path.exists(c) for c in playlist)
    assert channels.statuses() == {}


@pytest.mark.slow
def test_each_shot_goes_on_air_while_the_next_is_rendered(tiny_models_dir, tmp_path, monkeypatch, capsys):
    """The episode's graph runs shot by shot: when the second shot's Text to Video starts, the first shot's
    clip is already saved, in the playlist and in the running channel's rotation, and it goes on air before
    the second shot is rendered (the render waits here until it does)."""
    from comfyui_webtv.workflow import runner

    monkeypatch.chdir(tmp_path)
    seen = []
    plain_run = runner.run

    def spying_run(api, *args, on_node=None, **kwargs):
        def spy(nid, class_type, index, count):
            if class_type == "ZeroscopeTextToVideo":
                channel = channels.get("spy")
                rotation = channel.rotation()[0]
                end = time.monotonic() + 120
                while rotation and (channel.status()["current_clip"] or {}).get("path") != rotation[0] and time.monotonic() < end:
                    time.sleep(0.1)
                playlist = glob.glob(str(tmp_path / "output" / "WebTV" / "station" / "*" / "channel.ffconcat"))
                seen.append({"rotation": rotation, "on_air": (channel.status()["current_clip"] or {}).get("path"),
                             "listed": [e.path for e in read_ffconcat(playlist[0])] if playlist else []})
            if on_node:
                on_node(nid, class_type, index, count)
        return plain_run(api, *args, on_node=spy, **kwargs)

    monkeypatch.setattr(runner, "run", spying_run)
    code = main(["run", "--forever", "--episodes", "1", "--shots", "2", "--frames", "4", "--steps", "1", "--on-air", "1",
                 "--channel", "spy", "--tiny-dir", tiny_models_dir])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    clips = json.loads(captured.out.strip().splitlines()[-1])["clips"]
    assert len(clips) == 2 and len(seen) == 2
    assert seen[0]["rotation"] == [] and seen[0]["on_air"] is None  # the slate: nothing rendered yet
    assert seen[1]["rotation"] == [clips[0]] and seen[1]["listed"] == [clips[0]]  # saved, listed, queued
    assert seen[1]["on_air"] == clips[0]  # and on air while shot 2 waits to be rendered
    assert os.path.getmtime(clips[0]) < os.path.getmtime(clips[1])


# ---------------------------------------------------------------- resume after a restart


def _first_aired(channel, timeout: float = 90.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        history = channel.status()["history"]
        if history and history[0]["frames"]:
            return history[0]["path"]
        time.sleep(0.1)
    raise AssertionError(f"nothing aired: {channel.status()}")


def test_a_restarted_channel_node_with_resume_goes_on_from_the_saved_clip(output_dir):
    """RTMP Channel with resume on: its rotation and the clip on air are saved beside the playlist; after a
    restart (every channel stopped, as at a ComfyUI shutdown) the same node goes on from that clip, and the
    rotation after it is the playlist's. With resume off nothing is saved and it starts from the first clip."""
    from comfyui_webtv.nodes.broadcast.nodes import FFConcatPlaylist, RTMPChannel

    folder = os.path.join(output_dir, "WebTV", "resume")
    os.makedirs(folder)
    paths = [_clip(os.path.join(folder, f"c{i}.mp4"), colour) for i, colour in enumerate(["red", "green", "blue", "white"])]
    playlist = FFConcatPlaylist().write("\n".join(paths), "WebTV/resume/channel.ffconcat", "replace", "relative")["result"][0]
    saved_at = os.path.join(folder, "channel.state.json")

    def start(resume: bool):
        RTMPChannel().start(playlist=playlist, channel="resumed", outputs="", local_preview=True, mode="clips", width=160,
                            height=96, fps=24.0, video_kbps=300, audio_kbps=64, sample_rate="48000", keyframe_seconds=2.0,
                            preset="veryfast", resume=resume)
        return channels.get("resumed")

    try:
        channel = start(resume=True)
        end = time.monotonic() + 90
        while (channel.status()["current_clip"] or {}).get("path") not in paths[1:3] and time.monotonic() < end:
            time.sleep(0.05)  # past the first clip
        channels.stop_all()
        state.detach("resumed")
        with open(saved_at) as f:
            saved = json.load(f)
        assert saved["clips"] == paths and saved["clip"] == channel.status()["history"][-1]["path"] != paths[0]
        assert [n for n in os.listdir(folder) if n.startswith(".")] == []  # replaced atomically, no part file left

        channel = start(resume=True)  # a restart knows nothing: the state file brings the position back
        assert state.attached("resumed").resumed_at == saved["clip"]
        assert _first_aired(channel) == saved["clip"]
        assert channel.rotation()[0] == paths  # the playlist's rotation, going on after the saved clip
        end = time.monotonic() + 90
        while len([e for e in channel.status()["history"] if e["frames"]]) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        after = paths[(paths.index(saved["clip"]) + 1) % len(paths)]
        assert channel.status()["history"][1]["path"] == after
        channels.stop_all()
        state.detach("resumed")

        os.remove(saved_at)
        assert _first_aired(start(resume=False)) == paths[0]  # resume off: from the first clip, nothing saved
        channels.stop_all()
        assert not os.path.exists(saved_at) and state.attached("resumed") is None
    finally:
        channels.stop_all()
        state.detach("resumed")
    assert state.load(os.path.join(folder, "missing.json")) is None


@pytest.mark.slow
def test_run_remember_and_resume_goes_on_where_it_was(tiny_models_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["--shots", "1", "--on-air", "3", "--tiny-dir", tiny_models_dir, "--remember"]
    assert main(["run", *common]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved_at = tmp_path / "output" / "WebTV" / "station" / first["run"] / "channel.state.json"
    saved = json.loads(saved_at.read_text())
    assert saved["clips"] == first["clips"] and saved["clip"] == first["clips"][0]
    assert main(["run", *common, "--resume", first["run"]]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["resumed_at"] == saved["clip"]
    assert second["channel"]["history"][0]["path"] == saved["clip"]
    assert json.loads(saved_at.read_text())["clips"] == first["clips"] + second["clips"]


# ---------------------------------------------------------------- the deliberate reconnect (Twitch ends a broadcast at 48 h)


@pytest.mark.slow
def test_session_limit_reconnects_on_purpose_at_a_clip_boundary(output_dir, tmp_path):
    """session_hours=0.01 (36 s): the channel ends its RTMP session between two clips and opens a new one;
    nginx logs the finished publish, no attempt failed, and no clip was cut short."""
    from rtmp_server import Nginx

    server = Nginx(str(tmp_path / "nginx"))
    server.start()
    folder = os.path.join(output_dir, "WebTV", "session")
    os.makedirs(folder)
    paths = [_clip(os.path.join(folder, f"c{i}.mp4"), colour, 1.0) for i, colour in enumerate(["red", "blue"])]
    settings = channels.ChannelSettings(name="session", outputs=(server.url("session"),), preview=False, fmt=FMT, session_hours=0.01)
    channel = channels.start(settings, paths)
    try:
        end = time.monotonic() + 240
        while time.monotonic() < end and not (channel.status()["sessions"] >= 2 and channel.status()["state"] == "live"):
            time.sleep(0.5)
        status = channel.status()
        assert status["sessions"] == 2 and status["reconnects"] == 1 and status["failed_attempts"] == 0, status
        assert len(server.publishes()) == 1  # the first session's connection ended cleanly
        assert all(entry["completed"] for entry in status["history"][:-1])  # every clip played whole
    finally:
        channels.stop_all()
        server.kill()


# ---------------------------------------------------------------- the schedule and the arguments


def test_schedule_gives_the_theme_of_the_hour(tmp_path):
    from comfyui_webtv.cli import station

    path = tmp_path / "schedule.txt"
    path.write_text("# themes by local time\n06:00 sunrise over the harbour\n18:30  a storm at dusk\n\n")
    slots = station.read_schedule(str(path))
    assert slots == [(360, "sunrise over the harbour"), (1110, "a storm at dusk")]
    day = time.mktime((2026, 12, 3, 0, 0, 0, 0, 0, -1))  # local midnight
    assert station.scheduled_theme(slots, day + 3 * 3600) == "a storm at dusk"  # before the first slot: last night's
    assert station.scheduled_theme(slots, day + 6 * 3600) == "sunrise over the harbour"
    assert station.scheduled_theme(slots, day + 18 * 3600 + 29 * 60) == "sunrise over the harbour"
    assert station.scheduled_theme(slots, day + 18 * 3600 + 30 * 60) == "a storm at dusk"
    told = station.told_theme("A lighthouse. At night.", ["shot one", "shot two"])
    assert told.startswith("A lighthouse. At night.\n") and "- shot one\n- shot two" in told


@pytest.mark.parametrize("argv, message", [
    (["--episodes", "2"], "--episodes: counts the episodes of --forever"),
    (["--forever", "--schedule", "missing.txt"], "--schedule missing.txt: cannot be read"),
    (["--forever", "--schedule", "bad.txt"], "line 1 is not 'HH:MM theme'"),
    (["--forever", "--retention-mb", "-1"], "must be 0 (no limit) or more"),
    (["--forever", "--session-hours", "49"], "session_hours"),
])
def test_bad_forever_arguments_exit_2_before_anything_loads(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.txt").write_text("25:00 never\n")
    try:
        code = main(["run", *argv])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_channel_node_retention_survives_a_queued_again_graph(output_dir):
    """RTMP Channel with retention_mb: clips that aired are deleted from the rotation, the playlist and the
    disk; queuing the playlist and channel nodes again (as ComfyUI does) keeps the same retainer, and the
    deleted clips do not come back."""
    from comfyui_webtv.nodes.broadcast import retention
    from comfyui_webtv.nodes.broadcast.nodes import FFConcatPlaylist, RTMPChannel

    folder = os.path.join(output_dir, "WebTV", "node")
    os.makedirs(folder)
    paths = [_clip(os.path.join(folder, f"c{i}.mp4"), colour, 0.5) for i, colour in enumerate(["red", "green", "blue", "white"])]

    def queue(clips: list[str]) -> str:
        playlist = FFConcatPlaylist().write("\n".join(clips), "WebTV/node/channel.ffconcat", "append", "relative")["result"][0]
        RTMPChannel().start(playlist=playlist, channel="kept", outputs="", local_preview=True, mode="clips", width=160,
                            height=96, fps=24.0, video_kbps=300, audio_kbps=64, sample_rate="48000", keyframe_seconds=2.0,
                            preset="veryfast", retention_mb=1e-6)
        return playlist

    try:
        playlist = queue(paths[:3])
        retainer = retention.attached("kept")
        end = time.monotonic() + 120
        while not retainer.deleted and time.monotonic() < end:
            time.sleep(0.2)
        assert retainer.deleted, channels.get("kept").status()
        deleted = list(retainer.deleted)
        queue(paths[3:])
        assert retention.attached("kept") is retainer
        with retainer.lock:
            listed = [e.path for e in read_ffconcat(playlist)]
            rotation = channels.get("kept").rotation()[0]
        assert paths[3] in listed and paths[3] in rotation
        assert not set(retainer.deleted) & (set(listed) | set(rotation))
        assert set(deleted) <= set(retainer.deleted) and not any(os.path.exists(p) for p in retainer.deleted)
    finally:
        channels.stop_all()
