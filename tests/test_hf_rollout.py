"""The ``hf`` rollout backend: registration in a fresh process, the server's verl contract (token in/out, batching,
max-token rule, weight loads), and the replica -> server -> adapter weight path through a real Ray actor."""

import asyncio
import os
import subprocess
import sys
import tempfile

import pytest
import torch
from omegaconf import OmegaConf

VOCAB, PAD, EOS = 40, 0, 1


def build_model_dir(path):
    """A 2-layer Qwen2 with a 40-word tokenizer (ids 0 = <pad>, 1 = <eos>), saved like a hub checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = {"<pad>": PAD, "<eos>": EOS} | {f"w{i}": i for i in range(2, VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab=words, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>").save_pretrained(path)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(30.0)  # sharp logits: greedy choices far from ties
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_model_dir(tmp_path_factory.mktemp("tiny_hf"))


def rollout_config(**overrides):
    from verl.workers.config import RolloutConfig

    kw = dict(name="hf", tensor_model_parallel_size=1, prompt_length=16, response_length=6, dtype="float32")
    kw.update(overrides)
    return RolloutConfig(**kw)


def hf_model_config(model_dir):
    """What verl hands a rollout adapter: an HFModelConfig instance."""
    from verl.workers.config import HFModelConfig

    return HFModelConfig(path=model_dir)


def reference(model_dir, prompt, n, eos=(EOS,)):
    """Greedy continuation of one prompt with the plain HF model (no batching, no server)."""
    from transformers import AutoModelForCausalLM

    from verl_resrl.workers.hf_generation import generate

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return generate(model, [prompt], max_new_tokens=n, temperature=0, eos_token_id=list(eos), pad_token_id=PAD,
                    return_log_probs=True)[0]


def test_registered_in_both_verl_registries_in_a_fresh_process():
    code = (
        "import verl\n"
        "from verl.workers.rollout.base import get_rollout_class\n"
        "from verl.workers.rollout.replica import get_rollout_replica_class\n"
        "print(get_rollout_class('hf', 'async').__name__, get_rollout_replica_class('hf').__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["HFServerAdapter", "HFRolloutReplica"]


def test_max_tokens_rule_matches_vllm_server():
    from verl_resrl.workers.hf_rollout import resolve_max_tokens

    cfg = rollout_config(prompt_length=10, response_length=6)  # max_model_len defaults to 16
    assert resolve_max_tokens({}, 4, cfg) == 6  # min(6, 10 + 6 - 4)
    assert resolve_max_tokens({}, 13, cfg) == 3  # min(6, 16 - 13)
    assert resolve_max_tokens({"max_tokens": 2}, 4, cfg) == 2
    assert resolve_max_tokens({"max_new_tokens": 50}, 4, cfg) == 12  # clamped to the room left: 16 - 4
    assert resolve_max_tokens({"max_tokens": 0}, 4, cfg) == 1
    with pytest.raises(ValueError, match="max_model_len"):
        resolve_max_tokens({}, 16, cfg)


def test_unknown_engine_kwargs_are_an_error():
    from verl_resrl.workers.hf_rollout import HFServerOptions

    assert HFServerOptions.from_engine_kwargs({"vllm": {}}).batch_wait_ms == 5.0
    with pytest.raises(ValueError, match="engine_kwargs.hf"):
        HFServerOptions.from_engine_kwargs({"hf": {"batch_size": 3}})


class CountingServer:
    """Mixin recording how many batches the server decoded."""

    def _decode(self, key, chunk, seed):
        self.batches = getattr(self, "batches", []) + [len(chunk)]
        return super()._decode(key, chunk, seed)


def make_server(model_dir, **cfg):
    from verl_resrl.workers.hf_rollout import HFRolloutServer

    cls = type("CountingHFServer", (CountingServer, HFRolloutServer), {})
    return cls(rollout_config(**cfg), OmegaConf.create({"path": model_dir}), replica_rank=0)


async def _generate_all(server, prompts, params):
    return await asyncio.gather(*[server.generate(p, dict(params), request_id=str(i)) for i, p in enumerate(prompts)])


def test_concurrent_requests_are_one_batch_with_per_prompt_results(model_dir):
    server = make_server(model_dir)
    prompts = [[2, 3, 4], [5], [6, 7, 8, 9, 10], [11, 12]]
    outs = asyncio.run(_generate_all(server, prompts, {"temperature": 0, "logprobs": True}))
    assert server.batches == [4]
    for prompt, out in zip(prompts, outs):
        ref = reference(model_dir, prompt, 6)  # response_length 6 is the budget
        assert out.token_ids == ref.token_ids
        torch.testing.assert_close(torch.tensor(out.log_probs), torch.tensor(ref.log_probs), atol=1e-5, rtol=0)
        assert out.stop_reason == "completed"
        assert out.extra_fields["finish_reason"] == ref.finish_reason


def test_batches_split_by_sampling_params_and_max_num_seqs(model_dir):
    server = make_server(model_dir, max_num_seqs=2)

    async def mixed():
        greedy = [server.generate([2 + i], {"temperature": 0}, request_id=f"g{i}") for i in range(3)]
        sampled = [server.generate([9], {"temperature": 1.0, "top_k": 5}, request_id="s")]
        return await asyncio.gather(*greedy, *sampled)

    outs = asyncio.run(mixed())
    assert sorted(server.batches) == [1, 1, 2]  # greedy 3 -> 2 + 1 (max_num_seqs=2), sampled 1
    assert all(o.log_probs is None for o in outs)  # logprobs not requested


def test_unsupported_sampling_is_rejected(model_dir):
    server = make_server(model_dir)
    with pytest.raises(ValueError, match="repetition_penalty"):
        asyncio.run(server.generate([2], {"temperature": 0, "repetition_penalty": 1.2}, request_id="x"))
    with pytest.raises(ValueError, match="unsupported sampling"):
        asyncio.run(server.generate([2], {"temperature": 0, "min_p": 0.1}, request_id="x"))


def test_load_weights_changes_generation_and_rejects_bad_names(model_dir):
    from transformers import AutoModelForCausalLM

    server = make_server(model_dir)
    new = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():
        new.model.embed_tokens.weight.copy_(torch.randn_like(new.model.embed_tokens.weight) * 30)
    weights = {k: v.clone() for k, v in new.state_dict().items() if k != "lm_head.weight"}  # tied: sent once
    assert asyncio.run(server.load_weights(weights, global_steps=3)) == len(weights)
    out = asyncio.run(server.generate([2, 3], {"temperature": 0}, request_id="a"))
    with torch.no_grad():
        logits = new(input_ids=torch.tensor([[2, 3]])).logits[0, -1]
    assert out.token_ids[0] == int(logits.argmax())
    assert out.extra_fields["global_steps"] == 3
    with pytest.raises(ValueError, match="unknown parameters"):
        asyncio.run(server.load_weights({"model.not_a_layer.weight": torch.zeros(1)}))
    partial = {k: v for k, v in weights.items() if "layers.1." not in k}
    with pytest.raises(ValueError, match="left parameters unset"):
        asyncio.run(server.load_weights(partial))


def test_non_leader_adapter_drains_the_weight_generator_without_sending(model_dir, monkeypatch):
    from verl_resrl.workers.hf_rollout import HFServerAdapter

    monkeypatch.setenv("RANK", "1")
    cfg = rollout_config(tensor_model_parallel_size=2)
    adapter = HFServerAdapter(cfg, hf_model_config(model_dir), device_mesh=None)
    assert (adapter.replica_rank, adapter.is_leader_rank) == (0, False)
    drained = []

    def weights():
        for i in range(5):  # on FSDP2 each item is a collective: every rank must pull all of them
            drained.append(i)
            yield f"w{i}", torch.zeros(1)

    asyncio.run(adapter.update_weights(weights(), global_steps=1))
    assert drained == list(range(5))
    assert adapter._server is None  # never looked up its server
    with pytest.raises(ValueError, match="wire_format"):
        asyncio.run(adapter.update_weights(iter([]), wire_format="delta_flush"))


@pytest.fixture()
def local_ray():
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rr_", dir="/tmp")  # private cluster: never joins someone else's
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    yield ray
    ray.shutdown()


def test_replica_server_and_adapter_through_ray(model_dir, local_ray, monkeypatch):
    from transformers import AutoModelForCausalLM

    from verl_resrl.workers.hf_rollout import HFRolloutReplica, HFServerAdapter

    cfg = rollout_config()
    replica = HFRolloutReplica(replica_rank=0, config=cfg, model_config=OmegaConf.create({"path": model_dir}),
                               gpus_per_node=1)
    asyncio.run(replica.launch_servers())
    assert replica.server_address == "hf://hf_server_0" and replica.servers == [replica.server_handle]
    prompt = [4, 5, 6]
    before = local_ray.get(replica.server_handle.generate.remote(prompt, {"temperature": 0}, request_id="b"))
    assert before.token_ids == reference(model_dir, prompt, 6).token_ids

    monkeypatch.setenv("RANK", "0")
    adapter = HFServerAdapter(cfg, hf_model_config(model_dir), device_mesh=None)
    new = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(2)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn_like(p))
    asyncio.run(adapter.update_weights(iter(list(new.state_dict().items())), global_steps=7))
    after = local_ray.get(replica.server_handle.generate.remote(prompt, {"temperature": 0}, request_id="a"))
    new_dir = build_model_dir_from(new, model_dir)
    assert after.token_ids == reference(new_dir, prompt, 6).token_ids
    assert after.extra_fields["global_steps"] == 7
    for call in ("sleep", "wake_up", "resume_generation", "clear_kv_cache", "release_kv_cache", "resume_kv_cache",
                 "stop_profile"):
        local_ray.get(getattr(replica.server_handle, call).remote())
    assert local_ray.get(replica.server_handle.abort_all_requests.remote())["aborted_count"] == 0


def build_model_dir_from(model, tokenizer_dir):
    """Save ``model`` next to a copy of the tokenizer, for the single-process reference."""
    import shutil

    out = tempfile.mkdtemp(prefix="hf_ref_")
    for name in os.listdir(tokenizer_dir):
        if name.startswith("tokenizer"):
            shutil.copy(os.path.join(tokenizer_dir, name), out)
    model.save_pretrained(out)
    return out
