"""MusicGen on tiny random models in the Hugging Face layout: loading, exact durations, windowed
continuation, melody, muxing into the mp4, both backends' dispatch, and bad input.

Marked ``oldest``: CI runs these also under the oldest transformers the requirements allow."""

from __future__ import annotations

import importlib.util
import functools
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import av
import pytest
import torch
import transformers
from safetensors.torch import load_file

from comfyui_webtv.nodes import host
from comfyui_webtv.nodes.broadcast.nodes import SaveVideo
from comfyui_webtv.nodes.music import backends, chroma, generate, loader, sampling
from comfyui_webtv.nodes.music.nodes import FitAudioToVideo, MusicGen, MusicGenLoader

pytestmark = pytest.mark.oldest

# widgets of the MusicGen node after model and prompt, in order
DEFAULTS = dict(duration_mode="seconds", seconds=0.3, fps=8.0, guidance=3.0, temperature=1.0, top_k=250, top_p=0.0,
                seed=0, window_seconds=30.0, context_seconds=12.0)


@pytest.fixture
def small(tiny_env):
    return loader.load_cached("musicgen-small")


def music(model, prompt="lofi beat with warm piano", **overrides):
    kwargs = {**DEFAULTS, **overrides}
    return MusicGen().generate(model, prompt, **kwargs)[0]


# ---------------------------------------------------------------- loading


def test_loader_reads_the_hugging_face_folder_once(tiny_env):
    folder = os.path.join(tiny_env["models"], "musicgen", "musicgen-small")
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "spiece.model", "preprocessor_config.json"):
        assert os.path.isfile(os.path.join(folder, name)), name
    (model,) = MusicGenLoader().load("musicgen-small", "auto", "auto", False)
    assert isinstance(model, backends.TransformersMusicGen) and model.backend == "transformers"
    assert (model.sample_rate, model.frame_rate, model.hop, model.num_codebooks) == (32000, 50, 640, 4)
    assert MusicGenLoader().load("musicgen-small", "transformers", "auto", False)[0] is model
    assert "musicgen-small" in MusicGenLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert "CC-BY-NC-4.0" in MusicGenLoader.DESCRIPTION and "CC-BY-NC-4.0" in MusicGen.DESCRIPTION


def test_missing_weights_name_the_file_and_the_repository(tiny_env, tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    shutil.copytree(os.path.join(tiny_env["models"], "musicgen", "musicgen-small"), models_dir / "musicgen" / "musicgen-medium")
    os.remove(models_dir / "musicgen" / "musicgen-medium" / "model.safetensors")
    monkeypatch.setitem(host._standalone, "models", str(models_dir))
    with pytest.raises(FileNotFoundError, match=r"(?s)model\.safetensors.*facebook/musicgen-medium.*CC-BY-NC-4.0"):
        loader.load_cached("musicgen-medium")
    with pytest.raises(FileNotFoundError, match=r"(?s)musicgen-large.*facebook/musicgen-large"):
        loader.load_cached("musicgen-large")


def test_backend_selection_by_folder_layout(tmp_path):
    folder = tmp_path / "musicgen-small"
    folder.mkdir()
    (folder / "state_dict.bin").write_bytes(b"")
    (folder / "compression_state_dict.bin").write_bytes(b"")
    assert loader.detect_backend(str(folder)) == "audiocraft"  # only the audiocraft pair
    assert loader.missing_files(str(folder), "transformers") == [
        "config.json", "model.safetensors or model-*.safetensors or pytorch_model.bin or pytorch_model-*.bin",
        "tokenizer.json or spiece.model",
    ]
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    assert loader.detect_backend(str(folder)) == "transformers"  # the facebook/musicgen-* repos hold both
    assert loader.detect_backend(str(folder), "audiocraft") == "audiocraft"
    with pytest.raises(ValueError, match="backend: 'jax'"):
        loader.detect_backend(str(folder), "jax")


def test_audiocraft_backend_is_dispatched_to_and_explains_its_install(tmp_path, monkeypatch):
    """The audiocraft adapter cannot run here (audiocraft pins torch 2.1); its selection and errors can."""
    models_dir = tmp_path / "models"
    folder = models_dir / "musicgen" / "musicgen-small"
    folder.mkdir(parents=True)
    (folder / "state_dict.bin").write_bytes(b"")
    (folder / "compression_state_dict.bin").write_bytes(b"")
    monkeypatch.setitem(host._standalone, "models", str(models_dir))
    assert loader.resolve_folder("musicgen-small") == (str(folder), "audiocraft")
    if importlib.util.find_spec("audiocraft") is not None:  # pragma: no cover - only where audiocraft is installed
        pytest.skip("audiocraft is installed; this checks the message shown without it")
    with pytest.raises(ImportError, match="backend: audiocraft is not installed.*pip install audiocraft --no-deps"):
        loader.load_cached("musicgen-small", backend="audiocraft")
    with pytest.raises(FileNotFoundError, match="transformers backend"):
        loader.load_cached("musicgen-small", backend="transformers")
    assert backends.audiocraft_params(sampling.Sampling(guidance=4.0, temperature=0.0, top_k=50, top_p=0.9)) == {
        "use_sampling": False, "temperature": 1.0, "top_k": 50, "top_p": 0.9, "cfg_coef": 4.0, "two_step_cfg": False,
    }
    assert backends.audiocraft_params(sampling.Sampling(temperature=0.7), "temp")["temp"] == 0.7


# ---------------------------------------------------------------- sampling


def test_delay_pattern_round_trips_and_keeps_the_prompt():
    prompt = torch.randint(0, 2048, (2, 4, 3))
    grid, known = sampling.delayed_grid(prompt, total=5, lag=[0, 1, 2, 3], start_token=2048)
    assert grid.shape == (2, 4, 9)
    assert known[:, 0].all() and known[0].tolist() == [True] * 4 + [False] * 2 + [True] * 3
    assert known[3].tolist() == [True] * 7 + [False] * 2
    codes = sampling.undelay(grid, 5, [0, 1, 2, 3])
    assert torch.equal(codes[..., :3], prompt) and (codes[..., 3:] == 2048).all()
    assert sampling.delays(8, 2) == [0, 0, 1, 1, 2, 2, 3, 3]  # stereo: left and right share a delay


def test_pick_honours_temperature_top_k_and_top_p():
    logits = torch.tensor([[0.0, 1.0, 5.0, 4.9]]).repeat(2000, 1)
    assert (sampling.pick(logits, sampling.Sampling(temperature=0.0)) == 2).all()
    top2 = sampling.pick(logits, sampling.Sampling(top_k=2))
    assert set(top2.tolist()) == {2, 3}
    nucleus = sampling.pick(logits, sampling.Sampling(top_p=0.3, top_k=4))
    assert set(nucleus.tolist()) == {2}  # the most likely token alone holds more than 30 %
    colder = sampling.pick(logits * 1e3, sampling.Sampling(temperature=1e-30))  # no inf / inf = NaN on the way
    assert (colder == 2).all()


# ---------------------------------------------------------------- generation


def test_match_video_is_exact_to_the_sample(small):
    video = torch.rand(5, 16, 16, 3)
    audio = music(small, duration_mode="match video", fps=12.0, video=video)
    assert audio["sample_rate"] == 32000
    assert audio["waveform"].shape == (1, 1, round(5 * 32000 / 12.0))  # 13333 samples, not a whole frame count
    wave = audio["waveform"]
    assert torch.isfinite(wave).all() and wave.std() > 1e-3
    assert music(small, seconds=0.25)["waveform"].shape == (1, 1, 8000)


def test_same_seed_same_music(small):
    a = music(small, seconds=0.2, seed=3)["waveform"]
    b = music(small, seconds=0.2, seed=3)["waveform"]
    c = music(small, seconds=0.2, seed=4)["waveform"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_three_windows_make_one_continuous_waveform(small):
    windowing = generate.Windowing(window=0.4, context=0.1, decode_chunk=0.3, decode_context=0.1, crossfade=0.02)
    windows = []
    samples = 32000 - 123  # not a whole number of frames
    wave = generate.generate_music(
        small, ["lofi beat"], samples, sampling.Sampling(), seed=1, windowing=windowing,
        on_window=lambda start, end, codes: windows.append((start, end, codes)),
    )
    assert wave.shape == (1, 1, samples)
    assert [(s, e) for s, e, _ in windows] == [(0, 20), (15, 35), (30, 50)]
    for (s0, _, c0), (s1, _, c1) in zip(windows, windows[1:]):
        assert torch.equal(c1[..., :5], c0[..., s1 - s0 :])  # each window continues from the previous tail
    stream = torch.cat([windows[0][2]] + [c[..., 5:] for _, _, c in windows[1:]], dim=-1)
    whole = small.decode(stream)[..., :samples]
    # the chunked, crossfaded decode is the decode of the whole continuous stream
    assert (wave - whole).abs().max() < 1e-3 * whole.abs().max()
    step = (wave[..., 1:] - wave[..., :-1]).abs()[0, 0]
    seams = [end * small.hop for _, end, _ in windows[:-1]] + [j for j in range(0, samples, 15 * 640)]
    around = torch.zeros_like(step, dtype=torch.bool)
    for seam in seams:
        around[max(seam - 640, 0) : seam + 640] = True
    assert step[around].max() <= step[~around].max()  # no jump at a seam beyond the audio's own variation
    silent = (wave[0, 0] == 0).int()
    assert silent.sum() < 5  # no unwritten gap in the preallocated waveform


def test_stream_decoder_joins_chunks_without_a_seam(small):
    codes = torch.randint(0, 2048, (1, 4, 97))
    out = torch.zeros(1, 1, 97 * 640)
    decoder = generate.StreamDecoder(small.decode, out, 640, chunk=20, context=5, crossfade=640)
    for start in range(0, 97, 13):  # codes arrive in pieces of any size
        decoder.push(codes[..., start : start + 13])
    decoder.finish()
    # chunks start every 20 - 2 * 5 frames and meet 5 frames into their overlap
    assert decoder.joins == [(start + 5) * 640 for start in range(10, 90, 10)] and decoder.codes is None
    whole = small.decode(codes)
    assert (out - whole).abs().max() < 1e-3 * whole.abs().max()


def test_progress_runs_per_token_and_cancel_interrupts(small):
    seen = []
    remove = host.add_progress_listener(lambda value, total: seen.append((value, total)))
    try:
        music(small, seconds=0.3, window_seconds=1.0, context_seconds=0.5)
        assert seen[-1] == (18, 18) and len(seen) == 18  # 15 frames + 3 codebook delays, one update per step
        seen.clear()

        def cancel(value, total):
            if value == 5:
                host.request_interrupt()

        stop = host.add_progress_listener(cancel)
        with pytest.raises(host.Interrupted):
            music(small, seconds=0.3)
        stop()
        assert seen[-1][0] == 5
    finally:
        remove()


def test_melody_model_follows_a_melody(tiny_env):
    (model,) = MusicGenLoader().load("musicgen-melody", "auto", "auto", False)
    assert model.supports_melody
    tone = torch.sin(2 * math.pi * 440 * torch.arange(44100) / 44100)[None, None].repeat(1, 2, 1)
    with_melody = music(model, seconds=0.2, melody={"waveform": tone, "sample_rate": 44100})["waveform"]
    without = music(model, seconds=0.2)["waveform"]
    assert with_melody.shape == without.shape == (1, 1, 6400)
    assert not torch.equal(with_melody, without)  # the melody conditions the music
    windows = []
    long = generate.generate_music(
        model, ["x"], 30000, sampling.Sampling(), 0, generate.Windowing(window=0.4, context=0.1),
        melody=tone[:, 0, :9000], on_window=lambda s, e, c: windows.append((s, e)),
    )
    assert long.shape == (1, 1, 30000) and windows == [(0, 20), (15, 35), (30, 47)]  # melody looped over 3 windows


def test_chroma_finds_the_pitch_class():
    t = torch.arange(32000 * 2) / 32000
    a4 = torch.sin(2 * math.pi * 440.0 * t)[None]
    c5 = torch.sin(2 * math.pi * 523.25 * t)[None]
    for wave, pitch in ((a4, 9), (c5, 0)):  # chroma starts at C
        notes = chroma.chromagram(wave, 32000, 16384, 4096)
        assert notes.shape == (1, 16, 12)
        assert (notes.argmax(-1) == pitch).all() and (notes.sum(-1) == 1).all()


def test_stereo_models_decode_left_and_right(tmp_path):
    """musicgen-stereo-* interleave left/right codebooks (8, delays 0,0,1,1,...); built here, not in models/."""
    from transformers import AutoTokenizer, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

    from comfyui_webtv.nodes.music import tiny

    vocab = tiny.write_tokenizer(str(tmp_path))
    text, codec, decoder = tiny._configs(vocab)
    decoder.update(num_codebooks=8, audio_channels=2)
    torch.manual_seed(0)
    net = MusicgenForConditionalGeneration(
        MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=codec.to_dict(), decoder=MusicgenDecoderConfig(**decoder).to_dict())
    ).eval()
    tiny.fill_codebooks(net.audio_encoder)
    model = backends.TransformersMusicGen("stereo", str(tmp_path), net, AutoTokenizer.from_pretrained(str(tmp_path)))
    windows = []
    wave = generate.generate_music(model, ["x"], 4000, sampling.Sampling(), 0, on_window=lambda s, e, c: windows.append(c))
    assert wave.shape == (1, 2, 4000) and windows[0].shape == (1, 8, 7)
    assert not torch.equal(wave[:, 0], wave[:, 1])


# ---------------------------------------------------------------- into the mp4


def probe(path: str) -> dict:
    """Streams of ``path`` as ffprobe reports them (PyAV where ffprobe is not installed)."""
    if shutil.which("ffprobe"):
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", path], capture_output=True, text=True, check=True
        ).stdout
        return {s["codec_type"]: s for s in json.loads(out)["streams"]}
    with av.open(path) as container:
        return {
            s.type: {"duration": str(float(s.duration * s.time_base)), "sample_rate": str(getattr(s, "rate", "")),
                     "channels": getattr(s, "channels", None), "nb_frames": str(s.frames)}
            for s in container.streams
        }


@pytest.mark.parametrize("fps,frames", [(8.0, 9), (24000 / 1001, 20)])
def test_music_in_the_mp4_lasts_as_long_as_the_video(small, fps, frames):
    video = torch.rand(frames, 32, 32, 3)
    audio = music(small, duration_mode="match video", fps=fps, video=video)
    (fitted,) = FitAudioToVideo().fit(audio, video, fps, "48000", "loop", 0.05, 0.1)
    assert fitted["waveform"].shape == (1, 2, round(frames * 48000 / fps))
    path = SaveVideo().save(video, fps, "music/clip", 23, audio=fitted)["result"][0]
    streams = probe(path)
    assert "audio" in streams and "video" in streams
    assert int(streams["audio"]["sample_rate"]) == 48000 and int(streams["audio"]["channels"]) == 2
    video_seconds = frames / fps
    assert abs(float(streams["video"]["duration"]) - video_seconds) < 1e-3
    assert abs(float(streams["audio"]["duration"]) - video_seconds) <= 1 / fps


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(prompt="  "), "prompt: is empty"),
        (dict(prompt=12), "prompt: expected text, got int"),
        (dict(seconds=0.0), "seconds: must be above 0"),
        (dict(seconds=-2.0), "seconds: must be above 0"),
        (dict(seconds=math.nan), "seconds: must be a finite number"),
        (dict(seconds=math.inf), "seconds: must be a finite number"),
        (dict(seconds=1e9), "seconds: must be at most 3600"),
        (dict(duration_mode="match video"), "video: duration_mode is 'match video' but no video"),
        (dict(duration_mode="match video", video=torch.rand(4, 4, 3)), "video: expected an IMAGE"),
        (dict(duration_mode="match video", video=torch.rand(2, 4, 4, 3), fps=0.0), "fps: must be at least 0.1"),
        (dict(duration_mode="match video", video=torch.rand(2, 4, 4, 3), fps=math.nan), "fps: must be a finite number"),
        (dict(duration_mode="match video", video=torch.rand(2, 4, 4, 3), fps=-math.inf), "fps: must be a finite number"),
        (dict(duration_mode="match video", video=torch.rand(2, 4, 4, 3), fps=1e-300), "fps: must be at least 0.1"),
        (dict(guidance=math.nan), "guidance: must be a finite number"),
        (dict(guidance=math.inf), "guidance: must be a finite number"),
        (dict(guidance=1e300), "guidance: must be at most 100"),
        (dict(temperature=math.nan), "temperature: must be a finite number"),
        (dict(temperature=-1.0), "temperature: must be at least 0"),
        (dict(top_p=math.nan), "top_p: must be a finite number"),
        (dict(top_p=2.0), "top_p: must be at most 1"),
        (dict(top_k=-1), "top_k: must be at least 0"),
        (dict(top_k=2.5), "top_k: 2.5 is not a whole number"),
        (dict(seed=-1), "seed: must be at least 0"),
        (dict(seed=2**64), "seed: must be at most"),
        (dict(window_seconds=math.nan), "window_seconds: must be a finite number"),
        (dict(window_seconds=0.0), "window_seconds: must be at least 1"),
        (dict(context_seconds=math.inf), "context_seconds: must be a finite number"),
        (dict(context_seconds=30.0), "context_seconds: 30.0 s must be shorter than the window"),
        (dict(melody={"waveform": torch.zeros(1, 1, 100), "sample_rate": 32000}), "melody: 'musicgen-small' is not a melody model"),
        (dict(melody={"waveform": torch.zeros(100), "sample_rate": 32000}), "melody: waveform must be"),
        (dict(melody={"waveform": torch.zeros(1, 1, 100), "sample_rate": math.nan}), "melody sample_rate: must be a finite number"),
        (dict(melody={"waveform": torch.zeros(1, 1, 100), "sample_rate": 0}), "melody sample_rate: must be above 0"),
    ],
)
def test_bad_input_is_named(small, overrides, match):
    prompt = overrides.pop("prompt", "lofi")
    with pytest.raises(ValueError, match=match):
        music(small, prompt, **overrides)


@pytest.mark.parametrize("name", ["musicgen-small", "musicgen-melody"])
def test_sampler_matches_transformers_generate(tiny_env, name, monkeypatch):
    """Greedy decoding makes both deterministic: our sampler must give transformers' own result exactly,
    for text, for a code prompt (continuation, read in pieces) and for a melody."""
    monkeypatch.setattr(sampling, "PREFILL_CHUNK", 4)
    model = loader.load_cached(name)
    text = "lofi beat, piano"
    tokens = model.tokenizer([text], return_tensors="pt")
    greedy = sampling.Sampling(guidance=3.0, temperature=0.0)
    none = torch.zeros(1, 4, 0, dtype=torch.long)
    prompt = torch.randint(0, 2048, (1, 4, 6), generator=torch.Generator().manual_seed(0))
    cases = [({}, none, None), ({"decoder_input_ids": prompt.reshape(4, 6)}, prompt, None)]
    if model.supports_melody:
        tone = torch.sin(2 * math.pi * 440 * torch.arange(40000) / 32000)[None]
        cases.append(({"input_features": chroma.chromagram(tone, 32000, 16384, 4096)}, none, tone))
    for extra, start, melody in cases:
        reference = model.model.generate(**tokens, **extra, do_sample=False, guidance_scale=3.0, max_new_tokens=8 + 3)
        codes = model.generate_codes(model.condition([text], True, melody), start, 8, greedy)
        assert torch.equal(model.decode(codes), reference)


# ---------------------------------------------------------------- across transformers releases


class _Records(logging.Handler):
    """What transformers logs (its loggers do not propagate to the root, so caplog misses them)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_loads_with_the_dtype_keyword_of_the_installed_transformers(tiny_env):
    """from_pretrained takes `torch_dtype` before transformers 4.56 and `dtype` after (the other raises or warns)."""
    from comfyui_webtv.nodes.common.compat import pretrained_dtype

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    expected = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    assert pretrained_dtype(torch.float16) == {expected: torch.float16}
    folder = os.path.join(tiny_env["models"], "musicgen", "musicgen-small")
    transformers.utils.logging.warning_once.cache_clear()
    records = _Records()
    logging.getLogger("transformers").addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # an unknown or deprecated keyword must not pass silently either
            model = loader.load_transformers(folder, torch.bfloat16)
    finally:
        logging.getLogger("transformers").removeHandler(records)
    said = [str(w.message) for w in caught] + records.messages
    assert not [m for m in said if "dtype" in m], said
    assert next(model.model.decoder.parameters()).dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("name", ["musicgen-small", "musicgen-melody"])
def test_kv_cache_uses_the_api_of_the_installed_transformers_without_deprecations(tiny_env, name):
    """transformers 5.x takes the decoder's cache as `cache=` (`past_key_values=` goes through a shim that
    warns); 4.x only knows `past_key_values=`. Either way: no deprecation, and the cache really is reused."""
    model = loader.load_cached(name)
    body = model.model.decoder.model
    assert backends.cache_keyword(body) == ("cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values")
    transformers.utils.logging.warning_once.cache_clear()  # a warning logged once before must show again
    records = _Records()
    library = logging.getLogger("transformers")
    library.addHandler(records)
    calls = []
    original = body.forward

    @functools.wraps(original)  # keeps the signature the backend reads
    def spy(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[-1])
        return original(*args, **kwargs)

    body.forward = spy
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            melody = torch.sin(torch.arange(20000) / 7.0)[None] if model.supports_melody else None
            codes = model.generate_codes(model.condition(["lofi"], True, melody), torch.zeros(1, 4, 0, dtype=torch.long), 6,
                                         sampling.Sampling())
    finally:
        del body.forward
        library.removeHandler(records)
    assert codes.shape == (1, 4, 6)
    assert calls == [1] * 9  # one position per step: the cache carries everything before
    said = [str(w.message) for w in caught] + records.messages
    assert not [m for m in said if "deprecat" in m.lower() or "past_key_values" in m], said


def test_encodec_decodes_in_fp32_under_an_fp16_language_model(tiny_env):
    """audiocraft's fp16 autocast covers only the language model; EnCodec decodes in fp32, with the
    checkpoint's fp32 weights."""
    folder = os.path.join(tiny_env["models"], "musicgen", "musicgen-small")
    half = loader.load_transformers(folder, torch.float16)
    full = loader.load_transformers(folder, torch.float32)
    assert {p.dtype for p in half.model.decoder.parameters()} == {torch.float16}
    assert {p.dtype for p in half.model.audio_encoder.parameters()} == {torch.float32}
    stored = {k: v for k, v in load_file(os.path.join(folder, "model.safetensors")).items() if k.startswith("audio_encoder.")}
    state = half.model.state_dict()
    assert stored and all(torch.equal(state[k], v) for k, v in stored.items())  # not rounded through fp16
    codes = torch.randint(0, 2048, (1, 4, 25), generator=torch.Generator().manual_seed(1))
    audio = half.decode(codes)
    assert audio.dtype == torch.float32 and torch.equal(audio, full.decode(codes))


# ---------------------------------------------------------------- melody windows, prompt bounds


def test_every_later_window_is_conditioned_on_a_full_window_of_looped_melody(tiny_env, monkeypatch):
    """audiocraft's extension (MusicGen._generate_tokens): the first window gets the melody as given; a later one
    starting at time_offset gets int(max_duration * sample_rate) samples of the melody looped from
    int(time_offset * sample_rate), the last, shorter window too."""
    model = loader.load_cached("musicgen-melody")
    seen = []
    original = model.condition
    monkeypatch.setattr(model, "condition", lambda p, g, m=None: (seen.append(m), original(p, g, m))[1])
    melody = torch.randn(1, 9000)
    window_seconds, windows = 0.4, []
    generate.generate_music(
        model, ["x"], 30000, sampling.Sampling(), 0, generate.Windowing(window=window_seconds, context=0.1),
        melody=melody, on_window=lambda s, e, c: windows.append(s),
    )
    assert windows == [0, 15, 30] and seen[0] is None  # the first call only sizes the conditioning
    for start, got in zip(windows, seen[1:]):
        if start == 0:
            expected = melody
        else:
            time_offset = start / 50  # frames at 50 Hz
            first = int(time_offset * 32000)
            wanted = int(window_seconds * 32000)
            expected = torch.stack([melody[0, (first + i) % 9000] for i in range(wanted)])[None]
        assert torch.equal(got, expected), start


def test_a_long_melody_is_cut_to_what_the_chroma_window_sees(tiny_env, monkeypatch):
    """Only chroma_length chroma frames condition a window; computing fewer samples must not change them."""
    model = loader.load_cached("musicgen-melody")
    length = model.model.config.chroma_length
    melody = torch.randn(1, 32000 * 40)
    computed = []
    original = chroma.chromagram
    monkeypatch.setattr(chroma, "chromagram", lambda *a, **k: computed.append(original(*a, **k)) or computed[-1])
    model.condition(["x"], False, melody)
    (notes,) = computed
    whole = original(melody, 32000, 16384, 4096)
    assert whole.shape[1] > notes.shape[1] >= length and torch.equal(notes[:, :length], whole[:, :length])


def test_prompts_are_bounded_by_the_tokenizer_limit(small):
    """A 100k-character prompt once asked T5 for 32 GB of attention; prompts are now refused, by
    characters at the node and by tokens (the tokenizer's 512) in the engine, before any model runs."""
    with pytest.raises(ValueError, match="prompt: 100000 characters is more than"):
        music(small, "lofi " * 20000)
    long = "warm piano " * 1500  # under the character bound, far over 512 tokens
    with pytest.raises(ValueError, match=r"prompt: is \d+ tokens long; musicgen-small's text encoder reads at most 512"):
        music(small, long)
    with pytest.raises(ValueError, match="at most 512"):
        generate.generate_music(small, [long], 640, sampling.Sampling(), 0)
    fits = " ".join(["lofi"] * 100)
    assert small.tokenizer(fits).input_ids.__len__() <= 512
    assert music(small, fits, seconds=0.05)["waveform"].shape == (1, 1, 1600)


def test_a_huge_prompt_allocates_nothing_large(tiny_env):
    """Peak memory of a fresh process given the 100k-character prompt, address space capped so that a
    regression fails instead of taking the machine."""
    code = textwrap.dedent("""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        import torch
        torch.set_num_threads(1)
        from comfyui_webtv.nodes.music import loader
        from comfyui_webtv.nodes.music.nodes import MusicGen
        model = loader.load_transformers(sys.argv[1])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            MusicGen().generate(model, "lofi " * 20000, "seconds", 1.0, 8.0, 3.0, 1.0, 250, 0.0, 0, 30.0, 12.0)
            error = None
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({"error": error, "grown_kib": grown}))
    """)
    folder = os.path.join(tiny_env["models"], "musicgen", "musicgen-small")
    out = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["error"].startswith("ValueError: prompt:"), result
    assert result["grown_kib"] < 256 * 1024, result
