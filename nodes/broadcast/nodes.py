"""Output nodes: Save Video, FFConcat Playlist and the live channel (start, append, status, stop)."""

from __future__ import annotations

import json
import os
from fractions import Fraction

from .. import host
from ..common import checks
from ..common.files import atomic_path
from . import channel as channels
from . import retention, routes, state
from .encoder import CODECS, PRESETS, TUNES, Encoding
from .mp4 import next_output_file, write_mp4
from .normalize import ChannelFormat, probe
from .playlist import Entry, inside_output, read_ffconcat, resolve_clips, write_ffconcat


class SaveVideo:
    DESCRIPTION = (
        "Saves IMAGE frames, with optional AUDIO, as an mp4 (H.264 + AAC, faststart) in ComfyUI's output "
        "folder. The file appears only once complete, so playlists and streams never pick up half a file. "
        "Returns the file path for later nodes (playlists, the live channel)."
    )
    CATEGORY = "WebTV/Output"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "VIDEO")
    RETURN_NAMES = ("path", "video")
    OUTPUT_TOOLTIPS = ("Absolute path of the saved mp4.", "The saved mp4 as ComfyUI's VIDEO, for core video nodes and other packs.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The video frames, [frames, height, width, 3] in 0..1."}),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 240.0, "step": 0.01, "tooltip": "Frames per second of the video."}),
                "filename_prefix": ("STRING", {"default": "WebTV/clip", "tooltip": "Name under the output folder; may contain sub-folders. A counter is appended."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip": "H.264 quality: lower is better and larger (18-23 is typical)."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Sound for the video; padded with silence or cut to the video's length."}),
                "generation_info": ("STRING", {"forceInput": True, "tooltip": "Generation parameters (from a generator node) stored in the mp4's metadata."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, images, fps, filename_prefix, crf, audio=None, generation_info=None, prompt=None, extra_pnginfo=None):
        path, subfolder, filename = next_output_file(filename_prefix, "mp4")
        metadata = {}
        if generation_info:
            metadata["comment"] = generation_info
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        if extra_pnginfo and "workflow" in extra_pnginfo:
            metadata["workflow"] = json.dumps(extra_pnginfo["workflow"])
        write_mp4(images, path, fps, crf=crf, audio=audio, metadata=metadata)
        preview = {"filename": filename, "subfolder": subfolder, "type": "output", "format": "video/mp4"}
        return {"ui": {"images": [preview], "animated": (True,)}, "result": (path, host.video_from_file(path))}


CHANNEL_TOOLTIP = "Channel name (letters, digits, '-' and '_'); one broadcast runs per name."


VIDEO_OR_PATH = "STRING,VIDEO"  # a clip slot takes a path or a VIDEO (core Load/Create Video, Save Video)


def _clip_path(clip, input_name: str) -> str | None:
    """A clip path from a path or a VIDEO: a finished file under the output folder is used as it is, any
    other VIDEO (frames from Create Video, a file from Load Video) is first saved as WebTV/video_*.mp4."""
    if clip is None or isinstance(clip, str):
        return clip
    if not callable(getattr(clip, "save_to", None)):
        raise ValueError(f"{input_name}: expected a clip path or a VIDEO, got {type(clip).__name__}.")
    source = host.video_file(clip)
    if source and os.path.isfile(source):
        root, full = os.path.realpath(host.output_dir()), os.path.realpath(source)
        if os.path.commonpath([root, full]) == root:
            return full
    path, _, _ = next_output_file("WebTV/video", "mp4")
    with atomic_path(path) as part:
        clip.save_to(part)
    return path


def _clip_lines(clips: str, clip) -> list[str]:
    clip = _clip_path(clip, "clip")
    return clips.splitlines() + ([clip] if clip else [])


def _summary(status: dict) -> str:
    clip = (status.get("current_clip") or {}).get("path") or "-"
    outputs = ", ".join(f"{o['target']}: {o['state']}" for o in status["outputs"])
    preview = f" | preview {status['preview_url']}" if status.get("preview_url") else ""
    error = f" | last error: {status['last_error']}" if status.get("last_error") else ""
    return (
        f"{status['name']}: {status['state']} | clip {clip} | {status['frames_sent']} frames | "
        f"{status['reconnects']} reconnects | {outputs}{preview}{error}"
    )


def _status_result(status: dict) -> dict:
    # Only file-like or text entries in "ui" (ComfyUI's jobs API reads every item as an output); the
    # editor gets the full status as a server event.
    channels.announce(status)
    return {"ui": {"text": [_summary(status)]}, "result": (json.dumps(status),)}


class FFConcatPlaylist:
    DESCRIPTION = (
        "Writes an ffconcat playlist (ffconcat version 1.0, with durations) of video clips under the output "
        "folder. Paths are quoted safely (a name with a quote is escaped; one with a line break is refused), and "
        "the file is replaced atomically, so a channel or ffmpeg reading it never sees half a list."
    )
    CATEGORY = "WebTV/Output"
    FUNCTION = "write"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("playlist", "clip_count")
    OUTPUT_TOOLTIPS = ("Absolute path of the playlist file.", "Number of clips in the playlist.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clips": ("STRING", {"multiline": True, "default": "WebTV/clip_*.mp4", "tooltip": "Clips, one per line: paths or glob patterns relative to the output folder (sorted by name). Lines starting with # are ignored."}),
                "filename": ("STRING", {"default": "WebTV/channel.ffconcat", "tooltip": "Playlist file under the output folder."}),
                "mode": (["replace", "append"], {"default": "replace", "tooltip": "replace: the playlist lists exactly these clips; append: add those not yet in it at its end."}),
                "paths": (["relative", "absolute"], {"default": "relative", "tooltip": "Write clip paths relative to the playlist's folder (portable) or absolute."}),
            },
            "optional": {
                "clip": (VIDEO_OR_PATH, {"forceInput": True, "tooltip": "One more clip, a path or a VIDEO (e.g. from Save Video or core Create Video); added after the listed clips."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # patterns may match new files on every run

    def write(self, clips, filename, mode, paths, clip=None):
        if not filename.strip():
            raise ValueError("filename: give a playlist name such as 'WebTV/channel.ffconcat'.")
        path = inside_output(filename, "filename")
        found = resolve_clips(_clip_lines(clips, clip), "clips")
        with retention.playlist_lock(path):  # retention may be rewriting it
            entries: list[Entry] = []
            if mode == "append" and os.path.exists(path):
                entries = read_ffconcat(path)
            known = {e.path for e in entries}
            entries += [Entry(p, probe(p).duration) for p in found if p not in known]
            if not entries:
                raise ValueError("clips: no clip given; list clip files or patterns, or connect a clip path.")
            write_ffconcat(path, entries, relative=paths == "relative")
        return {"ui": {"text": [f"{path}: {len(entries)} clips"]}, "result": (path, len(entries))}


class RTMPChannel:
    DESCRIPTION = (
        "Starts a live channel that keeps broadcasting after the prompt finishes: one ffmpeg encoder with continuous "
        "timestamps fed clip after clip (each scaled, padded, resampled to the channel format; silence where a clip "
        "has none), looping the playlist when nothing new is queued. H.264 with fixed keyframes and strict CBR plus "
        "AAC, as Twitch and YouTube require (or HEVC/AV1 as Enhanced RTMP, chosen per output), to one or more rtmp(s)://, "
        "srt:// or WHIP servers, each codec encoded once, with reconnects and backoff. With no server address it plays in a local preview page (HLS on 127.0.0.1). Running it again with "
        "the same settings brings the channel in line with the playlist without reconnecting. Returns at once."
    )
    CATEGORY = "WebTV/Output"
    FUNCTION = "start"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("status",)
    OUTPUT_TOOLTIPS = ("The channel's status as JSON.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "playlist": (VIDEO_OR_PATH, {"forceInput": True, "tooltip": "An ffconcat playlist under the output folder (from FFConcat Playlist), or a VIDEO to broadcast alone (it is saved in WebTV/<channel>_video.ffconcat)."}),
                "channel": ("STRING", {"default": "webtv", "tooltip": CHANNEL_TOOLTIP}),
                "outputs": ("STRING", {"multiline": True, "default": "", "tooltip": "RTMP servers, one per line, e.g. rtmp://live.twitch.tv/app/${WEBTV_KEY_TWITCH}. Write the stream key as ${WEBTV_KEY_NAME} (or a name listed in WEBTV_STREAM_KEYS), only in the stream name or query, and set it in the environment (or WEBTV_KEY_NAME_FILE naming a file): widget values are saved in workflows. An srt://host:port[?options] line sends MPEG-TS over SRT (caller mode; it cannot hold a key). An https://host/path line is a WHIP (WebRTC) server, with its bearer token as ?bearer=${WEBTV_KEY_NAME} (H.264 and Opus sound). Add ?codec=h264, hevc or av1 (or &codec=...) to a line to choose its codec (SRT: h264 or hevc); it is read by the channel, not sent to the server. Each distinct codec is encoded once. Empty: local preview only."}),
                "local_preview": ("BOOLEAN", {"default": True, "tooltip": "Also write HLS under output/WebTV/live/<channel> and serve a player page on 127.0.0.1 (its address is in the status)."}),
                "mode": (channels.MODES, {"default": "clips", "tooltip": "clips: continuous broadcast that picks up playlist changes at clip boundaries. playlist: the AI WebTV's way, ffmpeg's concat demuxer looping the file as it was at start."}),
                "width": ("INT", {"default": 1024, "min": 16, "max": 3840, "step": 2, "tooltip": "Channel width; clips are scaled and padded to it."}),
                "height": ("INT", {"default": 576, "min": 16, "max": 2160, "step": 2, "tooltip": "Channel height; clips are scaled and padded to it."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.001, "tooltip": "Channel frame rate; clips are converted to it."}),
                "video_kbps": ("INT", {"default": 3000, "min": 100, "max": 50000, "tooltip": "Constant video bitrate (Twitch: 3000-6000)."}),
                "audio_kbps": ("INT", {"default": 128, "min": 32, "max": 320, "tooltip": "AAC bitrate (96-160 is typical)."}),
                "sample_rate": (["48000", "44100"], {"default": "48000", "tooltip": "Audio sample rate; clips are resampled to it."}),
                "keyframe_seconds": ("FLOAT", {"default": 2.0, "min": 0.5, "max": 10.0, "step": 0.5, "tooltip": "Keyframe interval; Twitch and YouTube ask for 2 seconds."}),
                "preset": (PRESETS, {"default": "veryfast", "tooltip": "x264 speed preset: slower presets look better at the same bitrate but need more CPU."}),
            },
            "optional": {
                "preview_port": ("INT", {"default": 0, "min": 0, "max": 65535, "tooltip": "Port of the preview page on 127.0.0.1; 0 picks a free one."}),
                "retry_max_seconds": ("FLOAT", {"default": 5.0, "min": 0.5, "max": 300.0, "step": 0.5, "tooltip": "Longest wait between reconnect attempts (the wait doubles from 0.5 s)."}),
                "tune": (TUNES, {"default": "zerolatency", "tooltip": "x264 tuning. zerolatency (no B-frames) encodes much faster and starts sooner; none/film/animation give a little more quality per bit for more CPU."}),
                "session_hours": ("FLOAT", {"default": 47.0, "min": 0.01, "max": 48.0, "step": 0.5, "tooltip": "Reconnect the RTMP outputs on purpose at the first clip boundary after this many hours (Twitch ends a broadcast after 48 h)."}),
                "retention_hours": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 8760.0, "step": 1.0, "tooltip": "Delete clips that have aired once they are older than this (oldest first; never the clip on air or the next one; they leave the playlist first). 0: keep them."}),
                "retention_mb": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10000000.0, "step": 100.0, "tooltip": "Delete the oldest clips that have aired while the rotation's clips take more than this many megabytes. 0: no quota."}),
                "codec": (CODECS, {"default": "h264", "tooltip": "Video codec of the outputs whose line names none (codec= in the address) and of the local preview: h264 (every server), hevc (libx265) or av1 (SVT-AV1), both sent as Enhanced RTMP, which YouTube takes, for about half the bitrate at the same quality and more CPU. Browsers may not play an hevc local preview."}),
                "resume": ("BOOLEAN", {"default": False, "tooltip": "Remember the rotation and the clip on air in a file beside the playlist (<playlist name>.state.json, replaced atomically every few seconds); when the channel starts again on that playlist (after ComfyUI restarts), it goes on from that clip instead of the first. Off: nothing is saved."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # the playlist file's content and the channel's state live outside the inputs

    def start(self, playlist, channel, outputs, local_preview, mode, width, height, fps, video_kbps, audio_kbps,
              sample_rate, keyframe_seconds, preset, preview_port=0, retry_max_seconds=5.0, tune="zerolatency",
              session_hours=47.0, retention_hours=0.0, retention_mb=0.0, codec="h264", resume=False):
        if not isinstance(playlist, str):
            if not channels.NAME.match(channel.strip()):
                raise ValueError(f"channel: {channel.strip()!r} is not a valid name; use letters, digits, '-' and '_' (at most 64).")
            clip = _clip_path(playlist, "playlist")
            playlist = inside_output(f"WebTV/{channel.strip()}_video.ffconcat", "channel")
            write_ffconcat(playlist, [Entry(clip, probe(clip).duration)], relative=True)
        playlist = inside_output(playlist, "playlist")
        fps = checks.finite("fps", fps, low=1.0, high=120.0)
        settings = channels.ChannelSettings(
            name=channel.strip(),
            outputs=tuple(line.strip() for line in outputs.splitlines() if line.strip()),
            preview=local_preview,
            preview_port=preview_port,
            mode=mode,
            playlist=playlist,
            fmt=ChannelFormat(width, height, Fraction(fps).limit_denominator(1001), int(sample_rate)),
            encoding=Encoding(video_kbps, audio_kbps, keyframe_seconds, preset, tune, codec),
            retry_max_seconds=retry_max_seconds,
            session_hours=session_hours,
        )
        policy = retention.Retention(retention_hours, retention_mb)
        if policy.active and mode != "clips":
            raise ValueError("retention_hours/retention_mb: the playlist mode loops the file ffmpeg read at start; use the clips mode for retention.")
        if resume and mode != "clips":
            raise ValueError("resume: the playlist mode always starts the file from its first clip; use the clips mode to resume.")
        saved_at = state.state_path(playlist)
        with retention.playlist_lock(playlist):  # no clip deleted between reading the playlist and the rotation's update
            clips = [inside_output(e.path, "playlist") for e in read_ffconcat(playlist)]
            at = state.resume_clip(saved_at, clips) if resume and not _running(settings.name) else None
            if at:  # the saved clip airs first, then the playlist's rotation goes on after it
                channels.start(settings, [at])
            live = channels.start(settings, clips)
        if mode == "clips":
            retention.attach(live, policy, playlist)
        if resume:
            state.attach(live, saved_at, at)
        else:
            state.detach(settings.name)
        return _status_result(live.status())


def _running(name: str) -> bool:
    try:
        return channels.get(name).running
    except ValueError:
        return False


class ChannelAppend:
    DESCRIPTION = "Adds clips to a running channel's rotation; they go on air at the next clip boundary, without a reconnect."
    CATEGORY = "WebTV/Output"
    FUNCTION = "append"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("status",)
    OUTPUT_TOOLTIPS = ("The channel's status as JSON.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "channel": ("STRING", {"default": "webtv", "tooltip": CHANNEL_TOOLTIP}),
                "clips": ("STRING", {"multiline": True, "default": "", "tooltip": "Clips to add, one per line: paths or glob patterns relative to the output folder."}),
            },
            "optional": {
                "clip": (VIDEO_OR_PATH, {"forceInput": True, "tooltip": "One more clip, a path or a VIDEO (e.g. from Save Video or core Create Video)."}),
            },
        }

    def append(self, channel, clips, clip=None):
        found = resolve_clips(_clip_lines(clips, clip), "clips")
        if not found:
            raise ValueError("clips: no clip given; list clip files or connect a clip path.")
        return _status_result(channels.append(channel.strip(), found).status())


class ChannelStatus:
    DESCRIPTION = "Shows a channel's health: state, current clip, frames sent, encoder speed, dropped frames, reconnects, uptime, outputs."
    CATEGORY = "WebTV/Output"
    FUNCTION = "status"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("status",)
    OUTPUT_TOOLTIPS = ("The channel's status as JSON.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"channel": ("STRING", {"default": "webtv", "tooltip": CHANNEL_TOOLTIP})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def status(self, channel):
        return _status_result(channels.get(channel.strip()).status())


class ChannelStop:
    DESCRIPTION = "Stops a channel: the outputs flush, every ffmpeg ends, the connection closes cleanly."
    CATEGORY = "WebTV/Output"
    FUNCTION = "stop"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("status",)
    OUTPUT_TOOLTIPS = ("The channel's last status as JSON.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"channel": ("STRING", {"default": "webtv", "tooltip": CHANNEL_TOOLTIP})},
            "optional": {"after": ("STRING", {"forceInput": True, "tooltip": "Any output (e.g. a channel status) that must exist before the stop, to order it in a graph."})},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def stop(self, channel, after=None):
        return _status_result(channels.stop(channel.strip()))


host.add_routes(routes.register)

NODE_CLASS_MAPPINGS = {
    "WebTVSaveVideo": SaveVideo,
    "WebTVFFConcatPlaylist": FFConcatPlaylist,
    "WebTVRTMPChannel": RTMPChannel,
    "WebTVChannelAppend": ChannelAppend,
    "WebTVChannelStatus": ChannelStatus,
    "WebTVChannelStop": ChannelStop,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "WebTVSaveVideo": "Save Video (WebTV)",
    "WebTVFFConcatPlaylist": "FFConcat Playlist",
    "WebTVRTMPChannel": "RTMP Channel",
    "WebTVChannelAppend": "Channel Append",
    "WebTVChannelStatus": "Channel Status",
    "WebTVChannelStop": "Channel Stop",
}
