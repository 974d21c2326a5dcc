"""A character-level (byte-level) tokenizer for the tiny Qwen2 model, built locally in code (no hub download).

Why it looks like this (measured with transformers 5.10; docs/tiny_task.md, "Tokenizer"): transformers 5 loads the
tokenizer of any ``model_type=qwen2`` model as ``Qwen2Tokenizer``, which rebuilds a BPE from the saved vocab and
merges and *replaces* the pre-tokenizer with Qwen's regex + ByteLevel one. A plain WordLevel character vocab then
loses every whitespace character, and verl's ``QwenContinuousTokenBuilder`` (picked by ``SingleTurnAgentLoop`` through
``create_continuous_token_builder``) refuses a tokenizer whose ``"\\n"`` is not exactly one token. So the vocab holds
the 256 bytes under their GPT-2 ``bytes_to_unicode`` keys with *no merges*: whatever pre-tokenizer transformers puts
in front, every byte becomes exactly one id, ``"\\n"`` included. ASCII text is therefore tokenized one character per
id. The ChatML specials are special added tokens, so they are never split.
"""

from __future__ import annotations

import json
import os

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

# GPT-2's reversible byte -> printable-unicode map (the key space ByteLevel pre-tokenizers emit).
from transformers.convert_slow_tokenizer import bytes_to_unicode

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<pad>"
# Order fixes the ids: 256, 257, 258, 259 (after the 256 byte ids).
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, PAD)
NUM_BYTE_TOKENS = 256
VOCAB_SIZE = NUM_BYTE_TOKENS + len(SPECIAL_TOKENS)

# ChatML as in Qwen2/2.5, without Qwen's default system prompt (every prompt token costs time on 2 cores). Each turn
# renders independently, so rendering a prefix of the messages gives a token prefix of the full rendering, which
# verl's continuous-token builder checks (``render_delta_token_id``).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def special_id(token: str) -> int:
    """The id of one of ``SPECIAL_TOKENS`` (they follow the 256 byte ids)."""
    return NUM_BYTE_TOKENS + SPECIAL_TOKENS.index(token)


def byte_level_vocab() -> dict[str, int]:
    """The 256 byte tokens, id == byte value, keyed by their GPT-2 byte-level unicode character."""
    byte_to_char = bytes_to_unicode()
    return {byte_to_char[b]: b for b in range(NUM_BYTE_TOKENS)}


def build_backend_tokenizer() -> Tokenizer:
    """The ``tokenizers`` object: empty-merges BPE over byte-level keys, ByteLevel pre-tokenizer and decoder."""
    tok = Tokenizer(models.BPE(vocab=byte_level_vocab(), merges=[], unk_token=None, fuse_unk=False))
    # use_regex=False: no word splitting is needed when every byte is its own token.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` with ChatML specials, EOS ``<|im_end|>``, pad ``<pad>`` and the chat template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_backend_tokenizer(),
        eos_token=IM_END,  # generation stops at the end of the assistant turn, as for Qwen chat models
        pad_token=PAD,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[ENDOFTEXT, IM_START],
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(out_dir: str):
    """Write the tokenizer files into ``out_dir`` (the model directory) and return the tokenizer."""
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out_dir)
    _pin_tokenizer_class(out_dir)
    return tokenizer


def _pin_tokenizer_class(out_dir: str) -> None:
    """Name ``Qwen2Tokenizer`` in tokenizer_config.json: that is what transformers 5 loads for a qwen2 model anyway,
    so the saved files say what a user actually gets."""
    path = os.path.join(out_dir, "tokenizer_config.json")
    with open(path, encoding="utf-8") as fh:
        config = json.load(fh)
    config["tokenizer_class"] = "Qwen2Tokenizer"
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, ensure_ascii=False)
