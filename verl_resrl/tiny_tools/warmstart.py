"""Warm start of the tiny model on rendered multi-turn tool transcripts, and its multi-turn evaluation (plain torch).

An example is laid out exactly as verl's tool agent loop lays out a rollout (``ToolAgentLoop`` with the Qwen
continuous-token builder): the templated prompt, then per turn the model's tokens up to and including ``<|im_end|>``
(the EOS the rollout stops at), then the context tokens verl appends: the ``\\n`` the builder inserts after
``<|im_end|>`` and the tool turn ``<|im_start|>tool\\nRESULT<|im_end|>\\n<|im_start|>assistant\\n``. The loss covers
the model's tokens only (response mask 1), never the tool output. ``tests/test_tiny_tools_task.py`` checks this
layout against verl's own ``ToolAgentLoop`` and against the chat template.

Styles: with probability ``WarmStartConfig.direct_answer_fraction`` an example answers directly (``Answer: N``), else
it uses the tool; the choice is drawn from its own seeded stream, as in the tiny task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch

from verl_resrl.tiny.warmstart import IGNORE_INDEX, WarmStartConfig, _threads, sft_loop
from verl_resrl.tiny.warmstart import generate_turn as _generate_turn  # by this name: a test replaces it
from verl_resrl.tiny_tools.task import TOOL_NAME, ArithProblem, parse_tool_calls, prompt_messages, turns
from verl_resrl.tiny_tools.calculator import calc_response

__all__ = ["WarmStartConfig", "ToolEvalConfig", "encode_example", "train", "rollout", "evaluate"]


@dataclass(frozen=True)
class ToolEvalConfig:
    """Multi-turn evaluation: one greedy rollout and ``samples_per_prompt`` sampled ones per validation prompt."""

    temperature: float = 1.0  # the recipe's rollout temperature
    samples_per_prompt: int = 4
    response_length: int = 224  # the recipe's data.max_response_length: all turns together, tool output included
    max_turn_tokens: int = 96  # new tokens per turn (a call is ~72); bounds the time of a turn that never stops
    max_assistant_turns: int = 3  # the recipe's multi_turn.max_assistant_turns
    batch_size: int = 128
    seed: int = 0
    num_threads: int = 2

    def __post_init__(self):
        for name in ("temperature", "samples_per_prompt", "response_length", "max_turn_tokens",
                     "max_assistant_turns", "batch_size", "num_threads"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ToolEvalConfig.{name} must be > 0, got {getattr(self, name)!r}")


def prompt_ids(tokenizer, problem: ArithProblem) -> list[int]:
    """The templated prompt, ending with the ``<|im_start|>assistant\\n`` generation prompt."""
    rendered = tokenizer.apply_chat_template(prompt_messages(problem), tokenize=True, add_generation_prompt=True)
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def tool_turn_ids(tokenizer, outputs: list[str]) -> list[int]:
    """Context tokens after a turn that ends with ``<|im_end|>``: verl's inserted ``\\n``, the tool turn(s), the
    generation prompt (what ``QwenContinuousTokenBuilder.merge_context_tokens`` appends, all with mask 0)."""
    text = "\n" + "".join(f"<|im_start|>tool\n{out}<|im_end|>\n" for out in outputs) + "<|im_start|>assistant\n"
    return tokenizer.encode(text, add_special_tokens=False)


def encode_example(tokenizer, problem: ArithProblem, use_tool: bool) -> tuple[list[int], list[int]]:
    """(ids, labels) of one transcript; labels are the model's tokens, IGNORE_INDEX on prompt and tool output."""
    ids = prompt_ids(tokenizer, problem)
    labels = [IGNORE_INDEX] * len(ids)
    for text, output in turns(problem, use_tool):
        own = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        ids, labels = ids + own, labels + own
        if output is not None:
            context = tool_turn_ids(tokenizer, [output])
            ids, labels = ids + context, labels + [IGNORE_INDEX] * len(context)
    return ids, labels


def sft_buckets(tokenizer, problems: list[ArithProblem], cfg: WarmStartConfig) -> dict[tuple, list]:
    """Encoded examples grouped by number of terms, the two styles MIXED in every group (a batch is drawn from one).

    Not by style: the loss is a mean over a batch's tokens, so in a tool-only batch (~100 labelled tokens) the first
    token's choice of style weighs far less than in a direct-only one (~12): trained so, the model called the tool in
    5% of its samples although half of its examples did (docs/tiny_tools.md). In a mixed batch every example's first
    token weighs the same, so the learnt share of each style is the examples' share.
    """
    style_rng = random.Random(f"{cfg.seed}:style")  # its own stream, as in the tiny task
    buckets: dict[tuple, list] = {}
    for problem in problems:
        use_tool = style_rng.random() >= cfg.direct_answer_fraction
        buckets.setdefault((len(problem.operands),), []).append(
            (use_tool, encode_example(tokenizer, problem, use_tool)))
    return dict(sorted(buckets.items()))


def train(model, tokenizer, problems: list[ArithProblem], cfg: WarmStartConfig,
          log: Callable[[str], None] | None = None) -> dict:
    """``cfg.steps`` AdamW steps; each batch comes from one bucket picked with probability proportional to its size
    (so the examples' marginal distribution is that of ``problems``); returns loss and timing facts."""
    if not problems:
        raise ValueError("warm start needs at least one SFT problem")
    buckets = sft_buckets(tokenizer, problems, cfg)
    keys, sizes = list(buckets), [len(v) for v in buckets.values()]

    def draw(rng: random.Random) -> list:
        pool = buckets[rng.choices(keys, weights=sizes)[0]]
        return [example for _, example in rng.sample(pool, min(cfg.batch_size, len(pool)))]

    facts = sft_loop(model, draw, tokenizer.pad_token_id, cfg, log)
    styles = [use_tool for pool in buckets.values() for use_tool, _ in pool]
    return {**facts, "sft_examples_by_style": {"tool": sum(styles), "direct": len(styles) - sum(styles)}}


def _tool_outputs(text: str) -> list[str]:
    """The tool messages verl's loop would append for a turn's text (``ToolAgentLoop._call_tool``, simplified:
    unknown names and bad arguments become error text too)."""
    outputs = []
    for name, arguments in parse_tool_calls(text):
        outputs.append(calc_response(arguments)[0] if name == TOOL_NAME else f"Unknown function '{name}'.")
    return outputs


def rollout(model, tokenizer, problems: list[ArithProblem], *, do_sample: bool, cfg: ToolEvalConfig) -> list[dict]:
    """Multi-turn rollouts with the calculator, as verl's tool agent loop runs them: per problem the response text
    (decoded like verl's reward input, special tokens skipped), the tool calls made and the turns taken."""
    results = []
    for start in range(0, len(problems), cfg.batch_size):
        chunk = problems[start:start + cfg.batch_size]
        prompts = [prompt_ids(tokenizer, p) for p in chunk]
        responses: list[list[int]] = [[] for _ in chunk]
        calls, assistant_turns = [0] * len(chunk), [0] * len(chunk)
        active = list(range(len(chunk)))
        while active:
            budget = max(cfg.response_length - len(responses[i]) for i in active)
            new = _generate_turn(model, tokenizer, [prompts[i] + responses[i] for i in active],
                                 max(1, min(cfg.max_turn_tokens, budget)), do_sample, cfg.temperature)
            still = []
            for i, tokens in zip(active, new):
                responses[i] += tokens[: cfg.response_length - len(responses[i])]  # each row's own budget
                assistant_turns[i] += 1
                outputs = _tool_outputs(tokenizer.decode(tokens))
                if (not outputs or len(responses[i]) >= cfg.response_length
                        or assistant_turns[i] >= cfg.max_assistant_turns):
                    continue
                calls[i] += len(outputs)
                responses[i] += tool_turn_ids(tokenizer, outputs)
                if len(responses[i]) < cfg.response_length:
                    still.append(i)
            active = still
        for i in range(len(chunk)):
            text = tokenizer.decode(responses[i][:cfg.response_length], skip_special_tokens=True)
            results.append({"response": text, "tool_calls": calls[i], "assistant_turns": assistant_turns[i]})
    return results


def evaluate(model, tokenizer, problems: list[ArithProblem], score_fn: Callable[[str, str], bool],
             cfg: ToolEvalConfig = ToolEvalConfig()) -> dict:
    """Greedy and sampled accuracy of multi-turn rollouts, the share that used the tool, accuracy per style."""
    if not problems:
        raise ValueError("evaluate needs at least one problem")
    truths = [str(p.answer) for p in problems]
    model.eval()
    with _threads(cfg.num_threads):
        greedy = rollout(model, tokenizer, problems, do_sample=False, cfg=cfg)
        torch.manual_seed(cfg.seed)
        sampled = [rollout(model, tokenizer, problems, do_sample=True, cfg=cfg) for _ in range(cfg.samples_per_prompt)]
    greedy_hits = [score_fn(r["response"], t) for r, t in zip(greedy, truths)]
    sample_hits = [[score_fn(r["response"], t) for r, t in zip(rs, truths)] for rs in sampled]
    per_prompt = [sum(hits[i] for hits in sample_hits) for i in range(len(problems))]
    by_terms: dict[str, list[bool]] = {}
    for problem, hit in zip(problems, greedy_hits):
        by_terms.setdefault(str(len(problem.operands)), []).append(hit)
    flat = [r for rs in sampled for r in rs]
    flat_hits = [h for hs in sample_hits for h in hs]
    tool_hits = [h for r, h in zip(flat, flat_hits) if r["tool_calls"] > 0]
    direct_hits = [h for r, h in zip(flat, flat_hits) if r["tool_calls"] == 0]
    return {
        "greedy_accuracy": sum(greedy_hits) / len(problems),
        "greedy_accuracy_by_terms": {k: sum(v) / len(v) for k, v in sorted(by_terms.items())},
        "sampled_accuracy": sum(per_prompt) / (len(problems) * cfg.samples_per_prompt),
        "mixed_prompt_fraction": sum(0 < k < cfg.samples_per_prompt for k in per_prompt) / len(problems),
        "greedy_tool_fraction": sum(r["tool_calls"] > 0 for r in greedy) / len(problems),
        "sampled_tool_fraction": len(tool_hits) / len(flat),
        "sampled_accuracy_tool": sum(tool_hits) / len(tool_hits) if tool_hits else None,
        "sampled_accuracy_direct": sum(direct_hits) / len(direct_hits) if direct_hits else None,
        "greedy_tool_calls_mean": sum(r["tool_calls"] for r in greedy) / len(problems),
        "eval_prompts": len(problems),
        "eval_temperature": cfg.temperature,
        "eval_samples_per_prompt": cfg.samples_per_prompt,
    }


def example_token_lengths(tokenizer, problems: list[ArithProblem]) -> tuple[int, int]:
    """Longest prompt and longest gold tool-style response (all turns, tool output included) in tokens."""
    longest_prompt = max(len(prompt_ids(tokenizer, p)) for p in problems)
    longest = max(len(encode_example(tokenizer, p, True)[0]) - len(prompt_ids(tokenizer, p)) for p in problems)
    return longest_prompt, longest
