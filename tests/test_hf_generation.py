"""workers/hf_generation.generate against straightforward references: argmax decoding with full forwards (no cache,
no padding), log-probs from one manual forward, top-k/top-p sets computed by hand, empirical sampling frequencies."""

import pytest
import torch

from verl_resrl.workers.hf_generation import GenerationResult, generate

VOCAB = 40
PAD = 39


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attn_implementation="sdpa",
    )
    m = Qwen2ForCausalLM(cfg).float().eval()
    # random init gives near-uniform logits; sharpen them so greedy/top-k/top-p choices are well separated
    with torch.no_grad():
        m.lm_head.weight.mul_(20.0)
    return m


PROMPTS = [[3, 7, 1, 9], [5], [11, 12, 13, 14, 15, 16, 17], [2, 2]]


def full_logits(model, ids):
    """Next-token logits after ``ids`` from one forward of the unpadded sequence (no KV cache)."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def reference_greedy(model, prompt, n):
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(full_logits(model, seq).argmax()))
    return seq[len(prompt) :]


def manual_log_probs(model, prompt, response, temperature):
    """log_softmax(logits / T) of each response token, from one forward over prompt + response."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1] / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def test_greedy_batch_equals_per_prompt_argmax_decoding(model):
    out = generate(model, PROMPTS, max_new_tokens=6, temperature=0, eos_token_id=[], pad_token_id=PAD)
    assert all(isinstance(r, GenerationResult) for r in out)
    for prompt, res in zip(PROMPTS, out):
        assert res.token_ids == reference_greedy(model, prompt, 6)
        assert res.finish_reason == "length"
        assert res.log_probs is None


def test_greedy_log_probs_are_raw_log_softmax(model):
    out = generate(
        model, PROMPTS, max_new_tokens=5, temperature=0, eos_token_id=[], pad_token_id=PAD, return_log_probs=True
    )
    for prompt, res in zip(PROMPTS, out):
        expected = manual_log_probs(model, prompt, res.token_ids, temperature=1.0)
        torch.testing.assert_close(torch.tensor(res.log_probs), expected, atol=1e-4, rtol=0)


def test_stops_at_eos_and_includes_it(model):
    ref = reference_greedy(model, PROMPTS[0], 8)
    cut = next(i for i in range(1, 8) if ref[i] not in ref[:i])  # first position whose token is new
    eos = ref[cut]
    res = generate(model, [PROMPTS[0]], max_new_tokens=8, temperature=0, eos_token_id=eos, pad_token_id=PAD)[0]
    assert res.token_ids == ref[: cut + 1]
    assert res.finish_reason == "stop"
    # an EOS list works the same, and other rows of the batch keep going
    both = generate(model, [PROMPTS[0], PROMPTS[2]], max_new_tokens=8, temperature=0, eos_token_id=[eos, 999],
                    pad_token_id=PAD)
    assert both[0].token_ids == ref[: cut + 1]
    other = reference_greedy(model, PROMPTS[2], 8)
    expected_other = other[: other.index(eos) + 1] if eos in other else other
    assert both[1].token_ids == expected_other


def test_sampled_log_probs_match_temperature_scaled_forward(model):
    out = generate(model, PROMPTS, max_new_tokens=7, temperature=0.7, eos_token_id=[], pad_token_id=PAD,
                   return_log_probs=True, seed=3)
    for prompt, res in zip(PROMPTS, out):
        assert len(res.token_ids) == len(res.log_probs) == 7
        expected = manual_log_probs(model, prompt, res.token_ids, temperature=0.7)
        torch.testing.assert_close(torch.tensor(res.log_probs), expected, atol=1e-4, rtol=0)


def test_top_k_samples_inside_top_k_with_renormalised_log_probs(model):
    k, temp = 3, 1.3
    out = generate(model, PROMPTS * 3, max_new_tokens=5, temperature=temp, top_k=k, eos_token_id=[],
                   pad_token_id=PAD, return_log_probs=True, seed=0)
    for prompt, res in zip(PROMPTS * 3, out):
        seq = list(prompt)
        for tok, lp in zip(res.token_ids, res.log_probs):
            logits = full_logits(model, seq) / temp
            top = torch.topk(logits, k).indices.tolist()
            assert tok in top
            expected = logits[tok] - torch.logsumexp(logits[top], dim=0)
            assert abs(lp - float(expected)) < 1e-4
            seq.append(tok)


def nucleus(probs, p):
    """Smallest set of most likely tokens whose probability mass reaches p (written as a plain loop)."""
    kept, mass = [], 0.0
    for tok in sorted(range(len(probs)), key=lambda t: -float(probs[t])):
        kept.append(tok)
        mass += float(probs[tok])
        if mass >= p:
            break
    return set(kept)


def test_top_p_samples_inside_the_nucleus(model):
    p = 0.6
    out = generate(model, PROMPTS * 3, max_new_tokens=5, temperature=1.0, top_p=p, eos_token_id=[],
                   pad_token_id=PAD, return_log_probs=True, seed=1)
    for prompt, res in zip(PROMPTS * 3, out):
        seq = list(prompt)
        for tok, lp in zip(res.token_ids, res.log_probs):
            probs = full_logits(model, seq).softmax(-1)
            keep = nucleus(probs, p)
            assert tok in keep
            assert abs(lp - float(torch.log(probs[tok] / probs[list(keep)].sum()))) < 1e-4
            seq.append(tok)


def test_sampling_frequencies_follow_softmax_over_temperature(model):
    temp, n = 1.5, 4000
    prompt = [4, 8, 15]
    out = generate(model, [prompt] * n, max_new_tokens=1, temperature=temp, eos_token_id=[], pad_token_id=PAD, seed=7)
    counts = torch.bincount(torch.tensor([r.token_ids[0] for r in out]), minlength=VOCAB).float()
    expected = (full_logits(model, prompt) / temp).softmax(-1)
    total_variation = 0.5 * (counts / n - expected).abs().sum()
    assert total_variation < 0.06  # sampling noise for 4000 draws over 40 tokens is ~0.03


def test_seed_makes_sampling_reproducible(model):
    kw = dict(max_new_tokens=8, temperature=1.0, eos_token_id=[], pad_token_id=PAD)
    a = generate(model, PROMPTS, seed=11, **kw)
    b = generate(model, PROMPTS, seed=11, **kw)
    c = generate(model, PROMPTS, seed=12, **kw)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


def test_empty_batch_and_bad_arguments(model):
    kw = dict(eos_token_id=1, pad_token_id=PAD)
    assert generate(model, [], max_new_tokens=3, temperature=0, **kw) == []
    with pytest.raises(ValueError, match=r"prompt_ids\[1\] is empty"):
        generate(model, [[1], []], max_new_tokens=3, temperature=0, **kw)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [[1]], max_new_tokens=0, temperature=0, **kw)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [[1]], max_new_tokens=2, temperature=-0.5, **kw)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], max_new_tokens=2, temperature=1.0, top_p=0.0, **kw)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, [[1]], max_new_tokens=2, temperature=1.0, top_k=-2, **kw)
