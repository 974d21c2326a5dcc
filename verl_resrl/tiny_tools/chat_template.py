"""The tiny tokenizer's ChatML template, extended to render tool calls and tool messages (Hermes / Qwen2.5 style).

``verl_resrl.tiny.tokenizer.CHAT_TEMPLATE`` renders every message as ``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n``;
a parsed assistant message of verl's tool agent loop has its call moved from ``content`` to ``tool_calls``, which
that template would drop. This one writes each call back as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``
(``tojson`` is transformers' ``json.dumps`` with default separators: the exact text the model generates, see
``task.tool_call_json``) and renders ``tool`` messages as their own turn. Kept:

- no tool schema in the prompt (``tools`` is ignored): with one byte per token a JSON schema would be ~250 prompt
  tokens per turn; the tiny model learns its one tool from the warm start;
- each message renders on its own, so a prefix of the conversation renders to a token prefix, which verl's
  continuous-token builder (``utils/tokenizer/continuous_token.py``) needs for its suffix diffs.
"""

from __future__ import annotations

TOOLS_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message.get('tool_calls') %}"
    "{%- for call in message['tool_calls'] %}"
    "{%- set f = call['function'] if call.get('function') else call %}"
    "{%- set args = f['arguments'] if f['arguments'] is string else (f['arguments'] | tojson) %}"
    "{{- '<tool_call>{\"name\": ' + (f['name'] | tojson) + ', \"arguments\": ' + args + '}</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tools_tokenizer():
    """The tiny byte-level tokenizer with :data:`TOOLS_CHAT_TEMPLATE`."""
    from verl_resrl.tiny.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = TOOLS_CHAT_TEMPLATE
    return tokenizer


def save_tools_tokenizer(out_dir: str):
    """Write the tokenizer (tools template) into the model directory, as ``tiny.tokenizer.save_tokenizer`` does."""
    from verl_resrl.tiny import tokenizer as tiny_tok

    tokenizer = build_tools_tokenizer()
    tokenizer.save_pretrained(out_dir)
    tiny_tok._pin_tokenizer_class(out_dir)  # noqa: SLF001 - the same tokenizer_config.json fix as the tiny task
    return tokenizer
