"""Token-in/token-out sampling with a plain transformers causal LM: the engine of the CPU rollout backend ``hf``.

One pure function, :func:`generate`, shared by the rollout server (``verl_resrl.workers.hf_rollout``) and the
evaluation CLI. It follows vLLM's sampling semantics, because verl's agent loop and trainer are written against vLLM:

* ``temperature == 0`` is greedy; ``top_k`` of -1 (or 0) and ``top_p == 1`` switch those filters off
  (vLLM ``SamplingParams``).
* Order of the logit transforms as in vLLM v1's sampler: temperature, then top-k, then top-p, then sample.
* Returned log-probs are vLLM's default ``logprobs_mode="processed_logprobs"`` (verl's ``RolloutConfig.logprobs_mode``
  default): the log-softmax of the *processed* logits (temperature-scaled, top-k/top-p-masked and renormalised) at the
  sampled token. With ``top_k=-1, top_p=1`` this is exactly what verl's actor recomputes
  (``FSDPEngineWithLMHead``: ``log_softmax(logits / temperature)``), so ``training/rollout_probs_diff_*`` measures
  only numerical noise. Greedy requests return the raw ``log_softmax(logits)`` (no temperature to divide by), as vLLM.
* The result holds the new tokens only: up to and including the first EOS token, nothing after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationResult:
    """One completion of one prompt."""

    token_ids: list[int]
    """new tokens, the EOS token included when one was produced, nothing after it"""
    log_probs: list[float] | None
    """per new token, log-prob under the processed sampling distribution (see module doc); None unless requested"""
    finish_reason: FinishReason
    """"stop": an EOS token ended the completion; "length": ``max_new_tokens`` was reached first"""


def _check_args(prompt_ids, max_new_tokens, temperature, top_p, top_k) -> None:
    """Reject bad sampling arguments with an error naming the offending value."""
    for i, prompt in enumerate(prompt_ids):
        if len(prompt) == 0:
            raise ValueError(f"prompt_ids[{i}] is empty: a causal LM needs at least one prompt token")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k < -1:
        raise ValueError(f"top_k must be -1 or 0 (off) or a positive int, got {top_k!r}")


def process_logits(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """Temperature, top-k, top-p (vLLM v1 order) on fp32 ``(batch, vocab)`` logits; masked entries become -inf."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        # keep the smallest set of most likely tokens whose mass reaches top_p (the top token always stays)
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _left_pad(prompt_ids: Sequence[Sequence[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask, so every row's next token lands in the same (last) column."""
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, prompt in enumerate(prompt_ids):
        ids[row, width - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _pick_tokens(logits: torch.Tensor, temperature, top_p, top_k, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose the next token of every row; returns (tokens, their processed log-probs)."""
    if temperature == 0:
        tokens = logits.argmax(dim=-1)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
    else:
        log_probs = torch.log_softmax(process_logits(logits, temperature, top_p, top_k), dim=-1)
        tokens = torch.multinomial(log_probs.exp(), num_samples=1, generator=generator).squeeze(-1)
    return tokens, log_probs.gather(-1, tokens[:, None]).squeeze(-1)


@torch.inference_mode()
def generate(
    model,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    top_k: int = -1,
    eos_token_id: int | list[int],
    pad_token_id: int,
    return_log_probs: bool = False,
    seed: int | None = None,
) -> list[GenerationResult]:
    """Sample one completion per prompt with KV-cached decoding of a HF causal LM (``model`` in eval mode).

    All prompts are decoded as one left-padded batch; rows that hit EOS stop growing, the batch stops when every row
    is done or ``max_new_tokens`` is reached. ``seed`` makes the sampling reproducible (a private torch.Generator);
    None uses torch's global RNG.
    """
    _check_args(prompt_ids, max_new_tokens, temperature, top_p, top_k)
    if not prompt_ids:
        return []
    eos_ids = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
    device = next(model.parameters()).device
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device).manual_seed(seed)

    ids, mask = _left_pad(prompt_ids, pad_token_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    batch = len(prompt_ids)
    tokens_out = [[] for _ in range(batch)]
    lp_out = [[] for _ in range(batch)]
    done = [False] * batch
    next_pos = positions[:, -1:] + 1
    for step in range(max_new_tokens):
        tokens, log_probs = _pick_tokens(out.logits[:, -1, :], temperature, top_p, top_k, generator)
        for row in range(batch):
            if not done[row]:
                tokens_out[row].append(int(tokens[row]))
                lp_out[row].append(float(log_probs[row]))
                done[row] = int(tokens[row]) in eos_ids
        if all(done) or step == max_new_tokens - 1:
            break  # no forward pass for a token nobody will sample
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=-1)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_pos,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        next_pos = next_pos + 1
    return [
        GenerationResult(
            token_ids=tokens_out[row],
            log_probs=lp_out[row] if return_log_probs else None,
            finish_reason="stop" if done[row] else "length",
        )
        for row in range(batch)
    ]
