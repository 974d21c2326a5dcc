"""Supervised warm start of the tiny model, and its accuracy measurement (plain torch, fp32, CPU).

A randomly initialised model never writes a correct ``Answer:`` line, so every GRPO group would be all-wrong and the
advantages zero (measured on a randomly initialised model: every reward was 0). A short SFT on worked solutions gives a model that
is right on part of the prompts and wrong on others under sampling, so RL has signal both ways. The loss covers only
the assistant tokens (the response and its closing ``<|im_end|>``), like verl's SFT trainer.

Two response styles, as in a base model's pre-training data: a fraction ``direct_answer_fraction`` of the warm-start
examples (drawn at random, independently of the problem) is the bare ``Answer: <integer>``, the rest the worked lines.
The warm-started model then mixes both styles on any prompt, and the worked style is right more often (sampled at the
default build: 0.37 vs 0.22): a 1M-parameter model can add two digits per line but not a chain of four at once.
Which style to use is one decision shared by all prompts, so what RL learns about it on the training prompts carries
over to held-out ones: RL post-training amplifies the better of the behaviours the model already has (Zhao et al.
2025, "Echo Chamber: RL Post-training Amplifies Behaviors Learned in Pretraining", arXiv 2504.07912). Without it,
40 CPU steps move held-out accuracy by no more than the noise between validations: the only errors left are per-fact
arithmetic slips, and RL fixes those one prompt at a time (docs/cpu_path.md, "Measured").
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .task import ArithProblem, prompt_messages, shows_work

IGNORE_INDEX = -100  # label value ignored by the cross-entropy (PyTorch's default ignore_index)
LOG_EVERY = 50  # steps between progress lines of the warm start


@dataclass(frozen=True)
class WarmStartConfig:
    """Optimiser and schedule of the warm start (AdamW with linear warm-up and cosine decay to 10%)."""

    steps: int = 700  # ~80-95 s on 2 idle cores; why not fewer: docs/tiny_task.md, "Why 700 steps"
    batch_size: int = 32
    lr: float = 3e-3  # a 1M-parameter model trained from scratch tolerates a large rate
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0  # order of the SFT batches
    num_threads: int = 2  # the project's CPU machines have 2 cores; restored afterwards
    # share of examples answered without working (module docstring); 0 trains the worked style only
    direct_answer_fraction: float = 0.5

    def __post_init__(self):
        _require_positive(self, "batch_size", "warmup_steps", "num_threads", "lr")
        if self.steps < 0:
            raise ValueError(f"WarmStartConfig.steps must be >= 0, got {self.steps}")
        if not 0.0 <= self.direct_answer_fraction <= 1.0:
            raise ValueError(
                f"WarmStartConfig.direct_answer_fraction must be in [0, 1], got {self.direct_answer_fraction!r}"
            )


@dataclass(frozen=True)
class EvalConfig:
    """How accuracy is measured: one greedy decode and ``samples_per_prompt`` samples at ``temperature``."""

    temperature: float = 1.0  # the rollout temperature of the tiny recipe: what RL sees
    samples_per_prompt: int = 4
    max_new_tokens: int = 48  # the longest worked solution is ~35 bytes plus <|im_end|>
    batch_size: int = 128
    seed: int = 0
    num_threads: int = 2

    def __post_init__(self):
        _require_positive(self, "samples_per_prompt", "max_new_tokens", "batch_size", "num_threads", "temperature")


def _require_positive(cfg, *names: str) -> None:
    """A clear error naming the first field of ``cfg`` among ``names`` that is not > 0."""
    for name in names:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be > 0, got {getattr(cfg, name)!r}")


def prompt_ids(tokenizer, problem: ArithProblem) -> list[int]:
    """The chat-templated prompt, ending with the ``<|im_start|>assistant\\n`` generation prompt."""
    rendered = tokenizer.apply_chat_template(prompt_messages(problem), tokenize=True, add_generation_prompt=True)
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def response_ids(tokenizer, problem: ArithProblem, worked: bool = True) -> list[int]:
    """The gold worked (or direct) solution followed by ``<|im_end|>`` (the EOS the rollout stops at)."""
    text = problem.solution() if worked else problem.direct_solution()
    return tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]


def encode_example(tokenizer, problem: ArithProblem, worked: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of prompt+response and the labels (IGNORE_INDEX on the prompt)."""
    prompt, response = prompt_ids(tokenizer, problem), response_ids(tokenizer, problem, worked)
    return prompt + response, [IGNORE_INDEX] * len(prompt) + response


def sft_examples(tokenizer, problems: list[ArithProblem], cfg: WarmStartConfig) -> list[tuple[list[int], list[int]]]:
    """One encoded example per problem, each direct with probability ``cfg.direct_answer_fraction`` (seeded)."""
    style_rng = random.Random(f"{cfg.seed}:style")  # its own stream: the batch order does not move the styles
    return [
        encode_example(tokenizer, p, worked=style_rng.random() >= cfg.direct_answer_fraction) for p in problems
    ]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of (ids, labels) into tensors."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


@contextlib.contextmanager
def _threads(n: int):
    """Run torch with ``n`` intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _lr_factor(step: int, cfg: WarmStartConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak rate."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train(
    model, tokenizer, problems: list[ArithProblem], cfg: WarmStartConfig, log: Callable[[str], None] | None = None
) -> dict:
    """Run ``cfg.steps`` AdamW steps on batches drawn from ``problems``; returns loss and timing facts.

    ``log`` (optional) receives a progress line every ``LOG_EVERY`` steps."""
    if not problems:
        raise ValueError("warm start needs at least one SFT problem (ArithTaskConfig.num_sft is 0)")
    examples = sft_examples(tokenizer, problems, cfg)
    return sft_loop(model, lambda rng: rng.sample(examples, min(cfg.batch_size, len(examples))),
                    tokenizer.pad_token_id, cfg, log)


def sft_loop(model, draw: Callable[[random.Random], list[tuple[list[int], list[int]]]], pad_id: int,
             cfg: WarmStartConfig, log: Callable[[str], None] | None = None) -> dict:
    """``cfg.steps`` AdamW steps (warm-up + cosine rate, clipped) on the batches ``draw(rng)`` returns; loss facts.

    Shared by the tiny task's and the tiny tool task's warm starts; ``rng`` is seeded with ``cfg.seed``."""
    rng = random.Random(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, cfg))
    model.train()
    losses, start = [], time.perf_counter()
    with _threads(cfg.num_threads):
        for step in range(cfg.steps):
            loss = model(**collate(draw(rng), pad_id)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if log is not None and ((step + 1) % LOG_EVERY == 0 or step + 1 == cfg.steps):
                log(f"warm start step {step + 1}/{cfg.steps}: loss {loss.item():.3f}, "
                    f"{time.perf_counter() - start:.0f} s")
    model.eval()
    tail = losses[-20:] or [float("nan")]
    return {"sft_steps": cfg.steps, "sft_seconds": time.perf_counter() - start, "sft_final_loss": sum(tail) / len(tail)}


@torch.no_grad()
def generate_responses(
    model, tokenizer, problems: list[ArithProblem], *, do_sample: bool, cfg: EvalConfig
) -> list[str]:
    """Decode one response per problem (left-padded batches, stop at ``<|im_end|>``)."""
    prompts = [prompt_ids(tokenizer, p) for p in problems]
    responses: list[str] = []
    for start in range(0, len(prompts), cfg.batch_size):
        chunk = prompts[start : start + cfg.batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, ids in enumerate(chunk):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        sampling = {"do_sample": True, "temperature": cfg.temperature, "top_k": 0, "top_p": 1.0} if do_sample else {
            "do_sample": False
        }
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=cfg.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **sampling,
        )
        responses += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return responses


@torch.no_grad()
def generate_turn(model, tokenizer, sequences: list[list[int]], max_new: int, do_sample: bool,
                  temperature: float) -> list[list[int]]:
    """One turn for every row (the tool and agent tasks' multi-turn evals): left-padded ``generate``; each row's new
    tokens up to and including its EOS."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention_mask[row, width - len(ids):] = 1
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if do_sample else {
        "do_sample": False}
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling)
    new = []
    for row in out[:, width:].tolist():
        cut = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        new.append(row[:cut])
    return new


def evaluate(
    model, tokenizer, problems: list[ArithProblem], score_fn: Callable[[str, str], bool], cfg: EvalConfig = EvalConfig()
) -> dict:
    """Greedy accuracy and sampled accuracy (mean over ``samples_per_prompt`` samples) on ``problems``.

    ``score_fn(response, ground_truth) -> bool`` decides correctness (the build passes the task's reward function).
    """
    if not problems:
        raise ValueError("evaluate needs at least one problem")
    truths = [str(p.answer) for p in problems]
    model.eval()
    with _threads(cfg.num_threads):
        greedy = generate_responses(model, tokenizer, problems, do_sample=False, cfg=cfg)
        torch.manual_seed(cfg.seed)
        sampled = [
            generate_responses(model, tokenizer, problems, do_sample=True, cfg=cfg)
            for _ in range(cfg.samples_per_prompt)
        ]
    greedy_hits = [score_fn(r, t) for r, t in zip(greedy, truths)]
    sample_hits = [[score_fn(r, t) for r, t in zip(rs, truths)] for rs in sampled]
    per_prompt = [sum(hits[i] for hits in sample_hits) for i in range(len(problems))]
    by_terms: dict[str, list[bool]] = {}
    for problem, hit in zip(problems, greedy_hits):
        by_terms.setdefault(str(len(problem.operands)), []).append(hit)
    return {
        "greedy_accuracy": sum(greedy_hits) / len(problems),
        "greedy_accuracy_by_terms": {k: sum(v) / len(v) for k, v in sorted(by_terms.items())},
        "sampled_accuracy": sum(per_prompt) / (len(problems) * cfg.samples_per_prompt),
        # prompts whose samples are neither all right nor all wrong: where GRPO-style advantages are non-zero
        "mixed_prompt_fraction": sum(0 < k < cfg.samples_per_prompt for k in per_prompt) / len(problems),
        # the two warm-start styles (module docstring): how often each decode shows work, and how often each is right
        "greedy_worked_fraction": sum(map(shows_work, greedy)) / len(problems),
        **_style_accuracies([r for rs in sampled for r in rs], [h for hs in sample_hits for h in hs]),
        "eval_prompts": len(problems),
        "eval_temperature": cfg.temperature,
        "eval_samples_per_prompt": cfg.samples_per_prompt,
    }


def _style_accuracies(responses: list[str], hits: list[bool]) -> dict:
    """Share of worked ``responses`` and the accuracy within each style (None for a style never produced)."""
    worked = [shows_work(r) for r in responses]
    worked_hits = [h for w, h in zip(worked, hits) if w]
    direct_hits = [h for w, h in zip(worked, hits) if not w]
    return {
        "sampled_worked_fraction": sum(worked) / len(responses),
        "sampled_accuracy_worked": sum(worked_hits) / len(worked_hits) if worked_hits else None,
        "sampled_accuracy_direct": sum(direct_hits) / len(direct_hits) if direct_hits else None,
    }


def example_token_lengths(tokenizer, problems: list[ArithProblem]) -> tuple[int, int]:
    """Longest prompt and longest gold response (with ``<|im_end|>``) in tokens: what the recipe lengths must cover."""
    longest_prompt = max(len(prompt_ids(tokenizer, p)) for p in problems)
    return longest_prompt, max(len(response_ids(tokenizer, p)) for p in problems)
