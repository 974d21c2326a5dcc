"""ResRL's hidden-state capture, in pure torch: which module of an HF decoder LM to hook for a given
``output_hidden_states`` index, the hook itself, and the cut to response tokens with the log-prob shift.

Used by verl's engine subclass (``workers/resrl_engine.py``) and by ``benchmarks/resrl_overhead.py`` on a GPU host
that has only torch and transformers. No verl import.

Layer choice ``hidden_layer`` indexes HF ``output_hidden_states`` (L decoder layers, L + 1 entries): entry i < L is
the input of decoder layer i (i >= 1: the output of layer i - 1), entry L (= -1) is the final-norm output (the
LM-head input). The hook therefore sits on decoder layer i (forward pre-hook) or on the final norm (forward hook).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

_WRAPPER_ATTRS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def unwrap_module(module: nn.Module) -> nn.Module:
    """Peel FSDP1 / activation-checkpoint / torch.compile wrappers and PEFT, down to the HF module."""
    while True:
        inner = next((getattr(module, a) for a in _WRAPPER_ATTRS if hasattr(module, a)), None)
        if inner is None and hasattr(module, "get_base_model") and callable(module.get_base_model):
            base = module.get_base_model()
            inner = base if base is not module else None
        if inner is None:
            return module
        module = inner


def decoder_parts(model: nn.Module) -> tuple[nn.ModuleList, nn.Module | None]:
    """(decoder layer list, final norm) of an HF decoder LM; the layer list is the ``*.layers`` of num_hidden_layers."""
    hf = unwrap_module(model)
    text_cfg = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    num_layers = int(text_cfg.num_hidden_layers)
    found = sorted(
        (name for name, m in hf.named_modules() if isinstance(m, nn.ModuleList) and name.split(".")[-1] == "layers"
         and len(m) == num_layers),
        key=len,
    )
    if not found:
        raise ValueError(
            f"algorithm.resrl.hidden_layer: no decoder layer list (*.layers with {num_layers} entries) in "
            f"{type(hf).__name__}; ResRL's hidden-state capture supports HF decoder-only LMs"
        )
    parent = hf.get_submodule(found[0].rpartition(".")[0]) if "." in found[0] else hf
    norm = next((getattr(parent, a) for a in ("norm", "final_layernorm", "ln_f") if hasattr(parent, a)), None)
    return hf.get_submodule(found[0]), norm


class LayerTap:
    """Reads HF ``hidden_states[hidden_layer]`` of a forward through a single module hook."""

    def __init__(self, model: nn.Module, hidden_layer: int):
        layers, norm = decoder_parts(model)
        n = len(layers)
        if not -(n + 1) <= hidden_layer <= n:
            raise ValueError(
                f"algorithm.resrl.hidden_layer={hidden_layer} is out of range for a model with {n} decoder layers "
                f"(HF hidden_states has {n + 1} entries: valid {-(n + 1)}..{n})"
            )
        self.index = hidden_layer % (n + 1)
        if self.index == n:
            if norm is None:
                raise ValueError(f"algorithm.resrl.hidden_layer={hidden_layer}: the model has no final norm to hook")
            self.module, self.pre = norm, False
        else:
            self.module, self.pre = unwrap_module(layers[self.index]), True

    @contextmanager
    def capture(self):
        """Hook active inside the block; yields a list that receives each captured activation (detached)."""
        grabbed: list[torch.Tensor] = []
        if self.pre:
            def hook(_mod, args, kwargs):
                grabbed.append((args[0] if args else kwargs["hidden_states"]).detach())

            handle = self.module.register_forward_pre_hook(hook, with_kwargs=True)
        else:
            def hook(_mod, _args, output):
                grabbed.append((output[0] if isinstance(output, tuple) else output).detach())

            handle = self.module.register_forward_hook(hook)
        try:
            yield grabbed
        finally:
            handle.remove()


def response_slices(flat: torch.Tensor, seq_lens: torch.Tensor, resp_lens: torch.Tensor) -> list[torch.Tensor]:
    """Cut each sequence's response rows out of unpacked per-token rows (total_nnz, d), with the log-prob shift.

    The cut of ``verl.workers.utils.padding.response_from_nested`` (which the engine calls), for the torch-only GPU
    benchmark: row t of a sequence produced token t + 1, so the r response tokens ending at offset e were produced by
    rows [e - r - 1, e - 1). tests/test_resrl_engine.py checks it equals verl's.
    """
    ends = torch.cumsum(seq_lens, 0).tolist()
    return [flat[e - r - 1 : e - 1].clone() for e, r in zip(ends, resp_lens.tolist(), strict=True)]


def flatten_padded(padded: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
    """Right-padded (B, S, d) rows -> unpacked (total_nnz, d): each sequence's first seq_len positions."""
    return torch.cat([padded[i, :n] for i, n in enumerate(seq_lens.tolist())])
