"""A tiny random chat LM with the real Qwen2 architecture and tokenizer files, in the HF folder layout."""

from __future__ import annotations

import os

import torch

from ..common.models import claim_tiny_path

NAME = "Qwen2.5-0.5B-Instruct"
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# ChatML, the template Qwen2.5 instruct models ship with (without tool calling).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_tokenizer(folder: str):
    """A byte-level BPE tokenizer with ChatML special tokens, its merges learnt from the shot-writing
    instructions (so prompts stay short), saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .instructions import messages

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=list(SPECIAL), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    corpus = [m["content"] for m in messages("A theme.", 6, "cinematic, photorealistic")]
    core.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def save_tiny_model(folder: str, seed: int = 0) -> str:
    """Write a tiny random Qwen2 causal LM and its tokenizer into ``folder``."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tokenizer = write_tokenizer(folder)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16384,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    model.save_pretrained(folder)
    return folder


def make(models_dir: str) -> list[str]:
    """A tiny stand-in for Qwen2.5-0.5B-Instruct under ``models_dir/llm``."""
    return [save_tiny_model(claim_tiny_path(os.path.join(models_dir, "llm", NAME)))]
