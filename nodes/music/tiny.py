"""Tiny random MusicGen and MusicGen Melody with the real structure, saved in the Hugging Face layout.

Each has a tiny T5 text encoder with a real SentencePiece tokenizer (trained offline on a few
phrases), a tiny 32 kHz EnCodec with the real hop (640 samples, 50 frames a second) and 4
codebooks of 2048 codes, and a tiny decoder with MusicGen's 2048 positions (30-second windows).
"""

from __future__ import annotations

import io
import json
import os
import string

import torch

from ..common.models import claim_tiny_path

NAMES = ("musicgen-small", "musicgen-melody")

_PHRASES = [
    "lofi hip hop beat with warm piano and vinyl crackle",
    "epic orchestral soundtrack with big drums and brass, 120 bpm",
    "calm ambient synth pad, slow and dreamy",
    "upbeat electronic dance track with a catchy bass line",
    string.ascii_letters + " " + string.digits + " " + string.punctuation,
]


def write_tokenizer(folder: str) -> int:
    """A T5 tokenizer folder (``spiece.model``, ``tokenizer.json``, ``tokenizer_config.json``); returns its size.

    The fast tokenizer is assembled as transformers converts T5's SentencePiece model (Metaspace
    pre-tokenizer, Unigram, ``</s>`` appended), which every transformers release can save and load.
    """
    import sentencepiece
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_PHRASES * 20), model_writer=model, vocab_size=160, hard_vocab_limit=False,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        normalization_rule_name="identity", num_threads=1, minloglevel=2,
    )
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "spiece.model"), "wb") as f:
        f.write(model.getvalue())
    pieces = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(pieces.id_to_piece(i), pieces.get_score(i)) for i in range(pieces.get_piece_size())]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    T5TokenizerFast(
        tokenizer_object=tokenizer, extra_ids=0, model_max_length=512, eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    ).save_pretrained(folder)
    return len(vocab)


def _configs(vocab: int) -> tuple:
    from transformers import EncodecConfig, T5Config

    text = T5Config(
        vocab_size=vocab, d_model=24, d_kv=8, d_ff=48, num_layers=2, num_heads=3,
        feed_forward_proj="gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    codec = EncodecConfig(
        sampling_rate=32000, audio_channels=1, num_filters=4, upsampling_ratios=[8, 5, 4, 4],
        codebook_size=2048, codebook_dim=16, hidden_size=16, num_lstm_layers=2, num_residual_layers=1,
        norm_type="weight_norm", use_causal_conv=False, target_bandwidths=[2.2], normalize=False,
        chunk_length_s=None, overlap=None, compress=2, pad_mode="reflect", trim_right_ratio=1.0,
    )
    decoder = dict(
        vocab_size=2048, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        num_codebooks=4, max_position_embeddings=2048, pad_token_id=2048, bos_token_id=2048,
        decoder_start_token_id=2048, audio_channels=1,
    )
    return text, codec, decoder


def fill_codebooks(codec: torch.nn.Module) -> None:
    """Random code vectors: EnCodec initialises its codebooks to zeros (real ones come from the checkpoint),
    which would decode every code to the same sound."""
    from transformers.models.encodec.modeling_encodec import EncodecEuclideanCodebook

    for module in codec.modules():
        if isinstance(module, EncodecEuclideanCodebook):
            module.embed.copy_(torch.randn_like(module.embed))
            module.embed_avg.copy_(module.embed)
            module.cluster_size.fill_(1.0)


def save_tiny_model(folder: str, melody: bool = False, seed: int = 0) -> str:
    """Write a tiny MusicGen (or MusicGen Melody) into ``folder`` as ``facebook/musicgen-*`` lays it out."""
    from transformers import (
        EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration,
        MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, MusicgenMelodyForConditionalGeneration,
    )

    torch.manual_seed(seed)
    vocab = write_tokenizer(folder)
    text, codec, decoder = _configs(vocab)
    if melody:
        config = MusicgenMelodyConfig(
            text_encoder=text.to_dict(), audio_encoder=codec.to_dict(),
            decoder=MusicgenMelodyDecoderConfig(**decoder).to_dict(), num_chroma=12, chroma_length=235,
        )
        model = MusicgenMelodyForConditionalGeneration(config)
    else:
        config = MusicgenConfig(
            text_encoder=text.to_dict(), audio_encoder=codec.to_dict(), decoder=MusicgenDecoderConfig(**decoder).to_dict()
        )
        model = MusicgenForConditionalGeneration(config)
    fill_codebooks(model.audio_encoder)
    model.generation_config.update(
        do_sample=True, guidance_scale=3.0, max_length=1500, pad_token_id=2048, bos_token_id=2048, decoder_start_token_id=2048
    )
    model.save_pretrained(folder)
    if melody:  # MusicgenMelodyFeatureExtractor needs torchaudio to instantiate; its config is plain JSON
        features = {
            "feature_extractor_type": "MusicgenMelodyFeatureExtractor", "processor_class": "MusicgenMelodyProcessor",
            "feature_size": 12, "sampling_rate": 32000, "hop_length": 4096, "n_fft": 16384, "num_chroma": 12,
            "chunk_length": 30, "padding_value": 0.0, "padding_side": "left", "return_attention_mask": False,
            "stem_indices": [3, 2],
        }
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump(features, f, indent=2)
    else:
        EncodecFeatureExtractor(feature_size=1, sampling_rate=32000, padding_value=0.0).save_pretrained(folder)
    return folder


def make(models_dir: str) -> list[str]:
    """Tiny stand-ins for facebook/musicgen-small and facebook/musicgen-melody under ``models_dir/musicgen``."""
    return [
        save_tiny_model(claim_tiny_path(os.path.join(models_dir, "musicgen", name)), melody="melody" in name, seed=i)
        for i, name in enumerate(NAMES)
    ]
