"""The tiny Qwen2 causal LM of the CPU recipe ``resrl_tiny``: created locally, loadable by ``AutoModelForCausalLM``.

Qwen2 is chosen because verl knows its architecture everywhere (FSDP wrapping, packing without padding, the Qwen
continuous-token builder of the agent loop), so the CPU path exercises the same code as a Qwen GPU run. Sizes follow
the cost table of docs/cpu_path.md, "What tiny models cost" (hidden 128, 4 layers, byte vocab: ~1M parameters, ~0.1 s for a
forward+backward of 16 x 128 tokens on 2 cores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from . import tokenizer as tok


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the tiny Qwen2 (fields map 1:1 onto ``transformers.Qwen2Config``)."""

    hidden_size: int = 128  # width; 128 keeps a train step ~0.1 s on 2 cores (docs/cpu_path.md)
    num_hidden_layers: int = 4
    num_attention_heads: int = 4  # head_dim 32
    num_key_value_heads: int = 2  # grouped-query attention, as in Qwen2
    intermediate_size: int = 512  # SwiGLU width, 4x hidden
    max_position_embeddings: int = 512  # prompts ~40 and responses ~30 tokens; room for longer rollouts
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True  # as in the small Qwen2 models; one 260 x hidden matrix for input and LM head
    init_seed: int = 0  # torch seed of the random initialisation


def qwen2_config(cfg: TinyModelConfig):
    """The ``Qwen2Config`` for ``cfg`` with the tokenizer's special ids (EOS ``<|im_end|>``, pad ``<pad>``)."""
    from transformers import Qwen2Config

    fields = {k: v for k, v in asdict(cfg).items() if k != "init_seed"}
    return Qwen2Config(
        vocab_size=tok.VOCAB_SIZE,
        bos_token_id=None,
        eos_token_id=tok.special_id(tok.IM_END),
        pad_token_id=tok.special_id(tok.PAD),
        attn_implementation="sdpa",  # flash-attention does not exist on CPU (docs/cpu_path.md, blocker 5)
        dtype="float32",
        use_cache=True,
        **fields,
    )


def build_model(cfg: TinyModelConfig = TinyModelConfig()):
    """A freshly initialised ``Qwen2ForCausalLM`` (fp32, sdpa), seeded by ``cfg.init_seed``."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(cfg.init_seed)
    model = Qwen2ForCausalLM(qwen2_config(cfg))
    return model.float()


def generation_config(model_config):
    """Stop at ``<|im_end|>`` (end of the assistant turn) or ``<|endoftext|>``, pad with ``<pad>``."""
    from transformers import GenerationConfig

    endoftext_id = tok.special_id(tok.ENDOFTEXT)
    return GenerationConfig(
        eos_token_id=[model_config.eos_token_id, endoftext_id],
        pad_token_id=model_config.pad_token_id,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
    )


def save_model(model, out_dir: str) -> None:
    """Save weights (safetensors), config.json and generation_config.json into ``out_dir``."""
    model.generation_config = generation_config(model.config)
    model.save_pretrained(out_dir)


def weights_sha256(model) -> str:
    """Fingerprint of the weights (names, dtypes, shapes and bytes, in name order): equal iff the tensors are."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def count_parameters(model) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
