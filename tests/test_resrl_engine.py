"""ResRL's capture in verl's FSDP engine (workers/resrl_engine.py) and whole-group weights (workers/resrl_groups.py).

The engine runs verl's real code path (``infer_batch`` -> ``forward_backward_batch`` -> micro-batching, packing
without padding, ``forward_step``, unpacking, dynamic-batch reordering) on a tiny random Qwen2 in one gloo process;
only the FSDP wrapping and the device are left out (the module is the bare HF model on CPU). Expectations come from the
plain HF model: ``output_hidden_states`` of the same packed input, and of each sequence on its own.
"""

import tempfile

import pytest
import torch
import torch.distributed as dist
from transformers import Qwen2Config, Qwen2ForCausalLM

import verl.utils.seqlen_balancing as seqlen_balancing
import verl.utils.torch_functional as verl_F
import verl.workers.engine.fsdp.transformer_impl as transformer_impl
from verl.utils import tensordict_utils as tu
from verl.workers.config import FSDPEngineConfig
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
from verl.workers.utils.losses import ppo_loss

import verl_resrl.workers.resrl_engine as resrl_engine
from verl_resrl.algos.resrl import ResRLConfig, resrl_token_weights
from verl_resrl.workers.resrl_capture import LayerTap
from verl_resrl.workers.resrl_engine import ResRLFSDPEngine
from verl_resrl.workers.resrl_groups import (
    POSITIVE_FIELD,
    SETTINGS_KEY,
    STATS_FIELD,
    WEIGHTS_FIELD,
    RowRecord,
    content_key,
    sequence_is_positive,
    shard_weight_fields,
)

LAYERS = 3
PROMPT_LENS = [3, 4, 2, 5, 3, 3, 4, 2]
RESP_LENS = [5, 3, 6, 4, 2, 7, 5, 4]
UIDS = ["a", "a", "a", "a", "b", "b", "b", "b"]
POSITIVE = [1, 0, 0, 1, 0, 1, 0, 0]


@pytest.fixture(scope="module", autouse=True)
def gloo_world():
    """A one-process gloo group (verl's engine all-reduces token counts over the data-parallel group)."""
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    yield
    if owned:
        dist.destroy_process_group()


@pytest.fixture(autouse=True)
def cpu_device(monkeypatch):
    """verl's engine moves micro-batches to ``get_device_id()`` and builds autocast / loss tensors on
    ``get_device_name()``; in a plain pytest process (no launcher, so no CPU platform) both must say CPU."""
    monkeypatch.setattr(transformer_impl, "get_device_id", lambda: "cpu")
    monkeypatch.setattr(transformer_impl, "get_device_name", lambda: "cpu")
    monkeypatch.setattr(seqlen_balancing, "get_device_name", lambda: "cpu")  # dynamic batching's all-reduce


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, attn_implementation="sdpa")
    return Qwen2ForCausalLM(cfg).eval()


def bare_engine(cls, model):
    """An FSDP engine object around a bare HF module: the attributes verl's forward path reads, nothing else."""
    eng = cls.__new__(cls)
    eng.module = model
    eng.pad_to_length, eng.pad_to_length_bucket = False, None
    eng.use_ulysses_sp, eng.ulysses_sequence_parallel_size, eng.ulysses_device_mesh = False, 1, None
    eng._autocast_dtype, eng.scaler = torch.float32, None
    eng.engine_config = FSDPEngineConfig()
    eng.compute_entropy_from_logits = verl_F.entropy_from_logits
    return eng


def nested(rows):
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def sequences(seed=1):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 64, (p,), generator=g) for p in PROMPT_LENS]
    responses = [torch.randint(0, 64, (r,), generator=g) for r in RESP_LENS]
    return prompts, responses


def shard(settings=None, micro=2, dynamic=False, rmpad=True, fused=False, seed=1):
    """The TensorDict verl hands to ``engine.infer_batch`` for the old-log-prob pass (agent-loop field layout)."""
    prompts, responses = sequences(seed)
    ids = [torch.cat([p, r]) for p, r in zip(prompts, responses)]
    scores = [torch.zeros(r) for r in RESP_LENS]
    for i, pos in enumerate(POSITIVE):
        scores[i][-1] = 1.0 if pos else -1.0
    ones = [torch.ones(r, dtype=torch.long) for r in RESP_LENS]
    extra = {"temperature": 1.0, "use_remove_padding": rmpad, "use_dynamic_bsz": dynamic, "use_fused_kernels": fused,
             "micro_batch_size_per_gpu": micro, "max_token_len_per_gpu": 20, "calculate_entropy": True}
    if settings is not None:
        extra[SETTINGS_KEY] = settings
    return tu.get_tensordict(
        {"input_ids": nested(ids), "position_ids": nested([torch.arange(len(x)) for x in ids]),
         "prompts": nested(prompts), "responses": nested(responses), "response_mask": nested(ones),
         "loss_mask": nested(ones), "rm_scores": nested(scores), "uid": list(UIDS)},
        extra,
    )


def settings(layer=-2, **cfg):
    return {"hidden_layer": layer, "config": {"min_pos_tokens": 2, **cfg}}


@pytest.fixture
def spy_rows(monkeypatch):
    """Records the RowRecords the engine hands to shard_weight_fields (the captured response states)."""
    seen = []
    real = resrl_engine.shard_weight_fields

    def spy(rows, *args):
        seen.append(rows)
        return real(rows, *args)

    monkeypatch.setattr(resrl_engine, "shard_weight_fields", spy)
    return seen


def hf_response_states(model, layer):
    """HF output_hidden_states[layer] of each sequence alone, cut to the response with the log-prob shift."""
    prompts, responses = sequences()
    out = []
    with torch.no_grad():
        for p, r in zip(prompts, responses):
            hs = model(input_ids=torch.cat([p, r])[None], output_hidden_states=True).hidden_states[layer][0]
            out.append(hs[len(p) - 1 : len(p) + len(r) - 1])
    return out


@pytest.mark.parametrize("layer", range(-(LAYERS + 1), LAYERS + 1))
def test_layer_tap_equals_output_hidden_states_of_the_same_packed_input(layer):
    """One packed forward (verl's remove-padding layout): the hook reads exactly HF hidden_states[layer]."""
    model = tiny_model()
    prompts, responses = sequences()
    ids = torch.cat([torch.cat([p, r]) for p, r in zip(prompts, responses)])[None]
    pos = torch.cat([torch.arange(len(p) + len(r)) for p, r in zip(prompts, responses)])[None]
    with torch.no_grad():
        expected = model(input_ids=ids, position_ids=pos, output_hidden_states=True).hidden_states[layer]
        with LayerTap(model, layer).capture() as grabbed:
            model(input_ids=ids, position_ids=pos)
    assert len(grabbed) == 1 and torch.equal(grabbed[0], expected)


@pytest.mark.parametrize("rmpad,micro,dynamic", [(True, 1, False), (True, 4, False), (True, 8, False),
                                                 (True, 1, True), (False, 2, False)])
@pytest.mark.parametrize("layer", [-2, -1, 1])
def test_engine_captures_response_states_without_changing_log_probs(spy_rows, rmpad, micro, dynamic, layer):
    """verl's own forward path: captured states == HF states per sequence; log-probs == the stock engine's."""
    model = tiny_model()
    ours = bare_engine(ResRLFSDPEngine, model).infer_batch(shard(settings(layer), micro, dynamic, rmpad))
    stock = bare_engine(FSDPEngineWithLMHead, model).infer_batch(shard(None, micro, dynamic, rmpad))
    for got, want in zip([r.hidden for r in spy_rows[0]], hf_response_states(model, layer), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    for key in ("log_probs", "entropy"):
        assert torch.equal(ours["model_output"][key].values(), stock["model_output"][key].values())


def test_weights_are_bitwise_identical_for_every_micro_batch_layout():
    """Per-token weights of the shard: micro-batch 1/2/4/8, dynamic batching on/off, packing on/off."""
    model = tiny_model()
    layouts = [(1, False, True), (2, False, True), (4, False, True), (8, False, True), (1, True, True),
               (2, False, False)]
    outs = [bare_engine(ResRLFSDPEngine, model).infer_batch(shard(settings(), m, d, r))["model_output"]
            for m, d, r in layouts]
    for out in outs[1:]:
        assert torch.allclose(out[WEIGHTS_FIELD].values(), outs[0][WEIGHTS_FIELD].values(), rtol=0, atol=1e-6)
        assert torch.equal(out[POSITIVE_FIELD], outs[0][POSITIVE_FIELD])


def test_fields_follow_rows_and_match_a_direct_call(spy_rows):
    """Weights of each group equal resrl_token_weights on that group's states; flags follow rm_scores."""
    model = tiny_model()
    out = bare_engine(ResRLFSDPEngine, model).infer_batch(shard(settings(), 2))["model_output"]
    assert out[POSITIVE_FIELD].tolist() == [float(p) for p in POSITIVE]
    weights = out[WEIGHTS_FIELD].unbind()
    states = hf_response_states(model, -2)
    for uid in ("a", "b"):
        rows = [i for i, u in enumerate(UIDS) if u == uid]
        order = sorted(rows, key=lambda i: spy_rows[0][i].key)  # the canonical order the engine uses
        width = max(RESP_LENS[i] for i in rows)
        hidden = torch.zeros(len(rows), width, 32)
        mask = torch.zeros(len(rows), width)
        for j, i in enumerate(order):
            hidden[j, : RESP_LENS[i]], mask[j, : RESP_LENS[i]] = states[i], 1
        positive = torch.tensor([bool(POSITIVE[i]) for i in order])
        want, stats = resrl_token_weights(hidden, mask, [uid] * len(rows), positive, ResRLConfig(min_pos_tokens=2),
                                          torch.arange(len(rows)))
        for j, i in enumerate(order):
            torch.testing.assert_close(weights[i], want[j, : RESP_LENS[i]], rtol=0, atol=1e-6)
            assert out[STATS_FIELD][i, 0].item() == 1.0 and stats["coverage"] == 1.0


def test_fused_kernel_forward_is_captured_the_same(spy_rows):
    """verl's fused-kernel forward (torch backend: runs on CPU) calls the same decoder: same states, same log-probs."""
    from verl.models.transformers.monkey_patch import patch_forward_with_backends

    model = tiny_model()
    plain = bare_engine(ResRLFSDPEngine, model).infer_batch(shard(settings(-1), 2))["model_output"]
    original_forward = type(model).forward
    try:
        patch_forward_with_backends(model, use_fused_kernels=True, fused_kernels_backend="torch")
        fused = bare_engine(ResRLFSDPEngine, model).infer_batch(shard(settings(-1), 2, fused=True))["model_output"]
    finally:
        type(model).forward = original_forward
    for a, b in zip(spy_rows[0], spy_rows[1], strict=True):
        torch.testing.assert_close(a.hidden, b.hidden, rtol=0, atol=1e-6)
    torch.testing.assert_close(plain["log_probs"].values(), fused["log_probs"].values(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain[WEIGHTS_FIELD].values(), fused[WEIGHTS_FIELD].values(), rtol=0, atol=1e-5)


def test_resrl_off_forward_and_stock_loss_are_verls_exactly():
    """Without SETTINGS_KEY our engine is verl's: same loss, same gradients as the stock engine with ppo_loss."""
    from verl_resrl.workers.resrl_loss import make_resrl_loss  # noqa: F401  (imported: the plugin module loads)
    from verl.workers.config import FSDPActorConfig

    config = FSDPActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=2, ppo_mini_batch_size=4)
    results = []
    for cls in (ResRLFSDPEngine, FSDPEngineWithLMHead):
        model = tiny_model()
        model.train()
        data = shard(None, 2)
        g = torch.Generator().manual_seed(5)
        data["old_log_probs"] = nested([-torch.rand(r, generator=g) for r in RESP_LENS])
        data["advantages"] = nested([torch.full((r,), 1.0 if p else -0.5) for r, p in zip(RESP_LENS, POSITIVE)])
        tu.assign_non_tensor(data, global_batch_size=8)
        out = bare_engine(cls, model).forward_backward_batch(
            data, lambda **kw: ppo_loss(config=config, **kw), forward_only=False
        )
        results.append((out["loss"], [p.grad.clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_out_of_range_layer_names_the_key():
    with pytest.raises(ValueError, match=r"algorithm\.resrl\.hidden_layer=4 is out of range"):
        LayerTap(tiny_model(), LAYERS + 1)
    with pytest.raises(ValueError, match="hidden_layer"):
        LayerTap(tiny_model(), -(LAYERS + 2))


def test_registered_for_vendor_keys_ahead_of_the_stock_engine(monkeypatch):
    monkeypatch.setenv("VERL_ENGINE_DEVICE", "cuda")
    monkeypatch.setenv("VERL_ENGINE_VENDOR", "nvidia")
    assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is ResRLFSDPEngine
    monkeypatch.setenv("VERL_ENGINE_VENDOR", "some-other-vendor")
    assert EngineRegistry.get_engine_cls("language_model", "fsdp") is FSDPEngineWithLMHead


def test_sequence_is_positive_and_content_key():
    scores = nested([torch.tensor([0.0, 1.0]), torch.tensor([0.0, -1.0]), torch.tensor([0.0, 0.0])])
    assert sequence_is_positive(scores).tolist() == [True, False, False]
    assert sequence_is_positive(torch.tensor([[0.0, 0.5], [0.0, 0.0]])).tolist() == [True, False]
    assert content_key(torch.tensor([1, 2, 3])) == content_key(torch.tensor([1, 2, 3]))
    assert content_key(torch.tensor([1, 2, 3])) != content_key(torch.tensor([1, 2, 4]))
    assert 0 <= content_key(torch.tensor([7])) < 2**63


def synthetic_rows(seed=0, groups=4, n=4, d=16):
    """Mixed groups of random 'hidden states' with varied lengths (pure data for the group/exchange tests)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(groups):
        for j in range(n):
            r = int(torch.randint(3, 9, (1,), generator=g))
            rows.append(RowRecord(f"g{k}", content_key(torch.randint(0, 99, (r,), generator=g)), j % 2 == 0,
                                  torch.randn(r, d, generator=g), torch.ones(r), (0, len(rows))))
    return rows


def test_unmixed_groups_keep_weight_one():
    rows = synthetic_rows(groups=2)
    for r in rows:
        r.positive = r.uid == "g0"  # g0 all positive, g1 all negative
    fields = shard_weight_fields(rows, ResRLConfig(min_pos_tokens=2))
    assert torch.equal(fields[WEIGHTS_FIELD].values(), torch.ones_like(fields[WEIGHTS_FIELD].values()))
    assert fields[STATS_FIELD][:, 0].tolist() == [0.0] * len(rows)


def test_pure_torch_response_cut_matches_verls_response_from_nested():
    """resrl_capture.response_slices (for the torch-only GPU benchmark) cuts exactly as verl's function the engine
    calls: the same rows for every sequence, so the benchmark measures the engine's cut."""
    from verl.workers.utils.padding import response_from_nested

    from verl_resrl.workers.resrl_capture import response_slices

    seq_lens = torch.tensor([p + r for p, r in zip(PROMPT_LENS, RESP_LENS)])
    flat = torch.randn(int(seq_lens.sum()), 5)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), seq_lens.cumsum(0)])
    verls = response_from_nested(torch.nested.nested_tensor_from_jagged(flat, offsets),
                                 nested([torch.ones(r) for r in RESP_LENS])).unbind()
    ours = response_slices(flat, seq_lens, torch.tensor(RESP_LENS))
    assert len(ours) == len(verls) and all(torch.equal(a, b) for a, b in zip(ours, verls))
