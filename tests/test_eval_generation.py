"""Backend helpers of the eval CLI that run without a model: seeds, EOS ids, vLLM output conversion."""

from types import SimpleNamespace

import pytest

from verl_resrl.eval.generation import _from_vllm, choose_backend, eos_token_ids, prompt_seed
from verl_resrl.workers.hf_generation import GenerationResult


def test_prompt_seeds_differ_per_prompt_and_resume_point():
    seeds = {prompt_seed(0, p, have) for p in range(200) for have in (0, 3, 5)}
    assert len(seeds) == 600
    assert prompt_seed(1, 0, 0) != prompt_seed(0, 0, 0)
    assert prompt_seed(7, 12, 3) == prompt_seed(7, 12, 3)


def test_eos_ids_merge_generation_config_and_tokenizer():
    tokenizer = SimpleNamespace(eos_token_id=258)
    assert eos_token_ids(SimpleNamespace(eos_token_id=[258, 256]), tokenizer) == [258, 256]
    assert eos_token_ids(SimpleNamespace(eos_token_id=5), tokenizer) == [5, 258]
    assert eos_token_ids(SimpleNamespace(), tokenizer) == [258]
    with pytest.raises(ValueError, match="eos_token_id"):
        eos_token_ids(SimpleNamespace(eos_token_id=None), SimpleNamespace(eos_token_id=None))


def test_choose_backend():
    assert choose_backend("hf") == "hf" and choose_backend("vllm") == "vllm"
    import importlib.util

    import torch

    gpu_with_vllm = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    assert choose_backend("auto") == ("vllm" if gpu_with_vllm else "hf")
    with pytest.raises(ValueError, match="backend"):
        choose_backend("sglang")


def test_vllm_completion_becomes_generation_result():
    """Each position's dict holds the top tokens plus the sampled one: the sampled token's log-prob is kept."""
    lp = lambda v: SimpleNamespace(logprob=v)  # noqa: E731 - vLLM's Logprob has a .logprob field
    completion = SimpleNamespace(
        token_ids=(5, 9, 2),
        finish_reason="length",
        logprobs=[{5: lp(-0.5), 1: lp(-0.1)}, {9: lp(-2.0)}, {2: lp(-0.25), 3: lp(-1.0)}],
    )
    result = _from_vllm(completion, True, GenerationResult)
    assert result == GenerationResult(token_ids=[5, 9, 2], log_probs=[-0.5, -2.0, -0.25], finish_reason="length")
    stopped = SimpleNamespace(token_ids=[1], finish_reason="stop", logprobs=None)
    assert _from_vllm(stopped, False, GenerationResult).finish_reason == "stop"
    assert _from_vllm(stopped, False, GenerationResult).log_probs is None
