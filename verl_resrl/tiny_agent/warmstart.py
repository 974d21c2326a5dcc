"""Warm start of the tiny model on gold TWX transcripts, and held-out success measured by playing episodes.

An example is laid out as the ``resrl_text_env`` loop lays out an episode (verl's Qwen continuous-token builder): the
templated prompt (system + first user turn + ``<|im_start|>assistant\\n``), then per model turn its tokens up to and
including ``<|im_end|>`` (labels: the loss), then what the loop merges after it with response-mask 0: the ``\\n`` the
builder inserts and ``<|im_start|>user\\nOBSERVATION<|im_end|>\\n<|im_start|>assistant\\n``. The last model turn (the
winning action) ends the episode. ``tests/test_tiny_agent_build.py`` checks the layout against the real loop.

Evaluation plays the games with ``generate`` on one TWX JVM: TWX is deterministic, so an episode's state is
replayed (reset, then its actions so far) before each step instead of holding one JVM per episode.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch

from verl_resrl.agents.actions import first_message, observation_message, parse_action
from verl_resrl.agents.agent_loop import AgentOptions
from verl_resrl.tiny.warmstart import IGNORE_INDEX, WarmStartConfig, _threads, generate_turn, sft_loop

__all__ = ["WarmStartConfig", "AgentEvalConfig", "encode_transcript", "train", "evaluate"]


@dataclass(frozen=True)
class AgentEvalConfig:
    """Held-out play: one greedy episode per game (as the recipe's validation) and ``samples`` sampled ones."""

    samples: int = 2  # sampled episodes per game at temperature 1 (the recipe's rollout): what RL sees
    temperature: float = 1.0
    batch_size: int = 64
    seed: int = 0
    num_threads: int = 2

    def __post_init__(self):
        for name in ("batch_size", "num_threads", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AgentEvalConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.samples < 0:
            raise ValueError(f"AgentEvalConfig.samples must be >= 0, got {self.samples!r}")


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The templated prompt of an episode (its system and first user turn) with the generation prompt."""
    rendered = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def user_turn_ids(tokenizer, content: str) -> list[int]:
    """What the loop merges after a model turn (mask 0): verl's ``\\n``, the user turn, the generation prompt."""
    return tokenizer.encode(f"\n<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
                            add_special_tokens=False)


def encode_transcript(tokenizer, messages: list[dict]) -> tuple[list[int], list[int], int]:
    """(ids, labels, prompt length) of one episode; labels are the model's tokens, IGNORE_INDEX elsewhere."""
    ids = prompt_ids(tokenizer, messages[:2])
    n_prompt = len(ids)
    labels = [IGNORE_INDEX] * n_prompt
    for message in messages[2:]:
        if message["role"] == "assistant":
            own = tokenizer.encode(message["content"], add_special_tokens=False) + [tokenizer.eos_token_id]
            ids, labels = ids + own, labels + own
        else:
            context = user_turn_ids(tokenizer, message["content"])
            ids, labels = ids + context, labels + [IGNORE_INDEX] * len(context)
    return ids, labels, n_prompt


def train(model, tokenizer, transcripts: list[list[dict]], cfg: WarmStartConfig,
          log: Callable[[str], None] | None = None) -> dict:
    """``cfg.steps`` AdamW steps on batches of encoded transcripts drawn at random (seeded); loss/timing facts."""
    if not transcripts:
        raise ValueError("warm start needs at least one gold transcript (AgentTaskConfig.num_sft)")
    examples = sorted((encode_transcript(tokenizer, t)[:2] for t in transcripts), key=lambda e: len(e[0]))
    # batches from runs of similar length (800-1400 tokens): padding to the batch's longest costs ~25% in random
    # batches, and every token costs on 2 cores; a run is picked with probability proportional to its size
    width = 4 * cfg.batch_size
    buckets = [examples[i:i + width] for i in range(0, len(examples), width)]

    def draw(rng: random.Random) -> list:
        pool = rng.choices(buckets, weights=[len(b) for b in buckets])[0]
        return rng.sample(pool, min(cfg.batch_size, len(pool)))

    return sft_loop(model, draw, tokenizer.pad_token_id, cfg, log)


def _replay(adapter, task_id: str, actions: list[str]):
    """The step result of the last of ``actions`` after a fresh reset (TWX is deterministic)."""
    adapter.reset(task_id)
    result = None
    for action in actions:
        result = adapter.step(action)
    return result


def play(model, tokenizer, adapter, rows: list[dict], opts: AgentOptions, response_length: int, *,
         do_sample: bool, cfg: AgentEvalConfig) -> list[dict]:
    """Play each row's game as the agent loop would (turn and token budgets, unparsable actions answered with the
    environment's invalid reply); per row its success, score, model turns and invalid actions."""
    results = []
    for start in range(0, len(rows), cfg.batch_size):
        eps = []
        for row in rows[start:start + cfg.batch_size]:
            tid = row["extra_info"]["task_id"]
            first = adapter.reset(tid)
            text = first_message(first.task, first.observation, first.admissible, opts.max_observation_chars,
                                 opts.max_admissible_shown)
            eps.append({"tid": tid, "ids": prompt_ids(tokenizer, list(row["prompt"]) + [
                {"role": "user", "content": text}]), "used": 0, "actions": [], "turns": 0, "invalid": 0,
                "score": 0.0, "success": False, "admissible": first.admissible, "end": None})
        active = list(range(len(eps)))
        while active:
            budget = max(1, min(opts.max_tokens_per_turn, max(response_length - eps[i]["used"] for i in active)))
            new = generate_turn(model, tokenizer, [eps[i]["ids"] for i in active], budget, do_sample, cfg.temperature)
            active = [i for i, tokens in zip(active, new) if _advance(eps[i], tokens, tokenizer, adapter, opts,
                                                                      response_length)]
        results += [{k: e[k] for k in ("tid", "success", "score", "turns", "invalid", "end", "actions")} for e in eps]
    return results


def _advance(ep: dict, tokens: list[int], tokenizer, adapter, opts: AgentOptions, response_length: int) -> bool:
    """Apply one model turn to an episode (the loop's ``_turn`` and ``_observe``); True while it goes on."""
    tokens = tokens[: max(0, min(opts.max_tokens_per_turn, response_length - ep["used"]))]
    ep["ids"], ep["used"], ep["turns"] = ep["ids"] + tokens, ep["used"] + len(tokens), ep["turns"] + 1
    action = parse_action(tokenizer.decode(tokens, skip_special_tokens=True), opts.max_action_chars)
    if action is None:
        ep["invalid"] += 1
        text = adapter.invalid_reply
    else:
        ep["actions"].append(action)
        result = _replay(adapter, ep["tid"], ep["actions"])
        ep["invalid"] += int(result.invalid)
        ep["score"], ep["success"], ep["admissible"] = result.score, result.success, result.admissible
        text = result.observation
        if result.done:
            ep["end"] = "done"
            return False
    if ep["turns"] >= opts.max_turns or ep["used"] >= response_length:
        ep["end"] = "turn_limit" if ep["turns"] >= opts.max_turns else "token_limit"
        return False
    context = user_turn_ids(tokenizer, observation_message(text, ep["admissible"], opts.max_observation_chars,
                                                          opts.max_admissible_shown))
    if ep["used"] + len(context) >= response_length:
        ep["end"] = "token_limit"
        return False
    ep["ids"], ep["used"] = ep["ids"] + context, ep["used"] + len(context)
    return True


def evaluate(model, tokenizer, adapter, rows: list[dict], opts: AgentOptions, response_length: int,
             cfg: AgentEvalConfig = AgentEvalConfig()) -> dict:
    """Greedy success (the recipe's validation) and sampled success/score on ``rows``; per-episode turn counts."""
    if not rows:
        raise ValueError("evaluate needs at least one row")
    model.eval()
    with _threads(cfg.num_threads):
        greedy = play(model, tokenizer, adapter, rows, opts, response_length, do_sample=False, cfg=cfg)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        sampled = [r for _ in range(cfg.samples) for r in play(model, tokenizer, adapter, rows, opts,
                                                               response_length, do_sample=True, cfg=cfg)]
    mean = lambda xs, key: sum(float(x[key]) for x in xs) / len(xs) if xs else None  # noqa: E731
    return {"greedy_success": mean(greedy, "success"), "greedy_score": mean(greedy, "score"),
            "greedy_turns": mean(greedy, "turns"), "greedy_invalid_actions": mean(greedy, "invalid"),
            "sampled_success": mean(sampled, "success"), "sampled_score": mean(sampled, "score"),
            "eval_games": len(rows), "eval_samples": cfg.samples, "eval_temperature": cfg.temperature}
