"""The tiny task's tokenizer, loaded the way verl loads it (AutoTokenizer from a qwen2 model directory)."""

import string

import pytest
from transformers import AutoTokenizer

from verl_resrl.tiny import model as tiny_model
from verl_resrl.tiny import tokenizer as tiny_tok

MESSAGES = [
    {"role": "system", "content": "You add."},
    {"role": "user", "content": "Compute 7+5-3."},
    {"role": "assistant", "content": "7+5=12\n12-3=9\nAnswer: 9"},
    {"role": "user", "content": "Again, with  two spaces\tand a tab."},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """Saved next to a qwen2 config.json, as in the model directory the build writes."""
    model_dir = tmp_path_factory.mktemp("tiny_tok")
    tiny_tok.save_tokenizer(str(model_dir))
    tiny_model.qwen2_config(tiny_model.TinyModelConfig()).save_pretrained(str(model_dir))
    return AutoTokenizer.from_pretrained(str(model_dir))


def test_loads_as_qwen2_tokenizer_with_our_specials(tokenizer):
    # transformers 5 rebuilds any qwen2 tokenizer as Qwen2Tokenizer (the reason for the byte-level vocab)
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    assert len(tokenizer) == 260
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<pad>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"):
        ids = tokenizer.encode(special, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] >= 256, special
        assert tokenizer.convert_ids_to_tokens(ids[0]) == special


def test_newline_is_one_token_and_every_ascii_char_is_its_byte(tokenizer):
    assert tokenizer.encode("\n", add_special_tokens=False) == [10]
    for char in string.printable:
        assert tokenizer.encode(char, add_special_tokens=False) == [ord(char)], repr(char)


@pytest.mark.parametrize(
    "text",
    ["Answer: 42", "  leading and trailing  ", "a\n\nb\r\n\tc", "12+7=19\n19-3=16\nAnswer: 16", "é ü 中 🙂"],
)
def test_text_round_trips_one_id_per_utf8_byte(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text


def test_chat_template_renders_chatml_and_round_trips(tokenizer):
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    expected = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in MESSAGES)
    assert text == expected + "<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert ids == tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    # rendering a prefix of the conversation gives a token prefix (verl's render_delta_token_id relies on it)
    for cut in range(1, len(MESSAGES)):
        prefix = tokenizer.apply_chat_template(MESSAGES[:cut], tokenize=True)["input_ids"]
        assert ids[: len(prefix)] == prefix


def test_verl_agent_loop_builder_accepts_it(tokenizer):
    """SingleTurnAgentLoop builds its prompts through this builder; it raised on the WordLevel tokenizer."""
    from verl.utils.tokenizer.continuous_token import QwenContinuousTokenBuilder
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2")
    assert isinstance(builder, QwenContinuousTokenBuilder)
    prompt = MESSAGES[1:2]
    initial = builder.build_initial_tokens(prompt)
    assert initial == tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
    # multi-turn: appending a user turn after a generated one that stopped at <|im_end|> re-inserts the newline
    generated = tokenizer.encode(MESSAGES[2]["content"], add_special_tokens=False) + [tokenizer.eos_token_id]
    merged = builder.merge_context_tokens(MESSAGES[1:3], MESSAGES[1:4], initial + generated)
    full = tokenizer.apply_chat_template(MESSAGES[1:4], tokenize=True, add_generation_prompt=True)["input_ids"]
    assert merged.token_ids == full


def test_verl_hf_tokenizer_keeps_pad_and_eos(tokenizer, tmp_path):
    from verl.utils import hf_tokenizer

    tiny_tok.save_tokenizer(str(tmp_path))
    loaded = hf_tokenizer(str(tmp_path))
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
