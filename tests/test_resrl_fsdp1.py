"""ResRL's capture under FSDP1 (``actor.strategy=fsdp``, verl's default), at the engine level.

verl's FSDP1 engine cannot be built on a CPU-only host: ``FSDPEngineWithLMHead._build_model_optimizer`` wraps with
``FSDP(..., device_id=get_device_id(), sync_module_states=True)`` and torch refuses that for CPU parameters
("ValueError: The module has CPU parameters or buffers when `sync_module_states=True`, which requires them to be on
GPU. Please specify the `device_id` argument or move the module to GPU before passing it to FSDP."), and torch 2.13's
FSDP1 refuses a CPU-only host outright, whatever the arguments ("RuntimeError: FSDP needs a non-CPU accelerator
device, but no accelerator device is detected."). Hence two tests:

* on any host: the module tree FSDP1 gives verl's engine (the root and every decoder layer inside a wrapper whose
  ``_fsdp_wrapped_module`` holds the HF module, as verl's per-layer auto-wrap policy does), with wrappers that only
  delegate; verl's real forward path of the engine runs on it; the captured states must equal HF's
  ``output_hidden_states`` of each sequence and the log-probs the stock engine's;
* with CUDA: the same against torch's real FSDP1 (skipped on this CPU-only host).
"""

import pytest
import torch
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from verl.workers.config import FSDPEngineConfig
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from verl_resrl.workers.resrl_engine import ResRLFSDPEngine
from verl_resrl.workers.resrl_groups import WEIGHTS_FIELD
from test_resrl_engine import (  # noqa: F401  (fixtures: gloo_world, cpu_device, spy_rows)
    bare_engine,
    cpu_device,
    gloo_world,
    hf_response_states,
    settings,
    shard,
    spy_rows,
    tiny_model,
)


class Fsdp1LikeWrapper(nn.Module):
    """FSDP1's module-tree shape (``_fsdp_wrapped_module``), without sharding: forward only delegates."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self._fsdp_wrapped_module = inner

    def forward(self, *args, **kwargs):
        return self._fsdp_wrapped_module(*args, **kwargs)


def fsdp1_like(model):
    """Every decoder layer and the root wrapped, as verl's FSDP1 auto-wrap policy (decoder layer class) does."""
    layers = model.model.layers
    for i in range(len(layers)):
        layers[i] = Fsdp1LikeWrapper(layers[i])
    return Fsdp1LikeWrapper(model)


def real_fsdp1(model):
    """torch's FSDP1 on the current CUDA device, decoder layers as units (verl's auto-wrap)."""
    return FSDP(model.cuda(), auto_wrap_policy=ModuleWrapPolicy({Qwen2DecoderLayer}),
                device_id=torch.cuda.current_device(), use_orig_params=True)


def engine_on(cls, module):
    engine = bare_engine(cls, module)
    engine.engine_config = FSDPEngineConfig(strategy="fsdp")
    return engine


def check_capture(spy_rows, wrap, rmpad, micro, layer):
    """Captured states of the wrapped model == HF hidden_states of each sequence; log-probs == the stock engine's."""
    want = hf_response_states(tiny_model(), layer)
    ours = engine_on(ResRLFSDPEngine, wrap(tiny_model())).infer_batch(shard(settings(layer), micro, rmpad=rmpad))
    stock = engine_on(FSDPEngineWithLMHead, wrap(tiny_model())).infer_batch(shard(None, micro, rmpad=rmpad))
    for got, expected in zip([r.hidden for r in spy_rows[0]], want, strict=True):
        torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=1e-5 if got.is_cuda else 1e-6)
    assert torch.equal(ours["model_output"]["log_probs"].values(), stock["model_output"]["log_probs"].values())
    assert ours["model_output"][WEIGHTS_FIELD].values().numel() == sum(len(h) for h in want)


@pytest.mark.parametrize("rmpad,micro", [(True, 2), (True, 8), (False, 2)])
@pytest.mark.parametrize("layer", [-2, -1, 1])
def test_fsdp1_module_tree_capture_equals_hf_output_hidden_states(spy_rows, rmpad, micro, layer):
    check_capture(spy_rows, fsdp1_like, rmpad, micro, layer)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's FSDP1 needs an accelerator")
@pytest.mark.parametrize("layer", [-2, -1])
def test_real_fsdp1_capture_equals_hf_output_hidden_states(spy_rows, monkeypatch, layer):
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl

    monkeypatch.setattr(transformer_impl, "get_device_id", lambda: torch.cuda.current_device())
    monkeypatch.setattr(transformer_impl, "get_device_name", lambda: "cuda")
    check_capture(spy_rows, real_fsdp1, True, 2, layer)
