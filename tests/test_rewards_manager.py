"""The ``resrl_verifier`` reward manager: registration through ``import verl``, options, per-sample scoring."""

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl_resrl.rewards.reward_manager import (
    ManagerOptions,
    ResRLVerifierRewardManager,
    choose_verifier,
    parse_code_tests,
)


def test_import_verl_registers_the_manager_in_a_fresh_process():
    code = (
        "import verl\n"
        "from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls\n"
        "print(get_reward_manager_cls('resrl_verifier').__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "verl_resrl.rewards.reward_manager"


def _config(**reward_kwargs):
    return OmegaConf.create({"reward": {"reward_kwargs": reward_kwargs}, "data": {"max_response_length": 20}})


def test_options_come_from_reward_kwargs():
    opts = ManagerOptions.from_config(_config(reward_convention="binary", length_scale_start=10, timeout_s=3.0))
    assert (opts.reward_convention, opts.length_scale_start, opts.timeout_s) == ("binary", 10, 3.0)
    assert opts.max_response_length == 20  # taken from data.max_response_length
    assert ManagerOptions.from_config(OmegaConf.create({"reward": {}})) == ManagerOptions()


def test_unknown_and_bad_options_name_the_key():
    with pytest.raises(ValueError, match="overlong_buffer_cfg"):
        ManagerOptions.from_config(_config(overlong_buffer_cfg={}))
    with pytest.raises(ValueError, match="reward_convention"):
        ManagerOptions.from_config(_config(reward_convention="ternary"))


@pytest.mark.parametrize(
    "data_source,extra_info,kind",
    [
        ("math_dapo", None, "math"),
        ("aime24", {}, "math"),
        ("deepmind/code_contests", None, "code"),
        ("livecodebench", {"verifier": "math"}, "math"),
        ("gsm8k", {"verifier": "code"}, "code"),
    ],
)
def test_verifier_choice(data_source, extra_info, kind):
    assert choose_verifier(data_source, extra_info) == kind


def test_verifier_choice_rejects_unknown_override():
    with pytest.raises(ValueError, match="verifier"):
        choose_verifier("math", {"verifier": "lean"})


def test_code_ground_truth_layouts():
    expected = [{"input": "1", "output": "2"}, {"input": "3", "output": "4"}]
    assert parse_code_tests(json.dumps({"inputs": ["1", "3"], "outputs": ["2", "4"]})) == expected
    assert parse_code_tests(expected) == expected
    assert parse_code_tests(np.array(expected, dtype=object)) == expected
    with pytest.raises(ValueError, match="2 inputs but 1 outputs"):
        parse_code_tests({"inputs": ["1", "3"], "outputs": ["2"]})
    with pytest.raises(ValueError, match="not JSON"):
        parse_code_tests("print(1)")


def _char_tokenizer():
    """A character-level tokenizer built in code (one token per character) so lengths are easy to derive by hand."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("".join(chr(c) for c in range(32, 127)) + "\n"))
    vocab = {"<pad>": 0, "<unk>": 1, **{ch: i + 2 for i, ch in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


def _batch(tokenizer, samples, response_len=64):
    """A DataProto shaped like the reward loop's input: left-padded prompts, right-padded responses."""
    from verl import DataProto

    prompt = [tokenizer.convert_tokens_to_ids(ch) for ch in "Q?"]
    responses, masks = [], []
    for text, *_ in samples:
        ids = [tokenizer.convert_tokens_to_ids(ch) for ch in text]
        responses.append(ids + [0] * (response_len - len(ids)))
        masks.append([1] * len(prompt) + [1] * len(ids) + [0] * (response_len - len(ids)))
    return DataProto.from_dict(
        tensors={
            "prompts": torch.tensor([prompt] * len(samples)),
            "responses": torch.tensor(responses),
            "attention_mask": torch.tensor(masks),
        },
        non_tensors={
            "data_source": np.array([s[1] for s in samples], dtype=object),
            "reward_model": np.array([{"ground_truth": s[2]} for s in samples], dtype=object),
            "extra_info": np.array([s[3] for s in samples], dtype=object),
        },
    )


@pytest.fixture(scope="module")
def manager_results():
    tokenizer = _char_tokenizer()
    add_tests = json.dumps({"inputs": ["1 2", "5 5"], "outputs": ["3", "10"]})
    samples = [
        ("Answer: 42", "math_dapo", "42", {}),  # 10 tokens: not scaled
        ("Some thought. Answer: 42", "math_dapo", "42", {}),  # 24 tokens: at/after max 20 -> floor 0.7
        ("Hmm Answer: 42", "math_dapo", "42", {}),  # 14 tokens: 1 - 0.3 * 4/10 = 0.88
        ("Answer: 41", "math_dapo", "42", {}),
        ("no idea", "aime24", "7", {}),
        ("a,b=map(int,input().split())\nprint(a+b)", "code_contests", add_tests, {}),
        ("print(3)", "x", add_tests, {"verifier": "code"}),
    ]
    config = _config(reward_convention="binary", length_scale_start=10, num_workers=1, timeout_s=5.0)

    async def run_all():
        manager = ResRLVerifierRewardManager(config, tokenizer, None)
        data = _batch(tokenizer, samples)
        return await asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(len(samples))))

    # inside verl the reward-loop worker is a Ray actor, so the pool attaches to a running cluster: do the same
    import ray

    temp_dir = tempfile.mkdtemp(prefix="resrl-ray-test-")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    try:
        yield asyncio.run(run_all())
    finally:
        ResRLVerifierRewardManager.shutdown_pool()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_scores_follow_the_options(manager_results):
    scores = [r["reward_score"] for r in manager_results]
    assert scores == pytest.approx([1.0, 0.7, 0.88, 0.0, 0.0, 1.0, 0.0])


def test_extra_info_carries_reason_and_answer(manager_results):
    infos = [r["reward_extra_info"] for r in manager_results]
    assert [i["reason"] for i in infos] == ["correct", "correct", "correct", "wrong", "no_answer", "correct", "wrong"]
    assert [i["answer"] for i in infos] == ["42", "42", "42", "41", "", "2/2", "1/2"]  # print(3) passes "1 2"
    assert [i["acc"] for i in infos] == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert all(set(i) == {"reason", "answer", "acc"} for i in infos)  # same keys: verl stacks them per key
