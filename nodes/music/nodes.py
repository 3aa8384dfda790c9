"""MusicGen nodes: loader, music generation of any length, fitting audio to a video."""

from __future__ import annotations

from .. import host
from ..common import checks
from ..common.frames import check_image
from ..common.models import on_device, sequence_memory
from . import fit, generate, loader
from .backends import TRAINED_WINDOW_SECONDS
from .sampling import Sampling

MODEL_TYPE = "MUSICGEN_MODEL"
LICENSE_NOTE = (
    "The MusicGen weights (facebook/musicgen-*) are licensed CC-BY-NC-4.0: non-commercial use only, "
    "which matters for monetised channels."
)
DURATION_MODES = ("seconds", "match video")
MAX_SECONDS = 3600.0
MAX_GUIDANCE = 100.0  # past this the guided logits overflow
MAX_TEMPERATURE = 100.0
# Far more than any tokenizer limit (MusicGen's T5 reads 512 tokens, checked on the tokens); keeps
# tokenizing cheap.
PROMPT_CHARACTERS = 20000


class MusicGenLoader:
    DESCRIPTION = (
        "Loads MusicGen (small, medium, large, melody, stereo) from a folder under models/musicgen: the Hugging "
        "Face layout of facebook/musicgen-* for the transformers backend, or an audiocraft checkpoint pair "
        "(state_dict.bin + compression_state_dict.bin) for the optional audiocraft backend. Cached across runs; "
        "on the GPU only while a node uses it. " + LICENSE_NOTE
    )
    CATEGORY = "WebTV/Music"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)

    @classmethod
    def INPUT_TYPES(cls):
        names = sorted(set(host.list_models("musicgen")) | {"musicgen-small", "musicgen-medium", "musicgen-large", "musicgen-melody"})
        return {
            "required": {
                "model_name": (names, {"default": "musicgen-small", "tooltip": "Model folder under models/musicgen (for example musicgen-small from facebook/musicgen-small)."}),
                "backend": (list(loader.BACKENDS), {"default": "auto", "tooltip": "auto: transformers when the folder has its files, else audiocraft. audiocraft must be installed separately (it pins an old torch)."}),
                "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto", "tooltip": "Weight precision on the GPU; auto is fp16. Always fp32 on CPU."}),
                "download_if_missing": ("BOOLEAN", {"default": False, "tooltip": "Download the model from the Hugging Face Hub when it is missing (not in offline mode)."}),
            }
        }

    def load(self, model_name, backend, dtype, download_if_missing):
        return (loader.load_cached(model_name, backend, dtype, download_if_missing),)


class MusicGen:
    DESCRIPTION = (
        "Generates music from a prompt with MusicGen, for a number of seconds or exactly as long as a video. "
        "Past the model's 30-second window the music continues window by window, each prompted with the end of "
        "the one before, and is decoded in chunks joined by a short crossfade: minutes of music, no seam, memory "
        "flat in duration. Melody models can follow a melody. Output: AUDIO at the model's rate (32 kHz). "
        + LICENSE_NOTE
    )
    CATEGORY = "WebTV/Music"
    FUNCTION = "generate"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("The music, {'waveform': [1, channels, samples], 'sample_rate': 32000}.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "From MusicGen Loader."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The music: genre, instruments, mood, tempo (for example: lofi hip hop, warm piano, 80 bpm)."}),
                "duration_mode": (list(DURATION_MODES), {"default": "match video", "tooltip": "seconds: use 'seconds'. match video: exactly as long as the connected video at 'fps'."}),
                "seconds": ("FLOAT", {"default": 10.0, "min": 0.0, "max": 3600.0, "step": 0.1, "tooltip": "Length of the music in seconds (duration_mode 'seconds')."}),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 240.0, "step": 0.01, "tooltip": "Frame rate of the connected video (duration_mode 'match video'); use the fps you save the video with."}),
                "guidance": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 20.0, "step": 0.1, "tooltip": "Classifier-free guidance: how closely the music follows the prompt; 1 disables it."}),
                "temperature": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05, "tooltip": "Sampling temperature; 0 always takes the most likely token."}),
                "top_k": ("INT", {"default": 250, "min": 0, "max": 2048, "tooltip": "Sample among the k most likely tokens (0: all). Ignored when top_p is above 0."}),
                "top_p": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Nucleus sampling; above 0 it replaces top_k."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True, "tooltip": "Sampling seed."}),
                "window_seconds": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 30.0, "step": 0.5, "tooltip": "Seconds sampled per window (MusicGen's limit is 30)."}),
                "context_seconds": ("FLOAT", {"default": 12.0, "min": 0.0, "max": 29.0, "step": 0.5, "tooltip": "Seconds of the previous window each new window continues from (audiocraft: 30 - extend_stride = 12). More context, more coherent, slower."}),
            },
            "optional": {
                "video": ("IMAGE", {"tooltip": "The video to match (duration_mode 'match video'): its frame count at 'fps' sets the length."}),
                "melody": ("AUDIO", {"tooltip": "A melody to follow (musicgen-melody models only); looped over the whole piece."}),
            },
        }

    def generate(self, model, prompt, duration_mode, seconds, fps, guidance, temperature, top_k, top_p, seed,
                 window_seconds, context_seconds, video=None, melody=None):
        if not checks.text("prompt", prompt, limit=PROMPT_CHARACTERS).strip():
            raise ValueError("prompt: is empty; describe the music (genre, instruments, mood, tempo).")
        samples = self._samples(model, duration_mode, seconds, fps, video)
        params = Sampling(
            guidance=checks.finite("guidance", guidance, low=0.0, high=MAX_GUIDANCE),
            temperature=checks.finite("temperature", temperature, low=0.0, high=MAX_TEMPERATURE),
            top_k=checks.integer("top_k", top_k, low=0),
            top_p=checks.finite("top_p", top_p, low=0.0, high=1.0),
        )
        seed = checks.seed("seed", seed)
        windowing = generate.Windowing(
            window=checks.finite("window_seconds", window_seconds, low=1.0, high=TRAINED_WINDOW_SECONDS),
            context=checks.finite("context_seconds", context_seconds, low=0.0),
        )
        tune = None
        if melody is not None:
            fit.checked_audio(melody, "melody")
            mono = fit.to_mono(melody["waveform"][:1].float())
            tune = fit.resample(mono, int(melody["sample_rate"]), model.sample_rate)
        bar = None

        def progress(done, total):
            nonlocal bar
            bar = bar or host.ProgressBar(total)
            bar.update_absolute(done, total)

        memory = sequence_memory(
            model.modules()[0], round(windowing.window * model.frame_rate), 2 if params.guidance > 1 else 1,
            decode_samples=round((windowing.decode_chunk + windowing.decode_context) * model.sample_rate),
        )
        with on_device(*model.modules(), memory_required=memory):
            waveform = generate.generate_music(
                model, [prompt.strip()], samples, params, seed, windowing, melody=tune, on_progress=progress
            )
        return ({"waveform": waveform, "sample_rate": model.sample_rate},)

    @staticmethod
    def _samples(model, duration_mode, seconds, fps, video) -> int:
        if duration_mode not in DURATION_MODES:
            raise ValueError(f"duration_mode: {duration_mode!r} is not one of {', '.join(DURATION_MODES)}.")
        checks.finite("fps", fps, low=0.1)  # checked in both modes: a NaN widget is a broken workflow either way
        if duration_mode == "match video":
            if video is None:
                raise ValueError("video: duration_mode is 'match video' but no video is connected; connect the frames or use 'seconds'.")
            return fit.video_samples(check_image(video, "video").shape[0], fps, model.sample_rate)
        seconds = checks.finite("seconds", seconds, low=0.0, low_open=True, high=MAX_SECONDS)
        return generate.total_samples(seconds, model.sample_rate)


class FitAudioToVideo:
    DESCRIPTION = (
        "Makes audio exactly as long as a video (frames at fps), to the sample: cut, looped with a short crossfade "
        "or padded with silence, with optional fades, converted to stereo at 48 or 44.1 kHz for broadcast. "
        "Works on any AUDIO (MusicGen, ComfyUI's Load Audio)."
    )
    CATEGORY = "WebTV/Music"
    FUNCTION = "fit"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("Stereo audio at the chosen rate, round(frames * rate / fps) samples long.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "Any audio, mono, stereo or 5.1, at any sample rate."}),
                "video": ("IMAGE", {"tooltip": "The video the audio goes with; only its frame count is used."}),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 240.0, "step": 0.01, "tooltip": "Frame rate of the video; use the fps you save it with."}),
                "sample_rate": ([str(r) for r in fit.BROADCAST_RATES], {"default": "48000", "tooltip": "Output sample rate: 48000 (video, streaming) or 44100."}),
                "when_shorter": (list(fit.WHEN_SHORTER), {"default": "loop", "tooltip": "When the audio is shorter than the video: loop it (crossfaded) or pad it with silence. Longer audio is cut."}),
                "fade_in": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 60.0, "step": 0.1, "tooltip": "Seconds of fade-in at the start."}),
                "fade_out": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 60.0, "step": 0.1, "tooltip": "Seconds of fade-out at the end."}),
            }
        }

    def fit(self, audio, video, fps, sample_rate, when_shorter, fade_in, fade_out):
        frames = check_image(video, "video").shape[0]
        return (fit.fit_audio_to_video(audio, frames, fps, int(sample_rate), when_shorter, fade_in, fade_out),)


NODE_CLASS_MAPPINGS = {
    "WebTVMusicGenLoader": MusicGenLoader,
    "WebTVMusicGen": MusicGen,
    "WebTVFitAudioToVideo": FitAudioToVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "WebTVMusicGenLoader": "MusicGen Loader",
    "WebTVMusicGen": "MusicGen",
    "WebTVFitAudioToVideo": "Fit Audio to Video",
}
